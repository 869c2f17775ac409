"""Fuzzing every public function against ``fastdropout.reference`` (SPEC 6, 7).

Hypothesis throws random combinations of dtypes (including ones that must be
refused), shapes with zeros, strided/negative-stride/huge-stride/transposed/
broadcast (zero-stride)/read-only/unaligned views, ``out`` arrays that are ``x``,
overlap part of it, or are wrong, ``p`` at and around the edges and of the wrong
type, NaN/Inf and raw random bit patterns as data, seeds and offsets at the
limits, Generators, every SIMD level and several thread counts, and wrong types
for every argument. Each call is made twice, on identically built
arrays: once through the native package and once through the reference. Then:

- either both return, with the very same bits (``.view(uint)``), the same mask,
  the same memory effects (the buffers behind ``x`` and ``out``), the same
  Generator state, and the result equals the reference computed on a plain
  contiguous copy of ``x`` (so overlapping ``out`` is handled right);
- or both raise the same exception, a ``ValueError`` or ``TypeError`` (SPEC 7)
  with the same message, and no buffer was written;
- and nothing crashes (run this file under ``tools/run_sanitizers.sh`` too).

The private core (``_core.forward``/``backward_mask``) is fuzzed on its own: it
must refuse bad arguments with an exception (writing nothing), never crash or
write out of bounds, and compute the right mask when it accepts them.

Examples per test: ``FASTDROPOUT_FUZZ_EXAMPLES`` (default 40, quick enough for
CI); ``pytest tests/test_fuzz.py --hypothesis-show-statistics`` counts them.
"""

from __future__ import annotations

import contextlib
import decimal
import fractions
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable
from unittest import mock

import numpy as np
import pytest
from _util import (
    HAVE_CORE,
    NO_CORE_REASON,
    TWO_64,
    assert_same,
    assert_same_mask,
    bits_of,
    fastdropout,
    reference,
)
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

if not HAVE_CORE:  # pragma: no cover - depends on the build
    pytest.skip(NO_CORE_REASON, allow_module_level=True)

from fastdropout import _core

TWO_32 = 1 << 32
EXAMPLES = int(os.environ.get("FASTDROPOUT_FUZZ_EXAMPLES", "40"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
#: ``--hypothesis-profile=fastdropout-fuzz`` raises the examples of the rest of
#: the suite's Hypothesis tests to the same count.
settings.register_profile("fastdropout-fuzz", FUZZ)

SPEC7 = (ValueError, TypeError)
VALID_DTYPES = ("<f2", "<f4", "<f8")
try:  # bfloat16 (docs/spec.md section 8) when ml_dtypes is installed
    import ml_dtypes

    BF16: Any = np.dtype(ml_dtypes.bfloat16)
    FUSED_DTYPES: tuple[str, ...] = (*VALID_DTYPES, "bfloat16")
except ImportError:  # pragma: no cover - ml_dtypes is in the test extra
    BF16 = None
    FUSED_DTYPES = VALID_DTYPES
INVALID_DTYPES = ("|i1", "<i4", "<i8", "|u1", "<u8", "|b1", "<c8", "<c16", "|O",
                  ">f2", ">f4", ">f8", "<g", "<m8[s]")


# --------------------------------------------------------------------------
# Building arrays (deterministically, twice: once per implementation)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    shape: tuple[int, ...]
    # c, strided, huge_stride, transposed, broadcast, readonly, unaligned, fortran,
    # list, scalar
    layout: str
    steps: tuple[int, ...] = ()
    data: str = (
        "values"  # values (normals + specials) or bits (raw random bit patterns)
    )
    seed: int = 0


@dataclass(frozen=True)
class OutSpec:
    # None, fresh, x, overlap, wrong_shape, wrong_dtype, byteswapped, readonly,
    # noncontig, fortran, unaligned, list
    kind: str | None
    shift: int = 0


@dataclass
class Built:
    """The arrays of one call and the buffers behind them (to watch)."""

    x: Any
    out: Any = None
    buffers: list[np.ndarray] = field(default_factory=list)


def _special_values(dt: np.dtype[Any]) -> np.ndarray:
    info = np.finfo(dt)
    with np.errstate(over="ignore"):
        return np.array(
            [
                np.nan,
                -np.nan,
                np.inf,
                -np.inf,
                0.0,
                -0.0,
                float(info.smallest_subnormal),
                -float(info.smallest_subnormal),
                float(info.smallest_normal),
                float(info.max),
                -float(info.max),
                1.0,
                -1.0,
                float(info.eps),
                0.5,
                65504.0,
            ],
        ).astype(dt)


def _fill(flat: np.ndarray, spec: ArraySpec, rng: np.random.Generator) -> None:
    """Fill a 1-D array of spec.dtype (any dtype) with test data."""
    n = flat.size
    dt = flat.dtype
    if n == 0:
        return
    if BF16 is not None and dt == BF16:
        if spec.data == "bits":
            flat.view(np.uint16)[...] = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
        else:
            vals = (rng.standard_normal(n) * 4).astype(np.float32)
            sp = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40,
                           3.3e38, 1.0], np.float32)
            k = max(1, n // 3)
            vals[rng.integers(0, n, size=k)] = rng.choice(sp, size=k)
            flat[...] = vals.astype(BF16)
        return
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        native = dt.newbyteorder("=")
        if spec.data == "bits":
            raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
            vals = raw.view(native)
        else:
            with np.errstate(over="ignore"):
                vals = (rng.standard_normal(n) * 4).astype(native)
            sp = _special_values(native)
            k = max(1, n // 3)
            vals[rng.integers(0, n, size=k)] = rng.choice(sp, size=k)
        flat[...] = vals
    elif dt.kind in "iub":
        flat[...] = rng.integers(0, 2, size=n).astype(dt)
    elif dt.kind == "c":
        flat[...] = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    elif dt.kind == "O":
        flat[...] = list(rng.standard_normal(n))
    else:  # long double, timedelta, ...
        flat[...] = rng.integers(-5, 5, size=n).astype(dt)


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    acc = itemsize
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def build(spec: ArraySpec, out: OutSpec) -> Built:
    rng = np.random.default_rng(spec.seed)
    dt = np.dtype(spec.dtype)
    shape = spec.shape
    n = _size(shape)

    if out.kind == "overlap":
        # x (possibly strided, possibly reversed) and out (C-contiguous) in one buffer.
        step = spec.steps[0] if spec.steps else 1
        span = max(n - 1, 0) * abs(step) + 1
        length = span + n + abs(out.shift) + 2
        base = np.empty(length, dt)
        _fill(base, spec, rng)
        xs = (
            base[1 : 1 + span][::step]
            if step > 0
            else base[1 : 1 + span][::-1][::-step]
        )
        xs = xs[:n]
        x = xs.reshape(shape) if n else np.empty(shape, dt)
        start = min(max(0, 1 + out.shift), length - n)
        o = base[start : start + n].reshape(shape)
        return Built(x, o, [base])

    if spec.layout == "scalar":
        x: Any = float(rng.standard_normal())
        built = Built(x)
    elif spec.layout == "list":
        tmp = np.empty(n, dt)
        _fill(tmp, spec, rng)
        x = tmp.reshape(shape).tolist()
        built = Built(x)
    elif spec.layout == "strided":
        steps = spec.steps[: len(shape)] + (1,) * (len(shape) - len(spec.steps))
        big_shape = tuple(s * abs(k) + 1 for s, k in zip(shape, steps))
        big = np.empty(big_shape, dt)
        _fill(big.reshape(-1), spec, rng)
        index = tuple(
            slice(1, 1 + s * k, k) if k > 0 else slice(s * -k, 0, k)
            for s, k in zip(shape, steps)
        )
        x = big[index]
        assert x.shape == shape, (x.shape, shape)
        built = Built(x, buffers=[big])
    elif spec.layout == "huge_stride" and 0 < n <= 500:
        # one element every 1031 (or, reversed, every -1031): a stride of ~8 kB
        step = 1031 if not spec.steps or spec.steps[0] > 0 else -1031
        big = np.empty(n * 1031, dt)
        _fill(big, spec, rng)
        x = big[::step][:n].reshape(shape)
        built = Built(x, buffers=[big])
    elif spec.layout == "transposed":
        base = np.empty(shape[::-1], dt)
        _fill(base.reshape(-1), spec, rng)
        x = base.T
        built = Built(x, buffers=[base])
    elif spec.layout == "fortran":
        base = np.empty(shape, dt, order="F")
        _fill(base.reshape(-1, order="F"), spec, rng)
        x = base
        built = Built(x, buffers=[base])
    elif spec.layout == "broadcast":
        small_shape = tuple(1 if i % 2 == 0 else s for i, s in enumerate(shape))
        small = np.empty(small_shape, dt)
        _fill(small.reshape(-1), spec, rng)
        x = np.broadcast_to(small, shape)  # zero strides, read-only
        built = Built(x, buffers=[small])
    elif spec.layout == "unaligned" and dt.itemsize > 1 and dt.kind != "O":
        raw = np.zeros(n * dt.itemsize + 1, np.uint8)
        x = np.ndarray(shape, dt, raw.data, offset=1)
        _fill(x.reshape(-1), spec, rng)
        built = Built(x, buffers=[raw])
    else:  # c, readonly (and unaligned for 1-byte dtypes)
        x = np.empty(shape, dt)
        _fill(x.reshape(-1), spec, rng)
        built = Built(x, buffers=[x])
        if spec.layout == "readonly":
            x.flags.writeable = False

    xa = x if isinstance(x, np.ndarray) else np.asarray(x)
    rshape, rdt = xa.shape, xa.dtype
    k = out.kind
    o: Any = None
    if k is None:
        pass
    elif k == "fresh":
        o = np.full(rshape, 7.25, rdt) if rdt.kind == "f" else np.zeros(rshape, rdt)
    elif k == "x":
        o = x  # in place (an error where x is not a valid out)
    elif k == "wrong_shape":
        o = np.full((*rshape, 2), 7.25, rdt) if rdt.kind == "f" else np.zeros(3)
    elif k == "wrong_dtype":
        other = np.float32 if rdt != np.float32 else np.float64
        o = np.full(rshape, 7.25, other)
    elif k == "byteswapped":
        o = np.full(rshape, 7.25, rdt.newbyteorder())
    elif k == "readonly":
        o = np.full(rshape, 7.25, rdt) if rdt.kind == "f" else np.zeros(rshape, rdt)
        o.flags.writeable = False
    elif k == "noncontig":
        parent = (
            np.full((*rshape, 2), 7.25, rdt)
            if rdt.kind == "f"
            else np.zeros((*rshape, 2), rdt)
        )
        built.buffers.append(parent)
        o = parent[..., 0]
    elif k == "fortran":
        o = (
            np.full(rshape, 7.25, rdt, order="F")
            if rdt.kind == "f"
            else np.zeros(rshape, rdt, order="F")
        )
    elif k == "unaligned":
        if rdt.itemsize > 1 and rdt.kind != "O":
            raw = np.zeros(_size(rshape) * rdt.itemsize + 1, np.uint8)
            built.buffers.append(raw)
            o = np.ndarray(rshape, rdt, raw.data, offset=1)
        else:
            o = np.zeros(rshape, rdt)
    elif k == "list":
        o = np.zeros(rshape).tolist()
    else:  # pragma: no cover
        raise AssertionError(k)
    if isinstance(o, np.ndarray) and o is not x:
        built.buffers.append(o)
    built.out = o
    return built


# --------------------------------------------------------------------------
# Arguments: valid values, edge values and wrong ones
# --------------------------------------------------------------------------


class Gen:
    """A ``numpy.random.Generator`` argument, made fresh for each implementation."""

    def __init__(self, k: int) -> None:
        self.k = k

    def make(self) -> np.random.Generator:
        return np.random.default_rng(self.k)

    def __repr__(self) -> str:
        return f"Gen({self.k})"


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Unhashable()"


def _edge_p() -> list[Any]:
    tiny = 2.0**-32
    return [
        0.0,
        -0.0,
        1.0,
        0,
        1,
        0.5,
        5e-324,
        np.nextafter(0.0, 1.0),
        np.nextafter(1.0, 0.0),
        tiny,
        0.5 * tiny,
        1.5 * tiny,
        2.5 * tiny,
        1 - 0.5 * tiny,
        1 - tiny,
        1 - 1.5 * tiny,
        np.float16(0.3),
        np.float32(1 / 3),
        np.float64(0.9),
        np.int64(1),
        fractions.Fraction(1, 3),
    ]


BAD_P = [
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    -1e-300,
    -0.5,
    1.0000000000000002,
    2,
    2.0,
    -1,
    "0.5",
    None,
    True,
    False,
    0.5j,
    np.array(0.5),
    [0.5],
    decimal.Decimal("0.5"),
    10**400,
    np.float32("nan"),
    b"0.5",
    Unhashable(),
]
GOOD_SEEDS = [
    0,
    1,
    TWO_32 - 1,
    TWO_32,
    2**63,
    TWO_64 - 1,
    np.uint64(TWO_64 - 1),
    np.int64(2**62),
    np.uint8(7),
    None,
]
BAD_SEEDS = [
    -1,
    TWO_64,
    2**100,
    -(2**63),
    np.int64(-1),
    1.0,
    0.0,
    "1",
    b"1",
    True,
    False,
    np.bool_(True),
    [1],
    (1,),
    1.5,
    np.float64(3.0),
    Unhashable(),
    np.array(5),
    decimal.Decimal(1),
    complex(1, 0),
]
BAD_OFFSETS = [
    -1,
    TWO_64,
    TWO_64 + 3,
    1.0,
    "0",
    None,
    True,
    np.bool_(False),
    np.float64(2.0),
    2**200,
    np.int64(-5),
]
BAD_MODES = ["INVERTED", "", None, 0, b"classic", ["classic"], "inverted "]
BAD_FORMATS = ["NCHW", "channels-first", None, 1, b"channels_last", "CHANNELS_LAST"]
BAD_FLAGS = [2, -1, "yes", None, 1.0, [True], np.float64(1.0)]
BAD_AXES = [
    True,
    1.0,
    "0",
    (0.0,),
    (None,),
    np.int64(0) + 0.5,
    [np.int8(0), 0.5],
    (np.True_,),
    Unhashable(),
    {0: 1},
]
BAD_ARGS = (
    "x",
    "out",
    "p",
    "seed",
    "offset",
    "training",
    "mode",
    "return_mask",
    "axes",
    "data_format",
)

#: Each argument: (valid values, wrong values).
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "p": st.one_of(st.floats(0.0, 1.0), st.sampled_from(_edge_p())),
    "seed": st.one_of(
        st.integers(0, TWO_64 - 1),
        st.sampled_from(GOOD_SEEDS),
        st.integers(0, 1000).map(Gen),
    ),
    "offset": st.one_of(
        st.integers(0, 64),
        st.integers(0, TWO_64 - 1),
        st.integers(1, 300).map(lambda k: TWO_64 - k),  # wraps past 2**64
        st.sampled_from(
            [TWO_32 - 3, TWO_32, 2**62, np.uint64(TWO_64 - 5), np.int32(12)]
        ),
    ),
    "mode": st.sampled_from(["inverted", "classic"]),
    "data_format": st.sampled_from(["channels_first", "channels_last"]),
    "flag": st.sampled_from(
        [True, False, True, False, np.True_, np.False_, 1, 0, np.int8(1)]
    ),
}
BAD: dict[str, st.SearchStrategy[Any]] = {
    "p": st.sampled_from(BAD_P),
    "seed": st.sampled_from(BAD_SEEDS),
    "offset": st.sampled_from(BAD_OFFSETS),
    "mode": st.sampled_from(BAD_MODES),
    "data_format": st.sampled_from(BAD_FORMATS),
    "flag": st.sampled_from(BAD_FLAGS),
}
#: Which arguments of a call are wrong: mostly none, else one or two.
broken_st = st.one_of(
    st.just(frozenset()),
    st.just(frozenset()),
    st.frozensets(st.sampled_from(BAD_ARGS), min_size=1, max_size=2),
)


def pick(draw: Any, kind: str, bad: bool) -> Any:
    return draw(BAD[kind] if bad else GOOD[kind])


def axes_st(ndim: int, bad: bool) -> st.SearchStrategy[Any]:
    if bad:
        ax = st.integers(-ndim - 3, ndim + 2)
        return st.one_of(
            st.sampled_from(BAD_AXES),
            st.integers(ndim, ndim + 2),
            st.integers(-ndim - 3, -ndim - 1),
            st.lists(ax, min_size=2, max_size=ndim + 2).map(tuple),  # repeats likely
        )
    if ndim == 0:
        return st.sampled_from([None, (), []])
    ax = st.integers(-ndim, ndim - 1)
    return st.one_of(
        st.none(),
        ax,
        ax.map(np.int64),
        st.lists(ax, max_size=ndim).map(
            lambda a: tuple(dict.fromkeys(v % ndim for v in a))
        ),  # unique
        st.lists(ax, max_size=ndim)
        .map(lambda a: list(dict.fromkeys(a)))
        .filter(lambda a: len({v % ndim for v in a}) == len(a)),
    )


layout_st = st.sampled_from(
    [
        "c",
        "c",
        "c",
        "strided",
        "strided",
        "huge_stride",
        "transposed",
        "broadcast",
        "readonly",
        "unaligned",
        "fortran",
        "list",
        "scalar",
    ]
)
BIG_SHAPES = [(131_075,), (3, 65_539), (2, 2, 40_001), (200_003,)]


@st.composite
def shapes(draw: Any, ranks: tuple[int, ...] = (0, 1, 2, 3, 4)) -> tuple[int, ...]:
    if draw(st.integers(0, 30)) == 0:
        big = draw(st.sampled_from(BIG_SHAPES))
        if len(big) in ranks:
            return big  # several threads, several SIMD blocks
    ndim = draw(st.sampled_from(ranks))
    return tuple(
        draw(
            st.lists(
                st.sampled_from([0, 1, 1, 2, 3, 4, 5, 7, 8, 9, 17, 33]),
                min_size=ndim,
                max_size=ndim,
            )
        )
    )


@st.composite
def array_specs(draw: Any, ranks: tuple[int, ...] = (0, 1, 2, 3, 4),
                bad_dtype: bool = False,
                dtypes: tuple[str, ...] = VALID_DTYPES) -> ArraySpec:
    shape = draw(shapes(ranks))
    layout = draw(layout_st)
    if layout == "scalar" and shape != ():
        layout = "c"
    steps = tuple(draw(st.lists(st.sampled_from([1, 2, 3, -1, -2, -3]),
                                min_size=len(shape), max_size=len(shape))))
    dtype = draw(st.sampled_from(INVALID_DTYPES if bad_dtype else dtypes))
    return ArraySpec(dtype, shape, layout, steps,
                     draw(st.sampled_from(["values", "values", "bits"])),
                     draw(st.integers(0, 2**32)))


GOOD_OUTS = [None, None, None, "fresh", "fresh", "x", "overlap", "overlap", "unaligned"]
BAD_OUTS = [
    "x",
    "wrong_shape",
    "wrong_dtype",
    "byteswapped",
    "readonly",
    "noncontig",
    "fortran",
    "list",
]


@st.composite
def out_specs(draw: Any, spec: ArraySpec, bad: bool) -> OutSpec:
    kind = draw(st.sampled_from(BAD_OUTS if bad else GOOD_OUTS))
    if kind == "x" and not bad and spec.layout not in ("c", "unaligned"):
        kind = "overlap"  # out=x is only valid for a writeable C-contiguous x
    if kind == "overlap" and spec.layout in ("scalar", "list", "broadcast"):
        kind = "fresh"
    n = _size(spec.shape)
    shift = 0
    if kind == "overlap":  # mostly a true partial overlap
        shift = draw(
            st.integers(-n + 1, n - 1)
            if n > 1 and draw(st.integers(0, 4))
            else st.integers(-n - 2, n + 2)
        )
    return OutSpec(kind, shift)


# --------------------------------------------------------------------------
# Running one call in both implementations and comparing
# --------------------------------------------------------------------------

FIXED_OS_SEED = 0x0123_4567_89AB_CDEF  # what seed=None draws (patched)
AVAILABLE_SIMD = tuple(_core._available_simd())
simd_st = st.sampled_from(AVAILABLE_SIMD)
threads_st = st.sampled_from([None, None, None, 1, 2, 3, 5, 16])


@contextlib.contextmanager
def kernels(simd: str, threads: int | None) -> Iterator[None]:
    """Run the native code with this instruction set and thread count."""
    simd_before, threads_before = _core.simd_level(), fastdropout.get_num_threads()
    try:
        _core._set_simd(simd)
        if threads is not None:
            fastdropout.set_num_threads(threads)
        yield
    finally:
        _core._set_simd(simd_before)
        fastdropout.set_num_threads(threads_before)


@dataclass
class Outcome:
    exc: BaseException | None
    result: Any
    buffers_before: list[bytes]
    buffers_after: list[bytes]
    result_is_out: bool
    generators: list[Any]


def _materialize(v: Any, gens: list[np.random.Generator]) -> Any:
    if isinstance(v, Gen):
        g = v.make()
        gens.append(g)
        return g
    return v


def run(
    fn: Callable[..., Any],
    spec: ArraySpec | None,
    out: OutSpec | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    extra: Callable[[Built], dict[str, Any]] | None = None,
) -> Outcome:
    built = build(spec, out) if spec is not None else Built(None)
    gens: list[np.random.Generator] = []
    call_args = [_materialize(a, gens) for a in args]
    call_kwargs = {k: _materialize(v, gens) for k, v in kwargs.items()}
    if out is not None and out.kind is not None:
        call_kwargs["out"] = built.out
    if extra is not None:
        call_kwargs.update(extra(built))
    before = [b.tobytes() for b in built.buffers]
    exc: BaseException | None = None
    result: Any = None
    with mock.patch("secrets.randbits", return_value=FIXED_OS_SEED):
        try:
            result = fn(built.x, *call_args, **call_kwargs)
        except Exception as e:  # noqa: BLE001 - compared with the reference's below
            exc = e
    after = [b.tobytes() for b in built.buffers]
    y = result[0] if isinstance(result, tuple) else result
    is_out = "out" in call_kwargs and y is call_kwargs["out"]
    return Outcome(
        exc, result, before, after, is_out, [g.bit_generator.state for g in gens]
    )


def assert_same_result(a: Any, e: Any) -> None:
    if isinstance(e, tuple):
        assert isinstance(a, tuple)
        assert len(a) == len(e) == 2
        assert_same(a[0], e[0])
        assert_same_mask(a[1], e[1])
    else:
        assert_same(a, e)


def compare(nat: Outcome, ref: Outcome) -> None:
    """The native outcome equals the reference's (SPEC 6 and 7)."""
    note(f"native: {nat.exc!r}; reference: {ref.exc!r}")
    event("raised " + type(nat.exc).__name__ if nat.exc is not None else "returned")
    if ref.exc is not None or nat.exc is not None:
        assert type(nat.exc) is type(ref.exc), (nat.exc, ref.exc)
        assert isinstance(nat.exc, SPEC7), nat.exc
        assert str(nat.exc) == str(ref.exc)
        for before, after in zip(nat.buffers_before, nat.buffers_after):
            assert before == after, "an array was written by a call that raised"
        for before, after in zip(ref.buffers_before, ref.buffers_after):
            assert before == after
    else:
        assert_same_result(nat.result, ref.result)
        assert nat.buffers_after == ref.buffers_after, "different memory effects"
        assert nat.result_is_out == ref.result_is_out
    assert nat.generators == ref.generators


def _plain_x(spec: ArraySpec, out: OutSpec) -> np.ndarray:
    """A fresh C-contiguous copy of the x that ``build`` makes (before any call)."""
    return np.array(build(spec, out).x)


# --------------------------------------------------------------------------
# The fuzz tests
# --------------------------------------------------------------------------


@st.composite
def forward_calls(draw: Any, spatial: bool,
                  dtypes: tuple[str, ...] = VALID_DTYPES) -> tuple[Any, ...]:
    broken = draw(broken_st)
    ranks = (3, 4, 5) if spatial else (0, 1, 2, 3, 4)
    if "x" in broken and spatial and draw(st.booleans()):
        spec = draw(array_specs((0, 1, 2, 6)))  # a rank spatial_dropout refuses
    else:
        spec = draw(array_specs(ranks, bad_dtype="x" in broken, dtypes=dtypes))
    out = draw(out_specs(spec, "out" in broken))
    if out.kind == "byteswapped" and spec.dtype == "bfloat16":
        out = OutSpec("wrong_dtype")
    kwargs: dict[str, Any] = {}
    p = pick(draw, "p", "p" in broken)
    p_positional = draw(st.booleans())
    if "seed" in broken or draw(st.integers(0, 9)):
        kwargs["seed"] = pick(draw, "seed", "seed" in broken)
    if "offset" in broken or draw(st.booleans()):
        kwargs["offset"] = pick(draw, "offset", "offset" in broken)
    if "training" in broken or draw(st.integers(0, 3)) == 0:
        kwargs["training"] = pick(draw, "flag", "training" in broken)
    if "mode" in broken or draw(st.booleans()):
        kwargs["mode"] = pick(draw, "mode", "mode" in broken)
    if "return_mask" in broken or draw(st.booleans()):
        kwargs["return_mask"] = pick(draw, "flag", "return_mask" in broken)
    if spatial:
        if "data_format" in broken or draw(st.booleans()):
            kwargs["data_format"] = pick(draw, "data_format", "data_format" in broken)
        if "axes" in broken:
            kwargs["broadcast_axes"] = (0,)  # not a keyword of spatial_dropout
    elif "axes" in broken or draw(st.booleans()):
        kwargs["broadcast_axes"] = draw(axes_st(len(spec.shape), "axes" in broken))
    if "data_format" in broken and not spatial:
        kwargs["data_format"] = "channels_last"  # not a keyword of dropout
    return spec, out, p, p_positional, kwargs, draw(simd_st), draw(threads_st)


def _check_forward(call: tuple[Any, ...], spatial: bool) -> None:
    spec, out, p, p_positional, kwargs, simd, threads = call
    note(
        f"x={spec}, out={out}, p={p!r}, kwargs={kwargs}, simd={simd}, threads={threads}"
    )
    native_fn = fastdropout.spatial_dropout if spatial else fastdropout.dropout
    ref_fn = reference.spatial_dropout if spatial else reference.dropout
    args, kw = ((p,), dict(kwargs)) if p_positional else ((), {**kwargs, "p": p})
    with kernels(simd, threads):
        nat = run(native_fn, spec, out, args, kw)
    ref = run(ref_fn, spec, out, args, kw)
    compare(nat, ref)
    if nat.exc is None and out.kind is not None:
        # out (overlapping x, or x itself) holds the result of a plain copy of x.
        gens: list[np.random.Generator] = []
        kw0 = {k: _materialize(v, gens) for k, v in kw.items()}
        with mock.patch("secrets.randbits", return_value=FIXED_OS_SEED):
            expected = ref_fn(_plain_x(spec, out), *args, **kw0)
        assert_same_result(nat.result, expected)


@FUZZ
@given(forward_calls(spatial=False))
def test_fuzz_dropout(call: tuple[Any, ...]) -> None:
    _check_forward(call, spatial=False)


@FUZZ
@given(forward_calls(spatial=True))
def test_fuzz_spatial_dropout(call: tuple[Any, ...]) -> None:
    _check_forward(call, spatial=True)


@st.composite
def backward_calls(draw: Any) -> tuple[Any, ...]:
    broken = draw(broken_st)
    spec = draw(array_specs(bad_dtype="x" in broken))
    out = draw(out_specs(spec, "out" in broken))
    kwargs: dict[str, Any] = {}
    how = draw(
        st.sampled_from(
            ["mask", "mask", "mask-broadcast", "regen", "regen", "regen-broadcast"]
            + (["mask-other-shape", "not-a-mask", "neither", "both"] if broken else [])
        )
    )
    mask_p = draw(GOOD["p"])
    mask_mode = draw(GOOD["mode"])
    mask_seed = draw(st.integers(0, TWO_64 - 1))
    mask_offset = draw(
        st.integers(0, 64) | st.integers(1, 100).map(lambda k: TWO_64 - k)
    )
    ndim = len(spec.shape)
    if how.startswith("regen") or how == "both":
        kwargs["p"] = pick(draw, "p", "p" in broken)
        if "seed" in broken:  # None and Generators too: regenerating needs the int
            kwargs["seed"] = draw(BAD["seed"] | st.sampled_from([None, Gen(3)]))
        else:
            kwargs["seed"] = draw(
                st.integers(0, TWO_64 - 1)
                | st.sampled_from([0, TWO_64 - 1, np.uint64(5), mask_seed])
            )
        if draw(st.booleans()) or "offset" in broken:
            kwargs["offset"] = pick(draw, "offset", "offset" in broken)
        if draw(st.booleans()) or "mode" in broken:
            kwargs["mode"] = pick(draw, "mode", "mode" in broken)
        if how == "regen-broadcast" or "axes" in broken:
            kwargs["broadcast_axes"] = draw(axes_st(ndim, "axes" in broken))
    else:
        if "p" in broken:
            kwargs["p"] = draw(
                BAD["p"] | st.floats(0.0, 1.0)
            )  # conflicts with the mask
        elif draw(st.integers(0, 4)) == 0:
            kwargs["p"] = mask_p  # the same p as the mask: allowed
        if "mode" in broken:
            kwargs["mode"] = draw(BAD["mode"] | GOOD["mode"])
        elif draw(st.integers(0, 4)) == 0:
            kwargs["mode"] = mask_mode
        for name in ("seed", "offset"):
            if name in broken:
                kwargs[name] = pick(draw, name, draw(st.booleans()))
        if "axes" in broken:
            kwargs["broadcast_axes"] = draw(axes_st(ndim, draw(st.booleans())))
    axes_choice = draw(
        st.lists(st.integers(0, max(ndim - 1, 0)), max_size=2, unique=True)
    )
    other_shape = draw(shapes())
    return (
        spec,
        out,
        how,
        mask_p,
        mask_mode,
        mask_seed,
        mask_offset,
        kwargs,
        tuple(axes_choice),
        other_shape,
        draw(simd_st),
        draw(threads_st),
    )


def _make_mask(
    impl: Any,
    how: str,
    shape: tuple[int, ...],
    p: float,
    mode: str,
    seed: int,
    offset: int,
    axes: tuple[int, ...],
    other_shape: tuple[int, ...],
) -> Any:
    if how in ("mask", "both"):
        x = np.ones(shape, np.float32)
        return impl.dropout(
            x, p, mode=mode, seed=seed, offset=offset, return_mask=True
        )[1]
    if how == "mask-broadcast":
        x = np.ones(shape, np.float32)
        ax = tuple(a for a in axes if a < len(shape)) or None
        return impl.dropout(
            x,
            p,
            mode=mode,
            seed=seed,
            offset=offset,
            broadcast_axes=ax,
            return_mask=True,
        )[1]
    if how == "mask-other-shape":
        x = np.ones(other_shape, np.float64)
        return impl.dropout(
            x, p, mode=mode, seed=seed, offset=offset, return_mask=True
        )[1]
    if how == "not-a-mask":
        return np.packbits(np.ones(_size(shape), bool), bitorder="little")
    return None


@FUZZ
@given(backward_calls())
def test_fuzz_dropout_backward(call: tuple[Any, ...]) -> None:
    (
        spec,
        out,
        how,
        mask_p,
        mask_mode,
        mask_seed,
        mask_offset,
        kwargs,
        axes,
        other_shape,
        simd,
        threads,
    ) = call
    note(
        f"grad={spec}, out={out}, how={how}, mask=({mask_p!r}, {mask_mode}, "
        f"{mask_seed}, {mask_offset}, {axes}, {other_shape}), kwargs={kwargs}, "
        f"simd={simd}, threads={threads}"
    )
    masks = {}
    for name, impl in (("native", fastdropout), ("reference", reference)):
        masks[name] = _make_mask(
            impl,
            how,
            spec.shape,
            mask_p,
            mask_mode,
            mask_seed,
            mask_offset,
            axes,
            other_shape,
        )
    if how.startswith("mask"):
        assert_same_mask(masks["native"], masks["reference"])
    with kernels(simd, threads):
        nat = run(fastdropout.dropout_backward, spec, out, (masks["native"],), kwargs)
    ref = run(reference.dropout_backward, spec, out, (masks["reference"],), kwargs)
    compare(nat, ref)
    if nat.exc is None and out.kind is not None:
        gens: list[np.random.Generator] = []
        kw0 = {k: _materialize(v, gens) for k, v in kwargs.items()}
        expected = reference.dropout_backward(
            _plain_x(spec, out), masks["reference"], **kw0
        )
        assert_same(nat.result, expected)
    if (
        nat.exc is None
        and how == "mask"
        and isinstance(masks["native"], fastdropout.Mask)
    ):
        # Regenerating the mask from (p, seed, offset) gives the same gradient.
        m = masks["native"]
        regen = fastdropout.dropout_backward(
            _plain_x(spec, out), p=m.p, mode=m.mode, seed=m.seed, offset=m.offset
        )
        assert_same(regen, np.asarray(nat.result))


@st.composite
def layer_scripts(draw: Any, spatial: bool) -> tuple[Any, ...]:
    broken = draw(broken_st)
    ctor: dict[str, Any] = {"p": pick(draw, "p", "p" in broken)}
    if "mode" in broken or draw(st.booleans()):
        ctor["mode"] = pick(draw, "mode", "mode" in broken)
    ctor["seed"] = (
        draw(
            st.one_of(
                st.integers(0, TWO_64 - 1),
                st.sampled_from([None, TWO_64 - 1, 0]),
                st.integers(0, 99).map(Gen),
            )
        )
        if "seed" not in broken
        else draw(BAD["seed"])
    )
    if spatial and ("data_format" in broken or draw(st.booleans())):
        ctor["data_format"] = pick(draw, "data_format", "data_format" in broken)
    ranks = (3, 4, 5) if spatial else (0, 1, 2, 3)
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        op = draw(
            st.sampled_from(
                [
                    "forward",
                    "forward",
                    "call",
                    "eval",
                    "backward",
                    "backward",
                    "backward-wrong",
                    "set-offset",
                    "forward-bad",
                ]
            )
        )
        arg: Any = None
        if op in ("forward", "call", "eval"):
            arg = draw(array_specs(ranks))
        elif op == "forward-bad":
            arg = draw(array_specs((0, 1, 2, 6) if spatial else ranks, bad_dtype=True))
        elif op == "backward":
            arg = draw(st.integers(0, 2**32))
        elif op == "backward-wrong":
            arg = draw(shapes(ranks))
        else:
            arg = draw(GOOD["offset"] | BAD["offset"])
        ops.append((op, arg))
    return ctor, tuple(ops)


def _run_layer(cls: Any, ctor: dict[str, Any], ops: tuple[Any, ...]) -> list[Any]:
    """The trace of a layer's life: each step's result or exception."""
    trace: list[Any] = []
    gens: list[np.random.Generator] = []
    kw = {k: _materialize(v, gens) for k, v in ctor.items()}
    with mock.patch("secrets.randbits", return_value=FIXED_OS_SEED):
        try:
            layer = cls(**kw)
        except Exception as e:  # noqa: BLE001 - compared with the reference's
            return [("ctor", type(e), str(e))]
    trace.append(
        (
            "ctor",
            layer.p,
            layer.mode,
            layer.seed,
            layer.offset,
            [g.bit_generator.state for g in gens],
        )
    )
    last_shape: tuple[int, ...] = ()
    for op, arg in ops:
        err: Exception | None = None
        try:
            if op in ("forward", "call", "eval", "forward-bad"):
                x = build(arg, OutSpec(None)).x
                if op in ("forward", "forward-bad"):
                    y = layer.forward(x)
                elif op == "call":
                    y = layer(x, training=True)
                else:
                    y = layer.forward(x, training=False)
                last_shape = y.shape
                trace.append(
                    (
                        op,
                        bits_of(y).tobytes(),
                        y.dtype.str,
                        y.shape,
                        layer.offset,
                        layer.mask,
                    )
                )
            elif op == "backward":
                g = (
                    np.random.default_rng(arg)
                    .standard_normal(last_shape)
                    .astype(np.float32)
                )
                trace.append((op, bits_of(layer.backward(g)).tobytes(), layer.offset))
            elif op == "backward-wrong":
                g = np.ones(arg, np.float32)
                r = layer.backward(g)
                trace.append((op, bits_of(r).tobytes(), r.shape))
            else:
                layer.offset = arg
                trace.append((op, layer.offset))
        except Exception as e:  # noqa: BLE001 - compared with the reference's
            err = e
        if err is not None:
            # RuntimeError: backward() before any forward()
            assert isinstance(err, (*SPEC7, RuntimeError)), err
            trace.append((op, type(err), str(err)))
    return trace


def _compare_traces(nat: list[Any], ref: list[Any]) -> None:
    assert len(nat) == len(ref)
    for a, e in zip(nat, ref):
        note(f"step {e[0]}")
        assert len(a) == len(e)
        for u, v in zip(a, e):
            if isinstance(v, fastdropout.Mask) or v is None:
                assert_same_mask(u, v)
            else:
                assert u == v


@FUZZ
@given(layer_scripts(spatial=False))
def test_fuzz_dropout_layer(script: tuple[Any, ...]) -> None:
    ctor, ops = script
    note(f"Dropout({ctor}), ops={ops}")
    _compare_traces(
        _run_layer(fastdropout.Dropout, ctor, ops),
        _run_layer(reference.Dropout, ctor, ops),
    )


@FUZZ
@given(layer_scripts(spatial=True))
def test_fuzz_spatial_dropout_layer(script: tuple[Any, ...]) -> None:
    ctor, ops = script
    note(f"SpatialDropout({ctor}), ops={ops}")
    _compare_traces(
        _run_layer(fastdropout.SpatialDropout, ctor, ops),
        _run_layer(reference.SpatialDropout, ctor, ops),
    )


THREAD_VALUES = [
    1,
    2,
    3,
    4,
    7,
    64,
    np.int64(2),
    np.uint8(3),
    0,
    -1,
    -(2**31),
    2**31,
    2**63,
    2**64,
    1.0,
    2.5,
    "2",
    None,
    True,
    False,
    np.bool_(True),
    [2],
    np.float32(2),
    decimal.Decimal(2),
    Unhashable(),
]


@FUZZ
@given(
    st.lists(
        st.sampled_from(THREAD_VALUES) | st.integers(-5, 40), min_size=1, max_size=6
    ),
    st.sampled_from([(1000,), (70_001,), (140_003,), (3, 50_000)]),
    st.integers(0, TWO_64 - 1),
)
def test_fuzz_set_num_threads(
    values: list[Any], shape: tuple[int, ...], seed: int
) -> None:
    x = np.random.default_rng(seed % 1000).standard_normal(shape).astype(np.float32)
    expected = reference.dropout(x, 0.3, seed=seed, offset=TWO_64 - 7)
    before = fastdropout.get_num_threads()
    try:
        for v in values:
            current = fastdropout.get_num_threads()
            err: Exception | None = None
            try:
                fastdropout.set_num_threads(v)
            except Exception as e:  # noqa: BLE001 - checked below
                err = e
            is_int = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            cap = fastdropout._core._max_num_threads()
            if err is None:
                assert is_int or v is None
                if is_int:
                    assert 1 <= int(v) <= cap
                    assert fastdropout.get_num_threads() == int(v)
            else:
                assert fastdropout.get_num_threads() == current
                assert type(err) is (ValueError if is_int else TypeError), err
                if is_int:
                    assert not 1 <= int(v) <= cap
            y = fastdropout.dropout(x, 0.3, seed=seed, offset=TWO_64 - 7)
            assert_same(y, expected)
    finally:
        fastdropout.set_num_threads(None)
        assert fastdropout.get_num_threads() == before


# --------------------------------------------------------------------------
# The private core: defence in depth (never a crash, never a partial write)
# --------------------------------------------------------------------------

CORE_INTS = [
    0,
    1,
    5,
    TWO_32 - 1,
    TWO_32,
    TWO_32 + 1,
    TWO_64 - 1,
    TWO_64,
    -1,
    np.uint64(3),
    1.5,
    "1",
    None,
    True,
]


@st.composite
def core_calls(draw: Any) -> tuple[Any, ...]:
    xs = draw(array_specs((0, 1, 2, 3), bad_dtype=draw(st.integers(0, 5)) == 0))
    if xs.layout == "unaligned":  # see test_core_with_unaligned_arrays
        xs = ArraySpec(xs.dtype, xs.shape, "c", xs.steps, xs.data, xs.seed)
    ys = draw(
        st.sampled_from(
            [
                "same-spec",
                "same-spec",
                "fresh",
                "x",
                "x",
                "overlap",
                "readonly",
                "noncontig",
                "other-dtype",
                "other-shape",
            ]
        )
    )
    bits = draw(
        st.sampled_from(
            [
                None,
                None,
                "right",
                "right",
                "right",
                "right",
                "short",
                "long",
                "int8",
                "readonly",
                "noncontig",
                "list",
                "2d",
            ]
        )
    )
    ndim = len(xs.shape)
    axes = draw(
        st.one_of(
            st.just(()),
            st.lists(st.integers(0, max(ndim - 1, 0)), max_size=ndim, unique=True).map(
                lambda a: tuple(sorted(a))
            ),  # what the Python layer passes
            st.lists(st.integers(-2, 4), max_size=4).map(tuple),
            st.sampled_from([(0,), (1,), (0, 2), (1, 0), (0, 0)]),
        )
    )
    good_words = st.integers(0, TWO_64 - 1) | st.sampled_from(
        [0, TWO_64 - 1, np.uint64(3)]
    )
    bad = st.sampled_from(CORE_INTS)
    ints = [
        draw(good_words | bad),
        draw(good_words | bad),
        draw(
            st.integers(0, TWO_32) | st.sampled_from([0, 1, TWO_32 - 1, TWO_32]) | bad
        ),
    ]
    scale = draw(st.sampled_from([1.0, 2.0, 0.0, math.inf, math.nan, -3.0, 1e308]))
    scaled = draw(st.booleans())
    return xs, ys, bits, axes, ints, scale, scaled


def _core_arrays(xs: ArraySpec, ys: str) -> tuple[Any, Any, list[np.ndarray]]:
    built = build(xs, OutSpec(None))
    x = built.x
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    watched = list(built.buffers)
    if ys == "x":
        return x, x, watched
    if ys == "overlap" and x.dtype.kind == "f" and x.flags.c_contiguous and x.size > 1:
        base = np.zeros(x.size * 2, x.dtype)
        base[: x.size] = x.reshape(-1)
        xx = base[: x.size].reshape(x.shape)
        y = base[1 : 1 + x.size].reshape(x.shape)
        return xx, y, [base]
    if ys == "readonly":
        y = np.zeros(x.shape, x.dtype)
        y.flags.writeable = False
    elif ys == "noncontig":
        y = np.zeros((*x.shape, 2), x.dtype)[..., 0]
    elif ys == "other-dtype":
        y = np.zeros(x.shape, np.float64 if x.dtype != np.float64 else np.float32)
    elif ys == "other-shape":
        y = np.zeros((x.size + 1,), x.dtype)
    else:
        y = np.zeros(x.shape, x.dtype)
    watched.append(y)
    return x, y, watched


def _core_bits(kind: Any, x: np.ndarray, axes: tuple[int, ...]) -> Any:
    if kind is None:
        return None
    shape = list(x.shape)
    for a in axes:
        if isinstance(a, int) and 0 <= a < len(shape):
            shape[a] = 1
    nbytes = (math.prod(shape) + 7) // 8
    if kind == "right":
        return np.zeros(nbytes, np.uint8)
    if kind == "short":
        return np.zeros(max(nbytes - 1, 0), np.uint8)
    if kind == "long":
        return np.zeros(nbytes + 1, np.uint8)
    if kind == "int8":
        return np.zeros(nbytes, np.int8)
    if kind == "readonly":
        b = np.zeros(nbytes, np.uint8)
        b.flags.writeable = False
        return b
    if kind == "noncontig":
        return np.zeros(nbytes * 2, np.uint8)[::2]
    if kind == "list":
        return [0] * nbytes
    return np.zeros((nbytes, 1), np.uint8)  # 2d


@FUZZ
@given(core_calls())
def test_fuzz_core_defence(call: tuple[Any, ...]) -> None:
    xs, ys, bits_kind, axes, ints, scale, scaled = call
    note(f"x={xs}, y={ys}, bits={bits_kind}, axes={axes}, ints={ints}, scale={scale}")
    x, y, watched = _core_arrays(xs, ys)
    bits = _core_bits(bits_kind, x, axes)
    seed, offset, threshold = ints
    # Snapshots of every buffer the call could touch.
    if isinstance(y, np.ndarray):
        watched.append(y)
    if isinstance(bits, np.ndarray):
        watched.append(bits)
    x0 = np.array(x)
    before = [w.tobytes() for w in watched]
    ran = False
    try:
        _core.forward(x, y, seed, offset, threshold, scale, scaled, bits, axes)
        ran = True
    except (ValueError, TypeError):
        assert [w.tobytes() for w in watched] == before, "written before an error"
    event(f"forward {'ran' if ran else 'refused'}")
    if ran:
        # Accepted: the mask bits and (for exact scales) the values are right.
        mask_shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape))
        n_mask = math.prod(mask_shape)
        want = reference.mask_bits(
            int(seed), int(offset), n_mask, int(threshold) / TWO_32
        )
        if isinstance(bits, np.ndarray):
            np.testing.assert_array_equal(bits.reshape(-1), want)
        if not axes and scale in (0.0, 1.0, 2.0, -3.0):
            keep = np.unpackbits(want, count=n_mask, bitorder="little").astype(bool)
            with np.errstate(all="ignore"):
                v = x0 * x0.dtype.type(scale) if scaled else x0
                expected = np.where(keep.reshape(x0.shape), v, x0.dtype.type(0))
            assert_same(y, expected.astype(x0.dtype))
    try:
        b = bits if isinstance(bits, np.ndarray) else np.zeros(0, np.uint8)
        before = [w.tobytes() for w in watched]
        _core.backward_mask(x, y, b, scale, scaled, axes)
    except (ValueError, TypeError):
        assert [w.tobytes() for w in watched] == before, "written before an error"


def _unaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)
    u = np.ndarray(a.shape, a.dtype, raw.data, offset=1)
    u[...] = a
    return u


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
@pytest.mark.parametrize("which", ["x", "y", "both"])
def test_core_with_unaligned_arrays(dtype: str, which: str) -> None:
    """C-contiguous but unaligned arrays handed to the private core (the Python
    layer never does: it copies through an aligned temporary). The core must
    refuse them (ValueError) or handle them; under UBSan a misaligned load or
    store in a kernel is a report, i.e. undefined behaviour (STYLE 5: the core
    re-checks what it relies on)."""
    n = 1000
    x = np.random.default_rng(1).standard_normal(n).astype(dtype)
    want = reference.dropout(x, 0.5, seed=1)
    for call in ("forward", "backward_mask"):
        xa = _unaligned(x) if which in ("x", "both") else x.copy()
        y = np.full(n, 7.0, dtype)
        ya = _unaligned(y) if which in ("y", "both") else y
        try:
            if call == "forward":
                _core.forward(xa, ya, 1, 0, TWO_32 // 2, 2.0, True, None, ())
            else:
                mask_bits = reference.mask_bits(1, 0, n, 0.5)
                _core.backward_mask(xa, ya, mask_bits, 2.0, True, ())
        except ValueError:
            assert_same(ya, np.full(n, 7.0, dtype), "out after a refusal")
        else:
            assert_same(np.array(ya), want, call)


@FUZZ
@given(
    st.sampled_from(CORE_INTS) | st.integers(0, TWO_64 - 1),
    st.sampled_from(CORE_INTS) | st.integers(0, TWO_32 - 1),
    st.sampled_from([0, 1, 3, 4, 5, 63, 64, 65, 1000, -1, -(2**62)]),
)
def test_fuzz_core_philox_blocks(k0: Any, first: Any, n: int) -> None:
    try:
        words = _core._philox_blocks(k0, 0, first, 0, 0, n)
    except (ValueError, TypeError, OverflowError):
        return
    assert words.dtype == np.uint32
    assert words.shape == (4 * n,)
    if n:
        expected = reference.philox(
            (
                (int(first) + np.arange(n, dtype=object)) % TWO_64 % TWO_32,
                (int(first) + np.arange(n, dtype=object)) % TWO_64 // TWO_32,
                0,
                0,
            ),
            (int(k0), 0),
        )
        np.testing.assert_array_equal(words, expected.reshape(-1))


# --------------------------------------------------------------------------
# bfloat16, alpha dropout and dropout_add (docs/spec.md sections 8-10)
# --------------------------------------------------------------------------

needs_bf16 = pytest.mark.skipif(BF16 is None, reason="ml_dtypes is not installed")


@needs_bf16
@FUZZ
@given(forward_calls(spatial=False, dtypes=("bfloat16", "bfloat16", "<f2")))
def test_fuzz_dropout_bfloat16(call: tuple[Any, ...]) -> None:
    _check_forward(call, spatial=False)


@needs_bf16
@FUZZ
@given(forward_calls(spatial=True, dtypes=("bfloat16",)))
def test_fuzz_spatial_dropout_bfloat16(call: tuple[Any, ...]) -> None:
    _check_forward(call, spatial=True)


FUSED_P = [0.0, 0.1, 0.5, 0.9, 1 - 2.0**-30, 1 - 2.0**-40, 1.0, 1.5, -0.0, math.nan, "0.5"]


def _fused_kwargs(draw: Any, ndim: int, alpha: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        kwargs["seed"] = draw(st.sampled_from([0, 1, TWO_64 - 1, 12345, None, -1, 1.5]))
    if draw(st.booleans()):
        kwargs["offset"] = draw(st.sampled_from([0, 3, TWO_64 - 1, TWO_64 - 70, TWO_64]))
    if draw(st.integers(0, 3)) == 0:
        kwargs["training"] = draw(st.sampled_from([True, False, 0, "yes"]))
    if not alpha and draw(st.booleans()):
        kwargs["mode"] = draw(st.sampled_from(["inverted", "classic", "alpha", 3]))
    if draw(st.booleans()):
        kwargs["return_mask"] = draw(st.booleans())
    if draw(st.booleans()):
        kwargs["broadcast_axes"] = draw(axes_st(ndim, draw(st.integers(0, 9)) == 0))
    return kwargs


def _finite(shape: tuple[int, ...], dtype: Any, seed: int) -> np.ndarray:
    """Finite values: with NaNs only in x, no addition ever has two NaN operands
    (which of two NaNs it returns is not fixed; see tests/test_dropout_add.py)."""
    v = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)
    return np.asarray(v).astype(dtype)


@st.composite
def alpha_calls(draw: Any) -> tuple[Any, ...]:
    spec = draw(array_specs(bad_dtype=draw(st.integers(0, 14)) == 0, dtypes=FUSED_DTYPES))
    out = draw(out_specs(spec, draw(st.integers(0, 9)) == 0))
    if out.kind == "byteswapped" and spec.dtype == "bfloat16":
        out = OutSpec("wrong_dtype")
    p = draw(st.sampled_from(FUSED_P))
    return spec, out, p, _fused_kwargs(draw, len(spec.shape), True), draw(simd_st), draw(
        threads_st)


@FUZZ
@given(alpha_calls())
def test_fuzz_alpha_dropout(call: tuple[Any, ...]) -> None:
    spec, out, p, kwargs, simd, threads = call
    note(f"x={spec}, out={out}, p={p!r}, kwargs={kwargs}, simd={simd}, threads={threads}")
    with kernels(simd, threads):
        nat = run(fastdropout.alpha_dropout, spec, out, (p,), kwargs)
    ref = run(reference.alpha_dropout, spec, out, (p,), kwargs)
    compare(nat, ref)


RESIDUALS = ["c", "c", "c", "strided", "out", "wrong_dtype", "wrong_shape", "list"]
BIASES = [None, None, "trailing", "trailing", "scalar", "all", "wrong_shape", "wrong_dtype"]


@st.composite
def add_calls(draw: Any) -> tuple[Any, ...]:
    spec = draw(array_specs(bad_dtype=draw(st.integers(0, 14)) == 0, dtypes=FUSED_DTYPES))
    out = draw(out_specs(spec, draw(st.integers(0, 9)) == 0))
    if out.kind == "byteswapped" and spec.dtype == "bfloat16":
        out = OutSpec("wrong_dtype")
    res = draw(st.sampled_from(RESIDUALS))
    bias = draw(st.sampled_from(BIASES))
    nb = draw(st.integers(0, len(spec.shape)))
    p = draw(st.sampled_from(FUSED_P))
    kwargs = _fused_kwargs(draw, len(spec.shape), False)
    return spec, out, res, bias, nb, p, kwargs, draw(simd_st), draw(threads_st)


def _add_operands(res: str, bias: str | None, nb: int, seed: int) -> Callable[[Built], Any]:
    """residual= and bias= for a built x (and out=residual), deterministically."""

    def extra(built: Built) -> dict[str, Any]:
        xa = np.asarray(built.x)
        shape = xa.shape
        dt = xa.dtype if xa.dtype.kind == "f" or xa.dtype == BF16 else np.dtype(np.float32)
        kw: dict[str, Any] = {}
        if res == "strided":
            big = _finite((*shape, 2), dt, seed)
            built.buffers.append(big)
            kw["residual"] = big[..., 1]
        elif res == "wrong_dtype":
            kw["residual"] = _finite(shape, np.float64 if dt != np.float64 else np.float32,
                                     seed)
        elif res == "wrong_shape":
            kw["residual"] = _finite((*shape, 1), dt, seed)
        elif res == "list":
            kw["residual"] = _finite(shape, np.float64, seed).tolist()
        else:
            r = _finite(shape, dt, seed)
            built.buffers.append(r)
            kw["residual"] = r
            if res == "out":
                kw["out"] = r
        if bias == "trailing":
            kw["bias"] = _finite(shape[len(shape) - nb :], dt, seed + 1)
        elif bias == "scalar":
            kw["bias"] = _finite((), dt, seed + 1)
        elif bias == "all":
            kw["bias"] = _finite(shape, dt, seed + 1)
        elif bias == "wrong_shape":
            kw["bias"] = _finite((*shape[len(shape) - nb :], 2), dt, seed + 1)
        elif bias == "wrong_dtype":
            kw["bias"] = _finite(shape[len(shape) - nb :], np.float16, seed + 1)
        for v in kw.values():
            if isinstance(v, np.ndarray) and not any(v is b for b in built.buffers):
                built.buffers.append(v)
        return kw

    return extra


@FUZZ
@given(add_calls())
def test_fuzz_dropout_add(call: tuple[Any, ...]) -> None:
    spec, out, res, bias, nb, p, kwargs, simd, threads = call
    note(f"x={spec}, out={out}, residual={res}, bias={bias}/{nb}, p={p!r}, "
         f"kwargs={kwargs}, simd={simd}, threads={threads}")
    extra = _add_operands(res, bias, nb, spec.seed)
    with kernels(simd, threads):
        nat = run(fastdropout.dropout_add, spec, out, (), {**kwargs, "p": p}, extra)
    ref = run(reference.dropout_add, spec, out, (), {**kwargs, "p": p}, extra)
    compare(nat, ref)


@st.composite
def add_backward_calls(draw: Any) -> tuple[Any, ...]:
    spec = draw(array_specs(dtypes=FUSED_DTYPES))
    nb = draw(st.integers(0, len(spec.shape)))
    bias = draw(st.sampled_from([True, True, "shape", "shape", False, "wrong", "bad"]))
    how = draw(st.sampled_from(["mask", "mask", "regen", "alpha-mask", "alpha-regen"]))
    p = draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]))
    mode = draw(st.sampled_from(["inverted", "classic"]))
    axes = draw(axes_st(len(spec.shape), False)) if draw(st.booleans()) else None
    return spec, nb, bias, how, p, mode, axes, draw(simd_st), draw(threads_st)


@FUZZ
@given(add_backward_calls())
def test_fuzz_dropout_add_backward(call: tuple[Any, ...]) -> None:
    spec, nb, bias, how, p, mode, axes, simd, threads = call
    note(f"g={spec}, bias={bias}/{nb}, how={how}, p={p}, mode={mode}, axes={axes}")
    g = build(spec, OutSpec(None)).x
    shape = np.shape(g)
    barg: Any = {"shape": shape[len(shape) - nb :], "wrong": (*shape, 3), "bad": "yes"}.get(
        bias, bias)  # type: ignore[call-overload]
    kw: dict[str, Any] = {"bias": barg}
    alpha = how.startswith("alpha")
    if alpha and p == 1.0:
        p = 0.5
    if how.endswith("mask"):
        x = np.zeros(shape, np.asarray(g).dtype)
        if alpha:
            _, m = reference.alpha_dropout(x, p, seed=7, broadcast_axes=axes, return_mask=True)
        else:
            _, m = reference.dropout(x, p, mode=mode, seed=7, broadcast_axes=axes,
                                     return_mask=True)
        args: tuple[Any, ...] = (m,)
    else:
        args = ()
        kw.update(p=p, seed=7, offset=TWO_64 - 3, broadcast_axes=axes,
                  mode="alpha" if alpha else mode)
    outcomes = []
    for impl, ctx in ((fastdropout, kernels(simd, threads)), (reference, contextlib.nullcontext())):
        with ctx:
            try:
                outcomes.append(impl.dropout_add_backward(g, *args, **kw))
            except SPEC7 as e:
                outcomes.append(e)
    nat, ref = outcomes
    if isinstance(ref, Exception) or isinstance(nat, Exception):
        assert type(nat) is type(ref), (nat, ref)
        assert str(nat) == str(ref)
        return
    assert_same(nat[0], ref[0])
    assert nat[1] is g
    assert ref[1] is g
    if ref[2] is None:
        assert nat[2] is None
        return
    e = np.asarray(ref[2]).reshape(-1)
    a = np.asarray(nat[2]).reshape(-1)
    nan = np.isnan(e.astype(np.float64)) if e.dtype != BF16 else np.isnan(
        e.astype(np.float32))
    assert a.shape == e.shape
    assert a.dtype == e.dtype
    assert_same(a[~nan], e[~nan])  # a NaN sum (NaN + NaN) need only be a NaN
    an = np.isnan(a.astype(np.float32)) if a.dtype == BF16 else np.isnan(a.astype(np.float64))
    assert np.array_equal(an, nan)
