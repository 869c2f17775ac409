"""``python -m fastdropout demo``: the command line."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import fastdropout

from .nn import Array, Sequential, build_convnet, build_mlp
from .studies import STUDIES
from .study_run import (
    QUICK_EPOCHS,
    QUICK_SEEDS,
    QUICK_VAL_SIZE,
    STUDY_EPOCHS,
    STUDY_SEEDS,
    StudyOutput,
    run_studies,
    settings_from_args,
    study_names,
)
from .train import Trainer, load_digits, require, train_pair

PAIR_EPOCHS = 150

DESCRIPTION = """\
Train the same small network on scikit-learn's 8x8 handwritten digits twice, from
the same initial weights and with the same minibatches: once without dropout (p = 0)
and once with fastdropout's Dropout layers (rate --p-input on the input pixels,
--p-hidden on the hidden layers, none on the output layer). With little training
data and wide layers the network without dropout overfits: its training loss goes to
zero while its validation loss turns back up. Writes the curves as a PNG plot and
every number as JSON to --out; --html also writes a self-contained page where you
switch neurons and feature maps off by hand and watch the outputs change.

--study rates|capacity|augment|all runs measured studies instead (a one-hidden-layer
MLP, dropout after the hidden layer only, --seeds replicates per arm): dropout rate
against layer size, a tiny network with and without dropout, and dropout with data
augmentation. Each writes study_<name>.png and study_<name>.json and prints a table;
with --html the comparison above also runs and the page shows every study.
Needs scikit-learn and matplotlib: pip install 'fastdropout[demo]'.
"""


def _rate(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"a dropout rate must be in [0, 1), got {p}")
    return p


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return x


def _seed(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= n < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m fastdropout demo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--epochs",
        type=_positive,
        default=None,
        help=f"default: {PAIR_EPOCHS} for the comparison, {STUDY_EPOCHS} per "
        f"study run; {QUICK_EPOCHS} with --quick",
    )
    ap.add_argument(
        "--p-hidden",
        type=_rate,
        default=0.5,
        help="dropout rate on the hidden layers; also the rate of the dropout arms "
        "of the capacity and augment studies (default: %(default)s)",
    )
    ap.add_argument(
        "--p-input",
        type=_rate,
        default=0.1,
        help="dropout rate on the input pixels (default: %(default)s)",
    )
    ap.add_argument(
        "--p-spatial",
        type=_rate,
        default=0.1,
        help="SpatialDropout rate after each conv layer, with --conv "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--hidden",
        type=_positive,
        nargs="+",
        default=[512, 512],
        metavar="N",
        help="hidden layer sizes of the MLP (default: %(default)s)",
    )
    ap.add_argument(
        "--channels",
        type=_positive,
        nargs="+",
        default=[8, 16],
        metavar="C",
        help="conv layer widths, with --conv (default: %(default)s)",
    )
    ap.add_argument(
        "--train-size",
        type=_positive,
        default=200,
        help="training images; all other digits are the validation set "
        "(default: %(default)s; small so that overfitting shows)",
    )
    ap.add_argument(
        "--val-size",
        type=_positive,
        default=None,
        help="validation images (default: all images not used for training)",
    )
    ap.add_argument(
        "--lr",
        type=_positive_float,
        default=1e-3,
        help="Adam step size (default: %(default)s)",
    )
    ap.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="step size over the run: constant, or cosine decay to 0 (which calms "
        "the noisy curves of the dropout runs but stops them before they are done "
        "learning; default: %(default)s)",
    )
    ap.add_argument(
        "--batch-size", type=_positive, default=32, help="default: %(default)s"
    )
    ap.add_argument("--seed", type=_seed, default=0, help="default: %(default)s")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("demo_out"),
        help="output directory (default: %(default)s)",
    )
    ap.add_argument(
        "--html",
        action="store_true",
        help="also write visualizer.html, the interactive page (implies --conv: the "
        "page shows the conv net's feature maps)",
    )
    ap.add_argument(
        "--conv",
        action="store_true",
        help="also train a small conv net with SpatialDropout, with and without",
    )
    ap.add_argument(
        "--blas-threads",
        type=_positive,
        default=1,
        help="threads for NumPy's BLAS while training (default: %(default)s: the "
        "matrices are small, and BLAS threads only fight each other and any other "
        "load on the machine, slowing the run down severalfold)",
    )
    ap.add_argument(
        "--study",
        choices=(*STUDIES, "all"),
        default=None,
        help="run a measured study (or all three) instead of the comparison: "
        "rates (p against hidden-layer size), capacity (a tiny network), augment "
        "(dropout and data augmentation)",
    )
    ap.add_argument(
        "--seeds",
        type=_positive,
        default=None,
        help=f"replicates per study arm: each its own split, initial weights, "
        f"minibatches and masks, shared by all arms (default: {STUDY_SEEDS}; "
        f"{QUICK_SEEDS} with --quick)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"check that everything runs, measure nothing: {QUICK_EPOCHS} epochs "
        f"(unless --epochs), and for the studies {QUICK_SEEDS} replicates (unless "
        f"--seeds) and {QUICK_VAL_SIZE} validation images (unless --val-size)",
    )
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    return ap


def _line(name: str, s: dict[str, Any]) -> str:
    return (
        f"  {name:<11} final val loss {s['final_val_loss']:.4f}  acc "
        f"{s['final_val_acc']:.2%} | best val loss {s['best_val_loss']:.4f} "
        f"(epoch {s['best_val_loss_epoch']})  best acc {s['best_val_acc']:.2%} "
        f"(epoch {s['best_val_acc_epoch']})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fastdropout demo``; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Fail early, before any training, if an optional dependency is missing.
    require("sklearn.datasets")
    require("matplotlib")
    # threadpoolctl comes with scikit-learn.
    threadpoolctl = require("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=args.blas_threads, user_api="blas"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.html:
        args.conv = True

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    t_start = time.perf_counter()
    studies: list[StudyOutput] = []
    if args.study is not None:
        studies = run_studies(
            study_names(args.study), settings_from_args(args), args.out, log
        )
        if not args.html:
            written = [p for s in studies for p in (s.png, s.json)]
            print("wrote " + ", ".join(str(p) for p in written))
            sys.stdout.flush()
            return 0
    if args.epochs is None:
        args.epochs = QUICK_EPOCHS if args.quick else PAIR_EPOCHS
    data = load_digits(args.train_size, args.seed, val_size=args.val_size)
    log(
        f"digits: {len(data.y_train)} training / {len(data.y_val)} validation images, "
        f"fastdropout {getattr(fastdropout, '__version__', '?')} "
        f"({fastdropout.simd_level()})"
    )
    n_in = data.x_train.shape[1]
    h, w = data.image_shape

    def build_mlp_(with_dropout: bool) -> Sequential:
        return build_mlp(
            n_in,
            args.hidden,
            data.n_classes,
            p_input=args.p_input if with_dropout else 0.0,
            p_hidden=args.p_hidden if with_dropout else 0.0,
            seed=args.seed,
        )

    def flat(x: Array) -> Array:
        return x

    common: dict[str, Any] = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "log": log,
        "schedule": args.schedule,
    }
    hidden = "-".join(map(str, args.hidden))
    results: dict[str, tuple[Trainer, Trainer, float]] = {}
    results["mlp"] = train_pair(
        f"MLP {n_in}-{hidden}-{data.n_classes}: p = 0 vs dropout "
        f"(input {args.p_input}, hidden {args.p_hidden})",
        build_mlp_,
        data,
        reshape=flat,
        **common,
    )

    if args.conv:

        def build_conv(with_dropout: bool) -> Sequential:
            return build_convnet(
                data.image_shape,
                args.channels,
                data.n_classes,
                p_spatial=args.p_spatial if with_dropout else 0.0,
                p_hidden=args.p_hidden if with_dropout else 0.0,
                seed=args.seed,
            )

        def image(x: Array) -> Array:
            return x.reshape(-1, 1, h, w)

        chans = "-".join(map(str, args.channels))
        results["conv"] = train_pair(
            f"conv net (3x3 conv {chans}, avg pool, dense): p = 0 vs SpatialDropout "
            f"{args.p_spatial} + Dropout {args.p_hidden} before the output layer",
            build_conv,
            data,
            reshape=image,
            **common,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report: dict[str, Any] = {
        "config": config,
        "dataset": {
            "name": "sklearn.datasets.load_digits",
            "train_size": len(data.y_train),
            "val_size": len(data.y_val),
        },
        "models": {
            key: {"no_dropout": a.history.as_dict(), "dropout": b.history.as_dict()}
            for key, (a, b, _) in results.items()
        },
        # Everything outside "run" is a function of the arguments only.
        "run": {
            "train_seconds": {key: r[2] for key, r in results.items()},
            "fastdropout": getattr(fastdropout, "__version__", "?"),
            "simd_level": fastdropout.simd_level(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    from .plot import plot_histories

    png = args.out / "demo_loss.png"
    plot_histories(results, png, config)
    written = [png]
    if args.html:
        from .html import write_page

        page = args.out / "visualizer.html"
        write_page(page, results, data, config, studies)
        written.append(page)
    report["run"]["total_seconds"] = time.perf_counter() - t_start
    js = args.out / "demo_results.json"
    js.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    written.append(js)

    print("\nsummary (validation set, dropout off at evaluation):")
    for key, (a, b, secs) in results.items():
        print(f" {key} ({secs:.1f}s):")
        print(_line("no dropout", a.history.summary()))
        print(_line("dropout", b.history.summary()))
    written += [p for s in studies for p in (s.png, s.json)]
    print("wrote " + ", ".join(str(p) for p in written))
    sys.stdout.flush()
    return 0
