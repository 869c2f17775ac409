"""fastdropout.torch against torch.nn dropout on the CPU: ``python bench/bench_torch.py``.

Measures, in one run, with the two variants interleaved round by round (so a
shared machine's drift hits both alike) and reported as medians:

1. forward: ``torch.nn.functional.dropout`` vs ``fastdropout.torch.dropout``
   on a float32 tensor (2**24 elements by default), all threads;
2. backward: the gradient through each (autograd, from the saved mask);
3. a whole training step (forward, backward, SGD update) of an MLP and of a
   small pre-norm transformer block (dropout on the attention output and in
   the MLP), with ``torch.nn.Dropout`` vs ``fastdropout.torch.Dropout``: step
   time and the memory autograd keeps between forward and backward
   (saved-activation bytes, counted with ``torch.autograd.graph.
   saved_tensors_hooks``, each storage once).

Also, for the forward pass:

- the same pair with fastdropout.torch's output-buffer cache turned off
  (``set_cache_limit(0)``: every output is fresh memory, as torch's are);
- where one call's time goes, at 2**24 and at 2**10 elements: each row adds one
  stage to the one before (the core kernel into a preallocated output; plus the
  mask bits; the tensor/array conversion and the output from the cache; the
  custom operator's dispatch; the public function's checks; autograd
  recording), next to the same kernel writing fresh NumPy or torch memory
  (page faults) and to ``F.dropout``, all interleaved round by round.

``--json PATH`` writes the numbers; ``--quick`` makes everything small (a
smoke test). Needs PyTorch (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import fastdropout
import fastdropout.torch as ft
import numpy as np
import torch
import torch.nn.functional as F
from fastdropout import _core
from fastdropout.torch import _ops
from fastdropout.torch._convert import rng_tensor
from torch import nn


def _median_times(
    fns: dict[str, Callable[[], Any]], rounds: int, inner: int = 1
) -> dict[str, float]:
    """Median seconds per call of each function, interleaved round by round."""
    for fn in fns.values():  # warm up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def _ratios(
    fns: dict[str, Callable[[], Any]], base: str, other: str, rounds: int
) -> float:
    """Median over rounds of the per-round time ratio base / other."""
    ratios = []
    for _ in range(rounds):
        t = _median_times(fns, 1)
        ratios.append(t[base] / t[other])
    return statistics.median(ratios)


def saved_bytes(step: Callable[[], Any], model: nn.Module) -> int:
    """Bytes of the distinct storages autograd saves while ``step`` runs its
    forward pass (``step`` returns the loss; backward is not run), the model's
    parameters left out (they are kept anyway): the saved activations."""
    params = {q.untyped_storage().data_ptr() for q in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def stages(n: int, p: float, rounds: int, inner: int) -> dict[str, float]:
    """Median seconds per call of one forward pass, stage by stage (see the
    module docstring), interleaved with ``F.dropout`` round by round."""
    x = torch.randn(n)
    xg = x.clone().requires_grad_()
    xa = x.numpy()
    pre = np.empty(n, np.float32)
    rng = rng_tensor(1, 0)
    args = (x, rng, p, "inverted", [], True, True)
    fns: dict[str, Callable[[], Any]] = {
        "F.dropout": lambda: F.dropout(x, p, training=True),
        "kernel, preallocated output": lambda: _core.dense(
            xa, p, "inverted", 1, 0, pre, False
        ),
        "+ mask bits": lambda: _core.dense(xa, p, "inverted", 1, 0, pre, True),
        "+ conversion, output from the cache": lambda: _ops.forward_impl(*args),
        "+ custom-op dispatch": lambda: _ops.forward(*args),
        "public ft.dropout (direct eager call)": lambda: ft.dropout(x, p, seed=1),
        "ft.dropout, autograd recording": lambda: ft.dropout(xg, p, seed=1),
        "kernel + mask, fresh NumPy output": lambda: _core.dense(
            xa, p, "inverted", 1, 0, None, True
        ),
        "kernel + mask, fresh torch.empty output": lambda: _core.dense(
            xa, p, "inverted", 1, 0, torch.empty(n).numpy(), True
        ),
        "kernel in place (NumPy)": lambda: _core.dense(
            xa, p, "inverted", 1, 0, xa, False
        ),
        "ft.dropout(inplace=True)": lambda: ft.dropout(x, p, seed=1, inplace=True),
    }
    return _median_times(fns, rounds, inner)


def _cache_off(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, Any]:
    """``fns`` timed with fastdropout.torch's buffer cache turned off."""
    limit = ft.cache_info()["limit"]
    ft.set_cache_limit(0)
    try:
        seconds = _median_times(fns, rounds)
        speedup = _ratios(fns, "F.dropout", "fastdropout.torch.dropout", rounds)
    finally:
        ft.set_cache_limit(limit)
    return {"seconds": seconds, "speedup": speedup}


# ---- models ---------------------------------------------------------------------------


def mlp(drop: Callable[[float], nn.Module], width: int, p: float) -> nn.Module:
    return nn.Sequential(
        nn.Linear(width, 4 * width),
        nn.GELU(),
        drop(p),
        nn.Linear(4 * width, 4 * width),
        nn.GELU(),
        drop(p),
        nn.Linear(4 * width, width),
    )


class Block(nn.Module):
    """A pre-norm transformer block: x + drop(attn(ln(x))), x + drop(mlp(ln(x)))."""

    def __init__(
        self, drop: Callable[[float], nn.Module], d: int, heads: int, p: float
    ):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.drop_attn = drop(p)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop_mlp, self.drop_out = drop(p), drop(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, -1).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.drop_attn(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        h = self.drop_mlp(F.gelu(self.fc1(self.ln2(x))))
        return x + self.drop_out(self.fc2(h))


def torch_dropout(p: float) -> nn.Module:
    return nn.Dropout(p)


def fast_dropout(p: float) -> nn.Module:
    return ft.Dropout(p, seed=1)


def fast_dropout_regen(p: float) -> nn.Module:
    return ft.Dropout(p, seed=1, mask="regenerate")


VARIANTS = {
    "torch.nn.Dropout": torch_dropout,
    "fastdropout.torch.Dropout": fast_dropout,
    'fastdropout.torch.Dropout(mask="regenerate")': fast_dropout_regen,
}


def train_case(
    name: str,
    make: Callable[[Callable[[float], nn.Module]], nn.Module],
    x: torch.Tensor,
    rounds: int,
) -> dict[str, Any]:
    models, steps, fwds = {}, {}, {}
    for label, drop in VARIANTS.items():
        torch.manual_seed(0)
        model = make(drop)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)

        def fwd(model: nn.Module = model) -> torch.Tensor:
            return model(x).square().mean()

        def step(opt: Any = opt, fwd: Any = fwd) -> None:
            opt.zero_grad(set_to_none=True)
            fwd().backward()
            opt.step()

        models[label], steps[label], fwds[label] = model, step, fwd
    times = _median_times(steps, rounds)
    mem = {label: saved_bytes(fwds[label], models[label]) for label in VARIANTS}
    base = "torch.nn.Dropout"
    return {
        "model": name,
        "input": list(x.shape),
        "step_s": times,
        "saved_bytes": mem,
        "step_speedup": {k: times[base] / v for k, v in times.items()},
        "saved_ratio": {k: v / mem[base] for k, v in mem.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=24, help="forward/backward size 2**N")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--json", help="write the results here")
    ns = ap.parse_args(argv)
    log2n = 12 if ns.quick else ns.log2n
    rounds = 3 if ns.quick else ns.rounds
    p = 0.1
    threads = torch.get_num_threads()
    fastdropout.set_num_threads(max(1, threads))
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "fastdropout": fastdropout.__version__,
        "simd": fastdropout.simd_level(),
        "torch_threads": threads,
        "fastdropout_threads": fastdropout.get_num_threads(),
        "rounds": rounds,
    }

    # 1-2. forward and backward on one big tensor
    x = torch.randn(1 << log2n)
    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)
    fwd = {
        "F.dropout": lambda: F.dropout(x, p, training=True),
        "fastdropout.torch.dropout": lambda: ft.dropout(x, p, seed=1),
    }
    y_torch = F.dropout(xg, p, training=True)
    y_fast = ft.dropout(xg, p, seed=1)
    y_regen = ft.dropout(xg, p, seed=1, mask="regenerate")
    bwd = {
        "F.dropout": lambda: torch.autograd.grad(y_torch, xg, g, retain_graph=True),
        "fastdropout.torch.dropout": lambda: torch.autograd.grad(
            y_fast, xg, g, retain_graph=True
        ),
        'fastdropout.torch.dropout(mask="regenerate")': lambda: torch.autograd.grad(
            y_regen, xg, g, retain_graph=True
        ),
    }
    xi = x.clone()
    inplace = {
        "F.dropout(inplace=True)": lambda: F.dropout(
            xi, p, training=True, inplace=True
        ),
        "fastdropout.torch.dropout(inplace=True)": lambda: ft.dropout(
            xi, p, seed=1, inplace=True
        ),
    }
    tf, tb = _median_times(fwd, rounds), _median_times(bwd, rounds)
    ti = _median_times(inplace, rounds)
    out["forward"] = {
        "n": x.numel(),
        "seconds": tf,
        "speedup": _ratios(fwd, "F.dropout", "fastdropout.torch.dropout", rounds),
    }
    out["forward_inplace"] = {
        "n": x.numel(),
        "seconds": ti,
        "speedup": _ratios(
            inplace,
            "F.dropout(inplace=True)",
            "fastdropout.torch.dropout(inplace=True)",
            rounds,
        ),
    }
    out["forward_cache_off"] = _cache_off(fwd, rounds)
    out["stages"] = {
        str(log2n): stages(1 << log2n, p, rounds, 1),
        "10": stages(1 << 10, p, rounds, 2000),
    }
    out["backward"] = {
        "n": x.numel(),
        "seconds": tb,
        "speedup": {k: tb["F.dropout"] / v for k, v in tb.items()},
    }

    # 3. training steps
    width = 64 if ns.quick else 512
    xm = torch.randn(16 if ns.quick else 256, width)
    out["mlp"] = train_case(
        f"MLP {width}-{4 * width}-{4 * width}-{width}",
        lambda drop: mlp(drop, width, p),
        xm,
        rounds,
    )
    d, heads, seq, batch = (64, 4, 16, 2) if ns.quick else (384, 6, 256, 8)
    xb = torch.randn(batch, seq, d)
    out["transformer"] = train_case(
        f"transformer block d={d} heads={heads}",
        lambda drop: Block(drop, d, heads, p),
        xb,
        rounds,
    )
    _report(out)
    if ns.json:
        Path(ns.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


def _report(r: dict[str, Any]) -> None:
    print(
        f"torch {r['torch']} ({r['torch_threads']} threads), fastdropout "
        f"{r['fastdropout']} ({r['simd']}, {r['fastdropout_threads']} threads); "
        f"medians of {r['rounds']} interleaved rounds"
    )
    f = r["forward"]
    print(f"forward, {f['n']} float32:")
    for k, v in f["seconds"].items():
        print(f"  {k:48s} {v * 1e3:9.2f} ms")
    print(f"  speedup (median of per-round ratios): {f['speedup']:.1f}x")
    f = r["forward_inplace"]
    print("forward in place (no output allocated; torch still makes its noise tensor):")
    for k, v in f["seconds"].items():
        print(f"  {k:48s} {v * 1e3:9.2f} ms")
    print(f"  speedup (median of per-round ratios): {f['speedup']:.1f}x")
    f = r["forward_cache_off"]
    print("forward, new output, fastdropout.torch's buffer cache off:")
    for k, v in f["seconds"].items():
        print(f"  {k:48s} {v * 1e3:9.2f} ms")
    print(f"  speedup (median of per-round ratios): {f['speedup']:.1f}x")
    for size, st in r["stages"].items():
        print(f"one forward call, 2**{size} float32, stage by stage (medians):")
        for k, v in st.items():
            print(f"  {k:48s} {v * 1e6:11.1f} us")
    b = r["backward"]
    print("backward:")
    for k, v in b["seconds"].items():
        print(f"  {k:48s} {v * 1e3:9.2f} ms  ({b['speedup'][k]:.1f}x)")
    for key in ("mlp", "transformer"):
        c = r[key]
        print(f"training step, {c['model']}, input {c['input']}:")
        for k, v in c["step_s"].items():
            print(
                f"  {k:48s} {v * 1e3:9.2f} ms ({c['step_speedup'][k]:.2f}x)  saved "
                f"{c['saved_bytes'][k] / 2**20:8.2f} MiB ({c['saved_ratio'][k]:.2f})"
            )


if __name__ == "__main__":
    sys.exit(main())
