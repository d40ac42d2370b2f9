"""The audit file writer: appends chained lines under a file lock, shares the file, rotates it by size.

Writers
-------
:class:`AuditLog` appends with one ``write(2)`` per record (or per event-loop iteration's
records, with ``batch_on_loop``) on an ``O_APPEND`` descriptor
(the same system call a buffered file followed by ``flush()`` makes, without the buffer
layer), so a record reaches the kernel before :meth:`~AuditLog.record` returns and survives
a crash of the process. It is *not* fsynced per record: ``record()`` fdatasyncs at most
once per ``fsync_interval`` seconds of the injected monotonic clock (``None`` never syncs
from ``record``), and :meth:`~AuditLog.sync` and :meth:`~AuditLog.close` sync on demand.
After a power loss, up to ``fsync_interval`` seconds of entries may therefore be lost from
the end of the chain (the rest still verifies).

Several processes (and several :class:`AuditLog` objects) may append to one file. Each
append takes an exclusive ``flock`` on the file and then ``stat``\\ s the path: if the path
now names another inode (the file was rotated or removed) the current file is reopened and
locked instead; if the size differs from what this writer last left, someone else appended,
and the chain head (``seq`` and line hash) is re-read from the last line (see
:mod:`receiver.audit.tail`). The lock is held for the few microseconds of one append; a
writer blocked by another process's lock blocks its caller (for ``serve``, the event loop)
for that long. An :class:`AuditLog` may be shared by threads (``flock`` does not separate
them; an internal lock does).

Opening an existing file continues its chain from its last line. A torn tail (a crash in
the middle of a write leaves bytes without a newline, or lines that are not entries) is
kept as evidence: the writer ends it with a newline and appends an ``audit.recovered``
entry whose ``torn_bytes`` / ``torn_lines`` fields say how much was torn, chained to the
last good entry. :func:`~receiver.audit.verify.verify_files` still reports the torn line as
a problem (naming the ``audit.recovered`` entry that noted it), so it never passes silently.

Rotation
--------
When an entry would take the file past ``max_bytes``, the entry is first written (and
fsynced) to a new hidden temporary file ``.audit.jsonl.<pid>.<n>.tmp``; then, still under
the lock of the old file, ``audit.jsonl.{backups}`` is deleted, ``.{i}`` is renamed to
``.{i+1}``, the old file is hard-linked as ``audit.jsonl.1``, and the temporary file is
renamed over ``audit.jsonl``. The path therefore always names a complete file whose last
line is the chain head, and a writer that waited on the old file's lock finds the path
moved, reopens it and reads the head from it. No ``audit.rotated`` marker is written: the
first entry of each file is the next ordinary entry, whose ``prev`` is the line hash of the
last entry of the rotated file. An empty or missing file with no writer state starts a new
chain (``seq`` 1, zero ``prev``); a running writer whose file was truncated or removed
keeps its own head, so the break stays visible.

The head kept elsewhere
-----------------------
Dropping entries from the end of a file leaves a chain that still verifies. So after each
write, :class:`AuditLog` hands the new head, ``"<seq>:<line hash>"`` (:attr:`AuditLog.chain_head`),
to ``on_head``: the service keeps it outside the file (a metric, the outbox), and
``pdrelay audit verify --head`` fails a log that ends before it. Opening a file reports
nothing: what the file says at open is not evidence about itself.

Keyed chains
------------
With ``hmac_key`` each entry's hash is an HMAC-SHA256 (see :mod:`receiver.audit.entry`), so that
a consistent rewrite of entries needs the key. Every writer of one file must be given the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from receiver.audit.entry import AuditError, Chain, format_head, prepare, timestamp
from receiver.audit.tail import read_tail
from receiver.clock import Clock, SystemClock
from receiver.secret import Secret

__all__ = ["AuditLog"]

_MiB = 1024 * 1024

_temp_counter = itertools.count(1)
_Entry = tuple[str, str | None, dict[str, object], str]  # event, actor, cleaned fields, timestamp
_datasync = getattr(os, "fdatasync", os.fsync)


class AuditLog:
    """The audit log file: hash-chained, shared by processes through ``flock``, rotated by size."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        max_bytes: int = 10 * _MiB,
        backups: int = 10,
        fsync_interval: float | None = 1.0,
        batch_on_loop: bool = False,
        on_error: Callable[[str, BaseException], None] | None = None,
        on_head: Callable[[str], None] | None = None,
        hmac_key: Secret | None = None,
    ) -> None:
        """Open (creating it and its directory, mode 0600 / 0700) and continue the chain in ``path``.

        ``max_bytes``: rotate before an entry would take the file past this size.
        ``backups``: rotated files kept (``path.1`` newest … ``path.{backups}``; 0 keeps none).
        ``fsync_interval``: fdatasync from ``record`` at most this often (seconds); ``None``: never.
        ``batch_on_loop``: a ``record`` made on a running event loop is queued, and the queue is
        written once per loop iteration (one lock, one ``write(2)``), before the loop waits for
        I/O again; ``on_error(event, exc)`` is told of each entry such a write loses.
        ``on_head(head)``: called with :attr:`chain_head` after each write of entries (an error it
        raises goes to ``on_error("audit.head", exc)``).
        ``hmac_key``: key the chain (HMAC-SHA256 entry hashes).
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r}")
        if isinstance(backups, bool) or not isinstance(backups, int) or backups < 0:
            raise ValueError(f"backups must be an integer >= 0, got {backups!r}")
        if fsync_interval is not None and not (isinstance(fsync_interval, int | float) and fsync_interval >= 0):
            raise ValueError(f"fsync_interval must be a number of seconds >= 0 or None, got {fsync_interval!r}")
        self._path = Path(path)
        self._spath = os.fspath(path)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync_interval = fsync_interval
        self._chain = Chain(None if hmac_key is None else hmac_key.reveal().encode("utf-8"))
        self._on_head = on_head
        self._tlock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._closed = False
        self._fd = -1
        self._ino = self._dev = -1
        self._size = -1  # what this writer last left; -1: unknown, read the tail on next lock
        self._batch = batch_on_loop
        self._on_error = on_error or (lambda event, exc: None)
        self._pending: list[_Entry] = []  # batch_on_loop: made on the loop, written at the end of its iteration
        self._open()
        try:
            with self._tlock:
                try:
                    self._acquire()  # reads the chain head; notes a torn tail
                finally:
                    self._release()
        except BaseException:
            self.close()
            raise
        self._last_sync = self._clock.monotonic()

    def __repr__(self) -> str:
        return f"<AuditLog {self._spath!r} seq={self._chain.seq}>"

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def last_seq(self) -> int:
        """``seq`` of the last entry this writer wrote or read (another process may be ahead)."""
        return self._chain.seq

    @property
    def head(self) -> str:
        """Line hash of the last entry this writer wrote or read (zeros for an empty chain)."""
        return self._chain.head

    @property
    def chain_head(self) -> str:
        """``"<seq>:<line hash>"`` of the last entry this writer wrote or read (``"0:000…"`` when empty)."""
        return format_head(self._chain.seq, self._chain.head)

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        """Append one entry (locks, checks for other writers, writes one line; may rotate or fsync);
        with ``batch_on_loop``, on a running event loop, at the end of the loop's iteration."""
        actor, clean = prepare(event, actor, fields)
        entry = (event, actor, clean, timestamp(self._clock.now()))
        if self._batch and _loop_running():
            # One lock and one write(2) per loop iteration rather than per entry: under load the
            # intake handler's entry costs a share (bench_intake.py: see the README's figures).
            self._pending.append(entry)
            if len(self._pending) == 1:
                asyncio.get_running_loop().call_soon(self._write_pending)
            return
        self._append([entry])

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._append(pending)
        except Exception as exc:
            for event, *_ in pending:
                self._on_error(event, exc)

    def _append(self, entries: Sequence[_Entry]) -> None:
        with self._tlock:
            if self._closed:
                raise AuditError(f"audit log {self._spath} is closed")
            try:
                self._acquire()
                buffer = bytearray()
                for event, actor, clean, ts in entries:
                    data, line_hash = self._chain.build(event, actor, clean, ts)
                    if self._size > 0 and self._size + len(buffer) + len(data) > self.max_bytes:
                        if buffer:
                            self._write(bytes(buffer))
                            buffer.clear()
                        self._rotate(data)
                    else:
                        buffer += data
                    # Ahead of the write: if it fails, the next lock re-reads the head from the file.
                    self._chain.advance(line_hash)
                if buffer:
                    self._write(bytes(buffer))
            finally:
                self._release()
            if self.fsync_interval is not None:
                now = self._clock.monotonic()
                if now - self._last_sync >= self.fsync_interval and self._fd >= 0:
                    self._last_sync = now
                    _datasync(self._fd)
            if self._on_head is not None:
                try:
                    self._on_head(format_head(self._chain.seq, self._chain.head))
                except Exception as exc:
                    self._on_error("audit.head", exc)

    def sync(self) -> None:
        """Write what is queued, and fsync the file now."""
        self._write_pending()
        with self._tlock:
            if self._fd >= 0:
                os.fsync(self._fd)
                self._last_sync = self._clock.monotonic()

    def close(self) -> None:
        """Write what is queued, fsync and close; idempotent."""
        if not self._closed:
            self._write_pending()
        with self._tlock:
            self._closed = True
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    # -- internals -------------------------------------------------------------------

    def _open(self) -> None:
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._spath, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        self._fd, self._ino, self._dev, self._size = fd, st.st_ino, st.st_dev, -1

    def _acquire(self) -> None:
        """Lock the file the path names now, and pick up what other writers appended."""
        if self._fd < 0:
            self._open()
        while True:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                st = os.stat(self._spath)
                if st.st_ino == self._ino and st.st_dev == self._dev:
                    break
            except FileNotFoundError:
                pass
            # rotated or removed since we opened it: move to the file the path names now
            fd, self._fd = self._fd, -1
            os.close(fd)  # also releases the lock
            self._open()
        if st.st_size != self._size:
            self._resync(st.st_size)

    def _release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _resync(self, size: int) -> None:
        tail = read_tail(self._fd, size)
        if tail.seq is not None and tail.line_hash is not None:
            self._chain.seq, self._chain.head = tail.seq, tail.line_hash
        # else: an empty (or unreadable) file; keep our own head, zeros when we have none
        self._size = size
        if tail.torn_lines:
            data, line_hash = self._chain.build(
                "audit.recovered", None, {"torn_bytes": tail.torn_bytes, "torn_lines": tail.torn_lines},
                timestamp(self._clock.now()))
            self._write(b"\n" + data if tail.needs_newline else data)
            self._chain.advance(line_hash)
        elif tail.needs_newline:
            self._write(b"\n")

    def _write(self, data: bytes) -> None:
        """Append ``data`` under the lock (one ``write(2)`` unless it comes back short)."""
        try:
            n = os.write(self._fd, data)
            if n < len(data):  # a full disk reports its error on the next write
                view = memoryview(data)[n:]
                while view:
                    view = view[os.write(self._fd, view):]
        except BaseException:
            self._size = -1  # part of the line may be there: read the tail (and note it torn) next time
            raise
        self._size += len(data)

    def _backup(self, i: int) -> str:
        return f"{self._spath}.{i}"

    def _rotate(self, data: bytes) -> None:
        """Start a new file whose first line is ``data``; the old one becomes ``.1``."""
        _datasync(self._fd)
        tmp = os.path.join(os.path.dirname(self._spath) or ".",
                           f".{self._path.name}.{os.getpid()}.{next(_temp_counter)}.tmp")
        try:
            tfd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # left by a crashed process that had our pid
            os.unlink(tmp)
            tfd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(tfd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(tfd, view):]
            os.fsync(tfd)
            self._shift_backups()
            os.replace(tmp, self._spath)
        except BaseException:
            os.close(tfd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        old = self._fd
        st = os.fstat(tfd)
        self._fd, self._ino, self._dev, self._size = tfd, st.st_ino, st.st_dev, len(data)
        os.close(old)  # releases its lock; writers waiting on it find the path moved
        self._sync_dir()

    def _shift_backups(self) -> None:
        first = self._backup(1)
        try:
            if os.path.samefile(first, self._spath):  # a rotation crashed between link and replace
                os.unlink(first)
        except FileNotFoundError:
            pass
        if self.backups == 0:
            return  # os.replace drops the old file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._backup(self.backups))
        for i in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(self._backup(i), self._backup(i + 1))
        try:
            os.link(self._spath, first)  # the path keeps naming a complete file until the replace
        except OSError:
            os.rename(self._spath, first)  # no hard links here: a short window without the file

    def _sync_dir(self) -> None:
        try:
            dfd = os.open(os.path.dirname(self._spath) or ".", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass  # some file systems cannot fsync a directory
        finally:
            os.close(dfd)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
