"""Tamper-evident audit log: a hash-chained JSON-lines record of what pdrelay did, and for whom.

The audit log is a domain record, separate from the operational logs: one line per entry
(``intake.accepted``, ``event.sent``, ``admin.action``, ``auth.refused`` …), appended by
``pdrelay serve`` and by offline commands such as ``pdrelay outbox purge`` to the same
file, and checked with :func:`verify_files` (``pdrelay audit verify FILE...``).

Modules, each documenting its part of the contract:

``entry``   the on-disk format, the canonical JSON, the hashing rule and the chain head
``tail``    finding the chain head (and torn lines) at the end of a file
``writer``  :class:`AuditLog`: appends under ``flock``, shared by processes, rotated by size
``sinks``   the :class:`AuditSink` seam, :class:`NullAudit`, :class:`GuardedAudit`, :class:`MemoryAudit`
``refusals`` :class:`RefusalAggregator`: ``auth.refused`` entries counted by the interval, not one per request
``verify``  :func:`verify_files` and ``pdrelay audit verify`` (start, end against a kept head, keys)
"""

from __future__ import annotations

from receiver.audit.entry import REDACTED, ZERO_HASH, AuditError, head_lost
from receiver.audit.refusals import RefusalAggregator
from receiver.audit.sinks import AuditSink, GuardedAudit, MemoryAudit, NullAudit
from receiver.audit.verify import verify_files, verify_main
from receiver.audit.writer import AuditLog

__all__ = [
    "REDACTED",
    "ZERO_HASH",
    "AuditError",
    "AuditLog",
    "AuditSink",
    "GuardedAudit",
    "MemoryAudit",
    "NullAudit",
    "RefusalAggregator",
    "head_lost",
    "verify_files",
    "verify_main",
]
