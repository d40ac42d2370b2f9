"""The ``AuditSink`` seam and its small implementations: nowhere, guarded, and a list in memory.

The file implementation is :class:`~receiver.audit.writer.AuditLog`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from receiver.audit.entry import AuditError, Chain, prepare, timestamp
from receiver.audit.verify import Verifier, VerifyReport
from receiver.clock import Clock, SystemClock
from receiver.secret import Secret

__all__ = ["AuditSink", "GuardedAudit", "MemoryAudit", "NullAudit"]


class AuditSink(Protocol):
    """Where audit entries go: a file, nowhere, or a list."""

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        """Append one entry; ``event`` is a dotted name such as ``intake.accepted``."""
        ...

    def close(self) -> None:
        """Flush and release; ``record`` afterwards raises :class:`AuditError`."""
        ...


class NullAudit:
    """Audit off: every entry is dropped."""

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        return None

    def close(self) -> None:
        return None


class GuardedAudit:
    """An :class:`AuditSink` whose failures (a full disk, a closed file) never reach the caller.

    Delivery must not stop because the audit log cannot be written: each failure is handed to
    ``on_error`` (the service logs and counts it) and the entry is lost, visibly."""

    def __init__(self, sink: AuditSink, on_error: Callable[[str, BaseException], None]) -> None:
        self._sink = sink
        self._on_error = on_error

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        try:
            self._sink.record(event, actor=actor, **fields)
        except Exception as exc:
            self._on_error(event, exc)

    def close(self) -> None:
        try:
            self._sink.close()
        except Exception as exc:
            self._on_error("audit.close", exc)


class MemoryAudit:
    """Entries kept in a list, chained exactly as in a file (for tests and embedders); for one thread."""

    def __init__(self, clock: Clock | None = None, hmac_key: Secret | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._key = None if hmac_key is None else hmac_key.reveal().encode("utf-8")
        self._chain = Chain(self._key)
        self._closed = False
        self.lines: list[str] = []
        """Every line as it would be stored in a file, without its newline."""

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        if self._closed:
            raise AuditError("audit log <memory> is closed")
        actor, clean = prepare(event, actor, fields)
        data, line_hash = self._chain.build(event, actor, clean, timestamp(self._clock.now()))
        self.lines.append(data[:-1].decode("utf-8"))
        self._chain.advance(line_hash)

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The entries as a reader of the file would see them (fresh dicts)."""
        return [json.loads(line) for line in self.lines]

    @property
    def last_seq(self) -> int:
        return self._chain.seq

    @property
    def head(self) -> str:
        """The line hash of the last entry (zeros when empty)."""
        return self._chain.head

    def verify(self) -> VerifyReport:
        """Check the kept lines as :func:`~receiver.audit.verify.verify_files` checks a file."""
        checker = Verifier(self._key)
        checker.feed("<memory>", (line.encode("utf-8") + b"\n" for line in self.lines))
        return checker.report()

    def close(self) -> None:
        self._closed = True
