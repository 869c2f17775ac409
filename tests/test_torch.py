"""fastdropout.torch: the same bits as the NumPy functions, autograd, compile,
torch.func, modules (rank rules, extra state) and PyTorch's own dropout test
logic (test/nn/test_dropout.py) re-pointed at these modules."""

from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest
from _util import HAVE_CORE, NO_CORE_REASON, TWO_64, fastdropout, make_input

torch = pytest.importorskip("torch")

if not HAVE_CORE:  # pragma: no cover - depends on the build
    pytest.skip(NO_CORE_REASON, allow_module_level=True)

import fastdropout.torch as ft

fd: Any = fastdropout
FLOATS = [torch.float16, torch.float32, torch.float64]
TORCH_OF = {
    np.float16: torch.float16,
    np.float32: torch.float32,
    np.float64: torch.float64,
}
INT_OF = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _have_ml_dtypes() -> bool:
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return False
    return True


# bfloat16 needs ml_dtypes (optional)
HAVE_BF16 = _have_ml_dtypes()
needs_bf16 = pytest.mark.skipif(not HAVE_BF16, reason="no ml_dtypes (bfloat16)")
ALL_DTYPES = [
    *FLOATS,
    pytest.param(torch.bfloat16, marks=needs_bf16, id="torch.bfloat16"),
]


def bits(t: Any) -> np.ndarray:
    """Bit patterns of a tensor or array, C order (-0.0 != +0.0)."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).view(f"u{t.dtype.itemsize}").reshape(-1)
    t = t.detach().contiguous()
    size = t.element_size()
    return t.view(INT_OF[size]).numpy().view(f"u{size}").reshape(-1)


def as_np(t: Any) -> np.ndarray:
    """A tensor as the NumPy array the NumPy API would take (bfloat16 too)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def tensor(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> Any:
    """NaN, Inf, subnormals and normals in a tensor of ``dtype``."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(make_input(shape, np.float32, seed)).to(dtype)
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32}.get(
        dtype, np.float64
    )
    return torch.from_numpy(make_input(shape, np_dtype, seed))


def saved_bytes(fn: Any, *args: Any) -> list[tuple[Any, int]]:
    """(dtype, bytes) of every tensor autograd saves while ``fn`` runs."""
    saved: list[tuple[Any, int]] = []

    def pack(t: Any) -> Any:
        saved.append((t.dtype, t.numel() * t.element_size()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return saved


# ---- the same bits as NumPy --------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(
    "shape", [(), (0,), (1,), (7,), (3, 5, 7), (2, 0, 3), (33, 65)]
)
@pytest.mark.parametrize(
    ("p", "seed", "offset"),
    [(0.5, 0, 0), (0.1, TWO_64 - 1, TWO_64 - 5), (0.9, 2**63 + 3, 2**63 - 2)],
)
def test_dropout_bits_equal_numpy(
    dtype: Any, shape: Any, p: Any, seed: Any, offset: Any
):
    x = tensor(shape, dtype)
    y = ft.dropout(x, p, seed=seed, offset=offset)
    expected = fd.dropout(as_np(x), p, seed=seed, offset=offset)
    assert y.dtype == dtype
    assert tuple(y.shape) == shape
    np.testing.assert_array_equal(bits(y), bits(expected))
    yc = ft.dropout(x, p, seed=seed, offset=offset, mode="classic")
    np.testing.assert_array_equal(
        bits(yc),
        bits(fd.dropout(as_np(x), p, seed=seed, offset=offset, mode="classic")),
    )


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_layouts_give_the_bits_of_the_logical_array(dtype: Any):
    base = tensor((4, 6, 5, 3), dtype, seed=1)
    expected = fd.dropout(as_np(base), 0.3, seed=11, offset=TWO_64 - 7)
    views = [
        base.to(memory_format=torch.channels_last),
        base.permute(3, 1, 0, 2).contiguous().permute(2, 1, 3, 0),
        torch.empty(4, 6, 5, 6, dtype=dtype)[..., ::2].copy_(base),
        torch.empty(8, 6, 5, 3, dtype=dtype)[1::2].copy_(base),
    ]
    for v in views:
        np.testing.assert_array_equal(bits(v), bits(base))
        y = ft.dropout(v, 0.3, seed=11, offset=TWO_64 - 7)
        np.testing.assert_array_equal(bits(y), bits(expected))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4)])
def test_spatial_bits_equal_numpy(dtype: Any, data_format: Any, shape: Any):
    x = tensor(shape, dtype, seed=2)
    kw = {"data_format": data_format, "seed": 2**63, "offset": 9}
    expected = fd.spatial_dropout(as_np(x), 0.4, **kw)
    np.testing.assert_array_equal(
        bits(ft.spatial_dropout(x, 0.4, **kw)), bits(expected)
    )
    if len(shape) > 3 and data_format == "channels_first":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        y = ft.spatial_dropout(x.to(memory_format=fmt), 0.4, **kw)
        assert y.is_contiguous(memory_format=fmt)
        np.testing.assert_array_equal(bits(y), bits(expected))


def test_broadcast_axes_bits_equal_numpy():
    x = tensor((3, 4, 5), torch.float32)
    for axes in [0, (1,), (-1, 0), (0, 1, 2)]:
        expected = fd.dropout(x.numpy(), 0.5, seed=5, offset=3, broadcast_axes=axes)
        y = ft.dropout(x, 0.5, seed=5, offset=3, broadcast_axes=axes)
        np.testing.assert_array_equal(bits(y), bits(expected))


def test_bfloat16_views_share_memory():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from fastdropout.torch import _convert

    t = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    a = _convert.as_numpy(t)
    assert a.dtype == np.dtype(ml_dtypes.bfloat16)
    assert a.ctypes.data == t.data_ptr()
    assert a.astype(np.float32).tolist() == [1.5, -2.0, 3.25]
    back = _convert.from_numpy(a)
    assert back.dtype == torch.bfloat16
    assert back.data_ptr() == t.data_ptr()


def test_seed_from_generators():
    x = torch.ones(100)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(ft.dropout(x, seed=g1), ft.dropout(x, seed=g2))
    drawn = torch.empty((), dtype=torch.int64).random_(
        -(2**63), None, generator=torch.Generator().manual_seed(4)
    )
    expected = fd.dropout(x.numpy(), seed=ft.decode(int(drawn)))
    assert torch.equal(
        ft.dropout(x, seed=torch.Generator().manual_seed(4)), torch.from_numpy(expected)
    )
    y1 = ft.dropout(x, seed=np.random.default_rng(3))
    assert torch.equal(
        y1, torch.from_numpy(fd.dropout(x.numpy(), seed=np.random.default_rng(3)))
    )


def test_seed_and_offset_as_int64_tensors():
    x = tensor((40,), torch.float32)
    for seed, offset in [(0, 0), (2**63, 2**63 + 1), (TWO_64 - 1, TWO_64 - 1)]:
        assert ft.decode(ft.encode(seed)) == seed
        assert -(2**63) <= ft.encode(seed) < 2**63
        y = ft.dropout(
            x,
            seed=torch.tensor(ft.encode(seed)),
            offset=torch.tensor(ft.encode(offset)),
        )
        np.testing.assert_array_equal(
            bits(y), bits(fd.dropout(x.numpy(), seed=seed, offset=offset))
        )
        # a tensor for one, an int for the other
        y2 = ft.dropout(x, seed=seed, offset=torch.tensor(ft.encode(offset)))
        np.testing.assert_array_equal(bits(y), bits(y2))


def test_evaluation():
    x = tensor((4, 5), torch.float32)
    assert ft.dropout(x, 0.3, training=False) is x
    assert ft.spatial_dropout(x[None], 0.3, training=False).data_ptr() == x.data_ptr()
    y = ft.dropout(x, 0.3, training=False, mode="classic")
    np.testing.assert_array_equal(
        bits(y), bits(fd.dropout(x.numpy(), 0.3, training=False, mode="classic"))
    )
    xg = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    ft.dropout(xg, 0.3, training=False, mode="classic").sum().backward()
    assert torch.equal(xg.grad, torch.full((4, 5), 0.7, dtype=torch.float64))


# ---- autograd ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mask", ["store", "regenerate"])
def test_backward_bits_equal_numpy(dtype: Any, mask: Any):
    x = tensor((5, 3, 4, 2), dtype).requires_grad_()
    g = tensor((5, 3, 4, 2), dtype, seed=9)
    for fn, kw in [
        (ft.dropout, {}),
        (ft.dropout, {"broadcast_axes": (1, 3)}),
        (ft.spatial_dropout, {"data_format": "channels_last"}),
        (ft.dropout, {"mode": "classic"}),
    ]:
        x.grad = None
        y = fn(x, 0.3, seed=TWO_64 - 2, offset=TWO_64 - 3, mask=mask, **kw)
        y.backward(g)
        np_fn = fd.spatial_dropout if fn is ft.spatial_dropout else fd.dropout
        _, m = np_fn(
            as_np(x), 0.3, seed=TWO_64 - 2, offset=TWO_64 - 3, return_mask=True, **kw
        )
        expected = fd.dropout_backward(as_np(g), m)
        np.testing.assert_array_equal(bits(x.grad), bits(expected))


def test_backward_of_a_channels_last_gradient_keeps_its_layout():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    y = ft.spatial_dropout(x, 0.5, seed=1)
    (gx,) = torch.autograd.grad(y, x, g)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    _, m = fd.spatial_dropout(
        x.detach().contiguous().numpy(), 0.5, seed=1, return_mask=True
    )
    np.testing.assert_array_equal(
        bits(gx), bits(fd.dropout_backward(g.contiguous().numpy(), m))
    )


def test_saved_for_backward_is_the_bit_mask_or_nothing():
    x = torch.randn(64, 100, requires_grad=True)
    saved = saved_bytes(lambda t: ft.dropout(t, 0.5, seed=1), x)
    assert saved == [(torch.uint8, 64 * 100 // 8)]
    saved = saved_bytes(lambda t: ft.dropout(t, 0.5, seed=1, mask="regenerate"), x)
    assert saved == [(torch.int64, 16)]  # seed and offset
    saved = saved_bytes(lambda t: ft.spatial_dropout(t[None], 0.5, seed=1), x)
    assert saved == [(torch.uint8, 8)]  # 64 channels
    # torch.nn's CPU dropout keeps a full-size tensor
    ref = saved_bytes(lambda t: torch.nn.functional.dropout(t, 0.5), x)
    assert sum(b for _, b in ref) >= 64 * 100


@pytest.mark.parametrize("mask", ["store", "regenerate"])
def test_gradcheck(mask: Any):
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    for kw in [{}, {"broadcast_axes": 2}, {"mode": "classic"}]:
        f = lambda t, kw=kw: ft.dropout(t, 0.4, seed=7, offset=2**63, mask=mask, **kw)
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(lambda t, f=f: f(t) ** 2, (x,))
    f = lambda t: ft.spatial_dropout(t, 0.4, seed=7, mask=mask)
    assert torch.autograd.gradcheck(f, (x,))


def test_inplace():
    x = torch.randn(6, 7)
    expected = ft.dropout(x, 0.5, seed=3)
    xi = x.clone()
    y = ft.dropout(xi, 0.5, seed=3, inplace=True)
    assert y is xi
    assert torch.equal(xi, expected)
    # no gradient recorded: written in place, any layout
    for v in (
        torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        torch.randn(3, 8)[:, ::2],
    ):
        before, ptr = v.clone(), v.data_ptr()
        for fn in (ft.dropout, ft.spatial_dropout if v.ndim == 4 else ft.dropout):
            v.copy_(before)
            assert fn(v, 0.5, seed=3, inplace=True) is v
            assert v.data_ptr() == ptr
            np.testing.assert_array_equal(bits(v), bits(fn(before, 0.5, seed=3)))
    leaf = torch.randn(6, 7, requires_grad=True)
    z = leaf * 1
    out = ft.dropout(z, 0.5, seed=3, inplace=True)
    assert out is z
    out.sum().backward()
    assert torch.equal(leaf.grad, ft.dropout(torch.ones(6, 7), 0.5, seed=3))


def test_torch_func_grad_and_vjp():
    x = torch.randn(5, 6)
    g = torch.func.grad(lambda t: ft.dropout(t, 0.5, seed=3).sum())(x)
    assert torch.equal(g, ft.dropout(torch.ones_like(x), 0.5, seed=3))
    y, vjp = torch.func.vjp(lambda t: ft.spatial_dropout(t, 0.5, seed=3), x[None])
    (gx,) = vjp(torch.ones_like(y))
    assert torch.equal(gx, ft.spatial_dropout(torch.ones_like(y), 0.5, seed=3))
    g = torch.func.grad(lambda t: ft.dropout(t, 0.5, seed=3, mask="regenerate").sum())(
        x
    )
    assert torch.equal(g, ft.dropout(torch.ones_like(x), 0.5, seed=3))


@pytest.mark.parametrize("mask", ["store", "regenerate"])
def test_torch_func_vmap_one_call(mask: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """vmap over x runs the operator once (the batching rule), and every example
    gets what a call on it alone gives, forward and backward; jacrev works."""
    import fastdropout
    from fastdropout.torch import _ops

    x = torch.randn(4, 3, 2, 8)
    calls = []
    dense, general = _ops._dense, fastdropout.dropout

    def counted(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(fn)
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(_ops, "_dense", counted(dense))
    monkeypatch.setattr(fastdropout, "dropout", counted(general))
    y = torch.func.vmap(lambda t: ft.dropout(t, 0.5, seed=3, mask=mask))(x)
    assert len(calls) == 1  # one native call for the whole batch
    assert torch.equal(y[2], ft.dropout(x[2], 0.5, seed=3))
    for in_dims, fn in ((0, lambda t: ft.dropout(t, 0.5, seed=3, mask=mask)),
                        (2, lambda t: ft.spatial_dropout(t, 0.5, seed=3, mask=mask))):
        y = torch.func.vmap(fn, in_dims=in_dims)(x)
        for i in range(x.shape[in_dims]):
            want = fn(x.select(in_dims, i))
            assert torch.equal(y[i], want)
    g = torch.func.vmap(torch.func.grad(lambda t: ft.dropout(t, 0.5, seed=3, mask=mask).sum()))(x)
    assert torch.equal(g[1], ft.dropout(torch.ones_like(x[1]), 0.5, seed=3))
    j = torch.func.jacrev(lambda t: ft.dropout(t, 0.5, seed=3, mask=mask))(x[0, 0, 0])
    assert torch.equal(j, torch.diag(ft.dropout(torch.ones(8), 0.5, seed=3)))


# ---- torch.compile -----------------------------------------------------------------


def _no_recompiles() -> Any:
    return torch._dynamo.config.patch(error_on_recompile=True)


def test_compile_module_no_recompiles_and_same_stream():
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), ft.Dropout(0.3, seed=5), torch.nn.Linear(16, 4)
    )
    eager = pickle.loads(pickle.dumps(model))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 8)
    with _no_recompiles():
        for _ in range(10):
            y = compiled(x)
            y.sum().backward()
            ye = eager(x)
            ye.sum().backward()
            assert torch.equal(y, ye)
    assert model[1].offset == eager[1].offset == 10 * 4 * 16
    assert torch.equal(model[0].weight.grad, eager[0].weight.grad)


def test_compile_function_with_tensor_offset_no_recompiles():
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(x: Any, seed: Any, offset: Any) -> Any:
        return ft.dropout(x, 0.5, seed=seed, offset=offset) * 2

    x = torch.randn(3, 7)
    seed = torch.tensor(ft.encode(TWO_64 - 1))
    with _no_recompiles():
        for i in range(10):
            off = 2**63 - 5 + 21 * i
            y = step(x, seed, torch.tensor(ft.encode(off)))
            expected = fd.dropout(x.numpy(), 0.5, seed=TWO_64 - 1, offset=off) * 2
            np.testing.assert_array_equal(bits(y), bits(expected))


def test_compile_dynamic_batch_regenerated_mask():
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), ft.Dropout(0.5, seed=9, mask="regenerate")
    )
    eager = pickle.loads(pickle.dumps(model))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=True)
    with _no_recompiles():
        for batch in (3, 5, 7, 2):
            x = torch.randn(batch, 4)
            y = compiled(x)
            y.sum().backward()
            assert torch.equal(y, eager(x))
    assert model[1].offset == eager[1].offset == 6 * (3 + 5 + 7 + 2)


@pytest.mark.slow
# Inductor itself still calls torch.jit.script_method (deprecated) in torch 2.13
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_compile_inductor_training_step():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), ft.Dropout(0.3, seed=5))
    eager = pickle.loads(pickle.dumps(model))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(4, 8)
    with _no_recompiles():
        for _ in range(10):
            y = compiled(x)
            y.sum().backward()
            assert torch.equal(y, eager(x))


# ---- modules -------------------------------------------------------------------------


def test_module_stream_and_eval():
    m = ft.Dropout(0.4, seed=TWO_64 - 1)
    x = torch.randn(10, 10)
    y1, y2 = m(x), m(x)
    np.testing.assert_array_equal(
        bits(y1), bits(fd.dropout(x.numpy(), 0.4, seed=TWO_64 - 1))
    )
    np.testing.assert_array_equal(
        bits(y2), bits(fd.dropout(x.numpy(), 0.4, seed=TWO_64 - 1, offset=100))
    )
    assert m.offset == 200
    m.eval()
    assert m(x) is x
    assert m.offset == 200
    m.offset = TWO_64 - 50
    m.train()
    m(x)
    assert m.offset == 50  # wraps modulo 2**64


@pytest.mark.parametrize(
    ("cls", "shape", "axes"),
    [
        ("Dropout1d", (4, 3, 5), (2,)),
        ("Dropout1d", (3, 5), (1,)),
        ("Dropout2d", (4, 3, 5, 2), (2, 3)),
        ("Dropout3d", (4, 3, 5, 2, 2), (2, 3, 4)),
        ("Dropout3d", (3, 5, 2, 2), (1, 2, 3)),
    ],
)
def test_feature_modules_bits(cls: Any, shape: Any, axes: Any):
    m = getattr(ft, cls)(0.5, seed=8)
    x = tensor(shape, torch.float32)
    y = m(x)
    expected = fd.dropout(x.numpy(), 0.5, seed=8, broadcast_axes=axes)
    np.testing.assert_array_equal(bits(y), bits(expected))
    assert m.offset == expected.size // int(np.prod([shape[a] for a in axes]))


def test_rank_rules_like_torch_nn():
    with pytest.raises(RuntimeError, match=r"2-D .* or 3-D .* got a 4-D"):
        ft.Dropout1d()(torch.rand(1, 2, 2, 2))
    with pytest.raises(RuntimeError, match="got a 1-D"):
        ft.Dropout1d()(torch.rand(2))
    with pytest.warns(UserWarning, match="a 5-D input is deprecated"):
        ft.Dropout2d()(torch.rand(1, 2, 2, 2, 2))
    with pytest.warns(UserWarning, match="a 2-D input is deprecated"):
        ft.Dropout2d()(torch.rand(1, 2))
    with pytest.warns(UserWarning, match=r"taken as \(N, C, L\)"):
        ft.Dropout2d()(torch.rand(1, 2, 2))
    with pytest.warns(UserWarning, match="a 6-D input is deprecated"):
        ft.Dropout3d()(torch.rand(1, 2, 2, 2, 2, 2))
    with pytest.warns(UserWarning, match="a 3-D input is deprecated"):
        y = ft.Dropout3d(seed=1)(torch.ones(4, 2, 2))
    assert all(y[c].count_nonzero() in (0, 4) for c in range(4))  # channels = axis 0
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        ft.FeatureAlphaDropout()(torch.rand(3))


def test_constructor_and_repr():
    m = ft.Dropout(0.25, True, seed=3, mask="regenerate")
    assert (m.p, m.inplace, m.seed, m.offset, m.mask) == (
        0.25,
        True,
        3,
        0,
        "regenerate",
    )
    assert "p=0.25" in repr(m)
    assert "seed=3" in repr(m)
    assert (
        ft.Dropout(seed=torch.Generator().manual_seed(1)).seed
        == ft.Dropout(seed=torch.Generator().manual_seed(1)).seed
    )
    with pytest.raises(ValueError, match="p"):
        ft.Dropout(1.5)
    with pytest.raises(ValueError, match="p"):
        ft.Dropout2d(-0.1)
    with pytest.raises(ValueError, match="mask"):
        ft.Dropout(mask="never")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ft.AlphaDropout(1.0)


def _net(seed: int) -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 12),
        ft.Dropout(0.3, seed=seed),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 12),
        ft.Dropout(0.5, seed=seed + 1, mask="regenerate"),
        torch.nn.Linear(12, 1),
    )


def _train(model: Any, opt: Any, steps: range) -> list[float]:
    losses = []
    for i in steps:
        x = torch.linspace(-1, 1, 48).reshape(8, 6) * (i + 1)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_state_dict_resumes_the_run_exactly(tmp_path: Any):
    model = _net(TWO_64 - 9)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    full = _train(model, opt, range(10))

    model = _net(TWO_64 - 9)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    first = _train(model, opt, range(4))
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "c.pt"
    )
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert ckpt["model"]["1._extra_state"] == {"seed": TWO_64 - 9, "offset": 4 * 8 * 12}

    resumed = _net(1)  # another seed: the checkpoint brings the stream back
    resumed.load_state_dict(ckpt["model"], strict=True)
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.01)
    opt2.load_state_dict(ckpt["opt"])
    assert first + _train(resumed, opt2, range(4, 10)) == full


def test_torch_nn_checkpoint_loads_strict():
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.2))
    ours = torch.nn.Sequential(torch.nn.Linear(3, 3), ft.Dropout(0.2, seed=7))
    ours[1](torch.ones(5))
    result = ours.load_state_dict(plain.state_dict(), strict=True)
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    assert torch.equal(ours[0].weight, plain[0].weight)
    assert (ours[1].seed, ours[1].offset) == (7, 5)  # kept
    # other missing keys still fail
    with pytest.raises(RuntimeError, match=r"0.bias"):
        ours.load_state_dict({"0.weight": plain[0].weight}, strict=True)


def test_bad_extra_state():
    m = ft.Dropout()
    for bad in [
        None,
        {"seed": 1},
        {"seed": -1, "offset": 0},
        {"seed": 1, "offset": TWO_64},
    ]:
        with pytest.raises((ValueError, TypeError)):
            m.set_extra_state(bad)
    m.set_extra_state({"seed": TWO_64 - 1, "offset": 2**63})
    assert (m.seed, m.offset) == (TWO_64 - 1, 2**63)


def test_state_is_not_a_buffer_so_ddp_does_not_broadcast_it():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), ft.Dropout2d(0.5, seed=3))
    assert list(m.buffers()) == []  # DDP broadcasts buffers (and parameters) only
    m.double()  # casts and device moves leave the int64 state alone
    assert m[1]._rng.dtype == torch.int64
    assert m[1].seed == 3
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("no gloo backend")
    # A DDP step in a process of its own, which reports and then exits without
    # tearing anything down: destroying the DDP reducer (GIL held) joins gloo's
    # worker thread, which can be waiting for the GIL to drop a Python object, and
    # then the process hangs for good (seen once in CI, in torch's own teardown).
    out = subprocess.run([sys.executable, "-c", DDP_STEP], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.split() == ["16", "11", "True"], out.stderr


DDP_STEP = """
import os
import torch
import torch.distributed as dist
import fastdropout.torch as ft

dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), ft.Dropout(0.5, seed=11))
ddp = torch.nn.parallel.DistributedDataParallel(model)
ddp(torch.randn(2, 4)).sum().backward()
print(model[1].offset, model[1].seed, "1._extra_state" in model.state_dict(), flush=True)
os._exit(0)
"""


# ---- errors ----------------------------------------------------------------------------


def test_errors():
    with pytest.raises(TypeError, match=r"CPU tensors only.*meta"):
        ft.dropout(torch.empty(3, device="meta"))
    with pytest.raises(TypeError, match="CPU tensors only"):
        ft.Dropout()(torch.empty(3, device="meta"))
    with pytest.raises(TypeError, match=r"torch\.int32.*float16"):
        ft.dropout(torch.ones(3, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"torch.Tensor"):
        ft.dropout(np.ones(3))
    with pytest.raises(ValueError, match="p"):
        ft.dropout(torch.ones(3), 1.5)
    with pytest.raises(ValueError, match="mode"):
        ft.dropout(torch.ones(3), mode="weird")
    with pytest.raises(ValueError, match="mask"):
        ft.dropout(torch.ones(3), mask="weird")
    with pytest.raises(ValueError, match="seed"):
        ft.dropout(torch.ones(3), seed=TWO_64)
    with pytest.raises(ValueError, match="offset"):
        ft.dropout(torch.ones(3), seed=1, offset=-1)
    with pytest.raises(TypeError, match=r"0-d torch.int64"):
        ft.dropout(torch.ones(3), seed=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"0-d torch.int64"):
        ft.dropout(torch.ones(3), offset=torch.tensor(1.0))
    with pytest.raises(ValueError, match="rank"):
        ft.spatial_dropout(torch.ones(3, 3))
    with pytest.raises(ValueError, match="broadcast_axes"):
        ft.dropout(torch.ones(3), broadcast_axes=3)


def test_missing_torch_gives_an_install_hint():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import fastdropout.torch\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "needs PyTorch" in out
    assert "pip install" in out


def test_core_does_not_import_torch():
    code = "import sys, fastdropout; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# ---- PyTorch's own dropout tests (test/nn/test_dropout.py), re-pointed ------------------


def _check_dropout(
    cls: Any, x: Any, memory_format: Any = torch.contiguous_format
) -> None:
    """Mean preservation, layout, inplace and evaluation (torch's _test_dropout)."""
    p = 0.2
    x = x.fill_(1 - p)
    for inplace in (False, True):
        module = cls(p, inplace, seed=12345)
        leaf = x.clone(memory_format=memory_format).requires_grad_()
        out = module(leaf + 0 if inplace else leaf)
        assert out.is_contiguous(memory_format=memory_format)
        assert abs(float(out.detach().float().mean()) - (1 - p)) < 0.05
        out.backward(x)
        assert leaf.grad.is_contiguous(memory_format=memory_format)
        assert abs(float(leaf.grad.float().mean()) - (1 - p)) < 0.05
    for inplace in (True, False):
        module = cls(p, inplace).eval()
        assert torch.equal(module(x), x)
    assert str(module)
    assert repr(module)


def _check_discontiguous(
    cls: Any, memory_format: Any = torch.contiguous_format
) -> None:
    """Layout and values kept for p = 0 and p ~ 0 (torch issue 47176)."""
    for p in (0, 1e-10):
        x = torch.empty(2, 3, 3, 6, memory_format=memory_format)[..., ::2]
        x.copy_(torch.ones(2, 3, 3, 3))
        out = cls(p=p, seed=3)(x)
        assert out.is_contiguous(memory_format=memory_format)
        assert torch.equal(out, x)


def _check_stride_mean_preserve(cls: Any) -> None:
    x = torch.ones(2, 3, 4, 5)
    for perm in itertools.permutations(range(4)):
        inverse = tuple(perm.index(i) for i in range(4))
        for s0, s1 in [(0, 0), (1, 0), (0, 1), (1, 1)]:
            for p in (1e-10, 0.3, 0.5, 0.7):
                v = x.permute(perm).contiguous().permute(inverse)[s0:, s1:]
                out = cls(p=p, seed=7)(v)
                assert out.permute(perm).is_contiguous()
                assert abs(float(out.mean()) - 1.0) <= 1.0  # torch: rtol=atol=0.5
                assert torch.equal(out, v) == (p == 1e-10)


def _check_no_batch(module: Any, x: Any) -> None:
    """An unbatched input drops like the same input with a batch axis of 1."""
    seed = module.seed
    unbatched = module(x.clone())
    module.set_extra_state({"seed": seed, "offset": 0})
    batched = module(x.clone().unsqueeze(0)).squeeze(0)
    assert torch.equal(unbatched, batched)


def _check_channel_zero(module: Any, x: Any) -> None:
    """A channel of a positive input is all zero or all kept."""
    out = module(x)
    per_channel = x[0, 0].numel()
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        assert int(out[b, c].count_nonzero()) in (0, per_channel)


def test_torch_suite_dropout():
    _check_dropout(ft.Dropout, torch.empty(1000))
    _check_discontiguous(ft.Dropout)
    _check_discontiguous(ft.Dropout, torch.channels_last)
    _check_stride_mean_preserve(ft.Dropout)
    out = ft.dropout(torch.tensor([]))
    assert out.shape == (0,)


@needs_bf16
def test_torch_suite_dropout_bfloat16():
    _check_dropout(ft.Dropout, torch.empty(1000, dtype=torch.bfloat16))


def test_torch_suite_dropout1d():
    # (more channels than torch's 10-15 x 10-15: the mean check is then 3 sigma)
    _check_dropout(ft.Dropout1d, torch.empty(40, 40, 13, dtype=torch.float64))
    for inplace in (False, True):
        _check_no_batch(ft.Dropout1d(0.5, inplace, seed=1), torch.rand(50, 2))
        _check_channel_zero(ft.Dropout1d(0.5, inplace, seed=2), torch.ones(10, 4, 2))


def test_torch_suite_dropout2d():
    _check_dropout(ft.Dropout2d, torch.empty(1000, 2, 3, 4))
    _check_dropout(ft.Dropout2d, torch.empty(1000, 2, 3, 4), torch.channels_last)
    _check_discontiguous(ft.Dropout2d)
    _check_discontiguous(ft.Dropout2d, torch.channels_last)
    for inplace in (False, True):
        _check_channel_zero(ft.Dropout2d(0.5, inplace, seed=3), torch.ones(10, 4, 2, 2))


def test_torch_suite_dropout3d():
    _check_dropout(ft.Dropout3d, torch.empty(1000, 2, 2, 3, 4))
    _check_discontiguous(ft.Dropout3d)
    _check_discontiguous(ft.Dropout3d, torch.channels_last)
    for inplace in (False, True):
        _check_no_batch(ft.Dropout3d(0.5, inplace, seed=4), torch.rand(50, 2, 2, 2))
        _check_channel_zero(
            ft.Dropout3d(0.5, inplace, seed=5), torch.ones(10, 4, 2, 2, 2)
        )


def test_dropout_statistics():
    """The kept fraction is 1 - p within 5 standard deviations, per module."""
    n = 200_000
    for p in (0.1, 0.5, 0.9):
        y = ft.Dropout(p, seed=int(p * 10))(torch.ones(n))
        kept = int(y.count_nonzero())
        assert abs(kept - n * (1 - p)) < 5 * (n * p * (1 - p)) ** 0.5
        y2 = ft.Dropout2d(p, seed=5)(torch.ones(400, 500, 1, 1))
        kept = int(y2.count_nonzero())
        assert abs(kept - n * (1 - p)) < 5 * (n * p * (1 - p)) ** 0.5


@pytest.mark.parametrize(
    ("cls", "shape"),
    [
        ("AlphaDropout", (5000,)),
        ("FeatureAlphaDropout", (1000, 3, 2, 2, 2)),
        ("FeatureAlphaDropout", (50, 20, 16, 16)),
    ],
)
def test_torch_suite_alpha_dropout(cls: Any, shape: Any):
    x = torch.randn(*shape)
    mean, std = float(x.mean()), float(x.std())
    for p in (0.2, 0.5, 0.8):
        leaf = x.clone().requires_grad_()
        out = getattr(ft, cls)(p, seed=1)(leaf)
        assert abs(float(out.detach().mean()) - mean) < 0.1
        assert abs(float(out.detach().std()) - std) < 0.1
        out.backward(x)


# ---- alpha dropout and dropout + add (new kernels) --------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mask", ["store", "regenerate"])
def test_alpha_dropout_bits_and_gradient(dtype: Any, mask: Any):
    x = tensor((6, 5, 3), dtype).requires_grad_()
    g = tensor((6, 5, 3), dtype, seed=4)
    for axes in (None, (2,)):
        x.grad = None
        kw = {"seed": TWO_64 - 1, "offset": 2**63, "broadcast_axes": axes}
        y = ft.alpha_dropout(x, 0.3, mask=mask, **kw)
        ey, m = fd.alpha_dropout(as_np(x), 0.3, return_mask=True, **kw)
        np.testing.assert_array_equal(bits(y), bits(ey))
        y.backward(g)
        np.testing.assert_array_equal(
            bits(x.grad), bits(fd.dropout_backward(as_np(g), m))
        )
    xd = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: ft.alpha_dropout(t, 0.3, seed=2, mask=mask), (xd,)
    )
    assert ft.alpha_dropout(x, 0.3, training=False) is x


def test_alpha_modules_bits():
    x = tensor((4, 3, 5), torch.float32)
    y = ft.AlphaDropout(0.2, seed=9)(x)
    np.testing.assert_array_equal(
        bits(y), bits(fd.alpha_dropout(x.numpy(), 0.2, seed=9))
    )
    y = ft.FeatureAlphaDropout(0.2, seed=9)(x)
    expected = fd.alpha_dropout(x.numpy(), 0.2, seed=9, broadcast_axes=(2,))
    np.testing.assert_array_equal(bits(y), bits(expected))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mask", ["store", "regenerate"])
def test_dropout_add_bits_and_gradients(dtype: Any, mask: Any):
    x = tensor((7, 5), dtype).requires_grad_()
    r = tensor((7, 5), dtype, seed=1).requires_grad_()
    b = tensor((5,), dtype, seed=2).requires_grad_()
    g = tensor((7, 5), dtype, seed=3)
    kw = {"seed": 2**63 + 1, "offset": TWO_64 - 2, "mode": "inverted"}
    y = ft.dropout_add(x, r, 0.4, bias=b, mask=mask, **kw)
    ey, m = fd.dropout_add(
        as_np(x), as_np(r), 0.4, bias=as_np(b), return_mask=True, **kw
    )
    np.testing.assert_array_equal(bits(y), bits(ey))
    y.backward(g)
    gx, gr, gb = fd.dropout_add_backward(as_np(g), m, bias=True)
    np.testing.assert_array_equal(bits(x.grad), bits(gx))
    np.testing.assert_array_equal(bits(r.grad), bits(gr))
    np.testing.assert_array_equal(bits(b.grad), bits(gb))
    xd = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    rd = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bd = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, c, d: ft.dropout_add(a, c, 0.3, bias=d, seed=5, mask=mask),
        (xd, rd, bd),
    )


def test_dropout_add_errors_and_evaluation():
    x, r = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(TypeError, match="residual"):
        ft.dropout_add(x, r.double())
    with pytest.raises(ValueError, match="residual"):
        ft.dropout_add(x, r[:2])
    with pytest.raises(ValueError, match="bias"):
        ft.dropout_add(x, r, bias=torch.randn(3))
    y = ft.dropout_add(x, r, 0.3, training=False)
    np.testing.assert_array_equal(
        bits(y), bits(fd.dropout_add(x.numpy(), r.numpy(), 0.3, training=False))
    )


def test_no_warnings_in_a_plain_step():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ft.Dropout(0.5, seed=1)
        m(torch.randn(4, 4, requires_grad=True)).sum().backward()


def test_readme_example_runs(monkeypatch: Any):
    """The README's PyTorch example (compiled with the quick aot_eager backend)."""
    from functools import partial
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    section = text[text.index("## PyTorch (`fastdropout.torch`)") :]
    code = section[section.index("```python\n") + 10 :]
    code = code[: code.index("```")]
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert scope["state"]["2._extra_state"] == {"seed": 1234, "offset": 3 * 16 * 256}
    assert scope["z"].is_contiguous(memory_format=torch.channels_last)
