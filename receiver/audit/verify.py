"""Checking audit files: the whole chain across rotated files, and ``pdrelay audit verify``.

:func:`verify_files` takes files in any order and checks them sorted by the ``seq`` of their
first entry (so ``audit.jsonl*`` from a shell glob works); ties keep the given order. It
reports edited entries (entry hash mismatch), removed, reordered, duplicated or inserted
entries (``seq`` and ``prev`` do not follow), lines that are not entries, torn lines, a
new chain starting in the middle, breaks between consecutive files, and empty files.

The start of the chain: when no rotated file exists (none is given, and there is no
``<file>.1`` next to a given file), the log was never rotated and its first entry must be the
chain's first (``prev`` all zeros); a first entry that continues an earlier one means the
first lines were removed. When rotated files exist, the oldest one available may start in the
middle of the chain (older ones were deleted by rotation): the report says where it starts
(:attr:`VerifyReport.continues_from`).

The end of the chain: a log whose last entries were dropped still verifies on its own. Given
the head kept outside the file (``"<seq>:<line hash>"``, see :mod:`receiver.audit.writer`),
a log that ends before it, or whose entry at that ``seq`` is another, fails.

Keys: a keyless hash chain proves that the lines agree with each other, not who wrote them;
someone who can rewrite the whole file can rebuild a consistent chain. Entries of a keyed
chain (``audit.hmac_key``) carry HMAC-SHA256 hashes that only the key checks: given the key,
an edited entry fails even with every hash recomputed, and so do unkeyed entries after keyed
ones, or a log with no keyed entry at all; without the key, keyed entries are reported as
not checked (a failure), never as verified.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from receiver.audit.entry import MAC, ZERO_HASH, canonical_json, entry_hash, format_head, parse_entry, parse_head

__all__ = ["Problem", "Verifier", "VerifyReport", "verify_files", "verify_main"]

_BACKUP_RE = re.compile(r".+\.[0-9]+")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, at ``path:line`` (line 0: the file as a whole)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


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
    keyed: int = 0  # entries with an HMAC-SHA256 hash

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def chain_head(self) -> str | None:
        """``"<seq>:<line hash>"`` of the last entry, as the writer reports it (None: no entries)."""
        return None if self.last_seq is None or self.head is None else format_head(self.last_seq, self.head)


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
    """Walks lines file after file, keeping the last good entry to check the next one against.

    ``key``: the chain's HMAC key, if it is keyed. ``head``: the head kept outside the file,
    ``(seq, line hash)``. ``rotated``: rotated files exist, so the first file may start mid-chain.
    """

    def __init__(self, key: bytes | None = None, head: tuple[int, str] | None = None, *,
                 rotated: bool = False) -> None:
        self.files: list[str] = []
        self.entries = 0
        self.problems: list[Problem] = []
        self.last: _Seen | None = None
        self.first_seq: int | None = None
        self.continues_from: str | None = None
        self._key = key
        self._head = head
        self._rotated = rotated
        self._at_head: list[_Seen] = []  # entries whose seq is the recorded head's
        self._keyed = 0
        self._first_keyed: _Seen | None = None
        self._downgraded = False

    def report(self) -> VerifyReport:
        last = self.last
        return VerifyReport(files=tuple(self.files), entries=self.entries,
                            problems=(*self.problems, *self._key_problems(), *self._head_problems()),
                            head=last.line_hash if last else None, last_seq=last.seq if last else None,
                            first_seq=self.first_seq, continues_from=self.continues_from, keyed=self._keyed)

    def _key_problems(self) -> list[Problem]:
        first = self._first_keyed
        if self._key is None and first is not None:
            return [Problem(first.path, first.line, f"{self._keyed} keyed entries (HMAC-SHA256, the first is entry "
                                                    f"{first.seq}) were not checked: no key was given (give "
                                                    "--key-file FILE, or --config with audit.hmac_key)")]
        if self._key is not None and first is None and self.entries:
            return [Problem(self.files[0], 0, "a key was given but no entry is keyed: the log was written without "
                                              "audit.hmac_key, or rewritten without the key")]
        return []

    def _head_problems(self) -> list[Problem]:
        if self._head is None or self._head[0] == 0:
            return []
        seq, line_hash = self._head
        if any(seen.line_hash == line_hash for seen in self._at_head):
            return []
        if self._at_head:
            seen = self._at_head[0]
            return [Problem(seen.path, seen.line, f"entry {seq} is not the recorded head {format_head(seq, line_hash)}"
                                                  f": its line hash is {seen.line_hash}, so the log was rewritten "
                                                  "up to here")]
        where = self.files[-1] if self.files else "<no file>"
        last = self.last
        if last is None:
            return [Problem(where, 0, f"the log has no entries, but the recorded head is entry {seq}")]
        if last.seq < seq:
            gap = f"entry {seq} was" if last.seq + 1 == seq else f"entries {last.seq + 1} to {seq} were"
            return [Problem(last.path, 0, f"the log ends at entry {last.seq}, before the recorded head (entry "
                                          f"{seq}): {gap} removed from the end")]
        if self.first_seq is not None and self.first_seq > seq:
            return [Problem(self.files[0], 0, f"the recorded head, entry {seq}, is not in the files given (they "
                                              f"start at entry {self.first_seq}): give the rotated files too")]
        return [Problem(last.path, 0, f"the recorded head, entry {seq}, is missing from the log")]

    def _problem(self, path: str, line: int, message: str) -> None:
        self.problems.append(Problem(path, line, message))

    def feed(self, path: str, lines: Iterable[bytes]) -> None:
        self.files.append(path)
        before = self.entries
        bad: list[tuple[int, int, str, str]] = []  # not-entry lines waiting for the next entry: line, bytes, why, hash
        lineno = 0
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
        if lineno == 0 and self.entries == before:
            self._problem(path, 0, "the file is empty: no audit entries (it was emptied, or nothing was ever recorded)")

    def _flush_bad(self, path: str, bad: list[tuple[int, int, str, str]], recovered_at: int | None) -> None:
        for line, size, why, _ in bad:
            if recovered_at is not None:
                self._problem(path, line, f"torn write: {size} bytes that are not a complete entry "
                                          f"(noted by audit.recovered on line {recovered_at})")
            else:
                self._problem(path, line, f"not an audit entry: {why}")
        bad.clear()

    def _own_hash(self, path: str, lineno: int, data: bytes, entry: dict[str, Any]) -> bool:
        """Check the entry against its own hash; report what is wrong; whether its line is as written."""
        body = dict(entry)
        claimed: str = body.pop("hash")
        keyed = entry.get("mac") == MAC
        try:
            text = canonical_json(body).encode("utf-8")
            if keyed and self._key is None:
                own_ok = True  # cannot be checked: counted and reported once, at the end
            else:
                own_ok = hmac.compare_digest(entry_hash(text, self._key if keyed else None), claimed)
            canonical = own_ok and canonical_json(entry).encode("utf-8") == data
        except ValueError:  # NaN or Infinity: never written by pdrelay
            own_ok = canonical = False
        if not own_ok:
            self._problem(path, lineno, "entry was edited: its HMAC does not match its content (or the key is not "
                                        "the one it was written with)" if keyed
                          else "entry was edited: its hash does not match its content")
        elif not canonical:
            self._problem(path, lineno, "entry was rewritten: the line is not in canonical JSON form")
        if not keyed and self._key is not None and self._keyed and not self._downgraded:
            self._downgraded = True
            self._problem(path, lineno, f"entry {entry['seq']} is not keyed, but entries before it are: it was "
                                        "written without audit.hmac_key, or the entries from here on were rewritten")
        return canonical

    def _entry(self, path: str, lineno: int, data: bytes, entry: dict[str, Any],
               bad: list[tuple[int, int, str, str]]) -> None:
        seq: int = entry["seq"]
        prev: str = entry["prev"]
        after_bad = bad[-1][3] if bad else None
        if bad:
            recovered = (entry["event"] == "audit.recovered" and entry.get("torn_bytes") == sum(b[1] for b in bad)
                         and entry.get("torn_lines") == len(bad))
            self._flush_bad(path, bad, lineno if recovered else None)

        canonical = self._own_hash(path, lineno, data, entry)
        last = self.last
        if last is None:
            self.first_seq = seq
            if prev == ZERO_HASH:
                if seq != 1:
                    self._problem(path, lineno, f"entry {seq} starts a chain (prev is zeros) but its seq is not 1")
            else:
                self.continues_from = prev
                if not self._rotated:
                    self._problem(path, lineno, _missing_start(seq))
        else:
            message = _link_problem(last, path, seq, prev, after_bad)
            if message is not None:
                if last.path != path:
                    message = f"the chain breaks between {last.path} and {path}: {message}"
                self._problem(path, lineno, message)
        seen = _Seen(path, lineno, seq, hashlib.sha256(data).hexdigest(), altered=not canonical)
        self.last = seen
        self.entries += 1
        if entry.get("mac") == MAC:
            self._keyed += 1
            if self._first_keyed is None:
                self._first_keyed = seen
        if self._head is not None and seq == self._head[0]:
            self._at_head.append(seen)


def _missing_start(seq: int) -> str:
    if seq <= 1:
        return "the first entry, entry 1, does not start a chain: its prev is not zeros"
    gap = "entry 1 was" if seq == 2 else f"entries 1 to {seq - 1} were"
    return (f"the start of the chain is missing: the first entry is entry {seq} and its prev is not zeros, "
            f"but no rotated file exists: {gap} removed from the start")


def _link_problem(last: _Seen, path: str, seq: int, prev: str, after_bad: str | None) -> str | None:
    """What is wrong with an entry ``seq`` / ``prev`` coming after ``last``, or None."""
    where = last.where(path)
    if prev == ZERO_HASH:
        return (f"a new chain starts here (prev is zeros) after entry {last.seq} ({where}): "
                "the entries between were lost, or the log was started again")
    if prev == last.line_hash or prev == after_bad:
        if prev == last.line_hash and seq != last.seq + 1:
            return f"entry {seq} follows entry {last.seq} ({where}) but its seq is not {last.seq + 1}"
        return None
    if seq == last.seq + 1:
        if last.altered:  # after an edited entry the mismatch is expected and already reported
            return None
        return (f"entry {seq} does not follow {where}: prev does not match the hash of {where} "
                "(that line was altered or replaced)")
    if seq > last.seq + 1:
        gap = f"entry {last.seq + 1} is" if seq == last.seq + 2 else f"entries {last.seq + 1} to {seq - 1} are"
        return f"{gap} missing or out of order: prev does not match the hash of {where}"
    if seq == last.seq:
        return (f"entry {seq} appears twice ({where} and here): prev does not match the hash of {where}, "
                "so a line was inserted or forged")
    return f"entry {seq} is out of order: it comes after entry {last.seq} ({where})"


def _first_seq(path: Path) -> int | None:
    """``seq`` of the first entry in a file (within its first lines), for ordering files."""
    with path.open("rb") as f:
        for raw in itertools.islice(f, 100):
            entry, _ = parse_entry(raw.rstrip(b"\n"))
            if entry is not None:
                seq: int = entry["seq"]
                return seq
    return None


def _rotated(given: Sequence[Path]) -> bool:
    """Whether the files are (or come with) rotated ones: several given, a backup's name, or ``<file>.1``."""
    return len(given) > 1 or any(_BACKUP_RE.fullmatch(p.name) or Path(f"{p}.1").exists() for p in given)


def verify_files(paths: Sequence[str | os.PathLike[str]], *, key: bytes | None = None,
                 head: str | None = None) -> VerifyReport:
    """Check one file or a rotated series, oldest first (files are sorted by their first entry's seq).

    ``key``: the chain's HMAC key (``audit.hmac_key``). ``head``: the head kept outside the file,
    ``"<seq>:<line hash>"``. An unreadable file raises :class:`OSError`; a ``head`` that is not one
    raises :class:`ValueError`.
    """
    expected = None if head is None else parse_head(head)
    given = [Path(p) for p in paths]
    firsts = [_first_seq(p) for p in given]
    order = sorted(range(len(given)), key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    checker = Verifier(key, expected, rotated=_rotated(given))
    for i in order:
        with given[i].open("rb") as f:
            checker.feed(os.fspath(paths[i]), f)
    return checker.report()


def verify_main(paths: Sequence[str], out: TextIO, err: TextIO, *, key: bytes | None = None,
                head: str | None = None) -> int:
    """``pdrelay audit verify FILE...``: 0 chain intact, 1 problems found, 2 a file cannot be read or
    the head is not one."""
    if not paths:
        err.write("audit verify: give the audit file(s) to check, e.g. data/audit.jsonl*\n")
        return 2
    try:
        report = verify_files(paths, key=key, head=head)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else "file"
        err.write(f"audit verify: cannot read {name}: {exc.strerror or exc}\n")
        return 2
    except ValueError as exc:
        err.write(f"audit verify: --head: {exc}\n")
        return 2
    files = len(report.files)
    where = report.chain_head or "none"
    if report.ok:
        line = f"ok: {report.entries} entries in {files} file(s), chain intact, head {where}"
        if report.keyed:
            line += f", {report.keyed} keyed entries checked with the key"
        if head is not None:
            line += f", reaches the recorded head {head}"
        if report.continues_from is not None:
            line += (f" (starts mid-chain: the oldest file begins at entry {report.first_seq}, whose prev "
                     f"{report.continues_from} is in a rotated file that is gone or not given)")
        out.write(line + "\n")
        return 0
    for problem in report.problems:
        err.write(f"{problem}\n")
    err.write(f"FAILED: {len(report.problems)} problem(s) in {report.entries} entries in {files} file(s), "
              f"head {where}\n")
    return 1
