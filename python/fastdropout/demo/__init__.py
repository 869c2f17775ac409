"""``python -m fastdropout demo``: dropout's two textbook examples, on fastdropout.

1. Train the same small NumPy network on handwritten digits with and without
   dropout and compare the training and validation losses (``demo_loss.png``,
   ``demo_results.json``).
2. With ``--html``, a self-contained page (``visualizer.html``, vanilla JavaScript,
   no network) that shows the trained networks: switch hidden neurons or whole
   feature maps off and watch the class probabilities change.
3. With ``--study rates|capacity|augment|all``, measured studies of three more
   claims (dropout rate against layer size, small networks, dropout with data
   augmentation), several replicates per arm: ``study_<name>.png`` and
   ``study_<name>.json`` each, a table on stdout, and a section each on the page.

Needs the ``demo`` extra: ``pip install 'fastdropout[demo]'`` (scikit-learn for the
data set, matplotlib for the plot).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    from .cli import main as _main

    return _main(argv)
