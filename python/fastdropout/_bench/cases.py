"""The cases of one (dtype, n, threads): fastdropout (API and raw core), its
bounds (native copy, mask generation alone), np.copyto, NumPy, PyTorch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from .. import _validate  # the threshold and scale the public API computes
from .constants import GENERATING_OPS, SPATIAL_OPS, FloatArray
from .data import Data
from .settings import Settings
from .timing import Case


def op_bytes(op: str, d: Data) -> int:
    data = 2 * d.x.nbytes
    if op == "dropout_add":  # x and residual read, y written, the bias read
        return 3 * d.x.nbytes + (0 if d.bias is None else d.bias.nbytes)
    if op in ("forward_mask", "backward_mask", "dropout_add_backward"):
        return data + (d.n + 7) // 8
    if op.startswith("spatial") and d.sshape is not None:
        return data + (d.sshape[0] * d.sshape[1] + 7) // 8
    return data


def fastdropout_cases(d: Data, s: Settings, threads: int, simd: str, core: Any,
                      impls: tuple[str, ...] | None = None) -> list[Case]:
    """The public API (with and without ``out=``) and the raw ``_core`` call of
    every op, each with a check against the reference; only the implementations
    named in ``impls`` when given."""
    fd = d.fd
    dropout, backward = fd.dropout, fd.dropout_backward
    p, seed, x, y, g, bits = d.p, d.seed, d.x, d.y, d.g, d.bits
    thr = _validate.threshold(p)
    scale = float(_validate.inverted_scale(p, x.dtype))
    cases: list[Case] = []

    def add(op: str, impl: str, label: str, fn: Callable[[], Any],
            result: Callable[[Any], tuple[FloatArray, Any]],
            shape: tuple[int, ...] = (d.n,)) -> None:
        if impls is not None and impl not in impls:
            return

        def check() -> str:
            out_y, out_bits = result(fn())
            return d.verify(op, out_y, out_bits)

        cases.append(Case(op, impl, label, d.dtype, d.n, shape, threads, simd,
                          op_bytes(op, d), fn, check))

    def y_of(r: Any) -> tuple[FloatArray, Any]:
        return r, None

    def y_mask_of(r: Any) -> tuple[FloatArray, Any]:
        return r[0], r[1].bits

    def written(out: FloatArray, out_bits: Any = None) -> Callable[[Any], Any]:
        return lambda _: (out, out_bits)

    def spatial(op: str, layout: str) -> None:
        fmt = "channels_first" if layout == "cf" else "channels_last"
        xs, ys, gs = d.spatial(layout, x), d.spatial(layout, y), d.spatial(layout, g)
        axes = d.axes(layout)
        shape = tuple(xs.shape)
        if op.endswith("forward"):
            sbits = np.zeros((d.n_mask_spatial + 7) // 8, np.uint8)
            add(op, "api", f"spatial_dropout({fmt}, out=y, return_mask=True)",
                lambda: fd.spatial_dropout(xs, p, data_format=fmt, seed=seed, out=ys,
                                           return_mask=True),
                y_mask_of, shape)
            add(op, "core", "_core.forward(bits, axes)",
                lambda: core.forward(xs, ys, seed, 0, thr, scale, True, sbits, axes),
                written(ys, sbits), shape)
        else:
            mask = d.mask(layout)
            mbits = mask.bits
            add(op, "api", f"dropout_backward({fmt} mask, out=y)",
                lambda: backward(gs, mask, out=ys), y_of, shape)
            add(op, "core", "_core.backward_mask(axes)",
                lambda: core.backward_mask(gs, ys, mbits, scale, True, axes),
                written(ys), shape)

    def backward_mask(op: str) -> None:
        mask = d.mask("dense")
        mbits = mask.bits
        add(op, "api", "dropout_backward(mask, out=y)",
            lambda: backward(g, mask, out=y), y_of)
        add(op, "api_alloc", "dropout_backward(mask)", lambda: backward(g, mask), y_of)
        add(op, "core", "_core.backward_mask",
            lambda: core.backward_mask(g, y, mbits, scale, True, ()), written(y))

    def dropout_add(op: str) -> None:
        x2, y2, res, bias = x.reshape(d.add_shape), y.reshape(d.add_shape), d.residual, d.bias
        add(op, "api", "dropout_add(x, residual, bias=b, out=y)",
            lambda: fd.dropout_add(x2, res, p, bias=bias, seed=seed, out=y2), y_of,
            d.add_shape)
        add(op, "api_alloc", "dropout_add(x, residual, bias=b)",
            lambda: fd.dropout_add(x2, res, p, bias=bias, seed=seed), y_of, d.add_shape)
        if impls is not None and "unfused" not in impls:
            return  # no full-size temporary for a case that is left out
        tmp = np.empty_like(x2)

        def unfused() -> Any:  # the same bits from three calls and a temporary
            np.add(x2, bias, out=tmp)
            dropout(tmp, p, seed=seed, out=tmp)
            return np.add(res, tmp, out=y2)

        add(op, "unfused", "np.add(x, b); dropout(out=); np.add(residual, .)", unfused,
            y_of, d.add_shape)

    def dropout_add_backward(op: str) -> None:
        mask = d.mask("add")
        g2, y2 = g.reshape(d.add_shape), y.reshape(d.add_shape)
        add(op, "api", "dropout_add_backward(g, mask, bias=True, out=y)",
            lambda: fd.dropout_add_backward(g2, mask, bias=True, out=y2),
            lambda r: (r[0], r[2]), d.add_shape)
        add(op, "api_alloc", "dropout_add_backward(g, mask, bias=True)",
            lambda: fd.dropout_add_backward(g2, mask, bias=True),
            lambda r: (r[0], r[2]), d.add_shape)

    for op in s.ops:
        if op == "forward":
            add(op, "api", "dropout(out=y)", lambda: dropout(x, p, seed=seed, out=y), y_of)
            add(op, "api_alloc", "dropout()", lambda: dropout(x, p, seed=seed), y_of)
            add(op, "core", "_core.forward",
                lambda: core.forward(x, y, seed, 0, thr, scale, True, None, ()),
                written(y))
        elif op == "forward_mask":
            add(op, "api", "dropout(out=y, return_mask=True)",
                lambda: dropout(x, p, seed=seed, out=y, return_mask=True), y_mask_of)
            add(op, "api_alloc", "dropout(return_mask=True)",
                lambda: dropout(x, p, seed=seed, return_mask=True), y_mask_of)
            add(op, "core", "_core.forward(bits)",
                lambda: core.forward(x, y, seed, 0, thr, scale, True, bits, ()),
                written(y, bits))
        elif op == "backward_mask":
            backward_mask(op)
        elif op == "backward_regen":
            add(op, "api", "dropout_backward(p=, seed=, out=y)",
                lambda: backward(g, p=p, seed=seed, out=y), y_of)
        elif op == "alpha_dropout":
            add(op, "api", "alpha_dropout(out=y)",
                lambda: fd.alpha_dropout(x, p, seed=seed, out=y), y_of)
            add(op, "api_alloc", "alpha_dropout()",
                lambda: fd.alpha_dropout(x, p, seed=seed), y_of)
        elif op == "dropout_add":
            dropout_add(op)
        elif op == "dropout_add_backward":
            dropout_add_backward(op)
        elif d.sshape is not None:
            spatial(op, op.split("_")[1])
    return cases


def own_work_cases(d0: Data, s: Settings, threads: int, simd: str,
                   core: Any) -> list[Case]:
    """``--own-work``: the public call (``out=``) of every op that draws a mask, on
    ``d0`` (the block's arrays at p = 0: every element kept, no Philox), as impl
    "api_p0", checked against the reference at p = 0."""
    ops = [op for op in s.ops if op in GENERATING_OPS]
    if not ops:
        return []
    cases = fastdropout_cases(d0, replace(s, ops=ops, p=0.0), threads, simd, core,
                              impls=("api",))
    for c in cases:
        c.impl = "api_p0"
        c.label += " at p = 0"
    return cases


def baseline_cases(d: Data, threads: int, simds: list[str], core: Any) -> list[Case]:
    """The bounds: a native copy of the same bytes and, per SIMD level, the mask
    bits alone for the same elements (both with these threads); and np.copyto."""
    x, y = d.x, d.y
    nb = 2 * x.nbytes
    cases = [
        Case("copy", "stream_copy", "native copy", d.dtype, d.n, (d.n,), threads,
             None, nb, lambda: core._stream_copy(x, y)),
        Case("copy", "copyto", "np.copyto", d.dtype, d.n, (d.n,), threads, None, nb,
             lambda: np.copyto(y, x)),
    ]
    if d.residual is not None:
        res = d.residual.reshape(-1)
        cases.append(Case("stream2", "stream2", "native read-two-write-one stream",
                          d.dtype, d.n, (d.n,), threads, None, 3 * x.nbytes,
                          lambda: core._stream2(x, res, y)))
    thr = _validate.threshold(d.p)
    for simd in simds:
        cases.append(Case("gen_bits", "gen_bits", "mask bits alone", d.dtype, d.n, (d.n,),
                          threads, simd, (d.n + 7) // 8,
                          lambda: core._gen_bits(d.bits, d.n, d.seed, 0, thr)))
    return cases


def numpy_cases(d: Data, s: Settings) -> list[Case]:
    """The NumPy idiom (forward: a new random draw every call) and its backward."""
    p = d.p
    rng = np.random.default_rng(1)
    x, g = d.x, d.g
    nb = 2 * x.nbytes
    cases: list[Case] = []

    def add(op: str, label: str, fn: Callable[[], Any], shape: tuple[int, ...],
            nbytes: int = nb) -> None:
        cases.append(Case(op, "numpy", label, d.dtype, d.n, shape, None, None, nbytes,
                          fn))

    def spatial(layout: str, forward: bool) -> None:
        xs = d.spatial(layout, x)
        mshape = d.mask_shape(layout)
        if forward:
            add(f"spatial_{layout}_forward",
                "x * (rng.random(mask_shape) >= p) / (1 - p)",
                lambda: xs * (rng.random(mshape) >= p) / (1 - p), tuple(xs.shape))
        else:
            keep = rng.random(mshape) >= p
            add(f"spatial_{layout}_backward", "g * keep / (1 - p)",
                lambda: xs * keep / (1 - p), tuple(xs.shape))

    ops = set(s.ops)
    if ops & {"forward", "forward_mask", "backward_regen"}:
        add("forward", "x * (rng.random(x.shape) >= p) / (1 - p)",
            lambda: x * (rng.random(x.shape) >= p) / (1 - p), (d.n,))
    if "backward_mask" in ops:
        keep = rng.random(x.shape) >= p
        add("backward_mask", "g * keep / (1 - p)", lambda: g * keep / (1 - p), (d.n,),
            nb + keep.nbytes)
    if "alpha_dropout" in ops:  # SNN constants as the docstring of alpha_dropout gives
        ap = -1.7580993408473766
        a = ((1 - p) * (1 + p * ap**2)) ** -0.5
        b = -a * ap * p
        add("alpha_dropout", "np.where(rng.random(x.shape) >= p, x * a + b, a * alpha' + b)",
            lambda: np.where(rng.random(x.shape) >= p, x * a + b, a * ap + b), (d.n,))
    if "dropout_add" in ops:
        x2, res, bias = x.reshape(d.add_shape), d.residual, d.bias
        add("dropout_add", "residual + (x + b) * (rng.random(x.shape) >= p) / (1 - p)",
            lambda: res + (x2 + bias) * (rng.random(d.add_shape) >= p) / (1 - p),
            d.add_shape, 3 * x.nbytes)
    if "dropout_add_backward" in ops:
        g2 = g.reshape(d.add_shape)
        keep2 = rng.random(d.add_shape) >= p

        def add_backward() -> Any:
            gx = g2 * keep2 / (1 - p)
            return gx, gx.sum(axis=0, dtype=np.float64)

        add("dropout_add_backward", "gx = g * keep / (1 - p); gx.sum(axis=0, dtype=float64)",
            add_backward, d.add_shape, nb + keep2.nbytes)
    if d.sshape is not None:
        for op in SPATIAL_OPS:
            if op in ops:
                spatial(op.split("_")[1], op.endswith("forward"))
    return cases


def torch_cases(d: Data, s: Settings, threads: int, torch: Any) -> list[Case]:
    """PyTorch's CPU dropout: F.dropout, native_dropout (which returns the bool
    mask), native_dropout_backward, F.dropout2d in both memory formats."""
    def as_tensor(a: Any) -> Any:  # bfloat16 arrays travel as their bit patterns
        if d.dtype == "bfloat16":
            return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
        return torch.from_numpy(a)

    F = torch.nn.functional
    p = d.p
    xt = as_tensor(d.x)
    nb = 2 * d.x.nbytes
    cases: list[Case] = []

    def add(op: str, label: str, fn: Callable[[], Any], shape: tuple[int, ...],
            nbytes: int = nb) -> None:
        cases.append(Case(op, "torch", label, d.dtype, d.n, shape, threads, None,
                          nbytes, fn))

    def spatial(layout: str, forward: bool) -> None:
        xs = as_tensor(d.spatial(layout, d.x))
        if layout == "cl":  # an (N, C, H, W) view of (N, H, W, C): torch.channels_last
            xs = xs.permute(0, 3, 1, 2)
        shape = tuple(d.spatial(layout, d.x).shape)
        if forward:
            add(f"spatial_{layout}_forward", "F.dropout2d",
                lambda: F.dropout2d(xs, p, training=True), shape)
        else:
            nn, c = d.mask_shape("cf")[:2]
            noise = (torch.rand(nn, c, 1, 1) >= p).to(xt.dtype) / (1 - p)
            add(f"spatial_{layout}_backward", "g * noise (autograd's backward)",
                lambda: xs * noise, shape)

    def backward_mask() -> None:
        mt = torch.rand(xt.shape) >= p
        scale = 1.0 / (1.0 - p)
        add("backward_mask", "native_dropout_backward",
            lambda: torch.ops.aten.native_dropout_backward(xt, mt, scale), (d.n,),
            nb + d.n)

    ops = set(s.ops)
    if "forward" in ops:
        add("forward", "F.dropout", lambda: F.dropout(xt, p, training=True), (d.n,))
    if "forward_mask" in ops:
        add("forward_mask", "torch.native_dropout",
            lambda: torch.native_dropout(xt, p, True), (d.n,), nb + d.n)
    if "backward_mask" in ops:
        backward_mask()
    if "alpha_dropout" in ops:
        add("alpha_dropout", "F.alpha_dropout",
            lambda: F.alpha_dropout(xt, p, training=True), (d.n,))
    if "dropout_add" in ops:
        x2 = xt.reshape(d.add_shape)
        rt, bt = as_tensor(d.residual), as_tensor(d.bias)
        add("dropout_add", "residual + F.dropout(x + b) (unfused)",
            lambda: rt + F.dropout(x2 + bt, p, training=True), d.add_shape, 3 * d.x.nbytes)
    if "dropout_add_backward" in ops:  # what autograd runs for residual + dropout(x + b)
        g2 = xt.reshape(d.add_shape)
        m2 = torch.rand(d.add_shape) >= p
        scale2 = 1.0 / (1.0 - p)

        def add_backward() -> Any:
            gx = torch.ops.aten.native_dropout_backward(g2, m2, scale2)
            return gx, gx.sum(0)

        add("dropout_add_backward", "native_dropout_backward; grad_x.sum(0)", add_backward,
            d.add_shape, nb + d.n)
    if d.sshape is not None:
        for op in SPATIAL_OPS:
            if op in ops:
                spatial(op.split("_")[1], op.endswith("forward"))
    return cases

