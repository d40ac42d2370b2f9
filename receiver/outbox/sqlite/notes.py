"""What the SQLite outbox is told between writes and keeps with the next one: send times, the audit head.

Neither is worth a commit of its own. The dispatcher notes when PagerDuty answered each send
(so a restart does not forget how much of a key's window is used); the audit log notes the
head of its hash chain after each entry (so it can tell, at its next start, whether its file
lost entries). :meth:`Notes.write` runs inside every group commit; the head is kept until a
commit that wrote it succeeds, and the outbox writes it once more at close.
"""

from __future__ import annotations

import sqlite3

from receiver.clock import Clock

__all__ = ["MAX_AUDIT_HEAD", "Notes", "recent_sends"]

MAX_AUDIT_HEAD = 256  # characters: a chain head is a digest and a little more, never alert content
_PRUNE_EVERY = 60.0  # seconds between deletions of send times older than the longest window


class Notes:
    """Send times and the audit head noted since the last commit, written by :meth:`write`."""

    def __init__(self, clock: Clock, keep_sends_for: float) -> None:
        self._clock = clock
        self._keep_sends_for = keep_sends_for
        self._sends: list[tuple[str, float]] = []
        self._pruned_at = float("-inf")
        self._head: str | None = None  # the latest head noted
        self._head_writing: str | None = None  # written by the batch being committed
        self._head_stored: str | None = None  # committed

    def send(self, routing_key: str, at: float) -> None:
        self._sends.append((routing_key, at))

    def audit_head(self, head: str) -> None:
        if not isinstance(head, str) or len(head) > MAX_AUDIT_HEAD:
            raise ValueError(f"an audit head is text of at most {MAX_AUDIT_HEAD} characters")
        self._head = head

    @property
    def latest_head(self) -> str | None:
        """The head noted last (stored or not yet)."""
        return self._head

    @property
    def unwritten(self) -> bool:
        """Is there a head noted that no commit has stored yet?"""
        return self._head is not None and self._head != self._head_stored

    def write(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: the noted sends (lost, harmlessly, if the commit fails), the latest
        audit head (written again by the next commit if this one fails), and pruning of old send times."""
        if self._sends:
            sends, self._sends = self._sends, []
            conn.executemany("INSERT INTO sends (routing_key, sent_at) VALUES (?, ?)", sends)
        head = self._head if self.unwritten else None
        if head is not None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?)", (head,))
        now = self._clock.now()
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            conn.execute("DELETE FROM sends WHERE sent_at < ?", (now - self._keep_sends_for,))
        self._head_writing = head  # last: if anything above failed, its savepoint is undone and the head is not

    def committed(self, ok: bool) -> None:
        """The batch that ran :meth:`write` committed (``ok``) or was rolled back."""
        if ok and self._head_writing is not None:
            self._head_stored = self._head_writing
        self._head_writing = None

    def load(self, conn: sqlite3.Connection) -> None:
        """At open: the head stored by an earlier run."""
        row = conn.execute("SELECT CAST(value AS BLOB) FROM meta WHERE key = 'audit_head'").fetchone()
        if row is not None:
            self._head = self._head_stored = bytes(row[0]).decode("utf-8", "replace")[:MAX_AUDIT_HEAD]


def recent_sends(conn: sqlite3.Connection, since: float) -> list[tuple[str, float]]:
    """``(routing_key, wall time)`` of the sends stored at or after ``since``, oldest first."""
    rows = conn.execute("SELECT routing_key, sent_at FROM sends WHERE sent_at >= ? ORDER BY sent_at",
                        (since,)).fetchall()
    return [(str(k), float(t)) for k, t in rows]
