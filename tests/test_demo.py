"""The demo (``python -m fastdropout demo``): its NumPy network and the end-to-end run.

The browser tests of the page it writes are in test_browser.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import fastdropout
import numpy as np
import pytest
from fastdropout.demo import nn
from fastdropout.demo.html import decode_tensor, encode_tensor, read_page_data

# ------------------------------------------------------------------ gradients


def _loss_fixed_masks(model: nn.Sequential, x: np.ndarray, y: np.ndarray) -> float:
    """Training-mode loss, every dropout layer rewound to the start of its stream
    (a fresh fastdropout layer with the same seed), so each call draws the same
    masks."""
    model.reset_dropout()
    loss, _ = nn.softmax_cross_entropy(model.forward(x, training=True), y)
    return loss


def _numeric_grad(
    f: Callable[[], float], a: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def _check_gradients(model: nn.Sequential, x: np.ndarray, y: np.ndarray) -> None:
    # Biases start at 0; where a whole input is dropped a pre-activation would be
    # exactly 0, on the ReLU's kink, where finite differences mean nothing.
    rng = np.random.default_rng(42)
    for p in model.params:
        if p.name == "b":
            p.value[...] = rng.normal(0.0, 0.1, size=p.value.shape)
    # The masks really are fixed, and really drop something.
    first = _loss_fixed_masks(model, x, y)
    assert _loss_fixed_masks(model, x, y) == first
    eval_loss, _ = nn.softmax_cross_entropy(model.forward(x, training=False), y)
    assert eval_loss != first

    # Analytic gradients: one forward (fresh streams) and the layers' backward,
    # which uses the mask each fastdropout layer stored in its forward.
    model.reset_dropout()
    logits = model.forward(x, training=True)
    _, grad_logits = nn.softmax_cross_entropy(logits, y)
    grad_x = model.backward(grad_logits)
    analytic = [p.grad.copy() for p in model.params]

    for p, g in zip(model.params, analytic):
        num = _numeric_grad(lambda: _loss_fixed_masks(model, x, y), p.value)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8, err_msg=p.name)
    num_x = _numeric_grad(lambda: _loss_fixed_masks(model, x, y), x)
    np.testing.assert_allclose(grad_x, num_x, rtol=1e-5, atol=1e-8)


def test_mlp_gradients_with_dropout_masks_fixed() -> None:
    model = nn.build_mlp(
        6, [9, 7], 4, p_input=0.2, p_hidden=0.5, seed=3, dtype=np.float64
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6))
    y = rng.integers(0, 4, size=5)
    _check_gradients(model, x, y)


def test_convnet_gradients_with_spatial_dropout_masks_fixed() -> None:
    model = nn.build_convnet(
        (4, 4), [3, 4], 3, p_spatial=0.4, p_hidden=0.3, seed=5, dtype=np.float64
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1, 4, 4))
    y = rng.integers(0, 3, size=3)
    _check_gradients(model, x, y)


def test_conv2d_matches_direct_convolution() -> None:
    rng = np.random.default_rng(2)
    conv = nn.Conv2D.init(2, 3, rng, np.float64)
    conv.b.value[...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 5, 4))
    y = conv.forward(x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 3, 5, 4))
    for o in range(3):
        for i in range(3):
            for j in range(3):
                ref[:, o] += np.einsum(
                    "nchw,c->nhw",
                    xp[:, :, i : i + 5, j : j + 4],
                    conv.w.value[o, :, i, j],
                )
        ref[:, o] += conv.b.value[o]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_dropout_layers_are_fastdropouts_own() -> None:
    model = nn.build_convnet((4, 4), [2], 3, p_spatial=0.5, p_hidden=0.5, seed=0)
    kinds = [type(d.layer) for d in model.dropouts()]
    assert kinds == [fastdropout.SpatialDropout, fastdropout.Dropout]


def test_drop_draws_fastdropouts_stream() -> None:
    d = nn.Drop(0.5, seed=1234)
    x = np.ones((3, 40))
    y1 = d.forward(x, training=True)
    y2 = d.forward(x, training=True)  # the next stream position: another mask
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(y1, fastdropout.dropout(x, 0.5, seed=1234, offset=0))
    np.testing.assert_array_equal(
        y2, fastdropout.dropout(x, 0.5, seed=1234, offset=120)
    )
    np.testing.assert_array_equal(d.forward(x, training=False), x)
    d.reset()
    np.testing.assert_array_equal(d.forward(x, training=True), y1)


def test_same_initial_weights_with_and_without_dropout() -> None:
    a = nn.build_mlp(64, [32, 32], 10, p_input=0.0, p_hidden=0.0, seed=7)
    b = nn.build_mlp(64, [32, 32], 10, p_input=0.2, p_hidden=0.5, seed=7)
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])


def test_tensor_encoding_round_trips() -> None:
    a = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(decode_tensor(encode_tensor(a)), a.astype(np.float64))


# ------------------------------------------------------------------ end to end

needs_demo_extra = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sklearn", "matplotlib")),
    reason="the demo needs scikit-learn and matplotlib: pip install 'fastdropout[demo]'",
)

TINY = [
    "--epochs",
    "2",
    "--hidden",
    "16",
    "12",
    "--channels",
    "4",
    "6",
    "--train-size",
    "40",
    "--val-size",
    "60",
    "--seed",
    "11",
    "--quiet",
]


def _run(out: Path, *extra: str) -> dict:
    from fastdropout.demo import main

    assert main([*TINY, "--out", str(out), *extra]) == 0
    return json.loads((out / "demo_results.json").read_text(encoding="utf-8"))


@needs_demo_extra
def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _run(tmp_path / "a", "--html")
    out = capsys.readouterr().out
    assert "summary" in out
    assert "final val loss" in out

    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert files == {"demo_loss.png", "demo_results.json", "visualizer.html"}
    png = (tmp_path / "a" / "demo_loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")

    assert set(report["models"]) == {"mlp", "conv"}  # --html implies --conv
    for runs in report["models"].values():
        assert set(runs) == {"no_dropout", "dropout"}
        for h in runs.values():
            for key in (
                "train_loss",
                "val_loss",
                "train_acc",
                "val_acc",
                "running_loss",
            ):
                assert len(h[key]) == 2
                assert all(np.isfinite(h[key]))
            s = h["summary"]
            assert s["final_val_loss"] == h["val_loss"][-1]
            assert s["best_val_loss"] == min(h["val_loss"])
    assert report["dataset"] == {
        "name": "sklearn.datasets.load_digits",
        "train_size": 40,
        "val_size": 60,
    }
    assert report["config"]["p_hidden"] == 0.5
    assert report["config"]["p_input"] == 0.1

    # The page embeds the weights of all four networks and validation images.
    data = read_page_data((tmp_path / "a" / "visualizer.html").read_text("utf-8"))
    assert [d["W"]["shape"] for d in data["mlp"]["dropout"]["dense"]] == [
        [64, 16],
        [16, 12],
        [12, 10],
    ]
    assert [c["W"]["shape"] for c in data["conv"]["no_dropout"]["conv"]] == [
        [4, 1, 3, 3],
        [6, 4, 3, 3],
    ]
    x = decode_tensor(data["examples"]["x"])
    assert x.shape == (len(data["examples"]["y"]), 64)
    assert x.min() >= 0.0
    assert x.max() <= 1.0

    # Deterministic for a given seed: a second run gives the same numbers (and the
    # MLP's do not depend on whether the conv net was trained too).
    again = _run(tmp_path / "b")
    assert set(again["models"]) == {"mlp"}
    assert again["models"]["mlp"] == report["models"]["mlp"]


@needs_demo_extra
def test_demo_without_dropout_differences_come_from_dropout_only(
    tmp_path: Path,
) -> None:
    # With both rates 0 the two runs are the same computation, number for number.
    report = _run(tmp_path, "--p-hidden", "0", "--p-input", "0")
    runs = report["models"]["mlp"]
    assert runs["no_dropout"] == runs["dropout"]
    assert set(report["models"]) == {"mlp"}


@pytest.mark.parametrize(
    "args",
    [
        ["--p-hidden", "1.5"],
        ["--p-input", "-0.1"],
        ["--epochs", "0"],
        ["--hidden", "x"],
    ],
)
def test_demo_rejects_bad_arguments(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from fastdropout.demo import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_demo_explains_missing_optional_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fastdropout.demo import main

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit, match=r"pip install 'fastdropout\[demo\]'"):
        main(["--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_python_m_fastdropout_demo_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fastdropout", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--p-hidden" in proc.stdout
    assert "--html" in proc.stdout
