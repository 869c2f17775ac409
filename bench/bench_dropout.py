"""Run the benchmark from a source checkout: ``python bench/bench_dropout.py [options]``.

The benchmark itself lives in the package (the ``fastdropout._bench`` package) so that
``python -m fastdropout bench`` works from a plain ``pip install .``; this file
only forwards to it. ``--help`` lists the options.
"""

from __future__ import annotations

import sys

from fastdropout._bench import main

if __name__ == "__main__":
    sys.exit(main())
