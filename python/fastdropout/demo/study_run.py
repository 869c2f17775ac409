"""``python -m fastdropout demo --study ...``: run the studies, write their files.

For each study this writes ``study_<name>.json`` (:func:`.study_report.study_report`
plus a ``"run"`` section with the timings, the only part that is not a function of
the arguments) and ``study_<name>.png``, and prints the study's table and reading.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import fastdropout

from .studies import STUDIES, Settings, StudyRunner, build_study
from .study_plot import plot_study
from .study_report import study_report, table

__all__ = [
    "QUICK_EPOCHS",
    "QUICK_SEEDS",
    "QUICK_VAL_SIZE",
    "STUDY_EPOCHS",
    "STUDY_SEEDS",
    "StudyOutput",
    "run_studies",
    "settings_from_args",
    "study_names",
]

# Defaults, and the smaller ones of --quick (which checks the machinery only).
STUDY_EPOCHS = 100
STUDY_SEEDS = 5
QUICK_EPOCHS = 3
QUICK_SEEDS = 2
QUICK_VAL_SIZE = 200


@dataclass
class StudyOutput:
    name: str
    report: dict[str, Any]
    png: Path
    json: Path


def study_names(choice: str) -> list[str]:
    """``"all"`` or one study name, as a list of study names."""
    return list(STUDIES) if choice == "all" else [choice]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings of the studies from the demo's command-line arguments."""
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else STUDY_EPOCHS)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else STUDY_SEEDS)
    val_size = args.val_size
    if val_size is None and args.quick:
        val_size = QUICK_VAL_SIZE
    return Settings(
        epochs=epochs,
        seeds=seeds,
        train_size=args.train_size,
        val_size=val_size,
        lr=args.lr,
        batch_size=args.batch_size,
        schedule=args.schedule,
        seed=args.seed,
        p_dropout=args.p_hidden,
    )


def run_studies(
    names: list[str],
    settings: Settings,
    out: Path,
    log: Callable[[str], None],
) -> list[StudyOutput]:
    """Run the studies ``names`` in order (sharing identical runs), write their
    JSON and PNG files into ``out`` and print each table as it finishes."""
    runner = StudyRunner(settings, log)
    data = runner.data(0)
    log(
        f"studies {', '.join(names)}: {settings.seeds} replicates per arm, "
        f"{settings.epochs} epochs, {len(data.y_train)} training / "
        f"{len(data.y_val)} validation images per replicate"
    )
    out.mkdir(parents=True, exist_ok=True)
    outputs = []
    for name in names:
        study = build_study(name, settings.p_dropout)
        t0 = time.perf_counter()
        runs = runner.run(study)
        report = study_report(study, runs, settings, data)
        report["run"] = {
            "seconds": time.perf_counter() - t0,
            "train_seconds": {k: [r.seconds for r in v] for k, v in runs.items()},
            "fastdropout": getattr(fastdropout, "__version__", "?"),
            "simd_level": fastdropout.simd_level(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        }
        png = out / f"study_{name}.png"
        js = out / f"study_{name}.json"
        plot_study(report, png)
        js.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"\n{study.title} ({report['run']['seconds']:.0f}s)")
        print(f"claim: {study.claim}")
        print(table(report))
        print(report["reading"])
        outputs.append(StudyOutput(name, report, png, js))
    return outputs
