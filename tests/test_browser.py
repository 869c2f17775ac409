"""The visualiser page (``python -m fastdropout demo --html``) in headless Chromium.

Needs Playwright for Python (``pip install playwright``) and a Chromium binary: the
system's (Debian: ``apt-get install chromium``; ``FASTDROPOUT_CHROMIUM`` names
another). Playwright's own browser download is never used. Skipped, with the
reason, where either is missing.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastdropout
import numpy as np
import pytest
from fastdropout.demo import nn
from fastdropout.demo.html import decode_tensor, read_page_data
from fastdropout.demo.studies import STUDIES

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright for Python: pip install playwright"
)


def _chromium() -> str | None:
    env = os.environ.get("FASTDROPOUT_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip(
        "needs a Chromium binary (Debian: apt-get install chromium, or set "
        "FASTDROPOUT_CHROMIUM)",
        allow_module_level=True,
    )
if not all(importlib.util.find_spec(m) for m in ("sklearn", "matplotlib")):
    pytest.skip(
        "the demo needs scikit-learn and matplotlib: pip install 'fastdropout[demo]'",
        allow_module_level=True,
    )

TOL = 1e-9  # the page computes in float64 from the same float32 weights


# ------------------------------------------------------------ NumPy reference


def _models(data: dict[str, Any], kind: str, run: str) -> dict[str, list[np.ndarray]]:
    m = data[kind][run]
    out = {
        "W": [decode_tensor(d["W"]) for d in m["dense"]],
        "b": [decode_tensor(d["b"]) for d in m["dense"]],
    }
    if "conv" in m:
        out["cW"] = [decode_tensor(c["W"]) for c in m["conv"]]
        out["cb"] = [decode_tensor(c["b"]) for c in m["conv"]]
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def mlp_forward(
    m: dict[str, list[np.ndarray]], x: np.ndarray, keep: list[np.ndarray], scale: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Hidden activations and class probabilities, hidden layer l multiplied by
    ``keep[l] * scale`` after its ReLU (the dropout positions of training)."""
    hidden, h = [], x
    for w, b, k in zip(m["W"][:-1], m["b"][:-1], keep):
        h = np.maximum(h @ w + b, 0.0) * np.where(k, scale, 0.0)
        hidden.append(h)
    return hidden, _softmax(h @ m["W"][-1] + m["b"][-1])


def conv_features(m: dict[str, list[np.ndarray]], x: np.ndarray) -> np.ndarray:
    """First conv layer's feature maps (after ReLU) for one 8x8 image, (C, 8, 8)."""
    c = nn.Conv2D(m["cW"][0], m["cb"][0])
    return np.maximum(c.forward(x.reshape(1, 1, 8, 8))[0], 0.0)


def conv_head(m: dict[str, list[np.ndarray]], f1: np.ndarray) -> np.ndarray:
    h = f1[None]
    for w, b in zip(m["cW"][1:], m["cb"][1:]):
        h = np.maximum(nn.Conv2D(w, b).forward(h), 0.0)
    h = nn.AvgPool2().forward(h).reshape(-1)
    return _softmax(h @ m["W"][0] + m["b"][0])


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastdropout.demo import main

    out = tmp_path_factory.mktemp("page")
    args = [
        "--epochs",
        "3",
        "--hidden",
        "24",
        "16",
        "--channels",
        "6",
        "8",
        "--train-size",
        "60",
        "--val-size",
        "80",
        "--seed",
        "5",
        "--quiet",
        "--html",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    return out / "visualizer.html"


@pytest.fixture(scope="module")
def page_data(page_file: Path) -> dict[str, Any]:
    return read_page_data(page_file.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@contextlib.contextmanager
def _open_page(browser: Any, page_file: Path) -> Iterator[Any]:
    """The page, loaded and ready; on exit, no script errors and no request for
    anything but the file itself (self-contained: such requests are refused)."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    remote: list[str] = []

    def route(r: Any) -> None:
        if r.request.url == page_file.as_uri():
            r.continue_()
        else:
            remote.append(r.request.url)
            r.abort()

    pg.route("**/*", route)
    pg.goto(page_file.as_uri())
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    yield pg
    pg.close()
    assert errors == []
    assert remote == []


@pytest.fixture
def page(browser: Any, page_file: Path) -> Iterator[Any]:
    with _open_page(browser, page_file) as pg:
        yield pg


def _probs(pg: Any, attr: str = "data-prob", scope: str = "#probs") -> np.ndarray:
    vals = pg.eval_on_selector_all(
        f"{scope} [{attr}]",
        f"els => els.map(e => [Number(e.getAttribute('{attr}')), e.dataset.value,"
        " e.textContent])",
    )
    assert [v[0] for v in vals] == list(range(10))
    for _, full, shown in vals:  # the text shows the same number, rounded
        assert abs(float(shown) - float(full)) <= 5e-4
    return np.array([float(v[1]) for v in vals])


def _dropped(pg: Any, layer: int) -> np.ndarray:
    flags = pg.eval_on_selector_all(
        f"[data-layer='{layer}'][data-neuron]", "els => els.map(e => e.dataset.dropped)"
    )
    return np.array([f == "1" for f in flags])


def _set_p(pg: Any, p: str) -> None:
    pg.eval_on_selector(
        "#p", f"el => {{ el.value = '{p}'; el.dispatchEvent(new Event('input')); }}"
    )


def _example_x(data: dict[str, Any], i: int = 0) -> np.ndarray:
    return decode_tensor(data["examples"]["x"])[i]


# ---------------------------------------------------------------------- tests


def test_page_loads_and_philox_self_test_passes(
    page: Any, page_data: dict[str, Any]
) -> None:
    assert page.get_attribute("body", "data-philox-kat") == "ok"
    hidden = [d["W"]["shape"][1] for d in page_data["mlp"]["dropout"]["dense"][:-1]]
    assert hidden == [24, 16]
    for layer, n in enumerate(hidden):
        assert page.locator(f"[data-layer='{layer}'][data-neuron]").count() == n
    assert page.locator("[data-example]").count() == len(page_data["examples"]["y"])


def test_clicking_a_neuron_drops_it(
    page: Any, page_data: dict[str, Any], tmp_path: Path
) -> None:
    m = _models(page_data, "mlp", "dropout")
    x = _example_x(page_data)
    all_kept = [np.ones(24, bool), np.ones(16, bool)]
    hidden, ref = mlp_forward(m, x, all_kept, 1.0)
    before = _probs(page)
    np.testing.assert_allclose(before, ref, rtol=0, atol=TOL)
    assert page.text_content("#pred") == str(int(ref.argmax()))

    # Drop the most active unit of the first hidden layer: the outputs must move.
    k = int(hidden[0].argmax())
    assert hidden[0][k] > 0
    page.click(f"[data-layer='0'][data-neuron='{k}']")
    assert (
        page.get_attribute(f"[data-layer='0'][data-neuron='{k}']", "data-dropped")
        == "1"
    )
    keep = [np.ones(24, bool), np.ones(16, bool)]
    keep[0][k] = False
    _, ref_drop = mlp_forward(m, x, keep, 1.0)
    after = _probs(page)
    assert np.abs(after - before).max() > 1e-6
    np.testing.assert_allclose(after, ref_drop, rtol=0, atol=TOL)
    page.screenshot(
        path=str(tmp_path / "visualizer_neuron_dropped.png"), full_page=True
    )
    assert (tmp_path / "visualizer_neuron_dropped.png").stat().st_size > 10_000

    # A second-layer unit too, then restore both by clicking again.
    j = int(hidden[1].argmax())
    page.click(f"[data-layer='1'][data-neuron='{j}']")
    keep[1][j] = False
    np.testing.assert_allclose(_probs(page), mlp_forward(m, x, keep, 1.0)[1], atol=TOL)
    assert _dropped(page, 0).sum() == 1
    assert _dropped(page, 1).sum() == 1
    page.click(f"[data-layer='1'][data-neuron='{j}']")
    page.click(f"[data-layer='0'][data-neuron='{k}']")
    np.testing.assert_allclose(_probs(page), ref, rtol=0, atol=TOL)

    # The network trained without dropout, and another image.
    page.check("input[data-model='no_dropout']")
    page.click("[data-example='3']")
    m0 = _models(page_data, "mlp", "no_dropout")
    np.testing.assert_allclose(
        _probs(page),
        mlp_forward(m0, _example_x(page_data, 3), all_kept, 1.0)[1],
        atol=TOL,
    )


def test_sampled_mask_is_fastdropouts_mask(
    page: Any, page_data: dict[str, Any]
) -> None:
    seed, offset, n = 12_345_678_901_234_567, 5, 24 + 16  # key uses both words
    page.fill("#seed", str(seed))
    page.fill("#offset", str(offset))
    _set_p(page, "0.3")
    page.check("#scale")
    page.click("#sample-mlp")

    _, mask = fastdropout.dropout(
        np.ones(n), 0.3, seed=seed, offset=offset, return_mask=True
    )
    keep = mask.to_bool()
    got = np.concatenate([~_dropped(page, 0), ~_dropped(page, 1)])
    np.testing.assert_array_equal(got, keep)
    assert 0 < keep.sum() < n
    assert page.input_value("#offset") == str(offset + n)  # the stream moved on
    assert page.get_attribute("#mlp-caption", "data-offset") == str(offset)

    m = _models(page_data, "mlp", "dropout")
    x = _example_x(page_data)
    _, ref = mlp_forward(m, x, [keep[:24], keep[24:]], 1.0 / (1.0 - 0.3))
    np.testing.assert_allclose(_probs(page), ref, rtol=0, atol=TOL)

    # Same stream positions, higher rate: a superset of the dropped units.
    _set_p(page, "0.6")
    keep6 = fastdropout.dropout(
        np.ones(n), 0.6, seed=seed, offset=offset, return_mask=True
    )[1].to_bool()
    got6 = np.concatenate([~_dropped(page, 0), ~_dropped(page, 1)])
    np.testing.assert_array_equal(got6, keep6)
    assert not np.any(got6 & ~got)
    _, ref6 = mlp_forward(m, x, [keep6[:24], keep6[24:]], 1.0 / (1.0 - 0.6))
    np.testing.assert_allclose(_probs(page), ref6, rtol=0, atol=TOL)

    page.click("#restore")
    assert not _dropped(page, 0).any()
    assert not _dropped(page, 1).any()


def test_dense_vs_spatial_dropout_on_feature_maps(
    page: Any, page_data: dict[str, Any], tmp_path: Path
) -> None:
    page.fill("#seed", "77")
    page.fill("#offset", "3")
    _set_p(page, "0.5")
    page.click("#sample-conv")
    assert page.get_attribute("#conv-caption", "data-seed") == "77"
    assert page.get_attribute("#conv-caption", "data-offset") == "3"

    m = _models(page_data, "conv", "dropout")
    f1 = conv_features(m, _example_x(page_data))
    c = f1.shape[0]
    y_dense = fastdropout.dropout(f1[None], 0.5, seed=77, offset=3)[0]
    y_spatial, smask = fastdropout.spatial_dropout(
        f1[None], 0.5, seed=77, offset=3, return_mask=True
    )
    keep_ch = smask.to_bool().reshape(c)
    assert smask.shape == (1, c, 1, 1)

    flags = page.eval_on_selector_all(
        "[data-row='spatial'] [data-channel]", "els => els.map(e => e.dataset.dropped)"
    )
    np.testing.assert_array_equal([f == "0" for f in flags], keep_ch)

    # The page scales kept units only when asked to; fastdropout always does.
    # With the box ticked the page's maps are fastdropout's outputs exactly.
    page.check("#scale")
    for row, maps in (("clean", f1), ("dense", y_dense), ("spatial", y_spatial[0])):
        got = _probs(page, "data-conv-prob", f"[data-row-probs='{row}']")
        np.testing.assert_allclose(got, conv_head(m, maps), rtol=0, atol=TOL)

    # Toggle one channel of the spatial row by hand.
    assert keep_ch.any()
    ch = int(np.flatnonzero(keep_ch)[0])
    page.click(f"[data-row='spatial'] [data-channel='{ch}']")
    keep_ch[ch] = False
    ref = conv_head(m, f1 * np.where(keep_ch, 2.0, 0.0)[:, None, None])
    got = _probs(page, "data-conv-prob", "[data-row-probs='spatial']")
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    page.screenshot(path=str(tmp_path / "visualizer_feature_maps.png"), full_page=True)


# ------------------------------------------------------ the measured studies


@pytest.fixture(scope="module")
def study_page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastdropout.demo import main

    out = tmp_path_factory.mktemp("study_page")
    args = [
        *("--epochs", "2", "--hidden", "12", "--channels", "3", "4"),
        *("--train-size", "40", "--val-size", "60", "--seed", "2", "--quiet"),
        *("--quick", "--study", "all", "--html", "--out", str(out)),
    ]
    assert main(args) == 0
    return out / "visualizer.html"


def test_page_without_studies_says_so(page: Any) -> None:
    assert page.locator("[data-study]").count() == 0
    assert "without --study" in page.text_content("#studies-note")


def test_page_shows_each_study(
    browser: Any, study_page_file: Path, tmp_path: Path
) -> None:
    out = study_page_file.parent
    with _open_page(browser, study_page_file) as pg:
        names = pg.eval_on_selector_all(
            "[data-study]", "els => els.map(e => e.dataset.study)"
        )
        assert names == list(STUDIES)
        for name in STUDIES:
            report = json.loads((out / f"study_{name}.json").read_text("utf-8"))
            img = f"img[data-study-plot='{name}']"
            pg.wait_for_function(
                f'() => document.querySelector("{img}").complete', timeout=10_000
            )
            size = pg.eval_on_selector(img, "e => [e.naturalWidth, e.naturalHeight]")
            assert size[0] > 300
            assert size[1] > 200
            src = pg.get_attribute(img, "src")
            prefix = "data:image/png;base64,"
            assert src.startswith(prefix)
            png = (out / f"study_{name}.png").read_bytes()
            assert base64.b64decode(src[len(prefix) :]) == png
            reading = f"[data-study-reading='{name}']"
            assert pg.text_content(reading) == report["reading"]
            assert pg.get_attribute(reading, "data-verdict") == report["verdict"]
            assert report["claim"] in pg.text_content(f"#study-{name}")
        pg.screenshot(path=str(tmp_path / "studies.png"), full_page=True)
