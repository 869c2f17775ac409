"""Bad input gets a clear error and nothing is written (SPEC section 7).

Each case runs against the native package and the reference: same exception
type, a message naming the culprit, ``out`` and the input untouched, and (with
the core built) the very same message from both.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import pytest
from _util import TWO_64, assert_same, make_input, reference

SENTINEL = 7.25


class Env:
    """The arrays one case works on; ``out`` arrays are pre-filled."""

    def __init__(self, impl: Any) -> None:
        self.impl = impl
        self.x = make_input((4, 6), np.float32, seed=1)
        self.x4 = make_input((2, 3, 4, 5), np.float32, seed=2)
        self.out = np.full((4, 6), SENTINEL, np.float32)
        self.out4 = np.full((2, 3, 4, 5), SENTINEL, np.float32)
        self.big = np.full((4, 12), SENTINEL, np.float32)  # parent of a strided out
        self.watched = [self.x, self.x4, self.out, self.out4, self.big]
        self.before = [a.copy() for a in self.watched]

    def mask(self, shape: tuple[int, ...] = (4, 6), **kw: Any) -> Any:
        x = np.ones(shape, np.float32)
        return self.impl.dropout(x, 0.5, seed=3, return_mask=True, **kw)[1]

    def check_untouched(self) -> None:
        for a, b in zip(self.watched, self.before):
            assert_same(a, b)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


Case = tuple[str, Callable[[Env], Any], type[Exception], str]

_P_BAD: list[tuple[str, Any, str, type[Exception]]] = [
    ("negative", -0.1, r"-0\.1", ValueError),
    ("above-1", 1.5, r"1\.5", ValueError),
    ("nan", math.nan, "nan", ValueError),
    ("inf", math.inf, "inf", ValueError),
    ("huge-int", 10**400, "1000", ValueError),
    ("tiny-negative", -(2.0**-1074), "e-324", ValueError),
    # not a real scalar: TypeError (issue 11; NumPy's rule for scalars)
    ("str", "0.5", "'0.5'", TypeError),
    ("none", None, "None", TypeError),
    ("complex", 0.5j, r"0\.5j", TypeError),
    ("bool", True, "True", TypeError),
    ("array", np.array([0.5]), "array", TypeError),
]

CASES: list[Case] = []

# Row 1: p outside [0, 1] or NaN -> ValueError naming p and the value; not a real
# number -> TypeError naming p and the value
for name, bad, shown, exc in _P_BAD:
    CASES += [
        (
            f"p-{name}",
            lambda e, bad=bad: e.impl.dropout(e.x, bad, out=e.out),
            exc,
            rf"\bp\b.*{shown}",
        ),
    ]
CASES += [
    (
        "p-eval",
        lambda e: e.impl.dropout(e.x, 2.0, training=False, out=e.out),
        ValueError,
        r"\bp\b.*2\.0",
    ),
    (
        "p-spatial",
        lambda e: e.impl.spatial_dropout(e.x4, -1.0, out=e.out4),
        ValueError,
        r"\bp\b.*-1\.0",
    ),
    (
        "p-backward",
        lambda e: e.impl.dropout_backward(e.x, p=1.01, seed=1, out=e.out),
        ValueError,
        r"\bp\b.*1\.01",
    ),
    (
        "p-backward-nan",
        lambda e: e.impl.dropout_backward(e.x, p=math.nan, seed=1, out=e.out),
        ValueError,
        r"\bp\b.*nan",
    ),
]

# Row 2: integer, bool, complex, object arrays -> TypeError naming the dtype and
# the dtypes taken
_BAD_DTYPES: list[tuple[str, Callable[[], Any], str]] = [
    ("int32", lambda: np.arange(24, dtype=np.int32).reshape(4, 6), "int32"),
    ("int64", lambda: np.arange(24).reshape(4, 6), "int64"),
    ("uint8", lambda: np.zeros((4, 6), np.uint8), "uint8"),
    ("bool", lambda: np.zeros((4, 6), bool), "bool"),
    ("complex64", lambda: np.zeros((4, 6), np.complex64), "complex64"),
    ("complex128", lambda: np.zeros((4, 6), np.complex128), "complex128"),
    ("object", lambda: np.zeros((4, 6), object), "object"),
    ("str", lambda: np.full((4, 6), "a"), "<U1"),
    ("bytes", lambda: np.full((4, 6), b"a"), "S1"),
    ("big-endian", lambda: np.zeros((4, 6), ">f4"), ">f4"),
    ("datetime", lambda: np.zeros((4, 6), "datetime64[s]"), "datetime64"),
    ("int-list", lambda: [[1, 2, 3, 4, 5, 6]] * 4, "int64"),
    ("ragged", lambda: [[1.0], [1.0, 2.0]], "convert"),
    ("none", lambda: None, "object"),
]
if np.dtype(np.longdouble) != np.dtype(np.float64):
    _BAD_DTYPES.append(
        ("longdouble", lambda: np.zeros((4, 6), np.longdouble), "float128")
    )
for name, make, shown in _BAD_DTYPES:
    CASES += [
        (
            f"dtype-{name}",
            lambda e, make=make: e.impl.dropout(make(), 0.5, out=e.out),
            TypeError,
            rf"{shown}.*float16, float32 or float64",
        ),
        (
            f"dtype-{name}-eval",
            lambda e, make=make: e.impl.dropout(make(), 0.5, training=False, out=e.out),
            TypeError,
            rf"{shown}.*float16, float32 or float64",
        ),
        (
            f"dtype-{name}-backward",
            lambda e, make=make: e.impl.dropout_backward(
                make(), p=0.5, seed=1, out=e.out
            ),
            TypeError,
            rf"grad_y.*{shown}.*float16, float32 or float64",
        ),
    ]

# Row 3: seed/offset negative, >= 2**64 or not an integer
for what in ("seed", "offset"):
    for name, bad, exc, shown in [
        ("negative", -1, ValueError, "-1"),
        ("2^64", TWO_64, ValueError, str(TWO_64)),
        ("huge", 10**30, ValueError, str(10**30)),
        ("float", 1.0, TypeError, r"1\.0"),
        ("np-float", np.float64(3.0), TypeError, r"3\.0"),
        ("str", "3", TypeError, "'3'"),
        ("bool", True, TypeError, "True"),
        ("list", [1], TypeError, r"\[1\]"),
    ]:
        CASES.append(
            (
                f"{what}-{name}",
                lambda e, what=what, bad=bad: e.impl.dropout(
                    e.x, 0.5, out=e.out, **{what: bad}
                ),
                exc,
                rf"{what}.*{shown}",
            )
        )
    CASES.append(
        (
            f"{what}-backward",
            lambda e, what=what: e.impl.dropout_backward(
                e.x,
                p=0.5,
                out=e.out,
                **({"seed": 1, "offset": -5} if what == "offset" else {"seed": -5}),
            ),
            ValueError,
            rf"{what}.*-5",
        )
    )
    CASES.append(
        (
            f"{what}-eval",
            lambda e, what=what: e.impl.dropout(
                e.x, 0.5, training=False, out=e.out, **{what: TWO_64}
            ),
            ValueError,
            rf"{what}.*{TWO_64}",
        )
    )
CASES += [
    (
        "seed-random-state",
        lambda e: e.impl.dropout(e.x, 0.5, seed=np.random.RandomState(0), out=e.out),
        TypeError,
        "seed.*Generator",
    ),
    (
        "offset-spatial",
        lambda e: e.impl.spatial_dropout(e.x4, 0.5, offset=-1, out=e.out4),
        ValueError,
        "offset.*-1",
    ),
]

# Row 4: mode or data_format not one of the names -> ValueError listing the names
for name, bad in [("typo", "invert"), ("case", "Inverted"), ("none", None), ("int", 1)]:
    CASES += [
        (
            f"mode-{name}",
            lambda e, bad=bad: e.impl.dropout(e.x, 0.5, mode=bad, out=e.out),
            ValueError,
            "mode.*'inverted', 'classic'",
        ),
        (
            f"mode-{name}-backward",
            lambda e, bad=bad: e.impl.dropout_backward(
                e.x, p=0.5, seed=1, mode=bad, out=e.out
            ),
            ValueError,
            "mode.*'inverted', 'classic'",
        ),
    ]
for name, bad in [("nchw", "NCHW"), ("typo", "channel_first"), ("none", None)]:
    CASES.append(
        (
            f"data-format-{name}",
            lambda e, bad=bad: e.impl.spatial_dropout(
                e.x4, 0.5, data_format=bad, out=e.out4
            ),
            ValueError,
            "data_format.*'channels_first', 'channels_last'",
        )
    )

# Row 5: out of wrong shape/dtype, read-only, non-contiguous -> ValueError
_OUTS: list[tuple[str, Callable[[Env], Any], str]] = [
    ("shape", lambda e: e.out.reshape(6, 4), "shape"),
    ("shape-flat", lambda e: e.out.reshape(-1), "shape"),
    ("dtype", lambda e: e.out.view(np.int32), "dtype"),
    ("dtype-float64", lambda e: e.big.view(np.float64), "dtype"),
    ("read-only", lambda e: _readonly(e.out), "read-only"),
    ("strided", lambda e: e.big[:, ::2], "C-contiguous"),
    ("row-slice", lambda e: e.big[:, :6], "C-contiguous"),
    ("fortran", lambda e: np.asfortranarray(e.out), "C-contiguous"),
]
for name, make_out, shown in _OUTS:
    CASES += [
        (
            f"out-{name}",
            lambda e, m=make_out: e.impl.dropout(e.x, 0.5, seed=1, out=m(e)),
            ValueError,
            rf"\bout\b.*{shown}",
        ),
        (
            f"out-{name}-eval",
            lambda e, m=make_out: e.impl.dropout(e.x, 0.5, training=False, out=m(e)),
            ValueError,
            rf"\bout\b.*{shown}",
        ),
        (
            f"out-{name}-backward",
            lambda e, m=make_out: e.impl.dropout_backward(e.x, e.mask(), out=m(e)),
            ValueError,
            rf"\bout\b.*{shown}",
        ),
        (
            f"out-{name}-regen",
            lambda e, m=make_out: e.impl.dropout_backward(e.x, p=0.5, seed=1, out=m(e)),
            ValueError,
            rf"\bout\b.*{shown}",
        ),
    ]
CASES += [
    (
        "out-list",
        lambda e: e.impl.dropout(e.x, 0.5, out=[0.0] * 24),
        TypeError,
        r"\bout\b",
    ),
    (
        "out-spatial",
        lambda e: e.impl.spatial_dropout(e.x4, 0.5, out=e.out),
        ValueError,
        r"\bout\b.*shape",
    ),
]

# Row 6: mask whose shape does not fit grad_y -> ValueError
CASES += [
    (
        "mask-shape",
        lambda e: e.impl.dropout_backward(e.x, e.mask((4, 5)), out=e.out),
        ValueError,
        r"mask.*\(4, 5\)",
    ),
    (
        "mask-rank",
        lambda e: e.impl.dropout_backward(e.x, e.mask((24,)), out=e.out),
        ValueError,
        r"mask.*\(24,\)",
    ),
    (
        "mask-rank-2",
        lambda e: e.impl.dropout_backward(e.x, e.mask((1, 4, 6)), out=e.out),
        ValueError,
        "mask",
    ),
    (
        "mask-not-broadcastable",
        lambda e: e.impl.dropout_backward(e.x, e.mask((2, 6)), out=e.out),
        ValueError,
        r"mask.*\(2, 6\)",
    ),
    (
        "mask-spatial-transposed",
        lambda e: e.impl.dropout_backward(
            e.x4,
            e.impl.spatial_dropout(
                np.ones((2, 4, 5, 3), np.float32),
                0.5,
                seed=1,
                data_format="channels_last",
                return_mask=True,
            )[1],
            out=e.out4,
        ),
        ValueError,
        "mask",
    ),
    (
        "mask-p-conflict",
        lambda e: e.impl.dropout_backward(e.x, e.mask(), 0.25, out=e.out),
        ValueError,
        r"\bp\b",
    ),
    (
        "mask-mode-conflict",
        lambda e: e.impl.dropout_backward(e.x, e.mask(), mode="classic", out=e.out),
        ValueError,
        "mode",
    ),
    (
        "mask-and-seed",
        lambda e: e.impl.dropout_backward(e.x, e.mask(), seed=3, out=e.out),
        ValueError,
        "mask.*seed",
    ),
    (
        "mask-and-offset",
        lambda e: e.impl.dropout_backward(e.x, e.mask(), offset=3, out=e.out),
        ValueError,
        "mask.*offset",
    ),
    (
        "mask-and-axes",
        lambda e: e.impl.dropout_backward(e.x, e.mask(), broadcast_axes=0, out=e.out),
        ValueError,
        "mask.*broadcast_axes",
    ),
    (
        "mask-not-a-mask",
        lambda e: e.impl.dropout_backward(e.x, np.ones((4, 6), bool), out=e.out),
        TypeError,
        "mask",
    ),
]

# Row 7: dropout_backward with neither a mask nor p and seed -> ValueError
CASES += [
    (
        "backward-nothing",
        lambda e: e.impl.dropout_backward(e.x, out=e.out),
        ValueError,
        "mask.*p.*seed",
    ),
    (
        "backward-p-only",
        lambda e: e.impl.dropout_backward(e.x, p=0.5, out=e.out),
        ValueError,
        "seed",
    ),
    (
        "backward-seed-only",
        lambda e: e.impl.dropout_backward(e.x, seed=1, out=e.out),
        ValueError,
        r"\bp\b",
    ),
    (
        "backward-generator",
        lambda e: e.impl.dropout_backward(
            e.x, p=0.5, seed=np.random.default_rng(1), out=e.out
        ),
        TypeError,
        "Generator",
    ),
]

# SPEC 4: broadcast axes repeated or out of range -> ValueError; spatial ranks
CASES += [
    (
        "axes-repeated",
        lambda e: e.impl.dropout(e.x, 0.5, broadcast_axes=(0, 0), out=e.out),
        ValueError,
        "broadcast_axes.*repeated",
    ),
    (
        "axes-repeated-negative",
        lambda e: e.impl.dropout(e.x, 0.5, broadcast_axes=(1, -1), out=e.out),
        ValueError,
        "broadcast_axes.*repeated",
    ),
    (
        "axes-out-of-range",
        lambda e: e.impl.dropout(e.x, 0.5, broadcast_axes=2, out=e.out),
        ValueError,
        "broadcast_axes.*2.*rank 2",
    ),
    (
        "axes-negative-out-of-range",
        lambda e: e.impl.dropout(e.x, 0.5, broadcast_axes=(-3,), out=e.out),
        ValueError,
        "broadcast_axes.*-3",
    ),
    (
        "axes-0d",
        lambda e: e.impl.dropout(np.float32(1), 0.5, broadcast_axes=0),
        ValueError,
        "broadcast_axes.*rank 0",
    ),
    (
        "axes-float",
        lambda e: e.impl.dropout(e.x, 0.5, broadcast_axes=0.5, out=e.out),
        TypeError,
        "broadcast_axes",
    ),
    (
        "axes-bool",
        lambda e: e.impl.dropout(e.x, 0.5, broadcast_axes=(True,), out=e.out),
        TypeError,
        "broadcast_axes",
    ),
    (
        "axes-backward",
        lambda e: e.impl.dropout_backward(
            e.x, p=0.5, seed=1, broadcast_axes=5, out=e.out
        ),
        ValueError,
        "broadcast_axes",
    ),
    (
        "axes-eval",
        lambda e: e.impl.dropout(e.x, 0.5, training=False, broadcast_axes=9, out=e.out),
        ValueError,
        "broadcast_axes",
    ),
    (
        "spatial-rank-2",
        lambda e: e.impl.spatial_dropout(e.x, 0.5, out=e.out),
        ValueError,
        "3, 4 or 5.*rank 2",
    ),
    (
        "spatial-rank-6",
        lambda e: e.impl.spatial_dropout(np.ones((1,) * 6, np.float32), 0.5),
        ValueError,
        "3, 4 or 5.*rank 6",
    ),
    (
        "spatial-rank-0",
        lambda e: e.impl.spatial_dropout(np.float32(1), 0.5),
        ValueError,
        "3, 4 or 5.*rank 0",
    ),
    (
        "training-str",
        lambda e: e.impl.dropout(e.x, 0.5, training="yes", out=e.out),
        TypeError,
        "training",
    ),
    (
        "return-mask-none",
        lambda e: e.impl.dropout(e.x, 0.5, return_mask=None, out=e.out),
        TypeError,
        "return_mask",
    ),
]

IDS = [c[0] for c in CASES]
assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize(("name", "call", "exc", "match"), CASES, ids=IDS)
def test_error(
    impl: Any, name: str, call: Callable[[Env], Any], exc: type[Exception], match: str
) -> None:
    del name
    env = Env(impl)
    with pytest.raises(exc, match=match):
        call(env)
    env.check_untouched()


@pytest.mark.parametrize(("name", "call", "exc", "match"), CASES, ids=IDS)
def test_native_and_reference_say_the_same(
    native: Any, name: str, call: Callable[[Env], Any], exc: type[Exception], match: str
) -> None:
    del name, match
    messages = []
    for impl in (native, reference):
        with pytest.raises(exc) as info:
            call(Env(impl))
        # a repr may name an object's address, which differs between the two calls
        messages.append(re.sub(r" at 0x[0-9A-Fa-f]+", " at 0x...", str(info.value)))
    assert messages[0] == messages[1]


def test_error_leaves_generator_untouched(impl: Any) -> None:
    """A call that fails validation does not draw from the seed Generator."""
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    with pytest.raises(ValueError, match="out"):
        impl.dropout(np.ones(4), 0.5, seed=rng, out=np.ones(5))
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (0, 0, 5)], ids=str)
def test_zero_d_and_empty_work(impl: Any, dtype: Any, shape: tuple[int, ...]) -> None:
    x = np.full(shape, 1.5, dtype)
    y, m = impl.dropout(x, 0.5, seed=1, return_mask=True)
    assert y.shape == shape
    assert y.dtype == dtype
    assert m.shape == shape
    assert m.size == x.size
    assert m.bits.shape == ((x.size + 7) // 8,)
    assert_same(impl.dropout_backward(x, m), y)
    assert_same(impl.dropout_backward(x, p=0.5, seed=1), y)
    assert impl.dropout(x, 0.5, training=False).shape == shape
    if x.ndim:
        y2, m2 = impl.dropout(x, 0.5, seed=1, broadcast_axes=0, return_mask=True)
        assert y2.shape == shape
        assert m2.shape == (1, *shape[1:])
    if x.ndim == 3:
        assert impl.spatial_dropout(x, 0.5, seed=1).shape == shape


def test_python_scalars_and_lists(impl: Any) -> None:
    y = impl.dropout(2.5, 0.0, seed=1)
    assert isinstance(y, np.ndarray)
    assert y.shape == ()
    assert y.dtype == np.float64
    assert float(y) == 2.5
    y = impl.dropout([1.0, 2.0], 1.0, seed=1)
    assert_same(y, np.zeros(2))
