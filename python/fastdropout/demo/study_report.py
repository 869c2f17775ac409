"""Summaries, one-sentence readings, JSON reports and tables of the studies.

Statistics are over replicates (:mod:`.studies`): mean, sample standard deviation
(``ddof=1``), min and max; comparisons with an arm's baseline are paired, replicate
by replicate, since both saw the same split, initial weights and minibatches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
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

__all__ = [
    "METRICS",
    "VERDICTS",
    "Effect",
    "paired",
    "read_study",
    "study_report",
    "summarize",
    "table",
]

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


@dataclass(frozen=True)
class Effect:
    """Paired change of the final validation loss (arm minus baseline) over the
    replicates: mean, sample sd, and its sign where it is *clear*, i.e. the mean
    lies more than two standard errors (``2 sd / sqrt(n)``) from 0; 0 otherwise.
    A rough yardstick for a handful of replicates, not a significance test."""

    mean: float
    sd: float
    n: int
    sign: int

    @classmethod
    def of(cls, arm: Sequence[float], base: Sequence[float]) -> Effect:
        d = np.asarray(arm, dtype=np.float64) - np.asarray(base, dtype=np.float64)
        n = len(d)
        mean = float(d.mean())
        sd = float(d.std(ddof=1)) if n > 1 else 0.0
        margin = 2.0 * sd / np.sqrt(n) if n > 1 else np.inf
        sign = -1 if mean < -margin else (1 if mean > margin else 0)
        return cls(mean, sd, n, sign)

    def __str__(self) -> str:
        word = {-1: "lower", 0: "no clear change", 1: "higher"}[self.sign]
        return f"{self.mean:+.3f} ± {self.sd:.3f} ({word})"


VERDICTS = ("holds", "holds in part", "does not hold")


def _verdict(parts: Sequence[tuple[bool, str]]) -> tuple[str, str]:
    """The verdict from the claim's parts (held?, what it says when it fails)
    and the sentence's ending."""
    failed = [why for ok, why in parts if not ok]
    if not failed:
        return "holds", "the claim holds here"
    if len(failed) == len(parts):
        return "does not hold", "the claim does not hold here (" + "; ".join(
            failed
        ) + ")"
    return "holds in part", "the claim holds only in part here (" + "; ".join(
        failed
    ) + ")"


def read_study(
    study: Study, final_loss: Mapping[str, Sequence[float]]
) -> tuple[str, str]:
    """One sentence on what the study measured, from each arm's final validation
    losses (one per replicate, in replicate order), and the verdict on its claim:
    one of :data:`VERDICTS`. Changes are paired (:class:`Effect`)."""

    def eff(arm: str, base: str) -> Effect:
        return Effect.of(final_loss[arm], final_loss[base])

    n = len(next(iter(final_loss.values())))
    head = f"Paired change of the final validation loss (mean ± sd, {n} replicates)"
    if study.name == "rates":
        w, nw = f"wide ({WIDE})", f"narrow ({NARROW})"
        w5 = eff(f"{w}, p = 0.5", f"{w}, p = 0")
        mild = [eff(f"{nw}, p = {p:g}", f"{nw}, p = 0") for p in (0.1, 0.2, 0.3)]
        hi = eff(f"{nw}, p = {RATES[-1]:g}", f"{nw}, p = 0")
        verdict, end = _verdict(
            [
                (w5.sign < 0, f"p = 0.5 does not clearly help {WIDE} units"),
                (
                    any(e.sign < 0 for e in mild),
                    f"no rate of 0.1-0.3 clearly helps {NARROW} units",
                ),
                (
                    hi.sign > 0,
                    f"p = {RATES[-1]:g} does not clearly hurt {NARROW} units",
                ),
            ]
        )
        text = (
            f"{head} against p = 0: {WIDE} units at p = 0.5 {w5}; {NARROW} units at "
            f"p = 0.1, 0.2, 0.3 {mild[0]}, {mild[1]}, {mild[2]} and at "
            f"p = {RATES[-1]:g} {hi}"
        )
    elif study.name == "capacity":
        t0, t1, w0, w1 = (a.label for a in study.arms)
        et, ew = eff(t1, t0), eff(w1, w0)
        verdict, end = _verdict(
            [
                (et.sign > 0, f"dropout does not clearly raise the {TINY}-unit loss"),
                (ew.sign <= 0, f"dropout raises the {WIDE}-unit loss as well"),
            ]
        )
        text = (
            f"{head}, dropout against none: {TINY} hidden units {et}, {WIDE} "
            f"hidden units {ew}"
        )
    elif study.name == "augment":
        none, aug, drop, both = (a.label for a in study.arms)
        ea, ed, eb = eff(aug, none), eff(drop, none), eff(both, none)
        better = min((aug, drop), key=lambda k: float(np.mean(final_loss[k])))
        e2 = eff(both, better)
        verdict, end = _verdict(
            [
                (ea.sign < 0, "augmentation alone does not clearly help"),
                (ed.sign < 0, "dropout alone does not clearly help"),
                (
                    e2.sign < 0,
                    f"both together are not clearly better than {better} alone",
                ),
            ]
        )
        text = (
            f"{head} against neither: augmentation {ea}, dropout {ed}, both {eb}; "
            f"both against {better} alone {e2}"
        )
    else:  # pragma: no cover - build_study rejects other names
        raise ValueError(study.name)
    return f"{text}: {end}.", verdict


def study_report(
    study: Study,
    runs: dict[str, list[RunResult]],
    settings: Settings,
    dataset: Dataset,
) -> dict[str, Any]:
    """The study's JSON report: settings, every arm's runs (per-epoch curves),
    summaries, paired differences to its baseline, and the reading."""
    summary = {a.label: summarize(runs[a.label]) for a in study.arms}
    reading, verdict = read_study(
        study,
        {
            a.label: [r.history["summary"]["final_val_loss"] for r in runs[a.label]]
            for a in study.arms
        },
    )
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
        "verdict": verdict,
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
