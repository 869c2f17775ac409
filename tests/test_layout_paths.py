"""The core's layout paths for broadcast masks, against the reference bit for bit.

channels_first maps of fewer than 64 elements are spread into dense bits a block at
a time (one kernel call per block, not per map); channels_last channel vectors are
tiled into a repeating pattern copied up to 56 bits at a time. These tests cover
map sizes and channel counts around those edges, items that straddle the threads'
chunks, several thread counts and every SIMD level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import (
    HAVE_CORE,
    NO_CORE_REASON,
    assert_same,
    fastdropout,
    make_input,
    reference,
)

pytestmark = pytest.mark.skipif(not HAVE_CORE, reason=NO_CORE_REASON)

P = 0.4
SEED = 77


def check(x: np.ndarray, data_format: str, offset: int = 0) -> None:
    want, want_mask = reference.spatial_dropout(x, P, data_format=data_format, seed=SEED,
                                                offset=offset, return_mask=True)
    got, mask = fastdropout.spatial_dropout(x, P, data_format=data_format, seed=SEED,
                                            offset=offset, return_mask=True)
    assert_same(got, want, f"{data_format} forward {x.shape}")
    np.testing.assert_array_equal(mask.bits, want_mask.bits)
    assert_same(fastdropout.dropout_backward(x, mask), reference.dropout_backward(x, want_mask),
                f"{data_format} backward {x.shape}")


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (3, 3), (7, 9), (8, 8), (1, 63), (1, 64),
                                (5, 13)])
def test_channels_first_small_maps(simd: str, dtype: Any, hw: tuple[int, int]) -> None:
    del simd
    check(make_input((3, 5, *hw), dtype), "channels_first", offset=5)


@pytest.mark.parametrize("channels", [1, 3, 32, 55, 56, 57, 64, 100, 1023])
def test_channels_last_patterns(simd: str, dtype: Any, channels: int) -> None:
    del simd
    check(make_input((2, 3, 5, channels), dtype), "channels_last", offset=3)


@pytest.mark.parametrize(("shape", "data_format"), [
    ((5, 997, 7, 9), "channels_first"),    # 63-element maps, items across chunk edges
    ((3, 13, 1, 17, 3), "channels_first"),
    ((7, 61, 71, 3), "channels_last"),
    ((2, 9, 2049, 57), "channels_last"),
])
def test_threads(nthreads: int, shape: tuple[int, ...], data_format: str) -> None:
    del nthreads
    check(make_input(shape, np.float32, seed=1), data_format, offset=2**64 - 3)
