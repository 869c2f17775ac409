"""``python -m fastdropout bench``: how fast fastdropout is, next to what it replaces.

Every number is the median of repeated runs (minimum and interquartile range
beside it), and every ratio is to a baseline timed in the same run, in the same
round-robin rounds, on the same arrays and the same thread count:

- a native multi-threaded ``memcpy`` of the same bytes with the same threads
  (``x copy`` = time / copy time) and, for the operations that draw a mask, the
  mask bits generated alone for the same elements with the same threads and SIMD
  level; the slower of the two is the operation's bound (``x bound``);
- ``np.copyto`` of the same array;
- the NumPy idiom ``x * (rng.random(x.shape) >= p) / (1 - p)`` (and its
  backward ``g * keep / (1 - p)``);
- ``torch.nn.functional.dropout``, ``torch.native_dropout`` and friends when
  PyTorch is installed (imported lazily, threads set to match).

Each fastdropout result is checked bit for bit against ``fastdropout.reference``
before it is timed (the whole array up to ``--check-full-max`` elements, above
that windows at the start, the middle, a random place and the end, each checked
with the reference run at the window's stream offset); a wrong result is
reported as WRONG, never timed, and the exit status is 1.

Output: a Markdown report on stdout (``--md`` also writes it), all raw numbers
and the machine in ``--json``, a log-log plot of ns/element in ``--plot``.
Progress goes to stderr.

One concern per module: ``constants`` (what is run), ``settings`` (command
line), ``machine``, ``data`` (arrays and the reference check), ``cases``,
``timing``, ``report``, ``targets``, ``plot`` and ``cli`` (the run and ``main``).
"""

from __future__ import annotations

from .cli import main
from .constants import OPS

__all__ = ["OPS", "main"]
