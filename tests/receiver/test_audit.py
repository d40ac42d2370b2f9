"""The audit log: its hash chain on disk, restarts, rotation, shared writers, tampering and verify."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.audit import (
    REDACTED,
    ZERO_HASH,
    AuditError,
    AuditLog,
    AuditSink,
    MemoryAudit,
    NullAudit,
    verify_files,
    verify_main,
)
from receiver.secret import Secret
from tests.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def canon(obj: object) -> bytes:
    """The hashing rule's canonical JSON, written out independently of the module."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_lines(path: Path) -> list[bytes]:
    """The file's lines without their newlines."""
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def rehash(entry: dict[str, Any]) -> bytes:
    """A forger's line: ``entry`` with its own hash recomputed by the published rule."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return canon({**body, "hash": sha(canon(body))})


def problems(path: Path | list[Path]) -> list[str]:
    return [str(p) for p in verify_files(path if isinstance(path, list) else [path]).problems]


def chain_of(path: Path, n: int, clock: FakeClock | None = None, **kw: Any) -> FakeClock:
    clock = clock or FakeClock()
    with AuditLog(path, clock=clock, **kw) as log:
        for i in range(1, n + 1):
            log.record("intake.accepted", actor="alertmanager", receiver="pd", alerts=i)
            clock.advance(0.25)
    return clock


def rotated(path: Path) -> list[Path]:
    """``audit.jsonl`` and its backups, oldest first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, path]


# --------------------------------------------------------------------------- format and chain


def test_entries_are_canonical_json_chained_by_the_documented_rule(tmp_path: Path) -> None:
    """Each line is canonical JSON; hash covers the entry without it; prev is the previous line's hash."""
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    with AuditLog(path, clock=clock) as log:
        log.record("rules.loaded", actor=None, files=2, sha256="ab" * 32)
        clock.advance(1.2345)
        log.record("admin.action", actor="ops@example.com", action="outbox.replay", ids=[3, 4])
        clock.advance(60)
        log.record("event.sent", dedup_key="k1", status=202, note="héllo → ☃")
        assert log.last_seq == 3

    lines = raw_lines(path)
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [e["ts"] for e in entries] == ["2023-11-14T22:13:20.000Z", "2023-11-14T22:13:21.234Z",
                                          "2023-11-14T22:14:21.234Z"]
    assert [e["event"] for e in entries] == ["rules.loaded", "admin.action", "event.sent"]
    assert [e["actor"] for e in entries] == [None, "ops@example.com", None]
    assert entries[1]["ids"] == [3, 4] and entries[2]["note"] == "héllo → ☃"
    assert "héllo → ☃".encode() in lines[2]  # UTF-8, not \u escapes

    prev = ZERO_HASH
    for line, entry in zip(lines, entries, strict=True):
        assert canon(entry) == line  # keys sorted, no spaces
        body = {k: v for k, v in entry.items() if k != "hash"}
        assert entry["hash"] == sha(canon(body))
        assert entry["prev"] == prev
        prev = sha(line)

    report = verify_files([path])
    assert report.ok and report.problems == ()
    assert (report.entries, report.head, report.last_seq, report.continues_from) == (3, prev, 3, None)
    assert report.files == (str(path),)


def test_the_file_and_its_directory_are_created_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit" / "audit.jsonl"
    with AuditLog(path, clock=FakeClock()) as log:
        log.record("intake.accepted")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.parent.is_dir()


def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = chain_of(path, 3)
    with AuditLog(path, clock=clock) as log:
        assert log.last_seq == 3
        assert log.head == sha(raw_lines(path)[-1])
        log.record("breaker.changed", name="events.pagerduty.com", old="closed", new="open")
    with AuditLog(path, clock=clock) as log:
        log.record("event.dead_lettered", dedup_key="k")

    entries = [json.loads(line) for line in raw_lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert verify_files([path]).ok


def test_memory_audit_writes_the_same_lines_as_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    file_clock, memory_clock = FakeClock(), FakeClock()
    memory = MemoryAudit(clock=memory_clock)
    with AuditLog(path, clock=file_clock) as log:
        for sink, clock in ((log, file_clock), (memory, memory_clock)):
            sink.record("auth.refused", actor="203.0.113.9", reason="bad token", token=Secret("t0k3n"))
            clock.advance(0.5)
            sink.record("event.purged", actor="cli", count=7)
    assert [line.encode() for line in memory.lines] == raw_lines(path)
    assert memory.entries[0]["token"] == REDACTED
    assert memory.last_seq == 2 and memory.head == sha(raw_lines(path)[-1])
    assert memory.verify().ok


def test_null_audit_records_nothing() -> None:
    sinks: list[AuditSink] = [NullAudit(), MemoryAudit()]
    for sink in sinks:
        sink.record("intake.accepted", actor="x", alerts=1)
        sink.close()
    with pytest.raises(AuditError, match="closed"):
        sinks[1].record("intake.accepted")


# --------------------------------------------------------------------------- values


def test_secrets_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=FakeClock()) as log:
        log.record("admin.action", actor="ops", key=Secret("s3cr3t-1"),
                   nested={"routing_key": Secret("s3cr3t-2"), "list": [Secret("s3cr3t-3"), "ok"]},
                   keys=(Secret("s3cr3t-4"),))
    text = path.read_text()
    assert "s3cr3t" not in text
    entry = json.loads(text)
    assert entry["key"] == REDACTED
    assert entry["nested"] == {"routing_key": REDACTED, "list": [REDACTED, "ok"]}
    assert entry["keys"] == [REDACTED]
    assert verify_files([path]).ok


def test_values_json_cannot_hold_are_written_as_text_and_still_verify(tmp_path: Path) -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=FakeClock()) as log:
        log.record("admin.action", thing=Thing(), path=Path("/x/y"), pair=(1, "b"), ints={2: "a", 10: "b"},
                   ratio=0.1, big=10**30)
        log.record("admin.action", nan=float("nan"), inf=float("-inf"), broken="\ud800")
        log.record("admin.action", nested={"hash": "audit-hash-placeholder-7f3c"}, top="audit-hash-placeholder-7f3c")
    first, second, third = (json.loads(line) for line in raw_lines(path))
    assert (first["thing"], first["path"], first["pair"]) == ("a thing", "/x/y", [1, "b"])
    assert first["ints"] == {"2": "a", "10": "b"} and first["ratio"] == 0.1 and first["big"] == 10**30
    assert (second["nan"], second["inf"], second["broken"]) == ("nan", "-inf", "\\ud800")
    assert third["nested"] == {"hash": "audit-hash-placeholder-7f3c"}
    assert verify_files([path]).ok


_TEXT = st.text(st.characters(exclude_categories=()))  # every code point, lone surrogates too
_TEXT = _TEXT | st.text(st.characters(exclude_categories=()), min_size=250, max_size=300)  # around the cap
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_RESERVED = {"seq", "ts", "event", "actor", "prev", "hash", "mac"}
_NAMES = st.text(min_size=1, max_size=8).filter(lambda s: s not in _RESERVED)


def capped(value: Any) -> Any:
    """``value`` with every text over 256 characters written as the audit log's one rule says."""
    if isinstance(value, str) and len(value) > 256:
        digest = sha(value.encode("utf-8", "backslashreplace"))[:16]
        return f"{value[:64]}…[sha256:{digest}, {len(value)} chars]"
    if isinstance(value, dict):
        return {capped(k): capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [capped(v) for v in value]
    return value


def utf8_encodable(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.none() | _TEXT, st.dictionaries(_NAMES, _JSON, max_size=6)), min_size=1, max_size=4))
def test_any_values_are_written_by_the_published_rule(records: list[tuple[str | None, dict[str, Any]]]) -> None:
    """Whatever the values (control characters, astral text, lone surrogates, big integers, floats,
    nesting), each line is the canonical JSON of what it reads back as, hashed and chained by the rule;
    values UTF-8 can encode read back unchanged, or capped by the rule when over 256 characters."""
    audit = MemoryAudit(clock=FakeClock())
    for actor, fields in records:
        audit.record("admin.action", actor=actor, **fields)
    prev = ZERO_HASH
    for line, (actor, fields) in zip(audit.lines, records, strict=True):
        data = line.encode("utf-8")
        entry = json.loads(data)
        assert canon(entry) == data
        assert entry["hash"] == sha(canon({k: v for k, v in entry.items() if k != "hash"}))
        assert entry["prev"] == prev
        prev = sha(data)
        if utf8_encodable([actor, fields]):
            assert entry["actor"] == capped(actor)
            assert {k: entry[k] for k in capped(fields)} == capped(fields)
    assert audit.verify().ok


def test_bad_event_names_and_reserved_fields_are_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.jsonl", clock=FakeClock()) as log:
        for event in ("accepted", "Intake.Accepted", "intake.", "intake accepted"):
            with pytest.raises(AuditError, match="dotted lower-case name"):
                log.record(event)
        for name in ("seq", "ts", "prev", "hash"):
            with pytest.raises(AuditError, match=f"{name} are reserved"):
                log.record("intake.accepted", **{name: 1})  # type: ignore[arg-type]
        assert log.last_seq == 0
    assert (tmp_path / "audit.jsonl").read_bytes() == b""


def test_record_after_close_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", clock=FakeClock())
    log.record("intake.accepted")
    log.sync()
    log.close()
    log.close()
    with pytest.raises(AuditError, match="is closed"):
        log.record("intake.accepted")


def test_settings_are_checked(tmp_path: Path) -> None:
    for kw in ({"max_bytes": 0}, {"backups": -1}, {"fsync_interval": -1.0}):
        with pytest.raises(ValueError):
            AuditLog(tmp_path / "audit.jsonl", **kw)


# --------------------------------------------------------------------------- tampering


@pytest.fixture
def six(tmp_path: Path) -> Path:
    """A six-entry chain in ``audit.jsonl``."""
    path = tmp_path / "audit.jsonl"
    chain_of(path, 6)
    assert verify_files([path]).ok
    return path


def test_an_edited_field_is_detected(six: Path) -> None:
    lines = raw_lines(six)
    lines[2] = lines[2].replace(b'"actor":"alertmanager"', b'"actor":"somebody"')
    write_lines(six, lines)
    assert problems(six) == [f"{six}:3: entry was edited: its hash does not match its content"]


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(six: Path) -> None:
    lines = raw_lines(six)
    entry = json.loads(lines[2])
    lines[2] = rehash({**entry, "alerts": 300})
    write_lines(six, lines)
    assert problems(six) == [f"{six}:4: entry 4 does not follow line 3: prev does not match the hash of line 3 "
                             "(that line was altered or replaced)"]


def test_a_deleted_line_is_detected(six: Path) -> None:
    lines = raw_lines(six)
    del lines[2]
    write_lines(six, lines)
    assert problems(six) == [f"{six}:3: entry 3 is missing or out of order: prev does not match the hash of line 2"]


def test_two_swapped_lines_are_detected(six: Path) -> None:
    lines = raw_lines(six)
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(six, lines)
    assert problems(six) == [
        f"{six}:3: entry 3 is missing or out of order: prev does not match the hash of line 2",
        f"{six}:4: entry 3 is out of order: it comes after entry 4 (line 3)",
        f"{six}:5: entry 4 is missing or out of order: prev does not match the hash of line 4",
    ]


def test_a_truncated_last_line_is_reported_as_torn(six: Path) -> None:
    data = six.read_bytes()
    six.write_bytes(data[:-10])
    torn = len(raw_lines(six)[-1])
    assert problems(six) == [f"{six}:6: torn last line: {torn} bytes with no newline at the end "
                             "(a write was cut short, or the file was truncated)"]


def test_a_forged_line_with_a_correct_own_hash_is_detected(six: Path) -> None:
    """The forger chains the new line to line 3 properly; the genuine entry 4 then no longer fits."""
    lines = raw_lines(six)
    genuine = json.loads(lines[2])
    forged = rehash({**genuine, "seq": 4, "event": "admin.action", "actor": "mallory", "prev": sha(lines[2])})
    lines.insert(3, forged)
    write_lines(six, lines)
    assert problems(six) == [f"{six}:5: entry 4 appears twice (line 4 and here): prev does not match the hash of "
                             "line 4, so a line was inserted or forged"]


def test_lines_that_are_not_entries_are_reported(six: Path) -> None:
    lines = raw_lines(six)
    lines.insert(2, b"hello")
    lines[4] = b'{"seq":4}'
    write_lines(six, lines)
    assert problems(six) == [
        f"{six}:3: not an audit entry: not valid JSON",
        f"{six}:5: not an audit entry: missing field(s) ts, event, actor, prev, hash",
        f"{six}:6: entry 4 is missing or out of order: prev does not match the hash of line 4",
    ]


def test_a_new_chain_in_the_middle_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 2)
    other = tmp_path / "other.jsonl"
    chain_of(other, 1)
    path.write_bytes(path.read_bytes() + other.read_bytes())
    assert problems(path) == [f"{path}:3: a new chain starts here (prev is zeros) after entry 2 (line 2): "
                              "the entries between were lost, or the log was started again"]


# --------------------------------------------------------------------------- torn writes


def test_a_torn_tail_is_recovered_on_open_and_still_reported(six: Path) -> None:
    fragment = b'{"actor":"alertmanager","alerts":7,"ev'
    six.write_bytes(six.read_bytes() + fragment)
    with AuditLog(six, clock=FakeClock()) as log:
        assert log.last_seq == 7  # 6 entries + audit.recovered
        log.record("intake.accepted", alerts=8)

    lines = raw_lines(six)
    assert lines[6] == fragment
    recovered, after = json.loads(lines[7]), json.loads(lines[8])
    assert recovered["event"] == "audit.recovered"
    assert (recovered["seq"], recovered["torn_bytes"], recovered["torn_lines"]) == (7, len(fragment), 1)
    assert recovered["prev"] == sha(lines[5])
    assert after["seq"] == 8 and after["prev"] == sha(lines[7])

    report = verify_files([six])
    assert [str(p) for p in report.problems] == [
        f"{six}:7: torn write: {len(fragment)} bytes that are not a complete entry (noted by audit.recovered on line 8)"
    ]
    assert report.entries == 8


def test_a_torn_write_by_another_writer_is_noticed_on_the_next_record(six: Path) -> None:
    with AuditLog(six, clock=FakeClock()) as log:
        with six.open("ab") as other:  # another process died in the middle of its write
            other.write(b'{"seq":7,"ts":"2023-')
        log.record("intake.accepted")
    events = [json.loads(line)["event"] for line in raw_lines(six)[7:]]
    assert events == ["audit.recovered", "intake.accepted"]
    assert problems(six) == [f"{six}:7: torn write: 20 bytes that are not a complete entry "
                             "(noted by audit.recovered on line 8)"]


def test_a_long_last_line_is_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = chain_of(path, 2)
    with AuditLog(path, clock=clock) as log:
        log.record("rules.loaded", source="x" * 100_000)
    with AuditLog(path, clock=clock) as log:
        assert (log.last_seq, log.head) == (3, sha(raw_lines(path)[-1]))
        log.record("rules.loaded")
    assert verify_files([path]).ok


def test_an_entry_missing_only_its_newline_is_kept(six: Path) -> None:
    six.write_bytes(six.read_bytes()[:-1])
    assert problems(six) == [f"{six}:6: the last line has no newline at the end "
                             "(a write was cut short, or the file was truncated)"]
    with AuditLog(six, clock=FakeClock()) as log:
        assert log.last_seq == 6
        log.record("intake.accepted")
    assert verify_files([six]).ok


# --------------------------------------------------------------------------- rotation


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 40, max_bytes=2000, backups=10)
    files = rotated(path)
    assert len(files) >= 4
    assert [p.name for p in files] == [*(f"audit.jsonl.{i}" for i in range(len(files) - 1, 0, -1)), "audit.jsonl"]
    assert all(p.stat().st_size <= 2000 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)  # no temporary files left

    for older, newer in zip(files, files[1:], strict=False):
        first = json.loads(raw_lines(newer)[0])
        assert first["event"] == "intake.accepted"  # an ordinary entry, no marker
        assert first["prev"] == sha(raw_lines(older)[-1])
        assert first["seq"] == json.loads(raw_lines(older)[-1])["seq"] + 1

    shuffled = [files[2], path, files[0], *files[3:-1], files[1]]  # as a shell glob might give them
    report = verify_files(shuffled)
    assert report.ok and report.entries == 40 and report.first_seq == 1
    assert report.files == tuple(str(p) for p in files)
    assert report.head == sha(raw_lines(path)[-1])

    alone = verify_files([path])  # the newest file alone continues from an earlier one
    first = json.loads(raw_lines(path)[0])
    assert alone.ok and alone.continues_from == first["prev"] and alone.first_seq == first["seq"]


def test_rotation_deletes_the_oldest_beyond_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 60, max_bytes=1000, backups=3)
    files = rotated(path)
    assert [p.name for p in files] == ["audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    report = verify_files(files)
    assert report.ok and report.last_seq == 60 and report.first_seq is not None and report.first_seq > 1
    assert report.continues_from is not None


def test_a_removed_middle_file_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 40, max_bytes=2000, backups=10)
    oldest, middle, *rest = rotated(path)
    last_before = json.loads(raw_lines(oldest)[-1])["seq"]
    first_after = json.loads(raw_lines(rest[0])[0])["seq"]
    middle.unlink()
    n = len(raw_lines(oldest))
    assert problems([oldest, *rest]) == [
        f"{rest[0]}:1: the chain breaks between {oldest} and {rest[0]}: entries {last_before + 1} to "
        f"{first_after - 1} are missing or out of order: prev does not match the hash of line {n} of {oldest}"
    ]


# --------------------------------------------------------------------------- several writers


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    with AuditLog(path, clock=clock) as serve, AuditLog(path, clock=clock) as cli:
        for i in range(10):
            serve.record("intake.accepted", alerts=i)
            cli.record("event.purged", actor="cli", count=i)
            cli.record("event.replayed", actor="cli", id=i)
        assert serve.last_seq == 28 and cli.last_seq == 30
    entries = [json.loads(line) for line in raw_lines(path)]
    assert [e["seq"] for e in entries] == list(range(1, 31))
    assert verify_files([path]).ok


def test_two_writers_keep_one_chain_through_rotations(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    with AuditLog(path, clock=clock, max_bytes=1500, backups=50) as a, \
            AuditLog(path, clock=clock, max_bytes=1500, backups=50) as b:
        for i in range(30):
            (a if i % 3 else b).record("intake.accepted", alerts=i)
    files = rotated(path)
    assert len(files) >= 4
    report = verify_files(files)
    assert report.ok and report.entries == 30 and report.first_seq == 1


def test_concurrent_threads_and_a_second_process_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = (
        "import sys\n"
        "from receiver.audit import AuditLog\n"
        "with AuditLog(sys.argv[1], max_bytes=20000, backups=100) as log:\n"
        "    for i in range(300):\n"
        "        log.record('event.purged', actor='cli', n=i)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT)
    try:
        with AuditLog(path, max_bytes=20000, backups=100) as shared:
            def write(tag: str) -> None:
                for i in range(150):
                    shared.record("intake.accepted", tag=tag, n=i)

            threads = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        assert child.wait(timeout=60) == 0
    report = verify_files(rotated(path))
    assert report.ok, [str(p) for p in report.problems]
    assert (report.entries, report.first_seq, report.last_seq) == (600, 1, 600)


def test_a_writer_whose_file_was_removed_keeps_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=FakeClock()) as log:
        log.record("intake.accepted")
        log.record("intake.accepted")
        head = log.head
        path.unlink()
        log.record("intake.accepted")
    entry = json.loads(path.read_bytes())
    assert (entry["seq"], entry["prev"]) == (3, head)  # the gap stays visible
    report = verify_files([path])
    assert report.continues_from == head
    assert [str(p) for p in report.problems] == [
        f"{path}:1: the start of the chain is missing: the first entry is entry 3 and its prev is not zeros, "
        "but no rotated file exists: entries 1 to 2 were removed from the start"]


# --------------------------------------------------------------------------- verify_main


def test_verify_main_ok(six: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert verify_main([str(six)], out, err) == 0
    head = sha(raw_lines(six)[-1])
    assert out.getvalue() == f"ok: 6 entries in 1 file(s), chain intact, head 6:{head}\n"
    assert err.getvalue() == ""


def test_verify_main_notes_a_chain_that_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 40, max_bytes=2000)
    first = json.loads(raw_lines(path)[0])
    out, err = io.StringIO(), io.StringIO()
    assert verify_main([str(path)], out, err) == 0
    assert out.getvalue().endswith(f"(starts mid-chain: the oldest file begins at entry {first['seq']}, whose prev "
                                   f"{first['prev']} is in a rotated file that is gone or not given)\n")


def test_verify_main_reports_problems(six: Path) -> None:
    lines = raw_lines(six)
    lines[0] = lines[0].replace(b"alertmanager", b"someone")
    del lines[3]
    write_lines(six, lines)
    out, err = io.StringIO(), io.StringIO()
    assert verify_main([str(six)], out, err) == 1
    head = sha(raw_lines(six)[-1])
    assert out.getvalue() == ""
    assert err.getvalue() == (
        f"{six}:1: entry was edited: its hash does not match its content\n"
        f"{six}:4: entry 4 is missing or out of order: prev does not match the hash of line 3\n"
        f"FAILED: 2 problem(s) in 5 entries in 1 file(s), head 6:{head}\n"
    )


def test_verify_main_cannot_read(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    missing = tmp_path / "nope.jsonl"
    assert verify_main([str(missing)], out, err) == 2
    assert err.getvalue() == f"audit verify: cannot read {missing}: No such file or directory\n"
    err = io.StringIO()
    assert verify_main([], out, err) == 2
    assert "give the audit file(s)" in err.getvalue()
    assert out.getvalue() == ""


def test_verify_main_on_an_empty_file(tmp_path: Path) -> None:
    """An empty file fails: a log in use always holds entries, so it was emptied (or never written)."""
    path = tmp_path / "audit.jsonl"
    AuditLog(path).close()
    out, err = io.StringIO(), io.StringIO()
    assert verify_main([str(path)], out, err) == 1
    assert out.getvalue() == ""
    assert err.getvalue() == (f"{path}: the file is empty: no audit entries (it was emptied, or nothing was ever "
                              "recorded)\nFAILED: 1 problem(s) in 0 entries in 1 file(s), head none\n")
    assert os.path.getsize(path) == 0


async def test_records_on_an_event_loop_are_written_once_per_iteration(tmp_path: Path) -> None:
    """With batch_on_loop, a burst of records is written at the end of the loop iteration; the chain is the
    same as written one by one, another writer in between is chained in, and close writes what is queued."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, batch_on_loop=True)
    other = AuditLog(path)
    for i in range(50):
        log.record("intake.accepted", actor="a", n=i)
    assert path.read_bytes() == b""  # still queued: the loop has not run its callbacks yet
    await asyncio.sleep(0)  # the scenario: one turn of the loop
    assert len(path.read_text().splitlines()) == 50
    other.record("admin.action", actor="cli:ops")  # not batched: written at once
    log.record("intake.accepted", actor="a", n=50)
    log.close()  # writes the queued entry
    other.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 53))
    assert [e["event"] for e in lines[49:]] == ["intake.accepted", "admin.action", "intake.accepted"]
    report = verify_files([path])
    assert report.ok and report.entries == 52


async def test_a_batch_that_cannot_be_written_is_reported_entry_by_entry(tmp_path: Path) -> None:
    """A failed end-of-iteration write tells on_error of every entry it lost (the app counts and logs them)."""
    lost: list[tuple[str, str]] = []
    log = AuditLog(tmp_path / "audit.jsonl", batch_on_loop=True,
                   on_error=lambda event, exc: lost.append((event, type(exc).__name__)))
    log.record("intake.accepted", actor="a")
    log.record("auth.refused", actor=None)
    os.close(log._fd)  # the descriptor goes away under the writer: its write fails
    await asyncio.sleep(0)
    assert lost == [("intake.accepted", "OSError"), ("auth.refused", "OSError")]
    log._fd = -1
    log.close()
