"""Build-area fixtures. The helper modules of this directory (catalog_rows, build_frames)
are imported by plain name, so the directory goes on sys.path (importlib import mode)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
