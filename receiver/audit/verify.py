"""Checking audit files: the whole chain across rotated files, and ``pdrelay audit verify``.

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

import hashlib
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from receiver.audit.entry import ZERO_HASH, canonical_json, parse_entry

__all__ = ["Problem", "Verifier", "VerifyReport", "verify_files", "verify_main"]


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


@dataclass(frozen=True, slots=True)
class _Seen:
    path: str
    line: int
    seq: int
    line_hash: str
    altered: bool  # its own content was found edited: the next entry's prev cannot match it

    def where(self, path: str) -> str:
        return f"line {self.line}" if path == self.path else f"line {self.line} of {self.path}"


class Verifier:
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
                entry, _ = parse_entry(raw)
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
            entry, why = parse_entry(data)
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
            entry, _ = parse_entry(raw.rstrip(b"\n"))
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
    checker = Verifier()
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
