"""The figure of each study (matplotlib, Agg backend), drawn from its JSON report.

Points are means over replicates with error bars of one sample standard deviation;
curves are the per-epoch means over replicates (validation loss solid, training
loss dashed, both measured with dropout off).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .studies import RATES
from .train import require

__all__ = ["plot_study"]

PALETTE = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b")


def _mean_curve(arm: Mapping[str, Any], key: str) -> Any:
    return np.mean([r["history"][key] for r in arm["runs"]], axis=0)


def _errorbar(
    ax: Any,
    x: Sequence[float],
    arms: Sequence[Mapping[str, Any]],
    metric: str,
    **kw: Any,
) -> None:
    m = [a["summary"][metric]["mean"] for a in arms]
    s = [a["summary"][metric]["sd"] for a in arms]
    ax.errorbar(x, m, yerr=s, capsize=3, marker="o", **kw)


def _curves(ax: Any, arms: Sequence[Mapping[str, Any]], title: str) -> None:
    ticker = require("matplotlib.ticker")
    for i, a in enumerate(arms):
        c = PALETTE[i % len(PALETTE)]
        v = _mean_curve(a, "val_loss")
        ep = np.arange(1, len(v) + 1)
        ax.plot(ep, v, "-", color=c, lw=1.6, label=a["label"])
        ax.plot(ep, _mean_curve(a, "train_loss"), "--", color=c, lw=0.9)
    ax.set_yscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _bars(ax: Any, arms: Sequence[Mapping[str, Any]], metric: str, title: str) -> None:
    x = np.arange(len(arms))
    m = [a["summary"][metric]["mean"] for a in arms]
    s = [a["summary"][metric]["sd"] for a in arms]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(arms))]
    ax.bar(x, m, yerr=s, capsize=4, color=colors, alpha=0.85)
    _labels(ax, arms)
    lo = min(mi - si for mi, si in zip(m, s))
    hi = max(mi + si for mi, si in zip(m, s))
    if metric.endswith("acc"):
        ax.set_ylim(max(0.0, lo - 0.5 * (hi - lo) - 0.01), min(1.0, hi + 0.01))
    else:
        ax.set_ylim(0.0, hi * 1.08)
    ax.set_title(title, fontsize=10)


def _labels(ax: Any, arms: Sequence[Mapping[str, Any]]) -> None:
    ax.set_xticks(np.arange(len(arms)))
    ax.set_xticklabels([a["label"] for a in arms], rotation=20, ha="right", fontsize=8)


def _paired_bars(ax: Any, arms: Sequence[Mapping[str, Any]]) -> None:
    """Paired change of the final validation loss against each arm's baseline."""
    x = np.arange(len(arms))
    for i, a in enumerate(arms):
        if "vs_baseline" not in a:
            ax.text(i, 0, "baseline", rotation=90, ha="center", va="bottom", fontsize=7)
            continue
        d = a["vs_baseline"]["final_val_loss_diff"]
        ax.bar(
            i,
            d["mean"],
            yerr=d["sd"],
            capsize=4,
            alpha=0.85,
            color=PALETTE[i % len(PALETTE)],
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlim(-0.6, len(x) - 0.4)
    _labels(ax, arms)
    ax.set_title("paired change of final val loss vs baseline", fontsize=10)


def plot_study(report: Mapping[str, Any], path: Path) -> None:
    """Write the figure of one study's report (:func:`.study_report.study_report`)
    to ``path`` (PNG)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = require("matplotlib.pyplot")
    arms = report["arms"]
    n = report["settings"]["seeds"]
    if report["study"] == "rates":
        fig, axes = plt.subplots(2, 3, figsize=(15, 7.4))
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for a in arms:
            groups.setdefault(a["group"], []).append(a)
        for (g, ga), c in zip(groups.items(), ("#1f77b4", "#d62728")):
            ps = [a["p"] for a in ga]
            _errorbar(axes[0, 0], ps, ga, "final_val_loss", color=c, label=g)
            _errorbar(axes[0, 1], ps, ga, "final_val_acc", color=c, label=g)
            diffs = [
                a["vs_baseline"]["final_val_loss_diff"]
                if "vs_baseline" in a
                else {"mean": 0.0, "sd": 0.0}
                for a in ga
            ]
            axes[0, 2].errorbar(
                ps,
                [d["mean"] for d in diffs],
                yerr=[d["sd"] for d in diffs],
                capsize=3,
                marker="o",
                color=c,
                label=g,
            )
            _errorbar(axes[1, 2], ps, ga, "final_train_loss", color=c, label=g)
        axes[0, 0].set_title("final validation loss", fontsize=10)
        axes[0, 1].set_title("final validation accuracy", fontsize=10)
        axes[0, 2].set_title("paired change of final val loss vs p = 0", fontsize=10)
        axes[0, 2].axhline(0.0, color="k", lw=0.8)
        axes[1, 2].set_title("final training loss (log)", fontsize=10)
        axes[1, 2].set_yscale("log")
        for ax in (*axes[0], axes[1, 2]):
            ax.set_xlabel("dropout rate p of the hidden layer")
            ax.set_xticks(list(RATES))
            ax.legend(fontsize=8)
        for ax, (g, ga) in zip(axes[1], groups.items()):
            _curves(ax, ga, f"{g}: mean loss per epoch (val solid, train dashed)")
    else:
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
        _bars(axes[0], arms, "final_val_loss", "final validation loss")
        _bars(axes[1], arms, "final_val_acc", "final validation accuracy")
        _paired_bars(axes[2], arms)
        _curves(axes[3], arms, "mean loss per epoch (val solid, train dashed)")
    for ax in np.ravel(axes):
        ax.grid(True, alpha=0.3)
    s = report["settings"]
    fig.suptitle(
        f"{report['title']}: 8x8 digits, {report['dataset']['train_size']} training "
        f"images, {s['epochs']} epochs; mean ± sd over {n} replicates (seed "
        f"{s['seed']}); losses measured with dropout off",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=64, metadata={"Software": None})
    plt.close(fig)
