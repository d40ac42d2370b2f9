"""What keeps the audit log honest against a hostile client or a hostile editor: client text capped in
entries, the head kept outside the file, a missing start or end of the chain, and the keyed (HMAC) chain."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import ZERO_HASH, AuditError, AuditLog, MemoryAudit, verify_files, verify_main
from receiver.audit import entry as entry_module
from receiver.secret import Secret
from receiver.settings import AuditSettings, OutboxSettings, PagerDutySettings, RulesSettings, Settings
from tests.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[2]
CAPTURED = Path(__file__).parent.parent / "e2e" / "captured"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
KEY = "audit-hmac-key-0123456789abcdef"
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def canon(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def capped(text: str) -> str:
    """The audit log's one rule for text, written out independently of the module."""
    if len(text) <= 256:
        return text
    return f"{text[:64]}…[sha256:{sha(text.encode())[:16]}, {len(text)} chars]"


def raw_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def problems(paths: list[Path], **kw: Any) -> list[str]:
    return [str(p) for p in verify_files(paths, **kw).problems]


def chain_of(path: Path, n: int, key: str | None = None, **kw: Any) -> list[str]:
    """``n`` entries; the head reported after each write."""
    heads: list[str] = []
    clock = FakeClock()
    with AuditLog(path, clock=clock, on_head=heads.append, hmac_key=None if key is None else Secret(key),
                  **kw) as log:
        for i in range(1, n + 1):
            log.record("intake.accepted", actor="alertmanager", receiver="pd", alerts=i)
            clock.advance(0.25)
    return heads


def rechain(entries: list[dict[str, Any]], prev: str = ZERO_HASH) -> list[bytes]:
    """A forger's consistent rewrite (without any key): every hash and prev recomputed, from ``prev`` on."""
    lines = []
    for e in entries:
        body = {k: v for k, v in e.items() if k != "hash"} | {"prev": prev}
        own = sha(canon(body))
        line = canon({**body, "hash": own})
        lines.append(line)
        prev = sha(line)
    return lines


def app_settings(tmp_path: Path, **audit: Any) -> Settings:
    (tmp_path / "rules.yaml").write_text(RULES)
    return Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret("r" * 32)}, dry_run=True),
        outbox=OutboxSettings(path=tmp_path / "data" / "outbox.db"),
        rules=RulesSettings(paths=(tmp_path / "rules.yaml",)),
        audit=AuditSettings(**audit),
    )


# --------------------------------------------------------------------------- client text is capped


async def test_a_4_mb_receiver_and_an_over_long_label_name_are_capped(tmp_path: Path,
                                                                     aiohttp_client: ClientFactory) -> None:
    """A receiver name of 4 MiB (accepted) and a label name over server.max_label_bytes (refused, named in
    the error) reach the audit file as 64 characters, a marker and a hash, not whole."""
    app = create_app(app_settings(tmp_path), Deps(registry=CollectorRegistry()))
    client = await aiohttp_client(app)
    body = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
    receiver = "r" * (4 * 1024 * 1024)
    big = io.BytesIO(json.dumps({**body, "receiver": receiver}).encode())
    assert (await client.post("/v1/alertmanager", data=big)).status == 200
    name = "n" * 20_000
    long_label = {**body, "alerts": [{**body["alerts"][0], "labels": {name: "v"}}]}
    refused = await client.post("/v1/alertmanager", json=long_label)
    assert refused.status == 413
    await client.close()

    path = tmp_path / "data" / "audit.jsonl"
    entries = {e["event"]: e for e in map(json.loads, raw_lines(path))}
    assert entries["intake.accepted"]["receiver"] == capped(receiver)
    assert capped(receiver) == f"{'r' * 64}…[sha256:{sha(receiver.encode())[:16]}, 4194304 chars]"
    field = f"alerts[0].labels.{name}"
    assert entries["intake.refused"]["field"] == capped(field)
    assert entries["intake.refused"]["error"] == capped(
        f"{field}: 20001 bytes is over the limit of 16384 (server.max_label_bytes)")
    assert max(len(line) for line in raw_lines(path)) < 1024
    assert verify_files([path]).ok


def test_every_text_in_an_entry_follows_the_one_rule() -> None:
    """Values, nested values, dict keys, field names and the actor: at most 256 characters kept as they
    are, anything longer capped; a capped text still says where it came from (its hash)."""
    audit = MemoryAudit(clock=FakeClock())
    long, edge = "x" * 300 + "\U0001f600", "y" * 256
    audit.record("auth.refused", actor="a" * 1000, remote=long, method=edge, nested={long: [long, edge]},
                 **{"f" * 400: 1})
    entry = audit.entries[0]
    assert entry["actor"] == capped("a" * 1000)
    assert (entry["remote"], entry["method"]) == (capped(long), edge)
    assert entry["nested"] == {capped(long): [capped(long), edge]}
    assert entry[capped("f" * 400)] == 1
    assert entry_module.cap(long) == capped(long) and entry_module.cap(edge) == edge
    assert audit.verify().ok


# --------------------------------------------------------------------------- the head, kept outside


def test_the_head_is_reported_after_each_write_and_not_at_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 3)
    lines = raw_lines(path)
    assert heads == [f"{i + 1}:{sha(line)}" for i, line in enumerate(lines)]
    reported: list[str] = []
    with AuditLog(path, on_head=reported.append) as log:
        assert reported == []  # what the file says at open is not evidence about itself
        assert log.chain_head == heads[-1]
    assert verify_files([path], head=heads[-1]).ok


def test_a_failing_head_listener_is_reported_and_the_entry_kept(tmp_path: Path) -> None:
    errors: list[tuple[str, str]] = []

    def broken(head: str) -> None:
        raise OSError("meta table is locked")

    with AuditLog(tmp_path / "audit.jsonl", on_head=broken, on_error=lambda e, x: errors.append((e, str(x)))) as log:
        log.record("intake.accepted")
    assert errors == [("audit.head", "meta table is locked")]
    assert len(raw_lines(tmp_path / "audit.jsonl")) == 1


async def test_the_service_keeps_the_head_in_a_metric(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    path = tmp_path / "data" / "audit.jsonl"
    chain_of(path, 2)  # an earlier run's entries
    registry = CollectorRegistry()
    app = create_app(app_settings(tmp_path), Deps(registry=registry))
    # Created at start, with where the file ends (a drop since the last run shows in its history).
    assert registry.get_sample_value("pdrelay_audit_head_info", {"head": f"2:{sha(raw_lines(path)[-1])}"}) == 1
    client = await aiohttp_client(app)
    assert (await client.post("/-/reload")).status == 200
    await client.close()
    head = f"{len(raw_lines(path))}:{sha(raw_lines(path)[-1])}"
    assert registry.get_sample_value("pdrelay_audit_head_info", {"head": head}) == 1
    assert verify_files([path], head=head).ok


def test_verify_fails_a_log_that_ends_before_the_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 6)
    write_lines(path, raw_lines(path)[:4])
    assert verify_files([path]).ok  # on its own, a shortened log still verifies
    assert problems([path], head=heads[-1]) == [
        f"{path}: the log ends at entry 4, before the recorded head (entry 6): entries 5 to 6 were removed "
        "from the end"]
    assert verify_files([path], head=heads[2]).ok  # entries after the recorded head are fine
    path = tmp_path / "other.jsonl"
    heads = chain_of(path, 6)
    write_lines(path, raw_lines(path)[:3] + raw_lines(path)[4:])
    assert problems([path], head=heads[3]) == [
        f"{path}:4: entry 4 is missing or out of order: prev does not match the hash of line 3",
        f"{path}: the recorded head, entry 4, is missing from the log"]


def test_verify_fails_a_consistent_rewrite_against_the_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 4)
    entries = [json.loads(line) for line in raw_lines(path)]
    entries[1]["alerts"] = 300
    write_lines(path, rechain(entries))
    assert verify_files([path]).ok  # keyless: a consistent rewrite verifies on its own
    assert problems([path], head=heads[-1]) == [
        f"{path}:4: entry 4 is not the recorded head {heads[-1]}: its line hash is {sha(raw_lines(path)[3])}, "
        "so the log was rewritten up to here"]


def test_a_head_that_is_not_one_is_refused() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert verify_main(["unused"], out, err, head="12:abc\x1b[2J") == 2
    assert err.getvalue() == ("audit verify: --head: a chain head is <seq>:<64 lower-case hex digits>, "
                              "got '12:abc\\x1b[2J'\n")
    with pytest.raises(ValueError, match="the head of an empty chain"):
        verify_files([], head="0:" + "1" * 64)


# --------------------------------------------------------------------------- the start of the chain


def test_deleting_the_first_lines_of_a_never_rotated_log_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 6)
    write_lines(path, raw_lines(path)[2:])
    assert problems([path]) == [
        f"{path}:1: the start of the chain is missing: the first entry is entry 3 and its prev is not zeros, "
        "but no rotated file exists: entries 1 to 2 were removed from the start"]
    write_lines(path, raw_lines(path)[1:])
    assert problems([path])[0].endswith("entries 1 to 3 were removed from the start")


def test_emptying_a_log_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 3)
    path.write_bytes(b"")
    assert problems([path]) == [
        f"{path}: the file is empty: no audit entries (it was emptied, or nothing was ever recorded)"]
    assert problems([path], head=heads[-1])[1] == f"{path}: the log has no entries, but the recorded head is entry 3"


def test_a_rotated_log_may_start_mid_chain_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 60, max_bytes=1000, backups=3)
    files = sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:])) + [path]
    assert len(files) == 4
    report = verify_files(files, head=heads[-1])
    assert report.ok and report.first_seq is not None and report.first_seq > 1 and report.last_seq == 60
    alone = verify_files([path])  # audit.jsonl.1 exists next to it: it may start mid-chain
    assert alone.ok and alone.continues_from == json.loads(raw_lines(path)[0])["prev"]
    out, err = io.StringIO(), io.StringIO()
    assert verify_main([str(p) for p in files], out, err, head=heads[-1]) == 0
    first = json.loads(raw_lines(files[0])[0])
    assert out.getvalue() == (
        f"ok: {report.entries} entries in 4 file(s), chain intact, head {heads[-1]}, reaches the recorded head "
        f"{heads[-1]} (starts mid-chain: the oldest file begins at entry {first['seq']}, whose prev "
        f"{first['prev']} is in a rotated file that is gone or not given)\n")
    files[-1].write_bytes(b"")  # the current file emptied: the rotated ones do not excuse it
    assert problems(files) == [
        f"{path}: the file is empty: no audit entries (it was emptied, or nothing was ever recorded)"]


# --------------------------------------------------------------------------- the keyed chain


def test_a_keyed_chain_verifies_with_its_key_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 4, key=KEY)
    entries = [json.loads(line) for line in raw_lines(path)]
    assert all(e["mac"] == "hmac-sha256" for e in entries)
    body = {k: v for k, v in entries[0].items() if k != "hash"}
    assert entries[0]["hash"] == hmac.new(KEY.encode(), canon(body), "sha256").hexdigest()
    report = verify_files([path], key=KEY.encode(), head=heads[-1])
    assert report.ok and report.keyed == 4
    assert problems([path]) == [f"{path}:1: 4 keyed entries (HMAC-SHA256, the first is entry 1) were not checked: "
                                "no key was given (give --key-file FILE, or --config with audit.hmac_key)"]
    wrong = problems([path], key=b"another-key-0123456789")
    assert wrong == [f"{path}:{i}: entry was edited: its HMAC does not match its content (or the key is not the one "
                     "it was written with)" for i in range(1, 5)]


def test_a_consistent_rewrite_of_a_keyed_chain_is_detected(tmp_path: Path) -> None:
    """The forger edits entry 2 and recomputes every hash after it, keeping the mac field (or dropping it):
    without the key the result cannot pass."""
    path = tmp_path / "audit.jsonl"
    chain_of(path, 4, key=KEY)
    entries = [json.loads(line) for line in raw_lines(path)]
    original = raw_lines(path)
    entries[1]["alerts"] = 300
    write_lines(path, original[:1] + rechain(entries[1:], sha(original[0])))
    assert problems([path], key=KEY.encode()) == [
        f"{path}:{i}: entry was edited: its HMAC does not match its content (or the key is not the one it was "
        "written with)" for i in (2, 3, 4)]
    downgraded = rechain([{k: v for k, v in e.items() if k != "mac"} for e in entries[1:]], sha(original[0]))
    write_lines(path, original[:1] + downgraded)
    assert problems([path], key=KEY.encode()) == [
        f"{path}:2: entry 2 is not keyed, but entries before it are: it was written without audit.hmac_key, or "
        "the entries from here on were rewritten"]
    write_lines(path, rechain([{k: v for k, v in e.items() if k != "mac"} for e in entries]))
    assert problems([path], key=KEY.encode()) == [
        f"{path}: a key was given but no entry is keyed: the log was written without audit.hmac_key, or "
        "rewritten without the key"]


def test_a_key_added_later_keys_the_rest_of_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chain_of(path, 2)
    heads = chain_of(path, 2, key=KEY)
    assert [("mac" in json.loads(line)) for line in raw_lines(path)] == [False, False, True, True]
    report = verify_files([path], key=KEY.encode(), head=heads[-1])
    assert report.ok and report.keyed == 2
    memory = MemoryAudit(hmac_key=Secret(KEY))
    memory.record("intake.accepted")
    assert memory.verify().ok and memory.entries[0]["mac"] == "hmac-sha256"


def test_mac_is_a_reserved_name_and_an_empty_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="mac are reserved"):
        MemoryAudit().record("intake.accepted", mac="x")
    with pytest.raises(ValueError, match="an audit HMAC key must not be empty"):
        MemoryAudit(hmac_key=Secret(""))
    path = tmp_path / "audit.jsonl"
    chain_of(path, 1)
    write_lines(path, [raw_lines(path)[0].replace(b'"event"', b'"mac":"md5","event"')])
    assert problems([path]) == [f"{path}:1: not an audit entry: mac is not 'hmac-sha256'"]


def test_the_documented_stdlib_checker_checks_both_forms(tmp_path: Path) -> None:
    """The checker in receiver.audit.entry's docstring passes a plain and a keyed log, and fails a
    consistent rewrite of the keyed one."""
    doc = entry_module.__doc__ or ""
    code = re.search(r"::\n\n((?:    .*\n|\n)+)", doc)
    assert code is not None
    checker = "\n".join(line[4:] for line in code.group(1).splitlines())

    def check(path: Path, key: bytes | None) -> None:
        source = checker.replace('open("audit.jsonl", "rb")', f"open({str(path)!r}, 'rb')")
        exec(source.replace("KEY = None", f"KEY = {key!r}"), {})

    plain, keyed = tmp_path / "plain.jsonl", tmp_path / "keyed.jsonl"
    chain_of(plain, 3)
    chain_of(keyed, 3, key=KEY)
    check(plain, None)
    check(keyed, KEY.encode())
    with pytest.raises(AssertionError, match="keyed entries: the key is needed"):
        check(keyed, None)
    entries = [json.loads(line) for line in raw_lines(keyed)]
    entries[1]["alerts"] = 300
    write_lines(keyed, raw_lines(keyed)[:1] + rechain(entries[1:], sha(raw_lines(keyed)[0])))
    with pytest.raises(AssertionError, match="edited"):
        check(keyed, KEY.encode())


# --------------------------------------------------------------------------- pdrelay audit verify


def run_verify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", "audit", "verify", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_the_command_takes_the_head_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = chain_of(path, 3, key=KEY)
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY + "\n")
    ok = run_verify(str(path), "--key-file", str(key_file), "--head", heads[-1], cwd=tmp_path)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout == (f"ok: 3 entries in 1 file(s), chain intact, head {heads[-1]}, 3 keyed entries checked "
                         f"with the key, reaches the recorded head {heads[-1]}\n")
    write_lines(path, raw_lines(path)[:2])
    cut = run_verify(str(path), "--key-file", str(key_file), "--head", heads[-1], cwd=tmp_path)
    assert cut.returncode == 1 and cut.stdout == ""
    assert cut.stderr == (f"{path}: the log ends at entry 2, before the recorded head (entry 3): entry 3 was removed "
                          f"from the end\nFAILED: 1 problem(s) in 2 entries in 1 file(s), head {heads[1]}\n")
    no_key = run_verify(str(path), cwd=tmp_path)
    assert no_key.returncode == 1 and "2 keyed entries (HMAC-SHA256, the first is entry 1) were not checked" in (
        no_key.stderr)
    key_file.write_text("\n")
    empty = run_verify(str(path), "--key-file", str(key_file), cwd=tmp_path)
    assert (empty.returncode, empty.stderr) == (2, f"audit verify: the key file {key_file} is empty\n")


def test_the_command_reads_the_key_and_the_files_from_the_config(tmp_path: Path) -> None:
    data = tmp_path / "data"
    heads = chain_of(data / "audit.jsonl", 40, key=KEY, max_bytes=1500, backups=50)
    config = tmp_path / "pdrelay.yaml"
    config.write_text(f"outbox: {{path: {data / 'outbox.db'}}}\naudit: {{hmac_key: '{KEY}'}}\n")
    ok = run_verify("--config", str(config), "--head", heads[-1], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    files = len(list(data.glob("audit.jsonl*")))
    assert files > 2
    assert ok.stdout.startswith(f"ok: 40 entries in {files} file(s), chain intact, head {heads[-1]}, 40 keyed")
    assert KEY not in ok.stdout + ok.stderr
