"""The outbox encrypted at rest: nothing readable on disk, rotation, rekey, tampering reported."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from receiver.crypto import Keyring, generate_key
from receiver.errors import ConfigError, Reason
from receiver.outbox import OpenReport
from receiver.outbox.sqlite import SQLiteOutbox
from tests.fakes import FakeClock
from transforms.base import InvalidEvent, RenderedEvent

HOUR = 3600.0
SOURCE = b'{"alerts": [{"labels": {"customer": "ACME-SECRET-CUSTOMER"}}]}'
KEY_A, KEY_B = generate_key(), generate_key()


def ev(dedup: str, action: str = "trigger", h: str = "h1") -> RenderedEvent:
    body = {"event_action": action, "dedup_key": dedup,
            "payload": {"summary": f"disk full on db-{dedup}.acme-secret.example", "source": "s",
                        "severity": "error"}}
    return RenderedEvent(routing_key="default", dedup_key=dedup, action=action,  # type: ignore[arg-type]
                         body=body, payload_hash=h, rules=("r1",), fingerprints=(dedup,))


def sealer(*keys: str) -> Keyring:
    return Keyring.from_keys(list(keys))


def on_disk(path: Path) -> bytes:
    """Every byte pdrelay left in the database file and its WAL."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def opened(path: Path, keyring: Keyring | None, clock: FakeClock, *, operator: bool = False,
                 told: list[tuple[int, Reason, str, str]] | None = None) -> SQLiteOutbox:
    box = SQLiteOutbox(path, clock=clock, keyring=keyring, operator=operator,
                       on_unreadable=None if told is None else lambda *report: told.append(report))
    box.opened = await box.open()  # type: ignore[attr-defined]
    return box


def report(box: SQLiteOutbox) -> OpenReport:
    return box.opened  # type: ignore[attr-defined,no-any-return]


async def test_nothing_of_the_alert_is_readable_on_disk_and_delivery_works(tmp_path: Path) -> None:
    """Bodies, dedup keys and the source notification are sealed; claim/ack/dedup behave as in clear."""
    clock, path = FakeClock(), tmp_path / "o.db"
    box = await opened(path, sealer(KEY_A), clock)
    bad = InvalidEvent("default", "bad-key-secret", "trigger", {"dedup_key": "bad-key-secret", "x": "acme-secret"},
                       "too large", ("r1",), ("f",))
    r = await box.enqueue(SOURCE, [ev("alpha-secret"), ev("beta-secret")], [bad], resend_interval=HOUR)
    assert (r.queued, r.dead_lettered) == (2, 1)
    again = await box.enqueue(SOURCE, [ev("alpha-secret")], [], resend_interval=HOUR)
    assert again.duplicates == 1  # state lookups work through the blind index
    items = await box.claim(10, ())
    assert sorted(i.dedup_key for i in items) == ["alpha-secret", "beta-secret"]
    assert items[0].body["payload"]["summary"].startswith("disk full on db-")
    await box.ack(items[0])
    await box.close()
    raw = on_disk(path)
    for secret in (b"acme-secret", b"ACME-SECRET", b"alpha-secret", b"beta-secret", b"bad-key-secret"):
        assert secret not in raw, secret


async def test_an_encrypted_outbox_refuses_to_open_without_its_keys(tmp_path: Path) -> None:
    clock, path = FakeClock(), tmp_path / "o.db"
    box = await opened(path, sealer(KEY_A), clock)
    await box.enqueue(SOURCE, [ev("a")], [], resend_interval=HOUR)
    await box.close()
    with pytest.raises(ConfigError) as no_key:
        await opened(path, None, clock)
    assert str(no_key.value) == (f"config: security.encryption_key: the outbox {path} is encrypted; configure the "
                                 "key(s) it was written with")
    with pytest.raises(ConfigError) as wrong:
        await opened(path, sealer(KEY_B), clock)
    ids = Keyring.from_keys([KEY_A]).ids[0], Keyring.from_keys([KEY_B]).ids[0]
    assert str(wrong.value) == (
        f"config: security.encryption_key: the outbox {path} holds values encrypted with key id(s) {ids[0]}, "
        f"which are not configured (configured: {ids[1]}); add the old key after the new one, then run "
        "`pdrelay outbox rekey`")
    assert KEY_A not in str(wrong.value) and KEY_B not in str(wrong.value)


async def test_rotation_then_rekey_retires_the_old_key(tmp_path: Path) -> None:
    """[new, old] reads old rows and writes new ones; after `rekey` the old key can go."""
    clock, path = FakeClock(), tmp_path / "o.db"
    box = await opened(path, sealer(KEY_A), clock)
    await box.enqueue(SOURCE, [ev("old")], [], resend_interval=HOUR)
    await box.close()
    box = await opened(path, sealer(KEY_B, KEY_A), clock)
    await box.enqueue(SOURCE, [ev("new")], [], resend_interval=HOUR)
    assert (await box.enqueue(SOURCE, [ev("old")], [], resend_interval=HOUR)).duplicates == 1  # same index
    await box.close()
    id_a = Keyring.from_keys([KEY_A]).ids[0]
    with pytest.raises(ConfigError, match=f"key id\\(s\\) {id_a}, which are not configured"):
        await opened(path, sealer(KEY_B), clock)
    admin = await opened(path, sealer(KEY_B, KEY_A), clock, operator=True)
    done = await admin.rekey()
    await admin.close()
    assert (done.events, done.notifications) == (1, 1)
    box = await opened(path, sealer(KEY_B), clock)
    assert sorted(i.dedup_key for i in await box.claim(10, ())) == ["new", "old"]
    await box.close()


async def test_a_plain_outbox_is_encrypted_in_place_when_keys_arrive(tmp_path: Path) -> None:
    clock, path = FakeClock(), tmp_path / "o.db"
    box = await opened(path, None, clock)
    await box.enqueue(SOURCE, [ev("plain-secret")], [], resend_interval=HOUR)
    await box.close()
    assert b"plain-secret" in on_disk(path)
    with pytest.raises(ConfigError, match="is not encrypted yet"):
        await opened(path, sealer(KEY_A), clock, operator=True)  # the CLI never encrypts behind the server's back
    box = await opened(path, sealer(KEY_A), clock)
    assert (report(box).encrypted_now, report(box).events) == (True, 1)
    assert [i.dedup_key for i in await box.claim(10, ())] == ["plain-secret"]
    assert (await box.enqueue(SOURCE, [ev("plain-secret")], [], resend_interval=HOUR)).duplicates == 1
    await box.close()
    assert b"plain-secret" not in on_disk(path)


@pytest.mark.parametrize("tamper", ["flip", "swap"])
async def test_tampered_rows_are_set_aside_as_dead_letters_and_reported(tmp_path: Path, tamper: str) -> None:
    """A flipped bit, or two rows' ciphertexts swapped: those rows are never sent; they become dead letters
    with reason undecryptable and the error, the caller is told, and the other rows still go."""
    clock, path = FakeClock(), tmp_path / "o.db"
    box = await opened(path, sealer(KEY_A), clock)
    await box.enqueue(SOURCE, [ev("one"), ev("two"), ev("three")], [], resend_interval=HOUR)
    await box.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, body FROM events ORDER BY id").fetchall()
        if tamper == "flip":
            body = bytearray(rows[0][1])
            body[40] ^= 0x01
            conn.execute("UPDATE events SET body = ? WHERE id = ?", (bytes(body), rows[0][0]))
        else:
            conn.execute("UPDATE events SET body = ? WHERE id = ?", (rows[1][1], rows[0][0]))
            conn.execute("UPDATE events SET body = ? WHERE id = ?", (rows[0][1], rows[1][0]))
    told: list[tuple[int, Reason, str, str]] = []
    box = await opened(path, sealer(KEY_A), clock, told=told)
    claimed = await box.claim(10, ())
    bad_ids = {rows[0][0]} if tamper == "flip" else {rows[0][0], rows[1][0]}
    assert {i.id for i in claimed} == {r[0] for r in rows} - bad_ids
    assert {(i, r, k) for i, r, _, k in told} == {(i, Reason.UNDECRYPTABLE, "default") for i in bad_ids}
    assert all("authentication failed" in e and "moved from another row" in e for _, _, e, _ in told)
    dead = await box.items(status="dead")
    assert {(i.id, i.reason) for i in dead} == {(i, Reason.UNDECRYPTABLE.value) for i in bad_ids}
    assert box.depth().dead == len(bad_ids)
    await box.close()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def test_keygen_prints_a_fresh_key_the_config_accepts(tmp_path: Path) -> None:
    keys = {run_cli(tmp_path, "keygen").stdout.strip() for _ in range(2)}
    assert len(keys) == 2
    for key in keys:
        assert Keyring.from_keys([key]).primary_id


async def test_outbox_rekey_command(tmp_path: Path) -> None:
    clock, path = FakeClock(), tmp_path / "data" / "outbox.db"
    box = await opened(path, sealer(KEY_A), clock)
    await box.enqueue(SOURCE, [ev("x"), ev("y")], [], resend_interval=HOUR)
    await box.close()
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(f"security: {{encryption_key: ['{KEY_B}', '{KEY_A}']}}\n")
    done = run_cli(tmp_path, "outbox", "rekey", "--config", str(cfg))
    assert (done.returncode, done.stdout) == (0, "re-encrypted with the first key: 2 events, 1 notifications\n"), \
        done.stderr
    cfg.write_text(f"security: {{encryption_key: '{KEY_B}'}}\n")
    listed = run_cli(tmp_path, "outbox", "list", "--config", str(cfg))
    assert listed.returncode == 0, listed.stderr
    assert " x " in listed.stdout and " y " in listed.stdout
    cfg.write_text(f"security: {{encryption_key: '{KEY_A}'}}\n")
    refused = run_cli(tmp_path, "outbox", "list", "--config", str(cfg))
    assert refused.returncode == 2
    assert "which are not configured" in refused.stderr and KEY_A not in refused.stderr


async def test_serve_refuses_to_start_on_an_outbox_its_keys_cannot_read(tmp_path: Path) -> None:
    """A wrong or missing key stops `pdrelay serve` at once with exit 2 and a message naming the key,
    before anything could be sent."""
    clock, path = FakeClock(), tmp_path / "data" / "outbox.db"
    box = await opened(path, sealer(KEY_A), clock)
    await box.enqueue(SOURCE, [ev("a")], [], resend_interval=HOUR)
    await box.close()
    (tmp_path / "r.yaml").write_text("version: 1\ndefaults: {routing_key: default}\nrules: []\n")
    base = "rules: {paths: [r.yaml]}\n"
    cfg = tmp_path / "pdrelay.yaml"
    for security, expected in [
        (f"security: {{encryption_key: '{KEY_B}'}}\n", "which are not configured"),
        ("", "is encrypted; configure the key(s) it was written with"),
    ]:
        cfg.write_text(base + security)
        done = run_cli(tmp_path, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0")  # fails before listening
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("pdrelay: config: security.encryption_key: the outbox ") and expected in last
        assert KEY_A not in done.stderr and KEY_B not in done.stderr
