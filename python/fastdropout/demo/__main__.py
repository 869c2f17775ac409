"""``python -m fastdropout.demo`` (same as ``python -m fastdropout demo``)."""

from __future__ import annotations

from . import main

raise SystemExit(main())
