"""Statistics of the masks: rates and independence (no timing here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

N = 10**6


@pytest.mark.parametrize("p", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_kept_fraction(impl: Any, p: float) -> None:
    _, m = impl.dropout(np.ones(N, np.float32), p, seed=2024, return_mask=True)
    kept = int(np.unpackbits(m.bits).sum())
    sigma = (N * p * (1 - p)) ** 0.5
    assert abs(kept - N * (1 - p)) < 5 * sigma


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_inverted_preserves_the_mean(impl: Any, p: float) -> None:
    x = np.random.default_rng(0).uniform(1, 2, N)
    y = impl.dropout(x, p, seed=7)
    # E[y] = E[x]; sd of the mean of y is about sqrt(p / (1 - p)) * 1.5 / sqrt(N)
    tol = 5 * 1.6 * (p / (1 - p)) ** 0.5 / N**0.5
    assert abs(y.mean() - x.mean()) < tol


def test_classic_evaluation_matches_training_mean(impl: Any) -> None:
    x = np.full(N, 3.0)
    train = impl.dropout(x, 0.3, seed=1, mode="classic").mean()
    evaluation = impl.dropout(x, 0.3, training=False, mode="classic").mean()
    assert abs(train - evaluation) < 5 * 3 * (0.3 * 0.7 / N) ** 0.5


def test_layer_steps_are_fresh(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=3)
    x = np.ones(100_000, np.float32)
    masks = []
    for step in range(4):
        layer(x)
        assert layer.offset == (step + 1) * x.size
        masks.append(layer.mask.to_bool())
    for i in range(4):
        for j in range(i + 1, 4):
            agree = float((masks[i] == masks[j]).mean())
            assert abs(agree - 0.5) < 5 * 0.5 / x.size**0.5


def test_seeds_and_neighbouring_offsets_are_uncorrelated(impl: Any) -> None:
    x = np.ones(200_000, np.float32)
    base = impl.dropout(x, 0.5, seed=10, return_mask=True)[1].to_bool()
    for other in (
        impl.dropout(x, 0.5, seed=11, return_mask=True)[1].to_bool(),
        impl.dropout(x, 0.5, seed=10, offset=1, return_mask=True)[1].to_bool(),
        impl.dropout(x, 0.5, seed=1 << 32 | 10, return_mask=True)[1].to_bool(),
    ):
        agree = float((base == other).mean())
        assert abs(agree - 0.5) < 5 * 0.5 / x.size**0.5


def test_words_are_uniform() -> None:
    """Reference stream: each word position has the right rate (chi-square on
    the four words of a block)."""
    from _util import reference

    bits = reference.mask_bits(5, 0, 400_000, 0.5)
    kept = np.unpackbits(bits, bitorder="little").reshape(-1, 4).astype(float)
    rate = kept.mean(axis=0)
    assert np.all(np.abs(rate - 0.5) < 5 * 0.5 / (100_000**0.5))
