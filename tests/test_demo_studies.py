"""The measured studies of the demo (``python -m fastdropout demo --study``).

These run the studies in ``--quick`` mode: they check the machinery (files, JSON
shapes, determinism, identical starting points and minibatches across arms,
statistics), not the claims; the measured numbers are in the README.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastdropout.demo.augment import Augmenter, shift_images
from fastdropout.demo.studies import RATES, STUDIES, build_study, replicate_seed
from fastdropout.demo.study_report import VERDICTS, Effect, read_study

needs_demo_extra = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sklearn", "matplotlib")),
    reason="the demo needs scikit-learn and matplotlib: pip install 'fastdropout[demo]'",
)

# ---------------------------------------------------------------- augmentation


def _shift_loop(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    n, h, w = x.shape
    out = np.zeros_like(x)
    for k in range(n):
        for r in range(h):
            for c in range(w):
                rr, cc = r - dy[k], c - dx[k]
                if 0 <= rr < h and 0 <= cc < w:
                    out[k, r, c] = x[k, rr, cc]
    return out


@pytest.mark.parametrize("shape", [(5, 8, 8), (3, 4, 7), (0, 8, 8)])
@pytest.mark.parametrize("max_shift", [0, 1, 3])
def test_shift_images_matches_a_loop(
    shape: tuple[int, int, int], max_shift: int
) -> None:
    rng = np.random.default_rng(max_shift)
    x = rng.random(shape).astype(np.float32)
    dy = rng.integers(-max_shift, max_shift + 1, size=shape[0])
    dx = rng.integers(-max_shift, max_shift + 1, size=shape[0])
    got = shift_images(x, dy, dx)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, _shift_loop(x, dy, dx))


def test_shift_images_direction() -> None:
    x = np.zeros((1, 8, 8))
    x[0, 2, 5] = 1.0
    y = shift_images(x, [1], [-2])  # one down, two left
    assert np.argwhere(y[0]).tolist() == [[3, 3]]


@pytest.mark.parametrize(
    ("images", "dy", "dx", "match"),
    [
        (np.zeros((2, 8)), [0, 0], [0, 0], "shape"),
        (np.zeros((2, 8, 8)), [0], [0, 0], "dy and dx"),
        (np.zeros((2, 8, 8)), [8, 0], [0, 0], "smaller than the image"),
    ],
)
def test_shift_images_rejects_bad_input(
    images: np.ndarray, dy: list[int], dx: list[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        shift_images(images, dy, dx)


def test_augmenter_is_deterministic_and_stays_in_range() -> None:
    x = np.random.default_rng(0).random((32, 64)).astype(np.float32)
    a, b = Augmenter((8, 8), seed=3), Augmenter((8, 8), seed=3)
    ya, yb = a(x), b(x)
    assert ya.dtype == np.float32
    assert ya.shape == x.shape
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(a(x), b(x))  # the streams advance together
    assert ya.min() >= 0.0
    assert ya.max() <= 1.0
    assert not np.array_equal(ya, x)
    assert not np.array_equal(Augmenter((8, 8), seed=4)(x), ya)
    np.testing.assert_array_equal(Augmenter((8, 8), 0, max_shift=0, noise=0.0)(x), x)


def test_augmenter_noise_only_has_the_asked_spread() -> None:
    x = np.full((400, 64), 0.5)
    y = Augmenter((8, 8), 1, max_shift=0, noise=0.05)(x)
    assert abs(float((y - x).std()) - 0.05) < 0.002


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_shift": 8}, "max_shift"),
        ({"max_shift": -1}, "max_shift"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
    ],
)
def test_augmenter_rejects_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Augmenter((8, 8), 0, **kwargs)


def test_augmenter_rejects_wrong_batch_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        Augmenter((8, 8), 0)(np.zeros((2, 63)))


# ---------------------------------------------------------------- study design


def test_study_arms() -> None:
    rates = build_study("rates")
    assert [(a.hidden, a.p) for a in rates.arms] == [
        (w, p) for w in (1024, 128) for p in RATES
    ]
    assert RATES == (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
    cap = build_study("capacity", 0.4)
    assert [(a.hidden, a.p) for a in cap.arms] == [
        (16, 0.0),
        (16, 0.4),
        (1024, 0.0),
        (1024, 0.4),
    ]
    aug = build_study("augment")
    assert [(a.p, a.augment) for a in aug.arms] == [
        (0.0, False),
        (0.0, True),
        (0.5, False),
        (0.5, True),
    ]
    for s in STUDIES:
        arms = build_study(s).arms
        labels = [a.label for a in arms]
        assert len(set(labels)) == len(labels)
        assert all(a.baseline in labels for a in arms if a.baseline is not None)
    with pytest.raises(ValueError, match="unknown study 'size'"):
        build_study("size")


def test_replicate_seeds_differ_and_depend_on_the_seed() -> None:
    seeds = [replicate_seed(0, r) for r in range(5)]
    assert len(set(seeds)) == 5
    assert all(0 <= s < 2**63 for s in seeds)
    assert replicate_seed(1, 0) != seeds[0]
    assert replicate_seed(0, 0) == seeds[0]


BASE = np.array([0.2, 0.25, 0.3, 0.22, 0.28])
JITTER = np.array([0.001, -0.001, 0.0005, -0.0005, 0.0])


def _finals(study: str, deltas: dict[str, float]) -> dict[str, list[float]]:
    """Per-replicate final losses: every arm BASE (+ jitter), plus its delta."""
    out = {}
    for a in build_study(study).arms:
        d = deltas.get(a.label, 0.0)
        out[a.label] = list(BASE + d + (JITTER if d else 0.0))
    return out


def test_effect_is_paired_and_needs_two_standard_errors() -> None:
    base = [0.2, 0.5, 0.9]
    e = Effect.of([0.19, 0.49, 0.89], base)  # tiny but consistent: clear
    assert e.mean == pytest.approx(-0.01)
    assert e.sd == pytest.approx(0.0, abs=1e-12)
    assert e.sign == -1
    assert str(e) == "-0.010 ± 0.000 (lower)"
    noisy = Effect.of([0.25, 0.45, 0.95], base)  # mean 0.0167, sd 0.058: not clear
    assert noisy.sign == 0
    assert "no clear change" in str(noisy)
    assert Effect.of([0.3, 0.6, 1.0], base).sign == 1
    assert Effect.of([0.1], [0.5]).sign == 0  # one replicate: never clear
    assert Effect.of(base, base).sign == 0


W, N = "wide (1024)", "narrow (128)"


@pytest.mark.parametrize(
    ("deltas", "verdict", "why"),
    [
        (
            {f"{W}, p = 0.5": -0.01, f"{N}, p = 0.2": -0.01, f"{N}, p = 0.7": 0.05},
            "holds",
            None,
        ),
        (
            {f"{W}, p = 0.5": -0.01, f"{N}, p = 0.7": 0.05},
            "holds in part",
            "no rate of 0.1-0.3 clearly helps 128 units",
        ),
        (
            {f"{W}, p = 0.5": 0.02, f"{N}, p = 0.1": -0.01, f"{N}, p = 0.7": 0.05},
            "holds in part",
            "p = 0.5 does not clearly help 1024 units",
        ),
        (
            {f"{N}, p = 0.7": -0.05},
            "does not hold",
            "p = 0.7 does not clearly hurt 128 units",
        ),
    ],
)
def test_reading_of_rates(
    deltas: dict[str, float], verdict: str, why: str | None
) -> None:
    text, got = read_study(build_study("rates"), _finals("rates", deltas))
    assert got == verdict
    assert verdict in VERDICTS
    assert text.startswith("Paired change of the final validation loss")
    assert "5 replicates)" in text
    if why is None:
        assert text.endswith("the claim holds here.")
    else:
        assert why in text


@pytest.mark.parametrize(
    ("tiny", "wide", "verdict"),
    [
        (0.3, -0.01, "holds"),
        (0.3, 0.0, "holds"),
        (0.3, 0.05, "holds in part"),
        (-0.1, 0.05, "does not hold"),
    ],
)
def test_reading_of_capacity(tiny: float, wide: float, verdict: str) -> None:
    deltas = {"tiny (16), dropout 0.5": tiny, "wide (1024), dropout 0.5": wide}
    text, got = read_study(build_study("capacity"), _finals("capacity", deltas))
    assert got == verdict
    assert f"16 hidden units {tiny:+.3f}" in text


@pytest.mark.parametrize(
    ("aug", "drop", "both", "verdict"),
    [
        (-0.02, -0.01, -0.04, "holds"),
        (0.08, -0.01, 0.13, "holds in part"),  # what the README measured
        (-0.02, -0.01, -0.02, "holds in part"),  # both no better than augmentation
        (0.02, 0.01, 0.03, "does not hold"),
    ],
)
def test_reading_of_augment(aug: float, drop: float, both: float, verdict: str) -> None:
    study = build_study("augment")
    deltas = dict(zip([a.label for a in study.arms[1:]], (aug, drop, both)))
    text, got = read_study(study, _finals("augment", deltas))
    assert got == verdict
    better = "augmentation" if aug < drop else "dropout 0.5"
    assert f"both against {better} alone" in text


# ---------------------------------------------------------------- end to end

QUICK = ["--quick", "--val-size", "120", "--seed", "3", "--quiet"]


def _run(out: Path, *extra: str) -> dict[str, dict[str, Any]]:
    from fastdropout.demo import main

    assert main([*QUICK, "--out", str(out), *extra]) == 0
    return {
        p.stem.removeprefix("study_"): json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(out.glob("study_*.json"))
    }


def _without_run(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "run"}


@pytest.fixture(scope="module")
def all_quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not all(importlib.util.find_spec(m) for m in ("sklearn", "matplotlib")):
        pytest.skip("the demo needs scikit-learn and matplotlib")
    out = tmp_path_factory.mktemp("studies")
    return out, _run(out, "--study", "all")


@needs_demo_extra
def test_study_files_and_json_shapes(all_quick: tuple[Path, dict]) -> None:
    out, reports = all_quick
    assert {p.name for p in out.iterdir()} == {
        f"study_{s}.{ext}" for s in STUDIES for ext in ("json", "png")
    }
    for s in STUDIES:
        assert (out / f"study_{s}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert set(reports) == set(STUDIES)
    for name, rep in reports.items():
        assert rep["study"] == name
        st = rep["settings"]
        assert (st["epochs"], st["seeds"], st["seed"]) == (3, 2, 3)
        assert rep["dataset"]["val_size"] == 120
        assert rep["replicate_seeds"] == [replicate_seed(3, r) for r in range(2)]
        assert [a["label"] for a in rep["arms"]] == [
            a.label for a in build_study(name).arms
        ]
        assert rep["verdict"] in VERDICTS
        assert rep["reading"].endswith(".")
        for arm in rep["arms"]:
            assert [r["replicate"] for r in arm["runs"]] == [0, 1]
            for run in arm["runs"]:
                for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                    assert len(run["history"][key]) == 3
                    assert np.all(np.isfinite(run["history"][key]))
            finals = [r["history"]["val_loss"][-1] for r in arm["runs"]]
            s = arm["summary"]["final_val_loss"]
            assert s["n"] == 2
            assert s["mean"] == pytest.approx(np.mean(finals))
            assert s["sd"] == pytest.approx(np.std(finals, ddof=1))
            assert (s["min"], s["max"]) == (min(finals), max(finals))
            if arm["baseline"] is not None:
                base = next(a for a in rep["arms"] if a["label"] == arm["baseline"])
                diffs = [
                    r["history"]["val_loss"][-1] - b["history"]["val_loss"][-1]
                    for r, b in zip(arm["runs"], base["runs"])
                ]
                d = arm["vs_baseline"]
                assert d["final_val_loss_diff"]["mean"] == pytest.approx(np.mean(diffs))
                assert d["lower_loss_in"] == sum(x < 0 for x in diffs)
                assert d["of"] == 2
            else:
                assert "vs_baseline" not in arm


@needs_demo_extra
def test_arms_share_initial_weights_and_minibatches(
    all_quick: tuple[Path, dict],
) -> None:
    _, reports = all_quick
    runs = [
        (arm, run)
        for rep in reports.values()
        for arm in rep["arms"]
        for run in arm["runs"]
    ]
    for r in (0, 1):
        mine = [(a, run) for a, run in runs if run["replicate"] == r]
        # Every arm of every study saw the same minibatches in this replicate...
        assert len({run["minibatch_digest"] for _, run in mine}) == 1
        # ... from the same initial weights, per width ...
        for width in (16, 128, 1024):
            inits = {run["init_digest"] for a, run in mine if a["hidden"] == width}
            assert len(inits) == 1
        # ... and the augmented arms the same augmented inputs.
        for aug in (False, True):
            inputs = {run["input_digest"] for a, run in mine if a["augment"] is aug}
            assert len(inputs) == 1
        assert len({run["input_digest"] for _, run in mine}) == 2
    # Replicates differ.
    assert len({run["minibatch_digest"] for _, run in runs}) == 2
    # The dropout rate changes the training, not the starting point.
    rates = reports["rates"]["arms"]
    assert rates[0]["runs"][0]["history"] != rates[1]["runs"][0]["history"]


@needs_demo_extra
def test_studies_are_deterministic_and_independent_of_each_other(
    all_quick: tuple[Path, dict], tmp_path: Path
) -> None:
    _, reports = all_quick
    # One study alone (nothing to reuse) gives exactly the numbers it gave as part
    # of --study all, where its wide arms were the rates study's runs.
    alone = _run(tmp_path / "a", "--study", "augment")
    assert set(alone) == {"augment"}
    assert _without_run(alone["augment"]) == _without_run(reports["augment"])
    # Another seed, other numbers.
    other = _run(tmp_path / "c", "--study", "capacity", "--seed", "4", "--seeds", "1")
    first = reports["capacity"]["arms"][0]["runs"][0]
    assert other["capacity"]["arms"][0]["runs"][0]["history"] != first["history"]


@needs_demo_extra
def test_study_prints_table_and_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastdropout.demo import main

    args = ["--quick", "--val-size", "60", "--seeds", "1", "--epochs", "2"]
    assert main([*args, "--study", "capacity", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[capacity 1/4] replicate 1/1, tiny (16), no dropout: final val loss" in out
    assert "| capacity (n = 1 replicates) | final val loss |" in out
    assert "| tiny (16), dropout 0.5 |" in out
    assert "claim: without excess capacity, dropout raises the validation loss" in out
    rep = json.loads((tmp_path / "study_capacity.json").read_text(encoding="utf-8"))
    assert rep["reading"] in out
    assert rep["settings"]["epochs"] == 2
    assert len(rep["arms"][0]["runs"]) == 1
    assert rep["arms"][0]["summary"]["final_val_loss"]["sd"] == 0.0


@pytest.mark.parametrize(
    "args", [["--study", "sizes"], ["--seeds", "0"], ["--seeds", "two"]]
)
def test_study_rejects_bad_arguments(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fastdropout.demo import main

    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


TINY_PAIR = [
    *("--hidden", "8", "--channels", "2", "3", "--train-size", "40"),
    *("--val-size", "40", "--quiet"),
]


@needs_demo_extra
def test_quick_without_study_shortens_the_comparison(tmp_path: Path) -> None:
    from fastdropout.demo import main

    assert main(["--quick", *TINY_PAIR, "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "demo_results.json").read_text(encoding="utf-8"))
    assert rep["config"]["epochs"] == 3
    assert len(rep["models"]["mlp"]["dropout"]["val_loss"]) == 3
    assert not list(tmp_path.glob("study_*"))


@needs_demo_extra
def test_study_with_html_embeds_the_study_in_the_page(tmp_path: Path) -> None:
    from fastdropout.demo import main
    from fastdropout.demo.html import read_page_data

    args = ["--quick", "--seeds", "1", "--study", "capacity", "--html", *TINY_PAIR]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "demo_loss.png",
        "demo_results.json",
        "visualizer.html",
        "study_capacity.png",
        "study_capacity.json",
    }
    data = read_page_data((tmp_path / "visualizer.html").read_text(encoding="utf-8"))
    rep = json.loads((tmp_path / "study_capacity.json").read_text(encoding="utf-8"))
    (sec,) = data["studies"]
    assert sec["name"] == "capacity"
    assert (sec["reading"], sec["verdict"], sec["claim"]) == (
        rep["reading"],
        rep["verdict"],
        rep["claim"],
    )
    assert (sec["seeds"], sec["epochs"]) == (1, 3)
    png = (tmp_path / "study_capacity.png").read_bytes()
    assert base64.b64decode(sec["png"]) == png


def test_help_lists_the_study_options() -> None:
    from fastdropout.demo.cli import build_parser

    text = build_parser().format_help()
    for opt in ("--study", "{rates,capacity,augment,all}", "--seeds", "--quick"):
        assert opt in text
