"""Write the self-contained visualiser page (``visualizer.html``).

The page is the template ``visualizer.html`` next to this module with the trained
weights, a few validation images and the training curves embedded as JSON in a
``<script type="application/json" id="model-data">`` element. Arrays are stored as
``{"shape": [...], "dtype": "float32", "data": <base64 of little-endian float32>}``:
exact and about a third of the size of decimal text. Studies run in the same
invocation (``--study``) are embedded as their PNG (base64, shown through a
``data:`` URL) with their title, claim and reading. :func:`read_page_data` and
:func:`decode_tensor` read them back (the tests use them).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

import fastdropout

from .nn import Array, Conv2D, Dense, Sequential
from .study_run import StudyOutput
from .train import Dataset, Trainer

PLACEHOLDER = "__FASTDROPOUT_DATA__"
_DATA_RE = re.compile(
    r'<script type="application/json" id="model-data">(.*?)</script>', re.DOTALL
)


def encode_tensor(a: Array) -> dict[str, Any]:
    a32 = np.ascontiguousarray(a, dtype="<f4")
    return {
        "shape": list(a32.shape),
        "dtype": "float32",
        "data": base64.b64encode(a32.tobytes()).decode("ascii"),
    }


def decode_tensor(t: Mapping[str, Any]) -> Array:
    """The float32 array of :func:`encode_tensor`'s output, as float64."""
    raw = np.frombuffer(base64.b64decode(t["data"]), dtype="<f4")
    return raw.reshape(t["shape"]).astype(np.float64)


def export_model(model: Sequential) -> dict[str, Any]:
    """Weights of the Dense and Conv2D layers, in order (as the page expects)."""
    out: dict[str, Any] = {"dense": []}
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    if convs:
        out["conv"] = [
            {"W": encode_tensor(c.w.value), "b": encode_tensor(c.b.value)}
            for c in convs
        ]
    for layer in model.layers:
        if isinstance(layer, Dense):
            out["dense"].append(
                {"W": encode_tensor(layer.w.value), "b": encode_tensor(layer.b.value)}
            )
    return out


def pick_examples(data: Dataset, per_class: int = 2) -> Array:
    """Indices into the validation set: the first ``per_class`` images of each
    digit, in the order 0..9, 0..9, ..."""
    picks: list[int] = []
    for rank in range(per_class):
        for k in range(data.n_classes):
            idx = np.flatnonzero(data.y_val == k)
            if rank < len(idx):
                picks.append(int(idx[rank]))
    return np.asarray(picks, dtype=np.intp)


def _curves(trainer: Trainer) -> dict[str, list[float]]:
    h = trainer.history
    return {
        "train_loss": [round(v, 6) for v in h.train_loss],
        "val_loss": [round(v, 6) for v in h.val_loss],
    }


def study_sections(studies: Sequence[StudyOutput]) -> list[dict[str, Any]]:
    """What the page shows of each study: title, claim, reading, replicates and
    the plot (PNG bytes in base64, shown through a ``data:`` URL)."""
    return [
        {
            "name": s.name,
            "title": s.report["title"],
            "claim": s.report["claim"],
            "reading": s.report["reading"],
            "verdict": s.report["verdict"],
            "seeds": s.report["settings"]["seeds"],
            "epochs": s.report["settings"]["epochs"],
            "png": base64.b64encode(s.png.read_bytes()).decode("ascii"),
        }
        for s in studies
    ]


def page_data(
    results: Mapping[str, tuple[Trainer, Trainer, float]],
    data: Dataset,
    config: Mapping[str, Any],
    studies: Sequence[StudyOutput] = (),
) -> dict[str, Any]:
    idx = pick_examples(data)
    out: dict[str, Any] = {
        "meta": {
            "fastdropout": getattr(fastdropout, "__version__", "?"),
            "train_size": len(data.y_train),
            "epochs": config.get("epochs"),
            "seed": config.get("seed"),
            "p_input": config.get("p_input"),
            "p_hidden": config.get("p_hidden"),
            "p_spatial": config.get("p_spatial"),
            "summary": {
                key: {"no_dropout": a.history.summary(), "dropout": b.history.summary()}
                for key, (a, b, _) in results.items()
            },
        },
        "image_shape": list(data.image_shape),
        "examples": {
            "x": encode_tensor(data.x_val[idx]),
            "y": [int(v) for v in data.y_val[idx]],
            "val_index": [int(i) for i in idx],
        },
        "history": {
            key: {"no_dropout": _curves(a), "dropout": _curves(b)}
            for key, (a, b, _) in results.items()
        },
        "studies": study_sections(studies),
    }
    for key, (a, b, _) in results.items():
        out[key] = {
            "no_dropout": export_model(a.model),
            "dropout": export_model(b.model),
        }
    return out


def render_page(payload: Mapping[str, Any]) -> str:
    template = (
        resources.files("fastdropout.demo")
        .joinpath("visualizer.html")
        .read_text("utf-8")
    )
    # Inside <script>, "</" would end the element; JSON allows "<\/" for it.
    text = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    return template.replace(PLACEHOLDER, text, 1)


def write_page(
    path: Path,
    results: Mapping[str, tuple[Trainer, Trainer, float]],
    data: Dataset,
    config: Mapping[str, Any],
    studies: Sequence[StudyOutput] = (),
) -> None:
    path.write_text(
        render_page(page_data(results, data, config, studies)), encoding="utf-8"
    )


def read_page_data(html: str) -> dict[str, Any]:
    """The JSON embedded in a page written by :func:`write_page`."""
    m = _DATA_RE.search(html)
    if m is None:
        raise ValueError("no model-data element in this page")
    loaded: dict[str, Any] = json.loads(m.group(1))
    return loaded
