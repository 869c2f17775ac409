"""Summaries, one-sentence readings, JSON reports and tables of the studies.

Statistics are over replicates (:mod:`.studies`): mean, sample standard deviation
(``ddof=1``), min and max; comparisons with an arm's baseline are paired, replicate
by replicate, since both saw the same split, initial weights and minibatches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .studies import (
    NARROW,
    RATES,
    TINY,
    WIDE,
    RunResult,
    Settings,
    Study,
    replicate_seed,
)
from .train import Dataset

__all__ = ["METRICS", "paired", "read_study", "study_report", "summarize", "table"]

METRICS = (
    "final_val_loss",
    "final_val_acc",
    "best_val_loss",
    "best_val_acc",
    "final_train_loss",
)


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": len(v),
    }


def summarize(runs: Sequence[RunResult]) -> dict[str, dict[str, float | int]]:
    """Mean, sample standard deviation, min and max over replicates per metric."""
    return {m: _stats([r.history["summary"][m] for r in runs]) for m in METRICS}


def paired(runs: Sequence[RunResult], base: Sequence[RunResult]) -> dict[str, Any]:
    """Replicate-by-replicate differences (arm minus baseline) of the final
    validation loss and accuracy, and in how many replicates the arm's final
    validation loss was lower."""
    a = np.array([r.history["summary"]["final_val_loss"] for r in runs])
    b = np.array([r.history["summary"]["final_val_loss"] for r in base])
    aa = np.array([r.history["summary"]["final_val_acc"] for r in runs])
    ba = np.array([r.history["summary"]["final_val_acc"] for r in base])
    return {
        "final_val_loss_diff": _stats(list(a - b)),
        "final_val_acc_diff": _stats(list(aa - ba)),
        "lower_loss_in": int((a < b).sum()),
        "of": len(a),
    }


def _mean_loss(summary: dict[str, Any], label: str) -> float:
    return float(summary[label]["final_val_loss"]["mean"])


def _fmt(summary: dict[str, Any], label: str) -> str:
    m = summary[label]
    return (
        f"{m['final_val_loss']['mean']:.3f} ± {m['final_val_loss']['sd']:.3f}, "
        f"{m['final_val_acc']['mean']:.1%}"
    )


def read_study(study: Study, summary: dict[str, Any]) -> tuple[str, bool]:
    """One sentence saying what the numbers show (mean final validation loss over
    replicates), and whether the study's claim held on them."""
    if study.name == "rates":
        best: dict[str, float] = {}
        for group in (f"wide ({WIDE})", f"narrow ({NARROW})"):
            arms = [a for a in study.arms if a.group == group]
            best[group] = min(arms, key=lambda a: _mean_loss(summary, a.label)).p
        w, n = best[f"wide ({WIDE})"], best[f"narrow ({NARROW})"]
        n_best = f"narrow ({NARROW}), p = {n:g}"
        n_hi = f"narrow ({NARROW}), p = {RATES[-1]:g}"
        hurt = _mean_loss(summary, n_hi) > _mean_loss(summary, n_best)
        held = 0.3 <= w <= 0.7 and 0.1 <= n <= 0.3 and hurt
        text = (
            f"The lowest mean validation loss is at p = {w:g} for {WIDE} units "
            f"({_fmt(summary, f'wide ({WIDE}), p = {w:g}')}) and at p = {n:g} for "
            f"{NARROW} units ({_fmt(summary, n_best)}), where p = {RATES[-1]:g} gives "
            f"{_fmt(summary, n_hi)}"
        )
    elif study.name == "capacity":
        tiny = [a for a in study.arms if a.hidden == TINY]
        wide = [a for a in study.arms if a.hidden == WIDE]
        t0, t1 = (_mean_loss(summary, a.label) for a in tiny)
        w0, w1 = (_mean_loss(summary, a.label) for a in wide)
        held = t1 > t0 and w1 <= w0
        text = (
            f"Dropout {'raises' if t1 > t0 else 'lowers'} the tiny network's "
            f"validation loss ({_fmt(summary, tiny[0].label)} without, "
            f"{_fmt(summary, tiny[1].label)} with) and "
            f"{'raises' if w1 > w0 else 'lowers'} the wide one's "
            f"({_fmt(summary, wide[0].label)} without, {_fmt(summary, wide[1].label)} "
            "with)"
        )
    elif study.name == "augment":
        none, aug, drop, both = (_mean_loss(summary, a.label) for a in study.arms)
        held = aug < none and drop < none and both < min(aug, drop)
        parts = [f"{a.label} {_fmt(summary, a.label)}" for a in study.arms]
        text = "Mean validation loss and accuracy: " + "; ".join(parts)
    else:  # pragma: no cover - build_study rejects other names
        raise ValueError(study.name)
    verdict = "the claim holds here" if held else "the claim does not hold here"
    return f"{text}: {verdict}.", held


def study_report(
    study: Study,
    runs: dict[str, list[RunResult]],
    settings: Settings,
    dataset: Dataset,
) -> dict[str, Any]:
    """The study's JSON report: settings, every arm's runs (per-epoch curves),
    summaries, paired differences to its baseline, and the reading."""
    summary = {a.label: summarize(runs[a.label]) for a in study.arms}
    reading, held = read_study(study, summary)
    arms = []
    for a in study.arms:
        entry: dict[str, Any] = {
            "label": a.label,
            "group": a.group,
            "hidden": a.hidden,
            "p": a.p,
            "augment": a.augment,
            "baseline": a.baseline,
            "summary": summary[a.label],
            "runs": [r.as_dict() for r in runs[a.label]],
        }
        if a.baseline is not None:
            entry["vs_baseline"] = paired(runs[a.label], runs[a.baseline])
        arms.append(entry)
    return {
        "study": study.name,
        "title": study.title,
        "claim": study.claim,
        "reading": reading,
        "claim_holds": held,
        "settings": asdict(settings),
        "model": "MLP 64-H-10, ReLU, fastdropout Dropout(p) after the hidden layer "
        "only; softmax cross-entropy, Adam; losses measured with dropout off",
        "replicate_seeds": [
            replicate_seed(settings.seed, r) for r in range(settings.seeds)
        ],
        "dataset": {
            "name": "sklearn.datasets.load_digits",
            "train_size": len(dataset.y_train),
            "val_size": len(dataset.y_val),
            "split": "a new random split per replicate",
        },
        "arms": arms,
    }


def table(report: dict[str, Any]) -> str:
    """The study as a Markdown table (mean ± sd over replicates)."""
    n = report["settings"]["seeds"]
    lines = [
        (
            f"| {report['study']} (n = {n} replicates) | final val loss "
            "| final val acc | best val loss | final train loss "
            "| Δ final val loss vs baseline (paired) | lower in |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in report["arms"]:
        s = a["summary"]
        row = [
            a["label"],
            f"{s['final_val_loss']['mean']:.3f} ± {s['final_val_loss']['sd']:.3f}",
            f"{s['final_val_acc']['mean']:.2%} ± {s['final_val_acc']['sd']:.2%}",
            f"{s['best_val_loss']['mean']:.3f} ± {s['best_val_loss']['sd']:.3f}",
            f"{s['final_train_loss']['mean']:.4f}",
        ]
        if "vs_baseline" in a:
            d = a["vs_baseline"]
            row += [
                (
                    f"{d['final_val_loss_diff']['mean']:+.3f} ± "
                    f"{d['final_val_loss_diff']['sd']:.3f}"
                ),
                f"{d['lower_loss_in']}/{d['of']}",
            ]
        else:
            row += ["(baseline)", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
