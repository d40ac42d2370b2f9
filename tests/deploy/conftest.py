"""The deploy tests reuse the end-to-end harness in ``tests/e2e/e2e_support.py`` (bounded polls,
processes stopped by PID)."""

from __future__ import annotations

import sys
from pathlib import Path

_E2E = str(Path(__file__).resolve().parent.parent / "e2e")
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)
