"""The C++ fast paths (``_core.dense``, ``_core.spatial``, ``_core.backward``):
which calls they take, that they agree with the reference bit for bit (their
threshold and scale are computed in C++, not by ``_validate``), and that a call
they decline writes nothing and raises nothing, leaving the general path to
validate."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference

pytestmark = pytest.mark.usefixtures("core_module")

DTYPES = (np.float16, np.float32, np.float64)


def dense(
    core: Any,
    x: Any,
    p: Any = 0.3,
    mode: Any = "inverted",
    seed: Any = 5,
    offset: Any = 0,
    out: Any = None,
    return_mask: Any = False,
) -> Any:
    return core.dense(x, p, mode, seed, offset, out, return_mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(), (0,), (1,), (63,), (65,), (3, 5, 7), (2, 0, 3), (4097,)]
)
def test_plain_calls_match_reference(core_module: Any, dtype: Any, shape: Any) -> None:
    x = make_input(shape, dtype, seed=3)
    for mode in ("inverted", "classic"):
        yr, mr = reference.dropout(
            x, 0.3, mode=mode, seed=11, offset=7, return_mask=True
        )
        y = dense(core_module, x, 0.3, mode, 11, 7)
        assert isinstance(y, np.ndarray)
        assert (y.shape, y.dtype) == (x.shape, x.dtype)
        assert y.flags.c_contiguous
        assert y.flags.owndata
        assert_same(y, yr)
        y2, bits = dense(core_module, x, 0.3, mode, 11, 7, return_mask=True)
        assert_same(y2, yr)
        assert (bits.dtype, bits.shape) == (np.uint8, ((x.size + 7) // 8,))
        np.testing.assert_array_equal(bits, mr.bits)


def _probabilities(rng: np.random.Generator) -> list[float]:
    ps = [0.0, 1.0, 0.5, 0.1, 0.9, 2.0**-40, 1 - 2.0**-30, 1 - 2.0**-33, 1 - 2.0**-53]
    # float16 overflow edge: 1 / (1 - p) around 65504 .. 65520
    ps += [1 - 1 / 65504.0, 1 - 1 / 65519.9, 1 - 1 / 65520.0, 1 - 1 / 65521.0]
    # ties and near-ties of the float16/float32 roundings of 1 / (1 - p)
    for s in (1 + 2.0**-11, 1 + 3 * 2.0**-11, 2 + 2.0**-10, 1 + 2.0**-24, 3 + 2.0**-22):
        for d in (-1e-15, 0.0, 1e-15):
            ps.append(1 - 1 / (s + d))
    ps += [float(v) for v in rng.random(200)]
    return [p for p in ps if 0.0 <= p <= 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_and_scale_match_reference(core_module: Any, dtype: Any) -> None:
    """Every p: the C++ threshold and dtype-rounded scale give the reference's bits.
    x holds 1.0, so a kept element *is* the scale."""
    rng = np.random.default_rng(2024)
    x = np.ones(256, dtype)
    for p in _probabilities(rng):
        if dtype is np.float16 and p < 1 and 1 / (1 - p) >= 65520:
            # float16 scale overflow (docs/spec.md section 8): an error on the general path
            with pytest.raises(ValueError, match="overflows to inf"):
                reference.dropout(x, p, seed=9)
            assert dense(core_module, x, p, "inverted", 9, 0, return_mask=True) is None
            continue
        yr, mr = reference.dropout(x, p, seed=9, return_mask=True)
        y, bits = dense(core_module, x, p, "inverted", 9, 0, return_mask=True)
        assert_same(y, yr)
        np.testing.assert_array_equal(bits, mr.bits, err_msg=f"p={p!r}")


def test_out_in_place_and_disjoint(core_module: Any) -> None:
    x = make_input((5, 13), np.float32, seed=1)
    yr = reference.dropout(x, 0.4, seed=2)
    out = np.full_like(x, 7.0)
    assert dense(core_module, x, 0.4, seed=2, out=out) is out
    assert_same(out, yr)
    xin = x.copy()
    assert dense(core_module, xin, 0.4, seed=2, out=xin) is xin
    assert_same(xin, yr)


class Sub(np.ndarray):
    pass


def _declined_cases() -> list[tuple[str, dict[str, Any]]]:
    x = np.linspace(-2.0, 3.0, 24, dtype=np.float32).reshape(4, 6)
    return [
        ("list input", {"x": x.tolist()}),
        ("ndarray subclass", {"x": x.view(Sub)}),
        ("strided input", {"x": x[:, ::2]}),
        ("Fortran input", {"x": np.asfortranarray(x)}),
        ("int input", {"x": x.astype(np.int32)}),
        ("float128 or complex input", {"x": x.astype(np.complex64)}),
        ("byte-swapped input", {"x": x.astype(x.dtype.newbyteorder())}),
        (
            "unaligned input",
            {"x": np.frombuffer(b"\0" + x.tobytes(), np.float32, 24, 1)},
        ),
        ("int p", {"p": 0}),
        ("numpy float p", {"p": np.float64(0.5)}),
        ("negative p", {"p": -0.1}),
        ("p > 1", {"p": 1.5}),
        ("nan p", {"p": float("nan")}),
        ("unknown mode", {"mode": "INVERTED"}),
        ("str subclass mode", {"mode": type("S", (str,), {})("classic")}),
        ("bytes mode", {"mode": b"classic"}),
        ("negative seed", {"seed": -1}),
        ("seed 2**64", {"seed": TWO_64}),
        ("bool seed", {"seed": True}),
        ("numpy int seed", {"seed": np.uint64(3)}),
        ("None seed", {"seed": None}),
        ("generator seed", {"seed": np.random.default_rng(0)}),
        ("negative offset", {"offset": -1}),
        ("offset 2**64", {"offset": TWO_64}),
        ("float offset", {"offset": 1.0}),
        ("return_mask 1", {"return_mask": 1}),
        ("return_mask np.True_", {"return_mask": np.True_}),
        ("out of other dtype", {"out": np.zeros((4, 6), np.float64)}),
        ("out of other shape", {"out": np.zeros((6, 4), np.float32)}),
        ("out of other rank", {"out": np.zeros((4, 6, 1), np.float32)}),
        ("read-only out", {"out": np.zeros((4, 6), np.float32)}),
        ("strided out", {"out": np.zeros((4, 12), np.float32)[:, ::2]}),
        ("out a list", {"out": [[0.0] * 6] * 4}),
    ]


@pytest.mark.parametrize("case", _declined_cases(), ids=lambda c: c[0])
def test_declined_calls_return_none_and_write_nothing(
    core_module: Any, case: tuple[str, dict[str, Any]]
) -> None:
    name, kw = case
    args: dict[str, Any] = {"x": make_input((4, 6), np.float32, seed=4)}
    args.update(kw)
    if name == "read-only out":
        args["out"].setflags(write=False)
    out = args.get("out")
    before = None if not isinstance(out, np.ndarray) else out.copy()
    assert dense(core_module, **args) is None
    if before is not None:
        np.testing.assert_array_equal(out, before)


def test_overlapping_out_is_declined(core_module: Any) -> None:
    buf = np.arange(40, dtype=np.float64)
    x, out = buf[:30], buf[10:]
    before = buf.copy()
    assert dense(core_module, x, out=out) is None
    np.testing.assert_array_equal(buf, before)
    # the same memory through another view object
    view = buf[:30].view()
    assert dense(core_module, x, out=view) is None
    np.testing.assert_array_equal(buf, before)


def test_wrong_argument_count_is_a_type_error(core_module: Any) -> None:
    with pytest.raises(TypeError, match="7 arguments"):
        core_module.dense(np.ones(3, np.float32), 0.5)


def test_public_api_uses_it_and_general_path_agrees(native: Any) -> None:
    """The declined cases give the same values through dropout()'s general path."""
    x = make_input((4, 6), np.float32, seed=4)
    yr, mr = reference.dropout(x, 0.25, seed=8, offset=3, return_mask=True)
    y, m = native.dropout(x, 0.25, seed=8, offset=3, return_mask=True)
    assert_same(y, yr)
    assert_same_mask(m, mr)
    assert_same(native.dropout(x, np.float64(0.25), seed=np.uint64(8), offset=3), yr)
    assert_same(native.dropout(np.asfortranarray(x), 0.25, seed=8, offset=3), yr)
    y, m = native.dropout(x, 0.25, return_mask=True)  # seed drawn in Python, recorded
    assert_same(y, reference.dropout(x, 0.25, seed=m.seed))


def test_no_reference_leaks(core_module: Any) -> None:
    x = make_input((64,), np.float32, seed=4)
    out = np.empty_like(x)
    rx, ro = sys.getrefcount(x), sys.getrefcount(out)
    for _ in range(1000):
        dense(core_module, x)
        dense(core_module, x, out=out)
        dense(core_module, x, return_mask=True)
        dense(core_module, x, out=out, return_mask=True)
        dense(core_module, x, mode="nope", out=out)
    assert (sys.getrefcount(x), sys.getrefcount(out)) == (rx, ro)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_empty_arrays_at_odd_addresses(native: Any, dtype: Any) -> None:
    """NumPy calls an empty array aligned whatever its pointer; nothing is read or
    written through it, so every entry point accepts it (found by the fuzzer)."""
    buf = np.zeros(16, np.uint8)
    odd = np.frombuffer(buf.data, dtype, 0, 1).reshape(0, 0, 0)
    assert odd.flags.aligned
    assert odd.ctypes.data % np.dtype(dtype).itemsize != 0
    x = np.zeros((0, 0, 0), dtype)
    assert native.dropout(x, 0.5, seed=1, out=odd).shape == (0, 0, 0)
    y, m = native.spatial_dropout(x, 0.5, seed=1, out=odd, return_mask=True)
    assert y.shape == (0, 0, 0)
    assert native.dropout_backward(x, m, out=odd).shape == (0, 0, 0)
    assert native.dropout_backward(odd, p=0.5, seed=1).shape == (0, 0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(2, 3, 5), (1, 4, 3, 2), (2, 3, 1, 2, 3), (0, 3, 4), (2, 0, 4)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_matches_reference(
    core_module: Any, native: Any, dtype: Any, shape: Any, channels_last: bool
) -> None:
    x = make_input(shape, dtype, seed=6)
    fmt = "channels_last" if channels_last else "channels_first"
    for mode in ("inverted", "classic"):
        yr, mr = reference.spatial_dropout(
            x, 0.35, data_format=fmt, mode=mode, seed=12, offset=5, return_mask=True
        )
        y, bits = core_module.spatial(x, 0.35, mode, 12, 5, None, True, channels_last)
        assert_same(y, yr)
        np.testing.assert_array_equal(bits, mr.bits)
        assert_same(
            core_module.spatial(x, 0.35, mode, 12, 5, None, False, channels_last), yr
        )
        y, m = native.spatial_dropout(
            x, 0.35, data_format=fmt, mode=mode, seed=12, offset=5, return_mask=True
        )
        assert_same(y, yr)
        assert_same_mask(m, mr)  # shape, size, axes: as the general path makes them


@pytest.mark.parametrize("rank", [1, 2, 6])
def test_spatial_declines_other_ranks(core_module: Any, rank: int) -> None:
    x = np.ones((2,) * rank, np.float32)
    assert core_module.spatial(x, 0.5, "inverted", 1, 0, None, False, False) is None
    assert core_module.spatial(x, 0.5, "inverted", 1, 0, None, False, 1) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (63,), (65,), (3, 5, 7)])
def test_backward_matches_reference(
    core_module: Any, native: Any, dtype: Any, shape: Any
) -> None:
    x = make_input(shape, dtype, seed=8)
    g = make_input(shape, dtype, seed=9)
    for mode in ("inverted", "classic"):
        _, m = reference.dropout(x, 0.45, mode=mode, seed=3, return_mask=True)
        gr = reference.dropout_backward(g, m)
        assert_same(core_module.backward(g, m.bits, 0.45, mode, None, shape, ()), gr)
        out = np.full_like(g, 9)
        assert core_module.backward(g, m.bits, 0.45, mode, out, shape, ()) is out
        assert_same(out, gr)
        assert_same(native.dropout_backward(g, m, out=np.empty_like(g)), gr)
        gin = g.copy()
        assert_same(native.dropout_backward(gin, m, out=gin), gr)


def test_backward_declines(core_module: Any) -> None:
    g = np.ones(20, np.float32)
    bits = np.zeros(3, np.uint8)
    ok = core_module.backward(g, bits, 0.5, "inverted", None, (20,), ())
    assert ok is not None
    for args in [
        (g, bits[:2], 0.5, "inverted", None, (20,), ()),  # wrong number of bytes
        (g, bits.astype(np.int8), 0.5, "inverted", None, (20,), ()),
        (g, bits.reshape(3, 1), 0.5, "inverted", None, (20,), ()),
        (g, np.zeros(6, np.uint8)[::2], 0.5, "inverted", None, (20,), ()),
        (g, bits.tolist(), 0.5, "inverted", None, (20,), ()),
        (g, bits, 1, True, None, (20,), ()),
        (g, bits, 0.5, True, None, (20,), ()),  # the mode is the mask's string
        (g, bits, 0.5, "alpha ", None, (20,), ()),
        (g, bits, 1.0, "alpha", None, (20,), ()),  # alpha takes p < 1
        (g[::2], np.zeros(2, np.uint8), 0.5, "inverted", None, (10,), ()),
        (g, bits, 0.5, "inverted", np.ones(20, np.float64), (20,), ()),
        (g, bits, 0.5, "inverted", g[::-1], (20,), ()),  # same memory, other view
        (g, bits, 0.5, "inverted", None, (21,), ()),  # mask shape does not fit
        (g, bits, 0.5, "inverted", None, [20], ()),
        (g, bits, 0.5, "inverted", None, (20, 1), ()),
        (g, bits, 0.5, "inverted", None, (20,), (1,)),  # axis out of range
        (g, bits, 0.5, "inverted", None, (20,), (0,)),  # broadcast axis of size != 1
        (g, bits, 0.5, "inverted", None, (20,), [0]),
    ]:
        assert core_module.backward(*args) is None
    assert (
        core_module.backward(g, np.zeros(1, np.uint8), 0.5, "inverted", None, (1,), (0,))
        is not None
    )
    with pytest.raises(TypeError, match="7 arguments"):
        core_module.backward(g, bits)


@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_from_spatial_mask(native: Any, channels_last: bool) -> None:
    fmt = "channels_last" if channels_last else "channels_first"
    x = make_input((3, 4, 5, 6), np.float32, seed=10)
    g = make_input((3, 4, 5, 6), np.float32, seed=11)
    _, mr = reference.spatial_dropout(x, 0.3, data_format=fmt, seed=4, return_mask=True)
    gr = reference.dropout_backward(g, mr)
    _, m = native.spatial_dropout(x, 0.3, data_format=fmt, seed=4, return_mask=True)
    assert_same(native.dropout_backward(g, m), gr)
    out = np.empty_like(g)
    assert native.dropout_backward(g, m, out=out) is out
    assert_same(out, gr)
    with pytest.raises(
        ValueError, match="shape"
    ):  # a mask for another shape: general path
        native.dropout_backward(g[:2], m)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regenerated_backward(native: Any, dtype: Any) -> None:
    x = make_input((7, 9), dtype, seed=12)
    g = make_input((7, 9), dtype, seed=13)
    for mode in ("inverted", "classic"):
        _, m = reference.dropout(x, 0.6, mode=mode, seed=21, offset=5, return_mask=True)
        gr = reference.dropout_backward(g, m)
        assert_same(native.dropout_backward(g, p=0.6, mode=mode, seed=21, offset=5), gr)
        out = np.empty_like(g)
        native.dropout_backward(g, p=0.6, mode=mode, seed=21, offset=5, out=out)
        assert_same(out, gr)
    with pytest.raises(ValueError, match="seed missing"):  # the general path says so
        native.dropout_backward(g, p=0.6)


def test_plain_public_calls_take_the_fast_paths(
    native: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain call of each public function is served by its C++ fast path (a
    declined one would still be right, only slower: this guards the speed)."""
    from fastdropout import _api, _spatial_api

    served: list[str] = []

    def spy_on(module: Any, name: str) -> Any:
        real = getattr(module, name)

        def spy(*args: Any) -> Any:
            r = real(*args)
            if r is not None:
                served.append(name)
            return r

        return spy

    for module, name in ((_api, "_dense"), (_spatial_api, "_spatial"), (_api, "_backward")):
        monkeypatch.setattr(module, name, spy_on(module, name))
    x = make_input((2, 3, 4, 5), np.float32, seed=1)
    out = np.empty_like(x)
    _, m = native.dropout(x, 0.5, seed=1, return_mask=True)
    native.dropout(x, 0.5, out=out)
    native.dropout_backward(x, m)
    native.dropout_backward(x, m, out=out)
    native.dropout_backward(x, p=0.5, seed=1)
    native.dropout_backward(x, p=0.5, seed=1, mode="classic", out=out)
    _, sm = native.spatial_dropout(x, 0.5, seed=1, return_mask=True)
    native.spatial_dropout(x, 0.5, seed=1, data_format="channels_last", out=out)
    native.dropout_backward(x, sm, out=out)
    assert served == ["_dense"] * 2 + ["_backward"] * 2 + ["_dense"] * 2 + [
        "_spatial"
    ] * 2 + ["_backward"]
