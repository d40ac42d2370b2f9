"""The end of an audit file: its last good entry (the chain head) and any torn lines after it.

A writer reads the tail when it opens a file and whenever another writer has appended since
its own last write. It reads backwards from the end, 8 KiB first and then doubling, only as
far back as the start of the last good entry, never the whole file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from receiver.audit.entry import AuditError, parse_entry

__all__ = ["Tail", "read_tail"]

_BLOCK = 8192
_TORN_LIMIT = 1 << 20  # bytes of non-entries skipped from the end before the head is given up as unknown


@dataclass(frozen=True, slots=True)
class Tail:
    """What the end of a file holds."""

    seq: int | None  # the last good entry, or None when there is none within reach
    line_hash: str | None
    torn_bytes: int  # bytes after it that are not entries (without their newlines)
    torn_lines: int
    needs_newline: bool  # the file does not end with a newline


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            raise AuditError("audit log shrank while locked")
        data += more
    return data


def read_tail(fd: int, size: int) -> Tail:
    """Find the last good entry by reading backwards from ``size``: 8 KiB first, then doubling.

    Only the last line is read when it is an entry (however long it is: its hash needs all of
    it); lines that are not entries are skipped back up to ``_TORN_LIMIT`` bytes. The caller
    holds the file's lock.
    """
    if size == 0:
        return Tail(None, None, 0, 0, False)
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
        entry, _ = parse_entry(line)
        if entry is not None:
            return Tail(entry["seq"], hashlib.sha256(line).hexdigest(), torn_bytes, torn_lines, needs_newline)
        torn_bytes += len(line)
        torn_lines += 1
        if line_start == 0 or torn_bytes > _TORN_LIMIT:
            return Tail(None, None, torn_bytes, torn_lines, needs_newline)
        end = line_start - 1
