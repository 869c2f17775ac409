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
    """One row per model: all four losses (log scale), the validation losses alone
    (linear scale, best epoch marked) and the accuracies. Training curves dashed,
    validation solid; without dropout red, with dropout blue."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = require("matplotlib.pyplot")
    rows = len(results)
    fig, axes = plt.subplots(rows, 3, figsize=(15, 4.0 * rows), squeeze=False)
    for row, (key, (a, b, _)) in enumerate(results.items()):
        ax_loss, ax_val, ax_acc = axes[row]
        low_acc = 1.0
        for run in (a, b):
            h = run.history
            ep = list(range(1, len(h.val_loss) + 1))
            c = COLORS[run.name]
            ax_loss.plot(ep, h.train_loss, "--", color=c, label=f"{run.name}: train")
            ax_loss.plot(
                ep, h.val_loss, "-", color=c, lw=2, label=f"{run.name}: validation"
            )
            best = min(range(len(h.val_loss)), key=h.val_loss.__getitem__)
            ax_val.plot(ep, h.val_loss, "-", color=c, lw=2, label=f"{run.name}")
            ax_val.plot(
                [best + 1],
                [h.val_loss[best]],
                "o",
                color=c,
                ms=6,
                label=f"best {h.val_loss[best]:.3f} (epoch {best + 1}), "
                f"final {h.val_loss[-1]:.3f}",
            )
            ax_acc.plot(ep, h.train_acc, "--", color=c, label=f"{run.name}: train")
            ax_acc.plot(
                ep,
                h.val_acc,
                "-",
                color=c,
                lw=2,
                label=f"{run.name}: validation (final {h.val_acc[-1]:.1%})",
            )
            low_acc = min(low_acc, *h.val_acc[len(ep) // 10 :])
        name = TITLES.get(key, key)
        ax_loss.set_yscale("log")
        ax_loss.set_title(f"{name}: cross-entropy loss")
        ax_val.set_title(f"{name}: validation loss")
        ax_acc.set_title(f"{name}: accuracy")
        lo = min(min(r.history.val_loss) for r in (a, b))
        hi = max(
            max(r.history.val_loss[len(r.history.val_loss) // 10 :]) for r in (a, b)
        )
        ax_val.set_ylim(lo - 0.1 * (hi - lo) - 1e-3, hi + 0.25 * (hi - lo) + 1e-3)
        ax_acc.set_ylim(max(0.0, low_acc - 0.05), 1.005)
        for ax in (ax_loss, ax_val, ax_acc):
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    hidden = "-".join(map(str, config.get("hidden", [])))
    fig.suptitle(
        f"fastdropout demo: 8x8 digits, {config.get('train_size')} training images; "
        f"MLP 64-{hidden}-10, dropout p_input={config.get('p_input')}, "
        f"p_hidden={config.get('p_hidden')}"
        + (f", conv p_spatial={config.get('p_spatial')}" if "conv" in results else "")
        + f"; seed {config.get('seed')}. Losses measured with dropout off.",
        fontsize=10,
    )
    # Fixed margins: tight_layout would measure every label first, which takes
    # longer than drawing the figure.
    height = 4.0 * rows  # inches; margins in inches below
    fig.subplots_adjust(
        left=0.045,
        right=0.99,
        bottom=0.5 / height,
        top=1.0 - 0.7 / height,
        wspace=0.17,
        hspace=0.35,
    )
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
