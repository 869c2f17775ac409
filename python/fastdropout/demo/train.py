"""Train the same network with and without dropout and record the curves."""

from __future__ import annotations

import hashlib
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .nn import Adam, Array, Sequential, softmax_cross_entropy

INSTALL_HINT = "pip install 'fastdropout[demo]'"


def require(module: str) -> Any:
    """Import an optional dependency of the demo, or explain how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        top = module.split(".")[0]
        raise SystemExit(
            f"the fastdropout demo needs {top!r}, which is not installed: "
            f"{INSTALL_HINT}"
        ) from exc


@dataclass
class Dataset:
    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    image_shape: tuple[int, int]
    n_classes: int


def load_digits(
    train_size: int, seed: int, *, val_size: int | None = None, dtype: Any = np.float32
) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, shipped with sklearn).

    A random ``train_size`` images (chosen by ``seed``) are the training set, the
    others (or ``val_size`` of them) the validation set. Pixels are scaled to [0, 1].
    """
    datasets = require("sklearn.datasets")
    digits = datasets.load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0
    y = np.asarray(digits.target, dtype=np.intp)
    n = len(y)
    if not 10 <= train_size <= n - 10:
        raise SystemExit(
            f"--train-size must be between 10 and {n - 10}, got {train_size}"
        )
    order = np.random.default_rng([seed, 0xDA7A]).permutation(n)
    tr, va = order[:train_size], order[train_size:]
    if val_size is not None:
        va = va[:val_size]
    return Dataset(
        x[tr].astype(dtype),
        y[tr],
        x[va].astype(dtype),
        y[va],
        image_shape=(8, 8),
        n_classes=10,
    )


@dataclass
class History:
    name: str
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    # Mean minibatch loss during the epoch, dropout active (what Keras reports).
    running_loss: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        best = int(np.argmin(self.val_loss))
        best_acc = int(np.argmax(self.val_acc))
        return {
            "final_train_loss": self.train_loss[-1],
            "final_train_acc": self.train_acc[-1],
            "final_val_loss": self.val_loss[-1],
            "final_val_acc": self.val_acc[-1],
            "best_val_loss": self.val_loss[best],
            "best_val_loss_epoch": best + 1,
            "best_val_acc": self.val_acc[best_acc],
            "best_val_acc_epoch": best_acc + 1,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "running_loss": self.running_loss,
            "summary": self.summary(),
        }


def evaluate(
    model: Sequential, x: Array, y: Array, batch: int = 1024
) -> tuple[float, float]:
    """Mean loss and accuracy with dropout off (``training=False``)."""
    total, correct = 0.0, 0
    for i in range(0, len(y), batch):
        logits = model.forward(x[i : i + batch], training=False)
        loss, _ = softmax_cross_entropy(logits.astype(np.float64), y[i : i + batch])
        total += loss * len(logits)
        correct += int((logits.argmax(axis=1) == y[i : i + batch]).sum())
    return total / len(y), correct / len(y)


def lr_at(lr: float, epoch: int, epochs: int, schedule: str) -> float:
    """Step size for 0-based ``epoch``: ``constant``, or ``cosine`` decay from
    ``lr`` towards 0 over the run."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown schedule {schedule!r}; use 'constant' or 'cosine'")


class Trainer:
    """One model, its optimiser and its own (seeded) minibatch order.

    ``augment``, if given, maps each training minibatch (as stored in the data set)
    to the one the model sees. :attr:`minibatch_digest` and :attr:`input_digest`
    fingerprint (SHA-256) the minibatch indices and the model's inputs so far: two
    trainers with equal digests saw the same minibatches (the same inputs).
    """

    def __init__(
        self,
        name: str,
        model: Sequential,
        lr: float,
        batch_size: int,
        seed: int,
        augment: Callable[[Array], Array] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.opt = Adam(model.params, lr=lr)
        self.batch_size = batch_size
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.augment = augment
        self.history = History(name)
        self._batches = hashlib.sha256()
        self._inputs = hashlib.sha256()

    @property
    def minibatch_digest(self) -> str:
        return self._batches.hexdigest()

    @property
    def input_digest(self) -> str:
        return self._inputs.hexdigest()

    def epoch(
        self, data: Dataset, reshape: Callable[[Array], Array], lr: float | None = None
    ) -> None:
        if lr is not None:
            self.opt.lr = lr
        n = len(data.y_train)
        order = self.rng.permutation(n)
        losses = []
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            xb = data.x_train[idx]
            if self.augment is not None:
                xb = self.augment(xb)
            self._batches.update(idx.astype("<i8").tobytes())
            self._inputs.update(np.ascontiguousarray(xb).tobytes())
            logits = self.model.forward(reshape(xb), training=True)
            loss, grad = softmax_cross_entropy(logits, data.y_train[idx])
            self.model.backward(grad)
            self.opt.step()
            losses.append(loss * len(idx))
        h = self.history
        h.running_loss.append(float(sum(losses) / n))
        tl, ta = evaluate(self.model, reshape(data.x_train), data.y_train)
        vl, va = evaluate(self.model, reshape(data.x_val), data.y_val)
        h.train_loss.append(tl)
        h.train_acc.append(ta)
        h.val_loss.append(vl)
        h.val_acc.append(va)


def train_pair(
    title: str,
    build: Callable[[bool], Sequential],
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    reshape: Callable[[Array], Array],
    log: Callable[[str], None],
    schedule: str = "constant",
) -> tuple[Trainer, Trainer, float]:
    """Train ``build(False)`` (p = 0) and ``build(True)`` (dropout) side by side.

    Both start from the same weights and see the minibatches in the same order; only
    the dropout rates differ. Prints one table row per epoch through ``log``.
    """
    runs = (
        Trainer("no dropout", build(False), lr, batch_size, seed),
        Trainer("dropout", build(True), lr, batch_size, seed),
    )
    log(f"\n{title}")
    log(
        f"{'epoch':>5} | {'no dropout: train':>17} {'val loss':>8} {'val acc':>7} | "
        f"{'dropout: train':>14} {'val loss':>8} {'val acc':>7} | {'time':>5}"
    )
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        lr_e = lr_at(lr, e - 1, epochs, schedule)
        for r in runs:
            r.epoch(data, reshape, lr_e)
        a, b = (r.history for r in runs)
        log(
            f"{e:5d} | {a.train_loss[-1]:17.4f} {a.val_loss[-1]:8.4f} "
            f"{a.val_acc[-1]:7.2%} | {b.train_loss[-1]:14.4f} {b.val_loss[-1]:8.4f} "
            f"{b.val_acc[-1]:7.2%} | {time.perf_counter() - t0:4.1f}s"
        )
    return runs[0], runs[1], time.perf_counter() - t0
