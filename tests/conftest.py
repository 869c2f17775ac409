"""Fixtures with readable ids (boost-histogram style) and the report header."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _util import (
    AVAILABLE_SIMD,
    HAVE_CORE,
    NO_CORE_REASON,
    core,
    fastdropout,
    reference,
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    del config
    if not HAVE_CORE:
        return [f"fastdropout: {NO_CORE_REASON}"]
    return [
        (
            f"fastdropout {fastdropout.__version__}: simd level {core.simd_level()} "
            f"(available: {', '.join(AVAILABLE_SIMD)}; compiled: "
            f"{', '.join(core._compiled_simd())}), threads {core.get_num_threads()}, "
            f"OpenMP {'yes' if core.has_openmp() else 'no'}"
        )
    ]


@pytest.fixture
def core_module() -> Any:
    """``fastdropout._core``, or skip when it is not built."""
    if not HAVE_CORE:
        pytest.skip(NO_CORE_REASON)
    return core


@pytest.fixture
def native() -> Any:
    """The native ``fastdropout`` package, or skip when it is not built."""
    if not HAVE_CORE:
        pytest.skip(NO_CORE_REASON)
    return fastdropout


@pytest.fixture(params=["native", "reference"])
def impl(request: pytest.FixtureRequest) -> Any:
    """Each implementation of the public API."""
    if request.param == "reference":
        return reference
    if not HAVE_CORE:
        pytest.skip(NO_CORE_REASON)
    return fastdropout


@pytest.fixture(params=AVAILABLE_SIMD or ["no-core"])
def simd(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each instruction set this build and CPU support, set and then restored."""
    if not HAVE_CORE:
        pytest.skip(NO_CORE_REASON)
    before = core.simd_level()
    core._set_simd(request.param)
    try:
        yield request.param
    finally:
        core._set_simd(before)


@pytest.fixture(
    params=[np.float16, np.float32, np.float64], ids=["float16", "float32", "float64"]
)
def dtype(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(params=[1, 2, 3, 7], ids=lambda n: f"threads{n}")
def nthreads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Kernel thread counts, set and then back to the default (OpenMP's setting)."""
    if not HAVE_CORE:
        pytest.skip(NO_CORE_REASON)
    core.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        core.set_num_threads(0)
