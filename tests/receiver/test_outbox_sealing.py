"""What the encrypted outbox binds and keys: rows to their ids, payload hashes to the index key, and the
refusal of a file whose index key is gone; and the upgrade of a file encrypted the earlier way."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from receiver.crypto import Keyring, generate_key
from receiver.errors import ConfigError, Reason
from receiver.outbox.sqlite import SQLiteOutbox
from tests.fakes import FakeClock
from transforms.base import InvalidEvent, RenderedEvent

HOUR = 3600.0
KEY = generate_key()
KEYED = re.compile(r"hk:[0-9a-f]{64}")
Report = tuple[int, Reason, str, str]  # item id, reason, why, routing key name


def ev(dedup: str, action: str = "trigger", h: str = "h1") -> RenderedEvent:
    body = {"event_action": action, "dedup_key": dedup, "payload": {"summary": f"{dedup} {h}", "source": "s",
                                                                    "severity": "error"}}
    return RenderedEvent(routing_key="default", dedup_key=dedup, action=action,  # type: ignore[arg-type]
                         body=body, payload_hash=h, rules=("r1",), fingerprints=(dedup,))


BAD = InvalidEvent("default", "bad", "trigger", {"dedup_key": "bad", "event_action": "trigger"}, "too large")


async def opened(path: Path, keys: Keyring | None, clock: FakeClock | None = None, *, operator: bool = False,
                 told: list[Report] | None = None) -> SQLiteOutbox:
    box = SQLiteOutbox(path, clock=clock or FakeClock(), keyring=keys, operator=operator,
                       on_unreadable=None if told is None else lambda *r: told.append(r))
    box.report = await box.open()  # type: ignore[attr-defined]
    return box


def rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------------- meta missing


async def test_an_encrypted_outbox_whose_index_key_is_gone_is_refused_not_sealed_again(tmp_path: Path) -> None:
    """The rows are sealed but meta's index_key row was deleted: opening with or without the keys is refused
    with a message naming the problem, and nothing in the file changes (it is not taken for a plain file)."""
    path = tmp_path / "data" / "outbox.db"
    box = await opened(path, Keyring.from_keys([KEY]))
    await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    await box.close()
    rows(path, "DELETE FROM meta WHERE key = 'index_key'")
    before = rows(path, "SELECT id, body, dedup_key, payload_hash FROM events")

    def message(where: Path) -> str:
        return (f"config: security.encryption_key: the outbox {where} holds encrypted values but its index key "
                "(table meta, key 'index_key') is missing, so they cannot be read; restore the file from a "
                "backup, or move it aside to start with an empty outbox")

    for keys in (Keyring.from_keys([KEY]), None):
        with pytest.raises(ConfigError) as refused:
            await opened(path, keys)
        assert str(refused.value) == message(path)
    assert rows(path, "SELECT id, body, dedup_key, payload_hash FROM events") == before
    assert rows(path, "SELECT key FROM meta WHERE key = 'index_key'") == []
    # `pdrelay serve` stops at once with exit 2 and that message, like a wrong key
    (tmp_path / "r.yaml").write_text("version: 1\ndefaults: {routing_key: default}\nrules: []\n")
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(f"rules: {{paths: [r.yaml]}}\nsecurity: {{encryption_key: '{KEY}'}}\n")
    done = subprocess.run([sys.executable, "-m", "receiver", "serve", "--config", str(cfg), "--listen",
                           "127.0.0.1:0"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (2, f"pdrelay: {message(Path('data/outbox.db'))}")
    assert KEY not in done.stderr
    assert rows(path, "SELECT id, body, dedup_key, payload_hash FROM events") == before


# ---------------------------------------------------------------------- row ids bound


async def test_a_sealed_row_copied_under_a_new_id_is_set_aside_never_sent_twice(tmp_path: Path) -> None:
    """A copy of an encrypted events row under another id (same body, key, hash) fails authentication: the
    original is claimed once; the copy, when it becomes the head of its key, is dead-lettered undecryptable."""
    path = tmp_path / "o.db"
    keys = Keyring.from_keys([KEY])
    box = await opened(path, keys)
    await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    await box.close()
    rows(path, """INSERT INTO events (id, notification_id, routing_key, dedup_key, action, status, body,
                  payload_hash, priority, rules, attempts, created_at, next_attempt_at)
                  SELECT id + 100, notification_id, routing_key, dedup_key, action, status, body, payload_hash,
                         priority, rules, attempts, created_at, next_attempt_at FROM events""")
    (original, copy), = [tuple(r[0] for r in rows(path, "SELECT id FROM events ORDER BY id"))]
    told: list[Report] = []
    box = await opened(path, keys, told=told)
    try:
        claimed = await box.claim(10, ())
        assert [i.id for i in claimed] == [original]
        await box.ack(claimed[0])
        assert await box.claim(10, ()) == []
        assert told == [(copy, Reason.UNDECRYPTABLE, f"cannot decrypt: authentication failed with key id "
                         f"{keys.primary_id} (wrong key, the data was altered, or it was moved from another row)",
                         "default")]
        assert [(i.id, i.reason) for i in await box.items()] == [(copy, "undecryptable")]
    finally:
        await box.close()


# ---------------------------------------------------------------------- keyed payload hashes


async def test_payload_hashes_are_keyed_when_sealed_and_still_find_duplicates(tmp_path: Path) -> None:
    """No stored hash (events, key states, dead letters) is the plain hash of the content, so a guess cannot
    be confirmed from the file; two outboxes key the same content differently; duplicates are still found.
    A plain outbox keeps plain hashes."""
    stored = []
    for n in (1, 2):
        path = tmp_path / f"o{n}.db"
        box = await opened(path, Keyring.from_keys([KEY]))
        r = await box.enqueue(b"{}", [ev("a", h="h1")], [BAD], resend_interval=HOUR)
        assert (r.queued, r.dead_lettered) == (1, 1)
        assert (await box.enqueue(b"{}", [ev("a", h="h1")], [], resend_interval=HOUR)).duplicates == 1
        (item,) = await box.claim(10, ())
        await box.ack(item)
        assert (await box.enqueue(b"{}", [ev("a", h="h1")], [], resend_interval=HOUR)).duplicates == 1
        assert (await box.enqueue(b"{}", [ev("a", h="h2")], [], resend_interval=HOUR)).queued == 1
        await box.close()
        hashes = [str(h) for (h,) in rows(path, "SELECT payload_hash FROM events ORDER BY id")]
        hashes += [str(h) for r in rows(path, "SELECT told_hash, tail_hash FROM key_state") for h in r if h]
        assert len(hashes) == 4 and all(KEYED.fullmatch(h) for h in hashes), hashes
        plain_bad = hashlib.sha256(b'{"dedup_key":"bad","event_action":"trigger"}').hexdigest()
        assert not {"h1", "h2", plain_bad} & {h.removeprefix("hk:") for h in hashes}
        stored.append(hashes)
    assert set(stored[0]).isdisjoint(stored[1])  # each outbox's own index key
    box = await opened(tmp_path / "plain.db", None)  # in clear, the hash stays what it is: nothing to hide
    await box.enqueue(b"{}", [ev("a", h="h1")], [], resend_interval=HOUR)
    assert [i.payload_hash for i in await box.items()] == ["h1"]
    await box.close()


# ---------------------------------------------------------------------- upgrading a file sealed the earlier way


def seal_the_earlier_way(path: Path, keys: Keyring) -> None:
    """Encrypt a plain outbox as pdrelay did before row ids were bound and payload hashes keyed."""
    index_key = os.urandom(32)

    def index(dedup_key: str) -> str:
        return "ix:" + hmac.new(index_key, dedup_key.encode(), hashlib.sha256).hexdigest()[:40]

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO meta (key, value) VALUES ('index_key', ?)",
                     (keys.encrypt_bytes(index_key, b"pdrelay.outbox.meta.index_key"),))
        for nid, body in conn.execute("SELECT id, body FROM notifications").fetchall():
            conn.execute("UPDATE notifications SET body = ? WHERE id = ?",
                         (keys.encrypt_bytes(bytes(body), f"pdrelay.outbox.notifications\0{nid}".encode()), nid))
        for eid, rk, dk, action, phash, body in conn.execute(
                "SELECT id, routing_key, dedup_key, action, payload_hash, body FROM events").fetchall():
            aad = "\0".join(("pdrelay.outbox.events", rk, index(dk), action, phash)).encode()
            conn.execute("UPDATE events SET dedup_key = ?, body = ? WHERE id = ?",
                         (index(dk), keys.encrypt_bytes(bytes(body), aad), eid))
        for rk, dk in conn.execute("SELECT routing_key, dedup_key FROM key_state").fetchall():
            conn.execute("UPDATE key_state SET dedup_key = ? WHERE routing_key = ? AND dedup_key = ?",
                         (index(dk), rk, dk))
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_file_sealed_the_earlier_way_is_upgraded_once_without_resends_or_duplicates(tmp_path: Path) -> None:
    """Operators' reads see the old file as it is; `serve` seals each event again bound to its id with a keyed
    hash, once. What PagerDuty was told, and what is queued, still make the same content a duplicate and new
    content news; a value sealed the earlier way that turns up afterwards is refused."""
    clock, path, keys = FakeClock(), tmp_path / "o.db", Keyring.from_keys([KEY])
    box = await opened(path, None, clock)
    await box.enqueue(b"{}", [ev("told", h="h1")], [], resend_interval=HOUR)
    (told_item,) = await box.claim(10, ())
    await box.ack(told_item)
    await box.enqueue(b"{}", [ev("dl", h="h4")], [], resend_interval=HOUR)
    (dl,) = await box.claim(10, ())
    await box.dead_letter(dl, Reason.SERVER_ERROR, 502, "gave up")
    await box.enqueue(b"{}", [ev("queued", h="h2")], [BAD], resend_interval=HOUR)
    await box.close()
    seal_the_earlier_way(path, keys)
    old_row = rows(path, "SELECT routing_key, dedup_key, action, body, payload_hash FROM events "
                         "WHERE status = 'queued'")[0]  # restored later from a backup of the old file

    # `outbox list` and `outbox replay` beside a server of the earlier version: the file stays in its format
    operator = await opened(path, keys, clock, operator=True)
    assert [(i.dedup_key, i.payload_hash, i.body["dedup_key"]) for i in await operator.items()] == [
        ("dl", "h4", "dl"), ("queued", "h2", "queued"),
        ("bad", hashlib.sha256(b'{"dedup_key":"bad","event_action":"trigger"}').hexdigest(), "bad")]
    assert (await operator.requeue(dl.id, ev("dl", h="h4"), resend_interval=HOUR)).result == "replayed"
    assert [(i.dedup_key, i.payload_hash, i.status) for i in await operator.items()][0] == ("dl", "h4", "queued")
    await operator.close()

    box = await opened(path, keys, clock)
    assert box.report.resealed == 3  # type: ignore[attr-defined]
    hashes = [str(h) for r in rows(path, "SELECT payload_hash FROM events UNION ALL SELECT told_hash FROM "
                                         "key_state UNION ALL SELECT tail_hash FROM key_state") for h in r if h]
    assert len(hashes) == 6 and all(KEYED.fullmatch(h) for h in hashes), hashes
    assert (await box.enqueue(b"{}", [ev("told", h="h1")], [], resend_interval=HOUR)).duplicates == 1
    assert (await box.enqueue(b"{}", [ev("queued", h="h2")], [], resend_interval=HOUR)).duplicates == 1
    assert (await box.enqueue(b"{}", [ev("told", h="h3")], [], resend_interval=HOUR)).queued == 1
    claimed = await box.claim(10, ())
    assert sorted((i.dedup_key, i.body["payload"]["summary"]) for i in claimed) == [
        ("dl", "dl h4"), ("queued", "queued h2"), ("told", "told h3")]
    for item in claimed:
        await box.ack(item)
    assert [i.body["dedup_key"] for i in await box.items(status="dead")] == ["bad"]
    await box.close()

    told: list[Report] = []
    box = await opened(path, keys, clock, told=told)
    assert box.report.resealed == 0  # type: ignore[attr-defined]
    rows(path, "INSERT INTO events (id, routing_key, dedup_key, action, status, body, payload_hash, created_at, "
               "next_attempt_at) VALUES (99, ?, ?, ?, 'queued', ?, ?, 0, 0)", *old_row)
    assert await box.claim(10, ()) == []
    assert told == [(99, Reason.UNDECRYPTABLE, "cannot decrypt: sealed the way of an earlier pdrelay, without "
                     "its item id, in an outbox upgraded since (copied or restored from an older file)", "default")]
    await box.close()
