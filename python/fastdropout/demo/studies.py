"""The three measured studies of ``python -m fastdropout demo --study``.

Each study is a list of *arms* (a one-hidden-layer MLP ``64-H-10`` with
fastdropout's ``Dropout(p)`` after the hidden ReLU, none on the input or the output,
trained with or without augmentation). Every arm is trained once per *replicate*;
replicate ``r`` fixes the training/validation split, the initial weights (per width),
the minibatch order, the dropout streams and the augmentation draws, and is the same
for every arm, so arms differ only in what the study varies and comparisons within a
replicate are paired.

- ``rates``: p in {0, 0.1, 0.2, 0.3, 0.5, 0.7} for a wide (1024) and a narrow (128)
  hidden layer.
- ``capacity``: a tiny (16) and the wide (1024) layer, each without and with dropout.
- ``augment``: the wide layer with no regularisation, shifts + pixel noise only,
  dropout only, and both.

Runs shared by several studies (the same width, rate, augmentation and replicate)
are trained once per invocation and reused. Summaries, readings and the JSON
report are in :mod:`.study_report`, the plots in :mod:`.study_plot`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .augment import Augmenter
from .nn import Array, build_mlp
from .train import Dataset, Trainer, load_digits, lr_at

__all__ = [
    "RATES",
    "STUDIES",
    "Arm",
    "RunResult",
    "Settings",
    "Study",
    "StudyRunner",
    "build_study",
    "replicate_seed",
]

WIDE, NARROW, TINY = 1024, 128, 16
RATES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
STUDIES = ("rates", "capacity", "augment")


@dataclass(frozen=True)
class Arm:
    """One configuration of a study. ``baseline`` names the arm it is compared to
    (paired, replicate by replicate); ``group`` is its series in the plot."""

    label: str
    hidden: int
    p: float
    augment: bool = False
    group: str = ""
    baseline: str | None = None

    @property
    def key(self) -> tuple[int, float, bool]:
        """What the training run depends on (besides the replicate)."""
        return (self.hidden, self.p, self.augment)


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    claim: str
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class Settings:
    """Training settings shared by every arm of every study."""

    epochs: int
    seeds: int
    train_size: int
    val_size: int | None
    lr: float
    batch_size: int
    schedule: str
    seed: int
    p_dropout: float
    max_shift: int = 1
    noise: float = 0.05


def build_study(name: str, p_dropout: float = 0.5) -> Study:
    """The arms of study ``name`` (one of :data:`STUDIES`); ``p_dropout`` is the
    rate of the dropout arms of ``capacity`` and ``augment``."""
    pd = p_dropout
    if name == "rates":
        arms = []
        for width, group in ((WIDE, f"wide ({WIDE})"), (NARROW, f"narrow ({NARROW})")):
            base = f"{group}, p = 0"
            for p in RATES:
                arms.append(
                    Arm(
                        f"{group}, p = {p:g}",
                        width,
                        p,
                        group=group,
                        baseline=None if p == 0 else base,
                    )
                )
        return Study(
            "rates",
            f"Dropout rate against hidden-layer size ({WIDE} vs {NARROW} units)",
            "large hidden layers do well at p = 0.5; small ones want 0.1-0.3 and "
            "aggressive dropout hurts them",
            tuple(arms),
        )
    if name == "capacity":
        arms = []
        for width, group in ((TINY, f"tiny ({TINY})"), (WIDE, f"wide ({WIDE})")):
            arms.append(Arm(f"{group}, no dropout", width, 0.0, group=group))
            arms.append(
                Arm(
                    f"{group}, dropout {pd:g}",
                    width,
                    pd,
                    group=group,
                    baseline=f"{group}, no dropout",
                )
            )
        return Study(
            "capacity",
            f"A tiny network ({TINY} hidden units) beside the wide one ({WIDE})",
            "without excess capacity, dropout raises the validation loss",
            tuple(arms),
        )
    if name == "augment":
        g = f"wide ({WIDE})"
        return Study(
            "augment",
            f"Dropout and data augmentation ({WIDE} hidden units)",
            "augmentation and dropout each help, and together they help more",
            (
                Arm("none", WIDE, 0.0, group=g),
                Arm("augmentation", WIDE, 0.0, True, group=g, baseline="none"),
                Arm(f"dropout {pd:g}", WIDE, pd, group=g, baseline="none"),
                Arm(f"both (dropout {pd:g})", WIDE, pd, True, group=g, baseline="none"),
            ),
        )
    raise ValueError(f"unknown study {name!r}; use one of {', '.join(STUDIES)}")


def replicate_seed(seed: int, replicate: int) -> int:
    """The seed of replicate ``replicate`` of a run started with ``--seed seed``."""
    rng = np.random.default_rng([seed, 0x57D7, replicate])
    return int(rng.integers(0, 2**63))


@dataclass
class RunResult:
    """One arm trained once (one replicate)."""

    replicate: int
    seed: int
    history: dict[str, Any]
    init_digest: str
    minibatch_digest: str
    input_digest: str
    seconds: float = field(compare=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["seconds"]  # timing lives in the report's "run" section
        return d


def _init_digest(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for p in trainer.model.params:
        h.update(np.ascontiguousarray(p.value).tobytes())
    return h.hexdigest()


class StudyRunner:
    """Trains arms, replicate by replicate, remembering every finished run."""

    def __init__(
        self, settings: Settings, log: Callable[[str], None] = lambda _: None
    ) -> None:
        self.settings = settings
        self.log = log
        self._data: dict[int, Dataset] = {}
        self._runs: dict[tuple[tuple[int, float, bool], int], RunResult] = {}
        self.t0 = time.perf_counter()

    def data(self, replicate: int) -> Dataset:
        if replicate not in self._data:
            s = self.settings
            self._data[replicate] = load_digits(
                s.train_size, replicate_seed(s.seed, replicate), val_size=s.val_size
            )
        return self._data[replicate]

    def train(self, arm: Arm, replicate: int) -> tuple[RunResult, bool]:
        """The run of ``arm`` in ``replicate``, and whether it was trained just now
        (False: an identical run of an earlier study was reused)."""
        cache_key = (arm.key, replicate)
        if cache_key in self._runs:
            return self._runs[cache_key], False
        s = self.settings
        rs = replicate_seed(s.seed, replicate)
        data = self.data(replicate)
        model = build_mlp(
            data.x_train.shape[1],
            [arm.hidden],
            data.n_classes,
            p_input=0.0,
            p_hidden=arm.p,
            seed=rs,
        )
        aug = (
            Augmenter(data.image_shape, rs, max_shift=s.max_shift, noise=s.noise)
            if arm.augment
            else None
        )
        trainer = Trainer(arm.label, model, s.lr, s.batch_size, rs, augment=aug)
        init = _init_digest(trainer)
        t0 = time.perf_counter()
        for e in range(s.epochs):
            trainer.epoch(data, _flat, lr_at(s.lr, e, s.epochs, s.schedule))
        result = RunResult(
            replicate,
            rs,
            trainer.history.as_dict(),
            init,
            trainer.minibatch_digest,
            trainer.input_digest,
            time.perf_counter() - t0,
        )
        self._runs[cache_key] = result
        return result, True

    def run(self, study: Study) -> dict[str, list[RunResult]]:
        """Every arm of ``study``, ``settings.seeds`` replicates each, with one
        progress line per run."""
        n_rep = self.settings.seeds
        total = len(study.arms) * n_rep
        out: dict[str, list[RunResult]] = {a.label: [] for a in study.arms}
        done = 0
        for r in range(n_rep):
            for arm in study.arms:
                res, fresh = self.train(arm, r)
                out[arm.label].append(res)
                done += 1
                s = res.history["summary"]
                how = f"{res.seconds:.1f}s" if fresh else "same run as before, reused"
                self.log(
                    f"[{study.name} {done:>{len(str(total))}}/{total}] replicate "
                    f"{r + 1}/{n_rep}, {arm.label}: final val loss "
                    f"{s['final_val_loss']:.4f}, acc {s['final_val_acc']:.2%} "
                    f"({how}; {time.perf_counter() - self.t0:.0f}s elapsed)"
                )
        return out


def _flat(x: Array) -> Array:
    return x
