"""The log-log plot of ns/element against size (matplotlib, imported lazily)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .report import Index
from .settings import Settings


def plot(path: Path, idx: Index, s: Settings) -> None:
    """ns/element against size, log-log, one panel per op (float32 if it was
    run), one colour per implementation, one line style per thread count."""
    # optional, imported lazily; a bare Figure leaves pyplot's global state alone
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    dtype = "float32" if "float32" in s.dtypes else s.dtypes[0]
    ops = [o for o in s.ops if any(r["op"] == o and r["dtype"] == dtype for r in idx.rows)]
    simd_colors = ["tab:blue", "tab:cyan", "tab:purple", "tab:pink"]
    lines: list[tuple[str, str | None, str, str]] = [  # impl, simd, label, colour
        ("api", simd, f"fastdropout [{simd}]", simd_colors[i % len(simd_colors)])
        for i, simd in enumerate(s.simd)]
    lines += [("core", s.simd[0], f"_core [{s.simd[0]}]", "tab:orange"),
              ("api_alloc", s.simd[0], f"no out= [{s.simd[0]}]", "tab:olive"),
              ("stream_copy", None, "native copy", "black"),
              ("copyto", None, "np.copyto", "tab:gray"),
              ("numpy", None, "NumPy idiom (1 thread)", "tab:green"),
              ("torch", None, "PyTorch", "tab:red")]
    styles: tuple[Any, ...] = ("-", "--", ":", "-.")  # one per thread count
    cols = min(4, max(1, len(ops)))
    nrows = max(1, math.ceil(len(ops) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows + 0.9))
    axes = fig.subplots(nrows, cols, squeeze=False)
    used: dict[str, str] = {}
    for ax, op in zip(axes.flat, ops):
        for ti, threads in enumerate(s.threads):
            for impl, simd, label, color in lines:
                if impl == "numpy" and ti > 0:
                    continue  # does not depend on the thread count
                xs, ys = [], []
                for n in s.sizes:
                    if impl in ("stream_copy", "copyto", "numpy", "torch"):
                        t = idx.baseline(impl, op, dtype, n, threads)
                    else:
                        t = idx.median(op, impl, dtype, n, threads, simd)
                    if t is not None:
                        xs.append(n)
                        ys.append(t * 1e9 / n)
                if xs:
                    ax.plot(xs, ys, styles[ti % len(styles)], color=color, marker="o",
                            markersize=3, linewidth=1.2)
                    used[label] = color
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{op} ({dtype})", fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("ns / element", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=lab)
               for lab, c in used.items()]
    handles += [Line2D([], [], color="black", linestyle=styles[i % len(styles)],
                       label=f"{t} thread{'s' if t > 1 else ''}")
                for i, t in enumerate(s.threads)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)),
               fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.94, wspace=0.3, hspace=0.45,
                        bottom=0.9 / fig.get_figheight())
    fig.savefig(path, dpi=110)

