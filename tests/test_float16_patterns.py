"""Every float16 bit pattern through every operation, at every SIMD level: the
float16 paths (F16C widen-and-narrow on avx2/avx512, vmulph/vaddph on avx512fp16)
must give the reference's bits for NaN payloads, infinities, subnormals and every
rounding case (docs/spec.md sections 3, 8, 9 and 10)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import assert_same, assert_same_mask, reference

ALL_PATTERNS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)


def mixed_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Normal float16 values with a quarter of the elements replaced by random bit
    patterns (NaNs, infinities and subnormals among them)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    x = (rng.standard_normal(n) * 3).astype(np.float16)
    where = rng.choice(n, size=max(1, n // 4), replace=False)
    x.view(np.uint16)[where] = rng.integers(0, 1 << 16, size=where.size, dtype=np.uint16)
    return x.reshape(shape)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9, 0.99])
def test_all_bit_patterns(native: Any, simd: str, p: float) -> None:
    """Forward (inverted and classic, training and evaluation) and both backward
    paths over the 65,536 float16 inputs: native == reference bit for bit."""
    del simd
    x = ALL_PATTERNS
    with np.errstate(all="ignore"):
        for mode in ("inverted", "classic"):
            kw: dict[str, Any] = {"mode": mode, "seed": 3, "offset": 5}
            yr, mr = reference.dropout(x, p, return_mask=True, **kw)
            yn, mn = native.dropout(x, p, return_mask=True, **kw)
            assert_same(yn, yr)
            assert_same_mask(mn, mr)
            assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))
            assert_same(native.dropout_backward(x, p=p, **kw), reference.dropout_backward(x, mr))
            assert_same(native.dropout(x, p, mode=mode, training=False),
                        reference.dropout(x, p, mode=mode, training=False))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_all_bit_patterns_alpha(native: Any, simd: str, p: float) -> None:
    """Alpha dropout (x * A rounds, then + B) over every float16 input, and its
    backward from the mask: native == reference bit for bit."""
    del simd
    x = ALL_PATTERNS.reshape(256, 256)
    g = ALL_PATTERNS[::-1].reshape(256, 256)
    with np.errstate(all="ignore"):
        ya, ma = native.alpha_dropout(x, p, seed=3, offset=5, return_mask=True)
        yr, mr = reference.alpha_dropout(x, p, seed=3, offset=5, return_mask=True)
        assert_same(ya, yr)
        assert_same_mask(ma, mr)
        assert_same(native.dropout_backward(g, ma), reference.dropout_backward(g, mr))
        assert_same(native.alpha_dropout(x, p, training=False),
                    reference.alpha_dropout(x, p, training=False))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_all_bit_patterns_add(native: Any, simd: str, p: float) -> None:
    """dropout_add with bias (x + bias rounds, then the scale, then + residual) and
    its grad_bias over every float16 input against every other one as residual:
    each intermediate rounding, and NaN + NaN by section 9's first-operand rule,
    native == reference bit for bit."""
    del simd
    x = ALL_PATTERNS.reshape(256, 256)
    residual = ALL_PATTERNS[::-1].reshape(256, 256)
    bias = mixed_input((256,), seed=4)
    with np.errstate(all="ignore"):
        for mode in ("inverted", "classic"):
            kw: dict[str, Any] = {"bias": bias, "mode": mode, "seed": 3, "offset": 5}
            assert_same(native.dropout_add(x, residual, p, **kw),
                        reference.dropout_add(x, residual, p, **kw))
            assert_same(native.dropout_add(x, residual, p, training=False, mode=mode,
                                           bias=bias),
                        reference.dropout_add(x, residual, p, training=False, mode=mode,
                                              bias=bias))
            back = {"p": p, "bias": True, "mode": mode, "seed": 3, "offset": 5}
            gn = native.dropout_add_backward(residual, **back)
            gr = reference.dropout_add_backward(residual, **back)
            assert_same(gn[0], gr[0])
            assert_same(gn[2], gr[2])
