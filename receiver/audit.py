"""Tamper-evident audit log: a hash-chained JSON-lines record of what pdrelay did, and for whom.

The audit log is a domain record, separate from the operational logs: one line per entry
(``intake.accepted``, ``event.sent``, ``admin.action``, ``auth.refused`` …), appended by
``pdrelay serve`` and by offline commands such as ``pdrelay outbox purge`` to the same
file, and checked with :func:`verify_files` (``pdrelay audit verify FILE...``).

On-disk format
--------------
UTF-8 text, one entry per line, each line ending in ``\\n``. A line is the *canonical JSON*
of the entry: ``json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
(no NaN or Infinity). Every entry has these keys, plus any fields the caller gave:

``seq``    int, 1 for the first entry of a chain, +1 per entry, across restarts and rotated files
``ts``     RFC 3339 UTC with milliseconds from the injected clock, ``2023-11-14T22:13:20.123Z``
``event``  dotted lower-case name, ``intake.accepted``
``actor``  who asked (token name, user, ``cli``) or ``null``
``prev``   the *line hash* of the previous entry; 64 zeros for the first entry of a chain
``hash``   the *entry hash* of this entry

A :class:`~receiver.settings.Secret` is written as ``"********"`` (also inside lists and
dicts); tuples become lists; anything else JSON cannot hold is written as its ``str()``:
objects, NaN and infinities (``"nan"``), non-string dict keys. Text that UTF-8 cannot
encode (lone surrogates) is written with backslash escapes. The names ``seq``, ``ts``,
``prev`` and ``hash`` are reserved and refused as field names, like event names that are
not dotted lower-case (both raise :class:`AuditError`).

Hashing rule
------------
* entry hash = hex SHA-256 of the UTF-8 canonical JSON of the entry *without* its ``hash`` key;
* line hash = hex SHA-256 of the entry's full line as stored (the canonical JSON *with*
  ``hash``), without the trailing newline;
* ``prev`` of an entry = the line hash of the entry before it.

So the line hash commits to everything that line says, and each ``prev`` commits to the
whole history before it. The *head* of a chain is the line hash of its last entry: the
``prev`` the next entry will carry. Anyone can check a file with::

    import hashlib, json
    def canon(o):
        return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    prev = None                                   # unknown before the first line of the file
    for raw in open("audit.jsonl", "rb"):
        line = raw[:-1]                           # strip the single trailing b"\\n"
        entry = json.loads(line)
        claimed = entry.pop("hash")
        assert hashlib.sha256(canon(entry)).hexdigest() == claimed, "edited"
        assert prev is None or entry["prev"] == prev, "chain broken"
        prev = hashlib.sha256(line).hexdigest()

Writers
-------
:class:`AuditLog` appends with one ``write(2)`` per record on an ``O_APPEND`` descriptor
(the same system call a buffered file followed by ``flush()`` makes, without the buffer
layer), so a record reaches the kernel before :meth:`~AuditLog.record` returns and survives
a crash of the process. It is *not* fsynced per record: ``record()`` fdatasyncs at most
once per ``fsync_interval`` seconds of the injected monotonic clock (a float comparison
when not due; ``None`` never syncs from ``record``), and :meth:`~AuditLog.sync` and
:meth:`~AuditLog.close` sync on demand. After a power loss, up to ``fsync_interval``
seconds of entries may therefore be lost from the end of the chain (the rest still verifies).

Several processes (and several :class:`AuditLog` objects) may append to one file. Each
append takes an exclusive ``flock`` on the file and then ``stat``\\ s the path: if the path
now names another inode (the file was rotated or removed) the current file is reopened and
locked instead; if the size differs from what this writer last left, someone else appended,
and the chain head (``seq`` and line hash) is re-read from the last line, reading backwards
(8 KiB, then doubling) only as far as that line's start, never the whole file. The lock is
held for the few microseconds of one append; a writer blocked by another process's lock
blocks its caller (for ``serve``, the event loop) for that long. An :class:`AuditLog` may
be shared by threads (``flock`` does not separate them; an internal lock does).
:class:`MemoryAudit` is for one thread.

Opening an existing file continues its chain from its last line. A torn tail (a crash in
the middle of a write leaves bytes without a newline, or lines that are not entries) is
kept as evidence: the writer ends it with a newline and appends an ``audit.recovered``
entry whose ``torn_bytes`` / ``torn_lines`` fields say how much was torn, chained to the
last good entry. :func:`verify_files` still reports the torn line as a problem (naming the
``audit.recovered`` entry that noted it), so it never passes silently.

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

Verifying
---------
:func:`verify_files` takes files in any order and checks them sorted by the ``seq`` of their
first entry (so ``audit.jsonl*`` from a shell glob works); ties keep the given order. It
reports edited entries (entry hash mismatch), removed, reordered, duplicated or inserted
entries (``seq`` and ``prev`` do not follow), lines that are not entries, torn lines, a
new chain starting in the middle, and breaks between consecutive files. A chain whose first
entry's ``prev`` is not zeros is not a problem: the report notes that it continues from an
earlier file. A keyless hash chain proves that the lines agree with each other, not who
wrote them: someone who can rewrite the whole tail can rebuild a consistent chain, and
dropping entries from the very end leaves no trace unless the head was kept elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import msgspec

from receiver.clock import Clock, SystemClock
from receiver.errors import PdrelayError
from receiver.settings import Secret

__all__ = [
    "REDACTED",
    "ZERO_HASH",
    "AuditError",
    "AuditLog",
    "AuditSink",
    "GuardedAudit",
    "MemoryAudit",
    "NullAudit",
    "Problem",
    "VerifyReport",
    "canonical_json",
    "verify_files",
    "verify_main",
]

ZERO_HASH = "0" * 64
"""The ``prev`` of the first entry of a chain."""

REDACTED = "********"
"""What a :class:`~receiver.settings.Secret` is written as."""

_RESERVED = frozenset({"seq", "ts", "event", "actor", "prev", "hash"})
_REQUIRED = ("seq", "ts", "event", "actor", "prev", "hash")
_PLAIN = frozenset({str, int, float, bool, type(None)})  # written as they are (a float only if finite)
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_MAX_DEPTH = 32
_BLOCK = 8192
_TORN_LIMIT = 1 << 20  # bytes of non-entries skipped from the end before the head is given up as unknown
_MiB = 1024 * 1024


_known_events: set[str] = set()
_temp_counter = itertools.count(1)
_datasync = getattr(os, "fdatasync", os.fsync)


class AuditError(PdrelayError):
    """The audit log cannot take an entry (closed, or an invalid event or field name)."""


class AuditSink(Protocol):
    """Where audit entries go: a file, nowhere, or a list."""

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        """Append one entry; ``event`` is a dotted name such as ``intake.accepted``."""
        ...

    def close(self) -> None:
        """Flush and release; ``record`` afterwards raises :class:`AuditError`."""
        ...


# --------------------------------------------------------------------------- encoding


def _default(value: object) -> object:
    return REDACTED if isinstance(value, Secret) else str(value)


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False,
                            default=_default)


def canonical_json(value: object) -> str:
    """The canonical JSON text the hashing rule is defined over (keys sorted, no spaces, UTF-8)."""
    return _ENCODER.encode(value)


_MSGSPEC = msgspec.json.Encoder(order="sorted")


def _same_as_json() -> bool:
    """Whether msgspec's sorted compact JSON equals the canonical text for scalar entries (strings
    with every control character, quotes, backslashes, non-ASCII and astral text; big integers)."""
    probe = {"text": "".join(chr(i) for i in range(0x110)) + "\u2028\u2029\U0001F600\"\\/<>&'",
             "n": -(10**30), "t": True, "f": False, "z": None, "é": "é", "A": 0, "a": 1}
    return _MSGSPEC.encode(probe) == _ENCODER.encode(probe).encode("utf-8")


_MSGSPEC_CANONICAL = _same_as_json()


def _fix_text(text: str) -> str:
    """``text``, with what UTF-8 cannot encode (lone surrogates) written as backslash escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clean(value: object, depth: int = 0, fix_text: bool = False) -> object:
    """A JSON-able copy of ``value`` that reads back the same: secrets redacted, the rest ``str()``."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return _fix_text(value) if fix_text else value
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {_clean_key(k, fix_text): _clean(v, depth + 1, fix_text) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_clean(v, depth + 1, fix_text) for v in value]
    text = str(value)
    return _fix_text(text) if fix_text else text


def _clean_key(key: object, fix_text: bool) -> str:
    # Non-string keys become str() here, not in json: json would sort 2 before 10 and then
    # write "10" after "2", and the entry would not read back to the same canonical text.
    text = key if isinstance(key, str) else str(key)
    return _fix_text(text) if fix_text else text


_SIMPLE = frozenset({str, int, bool, type(None)})  # values msgspec writes exactly as json.dumps does


def _prepare(event: str, actor: str | None, fields: dict[str, object]) -> tuple[str | None, dict[str, object]]:
    """Check the event name and field names; make the field values JSON-able (cheap when they are)."""
    if event not in _known_events:
        if not isinstance(event, str) or not _EVENT_RE.fullmatch(event):
            raise AuditError(f"audit event must be a dotted lower-case name such as 'intake.accepted', got {event!r}")
        if len(_known_events) < 4096:
            _known_events.add(event)
    if fields:
        if not _RESERVED.isdisjoint(fields):
            taken = sorted(_RESERVED.intersection(fields))
            raise AuditError(f"audit field name(s) {', '.join(taken)} are reserved")
        for key, value in fields.items():
            if type(value) not in _PLAIN:
                fields[key] = _clean(value)
    if actor is not None and type(actor) is not str:
        actor = str(_clean(actor))
    return actor, fields


class _Stamp:
    """RFC 3339 UTC timestamps with milliseconds; the date-time part is cached per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, t: float) -> str:
        second, milli = divmod(math.floor(t * 1000.0), 1000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{milli:03d}Z"


class _Chain:
    """The head of a chain, and how the next line is made from it."""

    __slots__ = ("head", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.head = ZERO_HASH

    def build(self, event: str, actor: str | None, fields: dict[str, object], ts: str) -> tuple[bytes, str]:
        """The next entry's line (with its newline) and its line hash; the head does not move yet."""
        entry: dict[str, object] = {**fields, "seq": self.seq + 1, "ts": ts, "event": event, "actor": actor,
                                    "prev": self.head}
        if _MSGSPEC_CANONICAL and all(type(v) in _SIMPLE for v in fields.values()):
            # Scalars other than floats: msgspec writes exactly the canonical text json.dumps would
            # (checked at import, see _MSGSPEC_CANONICAL), several times faster. A lone surrogate
            # raises here and takes the general path below.
            with contextlib.suppress(UnicodeEncodeError):
                entry["hash"] = hashlib.sha256(_MSGSPEC.encode(entry)).hexdigest()
                line = _MSGSPEC.encode(entry)
                return line + b"\n", hashlib.sha256(line).hexdigest()
            entry.pop("hash", None)
        try:
            entry["hash"] = hashlib.sha256(_ENCODER.encode(entry).encode("utf-8")).hexdigest()
            line = _ENCODER.encode(entry).encode("utf-8")
        except (TypeError, ValueError):  # NaN, a lone surrogate
            entry.pop("hash", None)
            entry = {_clean_key(k, True): _clean(v, 0, True) for k, v in entry.items()}
            entry["hash"] = hashlib.sha256(_ENCODER.encode(entry).encode("utf-8")).hexdigest()
            line = _ENCODER.encode(entry).encode("utf-8")
        return line + b"\n", hashlib.sha256(line).hexdigest()

    def advance(self, line_hash: str) -> None:
        self.seq += 1
        self.head = line_hash


# --------------------------------------------------------------------------- sinks


class NullAudit:
    """Audit off: every entry is dropped."""

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        return None

    def sync(self) -> None:
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
    """Entries kept in a list, chained exactly as in a file (for tests and embedders)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._chain = _Chain()
        self._stamp = _Stamp()
        self._closed = False
        self.lines: list[str] = []
        """Every line as it would be stored in a file, without its newline."""

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        if self._closed:
            raise AuditError("audit log <memory> is closed")
        actor, fields = _prepare(event, actor, fields)
        data, line_hash = self._chain.build(event, actor, fields, self._stamp(self._clock.now()))
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
        """Check the kept lines as :func:`verify_files` checks a file."""
        checker = _Verifier()
        checker.feed("<memory>", (line.encode("utf-8") + b"\n" for line in self.lines))
        return checker.report()

    def sync(self) -> None:
        return None

    def close(self) -> None:
        self._closed = True


@dataclass(frozen=True, slots=True)
class _Tail:
    seq: int | None  # the last good entry, or None when there is none within reach
    line_hash: str | None
    torn_bytes: int  # bytes after it that are not entries (without their newlines)
    torn_lines: int
    needs_newline: bool  # the file does not end with a newline


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            raise AuditError("audit log shrank while locked")
        data += more
    return data


def _read_tail(fd: int, size: int) -> _Tail:
    """Find the last good entry by reading backwards from ``size``: 8 KiB first, then doubling.

    Only the last line is read when it is an entry (however long it is: its hash needs all of
    it); lines that are not entries are skipped back up to ``_TORN_LIMIT`` bytes.
    """
    if size == 0:
        return _Tail(None, None, 0, 0, False)
    start = size
    buf = b""  # == file[start:size]

    def grow() -> None:
        nonlocal start, buf
        n = min(max(_BLOCK, size - start), start)
        start -= n
        buf = _pread_exact(fd, n, start) + buf

    grow()
    needs_newline = not buf.endswith(b"\n")
    end = size if needs_newline else size - 1  # end of the candidate line, before its newline
    torn_bytes = torn_lines = 0
    while True:
        i = buf.rfind(b"\n", 0, end - start)
        while i < 0 and start > 0:
            grow()
            i = buf.rfind(b"\n", 0, end - start)
        line_start = start + i + 1
        line = buf[line_start - start:end - start]
        entry, _ = _parse_entry(line)
        if entry is not None:
            return _Tail(entry["seq"], hashlib.sha256(line).hexdigest(), torn_bytes, torn_lines, needs_newline)
        torn_bytes += len(line)
        torn_lines += 1
        if line_start == 0 or torn_bytes > _TORN_LIMIT:
            return _Tail(None, None, torn_bytes, torn_lines, needs_newline)
        end = line_start - 1


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
        defer_in_event_loop: bool = False,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        """Open (creating it and its directory, mode 0600 / 0700) and continue the chain in ``path``.

        ``max_bytes``: rotate before an entry would take the file past this size.
        ``backups``: rotated files kept (``path.1`` newest … ``path.{backups}``; 0 keeps none).
        ``fsync_interval``: fdatasync from ``record`` at most this often (seconds); ``None``: never.
        ``defer_in_event_loop``: a ``record`` made on a running asyncio event loop is queued and the
        queue is written once per loop iteration (``loop.call_soon``): one lock and one ``write(2)``
        for every entry of the iteration instead of one each. The entry reaches the kernel moments
        later, before the loop waits for I/O again. ``on_error`` is told of a deferred write that
        failed (the entries of that write are lost); without it the error goes to the loop's handler.
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
        self._chain = _Chain()
        self._stamp = _Stamp()
        self._tlock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._closed = False
        self._defer = defer_in_event_loop
        self._on_error = on_error
        self._pending: list[tuple[str, str | None, dict[str, object], str]] = []
        self._flush_scheduled = False
        self._fd = -1
        self._ino = self._dev = -1
        self._size = -1  # what this writer last left; -1: unknown, read the tail on next lock
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

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        """Append one entry (locks, checks for other writers, writes one line; may rotate or fsync).

        Deferred to the end of the loop iteration when made on an event loop and asked for."""
        actor, fields = _prepare(event, actor, fields)
        entry = (event, actor, fields, self._stamp(self._clock.now()))
        loop = _running_loop() if self._defer else None
        with self._tlock:
            if self._closed:
                raise AuditError(f"audit log {self._spath} is closed")
            self._pending.append(entry)
            if loop is not None:
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    loop.call_soon(self._deferred_flush)
                return
            self._write_pending()

    def flush(self) -> None:
        """Write every deferred entry now."""
        with self._tlock:
            if self._pending and not self._closed:
                self._write_pending()

    def _deferred_flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception as exc:
            if self._on_error is None:
                raise
            self._on_error("audit.flush", exc)

    def _write_pending(self) -> None:
        """Chain and append the pending entries under one lock, rotating where the size says (holds _tlock)."""
        pending, self._pending = self._pending, []
        try:
            self._acquire()
            buf = bytearray()
            for event, actor, fields, ts in pending:
                data, line_hash = self._chain.build(event, actor, fields, ts)
                size = self._size + len(buf)
                if size > 0 and size + len(data) > self.max_bytes:
                    if buf:
                        self._write(bytes(buf))
                        buf.clear()
                    self._rotate(data)
                else:
                    buf += data
                self._chain.advance(line_hash)
            if buf:
                self._write(bytes(buf))
        finally:
            self._release()
        if self.fsync_interval is not None:
            now = self._clock.monotonic()
            if now - self._last_sync >= self.fsync_interval and self._fd >= 0:
                self._last_sync = now
                _datasync(self._fd)

    def sync(self) -> None:
        """fsync the file now."""
        with self._tlock:
            if self._fd >= 0:
                os.fsync(self._fd)
                self._last_sync = self._clock.monotonic()

    def close(self) -> None:
        """Write what is deferred, fsync and close; idempotent."""
        with self._tlock:
            try:
                if self._pending and not self._closed:
                    self._write_pending()
            finally:
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
        tail = _read_tail(self._fd, size)
        if tail.seq is not None and tail.line_hash is not None:
            self._chain.seq, self._chain.head = tail.seq, tail.line_hash
        # else: an empty (or unreadable) file; keep our own head, zeros when we have none
        self._size = size
        if tail.torn_lines:
            data, line_hash = self._chain.build(
                "audit.recovered", None, {"torn_bytes": tail.torn_bytes, "torn_lines": tail.torn_lines},
                self._stamp(self._clock.now()))
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


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, at ``path:line``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify_files` found."""

    files: tuple[str, ...]  # in the order checked (oldest first)
    entries: int  # entries checked (lines that are entries)
    problems: tuple[Problem, ...]
    head: str | None  # line hash of the last entry: the prev the next entry must carry
    last_seq: int | None
    first_seq: int | None
    continues_from: str | None  # prev of the first entry, when the chain started in an earlier file

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse_entry(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The entry on a line (without its newline), or None and why it is not one."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        return None, "missing field(s) " + ", ".join(missing)
    seq = obj["seq"]
    if type(seq) is not int or seq < 1:
        return None, "seq is not a positive integer"
    for key in ("prev", "hash"):
        value = obj[key]
        if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
            return None, f"{key} is not 64 lower-case hex digits"
    if not isinstance(obj["ts"], str) or not isinstance(obj["event"], str):
        return None, "ts or event is not a string"
    if obj["actor"] is not None and not isinstance(obj["actor"], str):
        return None, "actor is neither a string nor null"
    return obj, ""


@dataclass(frozen=True, slots=True)
class _Seen:
    path: str
    line: int
    seq: int
    line_hash: str
    altered: bool  # its own content was found edited: the next entry's prev cannot match it

    def where(self, path: str) -> str:
        return f"line {self.line}" if path == self.path else f"line {self.line} of {self.path}"


class _Verifier:
    """Walks lines file after file, keeping the last good entry to check the next one against."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.entries = 0
        self.problems: list[Problem] = []
        self.last: _Seen | None = None
        self.first_seq: int | None = None
        self.continues_from: str | None = None

    def report(self) -> VerifyReport:
        last = self.last
        return VerifyReport(files=tuple(self.files), entries=self.entries, problems=tuple(self.problems),
                            head=last.line_hash if last else None, last_seq=last.seq if last else None,
                            first_seq=self.first_seq, continues_from=self.continues_from)

    def _problem(self, path: str, line: int, message: str) -> None:
        self.problems.append(Problem(path, line, message))

    def feed(self, path: str, lines: Iterable[bytes]) -> None:
        self.files.append(path)
        bad: list[tuple[int, int, str, str]] = []  # not-entry lines waiting for the next entry: line, bytes, why, hash
        for lineno, raw in enumerate(lines, 1):
            if not raw.endswith(b"\n"):  # only the last line can lack its newline
                entry, _ = _parse_entry(raw)
                if entry is None:
                    self._flush_bad(path, bad, None)
                    self._problem(path, lineno, f"torn last line: {len(raw)} bytes with no newline at the end "
                                                "(a write was cut short, or the file was truncated)")
                    return
                self._entry(path, lineno, raw, entry, bad)
                self._problem(path, lineno, "the last line has no newline at the end "
                                            "(a write was cut short, or the file was truncated)")
                return
            data = raw[:-1]
            entry, why = _parse_entry(data)
            if entry is None:
                bad.append((lineno, len(data), why, hashlib.sha256(data).hexdigest()))
            else:
                self._entry(path, lineno, data, entry, bad)
        self._flush_bad(path, bad, None)

    def _flush_bad(self, path: str, bad: list[tuple[int, int, str, str]], recovered_at: int | None) -> None:
        for line, size, why, _ in bad:
            if recovered_at is not None:
                self._problem(path, line, f"torn write: {size} bytes that are not a complete entry "
                                          f"(noted by audit.recovered on line {recovered_at})")
            else:
                self._problem(path, line, f"not an audit entry: {why}")
        bad.clear()

    def _entry(self, path: str, lineno: int, data: bytes, entry: dict[str, Any],
               bad: list[tuple[int, int, str, str]]) -> None:
        seq: int = entry["seq"]
        prev: str = entry["prev"]
        after_bad = bad[-1][3] if bad else None
        if bad:
            recovered = (entry["event"] == "audit.recovered" and entry.get("torn_bytes") == sum(b[1] for b in bad)
                         and entry.get("torn_lines") == len(bad))
            self._flush_bad(path, bad, lineno if recovered else None)

        body = dict(entry)
        claimed = body.pop("hash")
        try:
            own_ok = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest() == claimed
            canonical = own_ok and canonical_json(entry).encode("utf-8") == data
        except ValueError:  # NaN or Infinity: never written by pdrelay
            own_ok = canonical = False
        if not own_ok:
            self._problem(path, lineno, "entry was edited: its hash does not match its content")
        elif not canonical:
            self._problem(path, lineno, "entry was rewritten: the line is not in canonical JSON form")

        last = self.last
        if last is None:
            self.first_seq = seq
            if prev == ZERO_HASH:
                if seq != 1:
                    self._problem(path, lineno, f"entry {seq} starts a chain (prev is zeros) but its seq is not 1")
            else:
                self.continues_from = prev
        else:
            where = last.where(path)
            message: str | None = None
            if prev == ZERO_HASH:
                message = (f"a new chain starts here (prev is zeros) after entry {last.seq} ({where}): "
                           "the entries between were lost, or the log was started again")
            elif prev == last.line_hash or prev == after_bad:
                if prev == last.line_hash and seq != last.seq + 1:
                    message = f"entry {seq} follows entry {last.seq} ({where}) but its seq is not {last.seq + 1}"
            elif seq == last.seq + 1:
                if not last.altered:  # after an edited entry the mismatch is expected and already reported
                    message = (f"entry {seq} does not follow {where}: prev does not match the hash of {where} "
                               "(that line was altered or replaced)")
            elif seq > last.seq + 1:
                gap = f"entry {last.seq + 1} is" if seq == last.seq + 2 else f"entries {last.seq + 1} to {seq - 1} are"
                message = f"{gap} missing or out of order: prev does not match the hash of {where}"
            elif seq == last.seq:
                message = (f"entry {seq} appears twice ({where} and here): prev does not match the hash of {where}, "
                           "so a line was inserted or forged")
            else:
                message = f"entry {seq} is out of order: it comes after entry {last.seq} ({where})"
            if message is not None:
                if last.path != path:
                    message = f"the chain breaks between {last.path} and {path}: {message}"
                self._problem(path, lineno, message)
        self.last = _Seen(path, lineno, seq, hashlib.sha256(data).hexdigest(), altered=not canonical)
        self.entries += 1


def _first_seq(path: Path) -> int | None:
    """``seq`` of the first entry in a file (within its first lines), for ordering files."""
    with path.open("rb") as f:
        for raw in itertools.islice(f, 100):
            entry, _ = _parse_entry(raw.rstrip(b"\n"))
            if entry is not None:
                seq: int = entry["seq"]
                return seq
    return None


def verify_files(paths: Sequence[str | os.PathLike[str]]) -> VerifyReport:
    """Check one file or a rotated series, oldest first (files are sorted by their first entry's seq).

    An unreadable file raises :class:`OSError`.
    """
    given = [Path(p) for p in paths]
    firsts = [_first_seq(p) for p in given]
    order = sorted(range(len(given)), key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    checker = _Verifier()
    for i in order:
        with given[i].open("rb") as f:
            checker.feed(os.fspath(paths[i]), f)
    return checker.report()


def verify_main(paths: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``pdrelay audit verify FILE...``: 0 chain intact, 1 problems found, 2 a file cannot be read."""
    if not paths:
        err.write("audit verify: give the audit file(s) to check, e.g. data/audit.jsonl*\n")
        return 2
    try:
        report = verify_files(paths)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else "file"
        err.write(f"audit verify: cannot read {name}: {exc.strerror or exc}\n")
        return 2
    files = len(report.files)
    head = report.head or "none"
    if report.ok:
        line = f"ok: {report.entries} entries in {files} file(s), chain intact, head {head}"
        if report.continues_from is not None:
            line += (f" (continues from an earlier file: entry {report.first_seq} has prev "
                     f"{report.continues_from})")
        out.write(line + "\n")
        return 0
    for problem in report.problems:
        err.write(f"{problem}\n")
    err.write(f"FAILED: {len(report.problems)} problem(s) in {report.entries} entries in {files} file(s), "
              f"head {head}\n")
    return 1
