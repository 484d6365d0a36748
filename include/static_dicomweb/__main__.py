"""``python -m static_dicomweb``: the same CLI as ``static-dicomweb``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
