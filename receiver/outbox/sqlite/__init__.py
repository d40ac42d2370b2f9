"""The embedded outbox backend: one SQLite file (see :mod:`.store`)."""

from __future__ import annotations

from receiver.outbox.sqlite.store import SQLiteOutbox

__all__ = ["SQLiteOutbox"]
