"""Array types come back as they came in (README "Array types"; docs/spec.md
section 12): masked arrays, ndarray subclasses, memmaps, DLPack CPU arrays (torch,
JAX), GPU arrays and dask arrays refused with a pointer, and real scalars for p."""

from __future__ import annotations

import decimal
import fractions
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import assert_same, assert_same_mask, make_input, reference

# --------------------------------------------------------------------------
# Masked arrays
# --------------------------------------------------------------------------


def test_masked_array_keeps_its_mask(impl: Any) -> None:
    # the example: the NaN is masked, so the mean ignores it
    m = np.ma.masked_invalid([1.0, np.nan, 3.0])
    y = impl.dropout(m, 0.0)
    assert isinstance(y, np.ma.MaskedArray)
    assert y.mean() == 2.0
    assert y.mask.tolist() == [False, True, False]
    assert y.mask is not m.mask  # a copy: the result's mask is its own

    x = make_input((7, 9), np.float32, seed=1)
    mask = np.zeros(x.shape, bool)
    mask[::2, 1::3] = True
    xm = np.ma.MaskedArray(x, mask=mask, fill_value=-7.0)
    ym, dm = impl.dropout(xm, 0.4, seed=3, return_mask=True)
    yp, dp = impl.dropout(x, 0.4, seed=3, return_mask=True)
    assert type(ym) is np.ma.MaskedArray
    assert_same_mask(dm, dp)  # the stream runs over every element
    np.testing.assert_array_equal(ym.mask, mask)
    assert ym.fill_value == np.float32(-7.0)
    data = ym.data
    assert_same(data[~mask], yp[~mask])
    assert_same(data[mask], x[mask])  # under the mask: the input's data, unchanged
    g = impl.dropout_backward(xm, dm)
    assert type(g) is np.ma.MaskedArray
    np.testing.assert_array_equal(g.mask, mask)
    assert_same(g.data[~mask], impl.dropout_backward(x, dp)[~mask])


def test_masked_array_without_mask_and_spatial(impl: Any) -> None:
    x = make_input((2, 3, 4), np.float64, seed=2)
    y = impl.dropout(np.ma.MaskedArray(x), 0.5, seed=1)
    assert isinstance(y, np.ma.MaskedArray)
    assert y.mask is np.ma.nomask
    assert_same(y.data, impl.dropout(x, 0.5, seed=1))
    ys = impl.spatial_dropout(np.ma.masked_greater(x, 1.0), 0.5, seed=4)
    assert isinstance(ys, np.ma.MaskedArray)
    np.testing.assert_array_equal(ys.mask, x > 1.0)
    ye = impl.dropout(np.ma.masked_greater(x, 1.0), 0.5, training=False)
    assert isinstance(ye, np.ma.MaskedArray)


# --------------------------------------------------------------------------
# ndarray subclasses and memmaps
# --------------------------------------------------------------------------


class Tagged(np.ndarray):  # type: ignore[type-arg]
    """A user subclass carrying an attribute through __array_finalize__."""

    tag: str

    def __array_finalize__(self, obj: Any) -> None:
        self.tag = getattr(obj, "tag", "none")


def test_subclasses_are_wrapped(impl: Any) -> None:
    x = make_input((4, 6), np.float32, seed=3)
    with pytest.warns(PendingDeprecationWarning):
        mat = np.asmatrix(x)
    y = impl.dropout(mat, 0.5, seed=2)
    assert type(y) is np.matrix
    assert_same(np.asarray(y), impl.dropout(x, 0.5, seed=2))
    t = x.view(Tagged)
    t.tag = "mine"
    yt, m = impl.dropout(t, 0.5, seed=2, return_mask=True)
    assert type(yt) is Tagged
    assert yt.tag == "mine"
    assert_same(np.asarray(yt), impl.dropout(x, 0.5, seed=2))
    gt = impl.dropout_backward(t, m)
    assert type(gt) is Tagged
    assert type(impl.dropout(t, 0.5, training=False)) is Tagged
    assert type(impl.spatial_dropout(t[None], 0.5, seed=1)) is Tagged


def test_memmap_gives_ndarray_unless_out(impl: Any, tmp_path: Path) -> None:
    x = make_input((5, 8), np.float32, seed=4)
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    y = impl.dropout(mm, 0.5, seed=9)
    assert type(y) is np.ndarray
    assert_same(y, impl.dropout(x, 0.5, seed=9))
    out = np.memmap(tmp_path / "y.bin", dtype=np.float32, mode="w+", shape=x.shape)
    r = impl.dropout(mm, 0.5, seed=9, out=out)
    assert r is out
    assert_same(np.asarray(out), y)
    r2 = impl.dropout(mm, 0.5, seed=9, out=mm)  # in place
    assert r2 is mm
    assert_same(np.asarray(mm), y)


# --------------------------------------------------------------------------
# DLPack: torch and JAX
# --------------------------------------------------------------------------


def test_torch_tensors_come_back_as_tensors(impl: Any) -> None:
    torch = pytest.importorskip("torch")
    x = make_input((6, 10), np.float32, seed=5)
    t = torch.from_numpy(x.copy())
    y = impl.dropout(t, 0.3, seed=7)
    assert isinstance(y, torch.Tensor)
    assert_same(y.numpy(), impl.dropout(x, 0.3, seed=7))
    # strided (transposed) tensors read through DLPack without a copy
    yt, m = impl.dropout(t.T, 0.3, seed=7, return_mask=True)
    assert isinstance(yt, torch.Tensor)
    assert_same(yt.numpy(), impl.dropout(x.T, 0.3, seed=7))
    g = impl.dropout_backward(t.T, m)
    assert isinstance(g, torch.Tensor)
    assert_same(g.numpy(), impl.dropout_backward(x.T, m))
    # out= a tensor: written in place (a zero-copy view) and returned as given
    out = torch.empty_like(t)
    assert impl.dropout(t, 0.3, seed=7, out=out) is out
    assert_same(out.numpy(), y.numpy())
    assert impl.dropout(t, 0.3, seed=7, out=t) is t
    assert_same(t.numpy(), y.numpy())
    for dt, npdt in ((torch.float16, np.float16), (torch.float64, np.float64)):
        xd = make_input((2, 3, 10), npdt, seed=6)
        yh = impl.spatial_dropout(torch.from_numpy(xd), 0.5, seed=1)
        assert yh.dtype == dt
        expected = impl.spatial_dropout(xd, 0.5, seed=1)
        assert_same(yh.numpy(), expected)


def test_torch_autograd_and_devices_are_refused(impl: Any) -> None:
    torch = pytest.importorskip("torch")
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"fastdropout\.torch"):
        impl.dropout(t, 0.5)
    with pytest.raises(TypeError, match=r"fastdropout\.torch"):
        impl.dropout_backward(t, p=0.5, seed=1)
    with pytest.raises(TypeError, match="dtype int64"):
        impl.dropout(torch.arange(3), 0.5)


def test_jax_arrays_come_back_as_jax_arrays(impl: Any) -> None:
    # In a subprocess: JAX starts threads, and a later os.fork() in this process
    # (tests/test_reliability.py) would then warn.
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    code = f"""
import numpy as np, jax, jax.numpy as jnp
import fastdropout
from fastdropout import reference
impl = {"fastdropout" if impl.__name__ == "fastdropout" else "reference"}
x = np.random.default_rng(6).standard_normal((3, 11)).astype(np.float32)
j = jnp.asarray(x)
y = impl.dropout(j, 0.5, seed=2)
assert type(y) is type(j), type(y)
assert np.array_equal(np.asarray(y).view(np.uint32),
                      impl.dropout(x, 0.5, seed=2).view(np.uint32))
try:
    impl.dropout(j, 0.5, seed=2, out=j)  # a read-only DLPack out
except ValueError as e:
    assert "read-only" in str(e), e
else:
    raise AssertionError("a read-only out was accepted")
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr


class _FakeDevice:
    """A DLPack producer on a CUDA device (type 2), from the named library."""

    def __init__(self, module: str) -> None:
        type(self).__module__ = module

    def __dlpack__(self, **kwargs: Any) -> Any:
        raise AssertionError("must not be read")

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)


@pytest.mark.parametrize(
    ("module", "points_to"),
    [
        ("torch", r"x\.cpu\(\)"),
        ("jaxlib._jax", r"fastdropout\.jax\.dropout"),
        ("cupy", "host memory"),
    ],
)
def test_gpu_arrays_are_refused_with_a_pointer(
    impl: Any, module: str, points_to: str
) -> None:
    fake = type("GpuArray", (_FakeDevice,), {})(module)
    with pytest.raises(
        TypeError, match=rf"dropout: x is a GpuArray on a device.*{points_to}"
    ):
        impl.dropout(fake, 0.5)
    with pytest.raises(TypeError, match=r"dropout_backward: grad_y .*device"):
        impl.dropout_backward(fake, p=0.5, seed=1)


def test_dask_arrays_are_not_computed(impl: Any) -> None:
    """The package sends dask arrays to fastdropout.dask (lazy, tested in
    tests/test_dask.py); the reference, NumPy's, refuses them."""
    fake = type("Array", (), {"__module__": "dask.array.core"})()
    with pytest.raises(TypeError, match=r"fastdropout\.dask"):
        impl.dropout(fake, 0.5)
    da = pytest.importorskip("dask.array")
    x = da.ones((2, 3, 4), chunks=2)
    if impl is reference:
        with pytest.raises(TypeError, match=r"x is a dask array.*fastdropout\.dask"):
            impl.spatial_dropout(x, 0.5)
        return
    for y in (
        impl.spatial_dropout(x, 0.5, seed=1),
        impl.alpha_dropout(x, 0.5, seed=1),
        impl.dropout_add(x, x, 0.5, seed=1),
    ):
        assert isinstance(y, da.Array)  # lazy: nothing computed
    with pytest.raises(TypeError, match=r"grad_y is a dask array.*fastdropout\.dask"):
        impl.dropout_add_backward(x, p=0.5, seed=1)  # no lazy form


def test_the_core_imports_no_framework() -> None:
    code = (
        "import sys, numpy as np, fastdropout as fd\n"
        "x = np.ma.masked_invalid([1.0, np.nan])\n"
        "fd.dropout(x, 0.5, seed=1); fd.reference.dropout(x, 0.5, seed=1)\n"
        "fd.dropout(np.ones(3), np.float32(0.5), seed=1)\n"
        "bad = [m for m in ('torch', 'jax', 'dask', 'ml_dtypes') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_tensor_loads_no_other_framework() -> None:
    pytest.importorskip("torch")
    code = (
        "import sys, torch, fastdropout as fd\n"
        "y = fd.dropout(torch.ones(3, dtype=torch.float16), 0.5, seed=1)\n"
        "assert isinstance(y, torch.Tensor)\n"
        "print([m for m in ('jax', 'dask', 'ml_dtypes') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_plain_ndarrays_go_straight_through(native: Any) -> None:
    x = make_input((4, 5), np.float32, seed=1)
    # lists and other array-likes still become plain arrays
    assert type(native.dropout(x.tolist(), 0.5, seed=1)) is np.ndarray
    assert type(native.dropout(x, 0.5, seed=1, broadcast_axes=0)) is np.ndarray


# --------------------------------------------------------------------------
# Real scalars for p
# --------------------------------------------------------------------------


def _real_ps() -> list[Any]:
    ps: list[Any] = [
        0.25,
        np.float32(0.25),
        np.float16(0.25),
        fractions.Fraction(1, 4),
        decimal.Decimal("0.25"),
        np.array(0.25),
        np.array(0.25, np.float32),
    ]
    try:
        import torch

        ps.append(torch.tensor(0.25))
    except ImportError:
        pass
    return ps


@pytest.mark.parametrize("p", _real_ps(), ids=lambda p: type(p).__name__)
def test_p_takes_real_scalars(impl: Any, p: Any) -> None:
    x = make_input((50,), np.float32, seed=2)
    assert_same(impl.dropout(x, p, seed=3), reference.dropout(x, 0.25, seed=3))
    layer = impl.Dropout(p, seed=1)
    assert layer.p == 0.25
    assert type(layer.p) is float


@pytest.mark.parametrize("p", [0, 1, np.int64(1), np.uint8(0), np.array(1)])
def test_p_takes_integers(impl: Any, p: Any) -> None:
    x = make_input((9,), np.float64, seed=2)
    y = impl.dropout(x, p, seed=3)
    assert_same(y, reference.dropout(x, float(p), seed=3))


@pytest.mark.parametrize(
    ("p", "exc"),
    [
        ("0.5", TypeError),
        (None, TypeError),
        (b"0.5", TypeError),
        (True, TypeError),
        (np.bool_(False), TypeError),
        (0.5 + 0j, TypeError),
        (np.complex64(0.5), TypeError),
        (np.array([0.5]), TypeError),
        (np.array(0.5 + 0j), TypeError),
        (np.array("0.5"), TypeError),
        (object(), TypeError),
        (decimal.Decimal("NaN"), ValueError),
        (decimal.Decimal("sNaN"), ValueError),
        (fractions.Fraction(3, 2), ValueError),
        (np.array(-0.5), ValueError),
        (np.float32("nan"), ValueError),
        (10**400, ValueError),
    ],
    ids=repr,
)
def test_p_refuses_non_real_scalars(impl: Any, p: Any, exc: type[Exception]) -> None:
    x = np.zeros(4, np.float32)
    out = np.full(4, 7.0, np.float32)
    with pytest.raises(exc, match=r"\bp\b"):
        impl.dropout(x, p, out=out)
    assert (out == 7.0).all()
    with pytest.raises(exc, match=r"\bp\b"):
        impl.Dropout(p)


def test_layers_keep_array_types(impl: Any) -> None:
    torch = pytest.importorskip("torch")
    x = make_input((4, 6), np.float32, seed=8)
    layer = impl.Dropout(0.5, seed=3)
    y = layer(torch.from_numpy(x))
    assert isinstance(y, torch.Tensor)
    assert_same(y.numpy(), impl.dropout(x, 0.5, seed=3))
    g = layer.backward(torch.from_numpy(x))
    assert isinstance(g, torch.Tensor)
    assert_same(g.numpy(), impl.dropout_backward(x, p=0.5, seed=3))
    ym = layer(np.ma.masked_less(x, 0.0))
    assert isinstance(ym, np.ma.MaskedArray)


def test_bfloat16_tensors_reach_the_dtype_check(impl: Any) -> None:
    """bfloat16 tensors are read through ml_dtypes (no DLPack bfloat16 in NumPy),
    so they get the same answer as a NumPy bfloat16 array."""
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = torch.ones(5, dtype=torch.bfloat16)
    a = np.ones(5, ml_dtypes.bfloat16)
    message = None
    try:
        expected = impl.dropout(a, 0.5, seed=1)
    except TypeError as exc:
        message = str(exc)
    if message is not None:
        with pytest.raises(TypeError, match="bfloat16") as info:
            impl.dropout(t, 0.5, seed=1)
        assert str(info.value) == message
    else:
        y = impl.dropout(t, 0.5, seed=1)
        assert y.dtype == torch.bfloat16
        assert_same(y.view(torch.int16).numpy(), expected.view(np.int16))


def test_fused_and_alpha_functions_keep_array_types(impl: Any) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, r, g = (rng.standard_normal((3, 5)).astype(np.float32) for _ in range(3))
    b = rng.standard_normal(5).astype(np.float32)
    y, m = impl.dropout_add(
        torch.from_numpy(x),
        torch.from_numpy(r),
        0.4,
        bias=torch.from_numpy(b),
        seed=2,
        return_mask=True,
    )
    assert isinstance(y, torch.Tensor)
    assert_same(y.numpy(), impl.dropout_add(x, r, 0.4, bias=b, seed=2))
    tg = torch.from_numpy(g)
    gx, gr, gb = impl.dropout_add_backward(tg, m, bias=True)
    assert isinstance(gx, torch.Tensor)
    assert gr is tg  # grad_residual is grad_y itself, the caller's object
    assert isinstance(gb, torch.Tensor)
    ya = impl.alpha_dropout(np.ma.masked_less(x, -1.0), 0.3, seed=1)
    assert isinstance(ya, np.ma.MaskedArray)
    np.testing.assert_array_equal(ya.mask, x < -1.0)
