"""The loss/accuracy figure (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .train import Trainer, require

TITLES = {"mlp": "MLP", "conv": "conv net"}
COLORS = {"no dropout": "#d62728", "dropout": "#1f77b4"}


def plot_histories(
    results: Mapping[str, tuple[Trainer, Trainer, float]],
    path: Path,
    config: Mapping[str, Any],
) -> None:
    """One row per model: loss (log scale) and accuracy against epoch, train dashed,
    validation solid, without dropout in red, with dropout in blue."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = require("matplotlib.pyplot")
    rows = len(results)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.9 * rows), squeeze=False)
    for row, (key, (a, b, _)) in enumerate(results.items()):
        ax_loss, ax_acc = axes[row]
        for run in (a, b):
            h = run.history
            ep = range(1, len(h.val_loss) + 1)
            c = COLORS[run.name]
            ax_loss.plot(ep, h.train_loss, "--", color=c, label=f"{run.name}: train")
            ax_loss.plot(
                ep, h.val_loss, "-", color=c, lw=2, label=f"{run.name}: validation"
            )
            best = int(min(range(len(h.val_loss)), key=h.val_loss.__getitem__))
            ax_loss.plot([best + 1], [h.val_loss[best]], "o", color=c, ms=5)
            ax_acc.plot(ep, h.train_acc, "--", color=c, label=f"{run.name}: train")
            ax_acc.plot(
                ep, h.val_acc, "-", color=c, lw=2, label=f"{run.name}: validation"
            )
        name = TITLES.get(key, key)
        ax_loss.set_yscale("log")
        ax_loss.set_title(f"{name}: cross-entropy loss (dots: best validation)")
        ax_acc.set_title(f"{name}: accuracy")
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("epoch")
            ax.grid(True, which="both", alpha=0.3)
        ax_loss.legend(fontsize=8)
        ax_acc.legend(fontsize=8, loc="lower right")
    hidden = "-".join(map(str, config.get("hidden", [])))
    fig.suptitle(
        f"fastdropout demo: digits, {config.get('train_size')} training images, "
        f"MLP hidden {hidden}, p_input={config.get('p_input')}, "
        f"p_hidden={config.get('p_hidden')}, seed={config.get('seed')} "
        "(losses measured with dropout off)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
