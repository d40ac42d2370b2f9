"""A stored event that cannot be sent never stops delivery.

Rows are altered with ``sqlite3`` behind pdrelay's back, as a broken disk or a hostile hand
would: a body that is not JSON, not UTF-8 (as BLOB, or as TEXT), not an object, not the event
of its row, or (encrypted) not a ciphertext of its row. Each such row is dead-lettered with its
reason (``unreadable``, ``undecryptable``) and the error, reported once, and the others are
claimed as usual, in order; in the running service the row is also counted, logged and audited.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from receiver.app import Deps, create_app
from receiver.audit import MemoryAudit
from receiver.crypto import Keyring, generate_key
from receiver.errors import Reason
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.outbox.sqlite.sealing import Sealer
from receiver.pagerduty.events import SendResult
from receiver.secret import Secret
from receiver.settings import OutboxSettings, PagerDutySettings, RulesSettings, SecuritySettings, Settings
from tests.fakes import FakeClock, FakeSender
from tests.receiver.test_outbox_sqlite import ev

HOUR = 3600.0
KEY = generate_key()
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
Report = tuple[int, Reason, str, str]  # item id, reason, why, routing key name

PLAIN_NOT_JSON = "the stored body is not a UTF-8 JSON object: "
# (SQL run on the second of four queued rows, its id bound to ?; the reason; last_error) in a plain outbox
PLAIN = {
    "not_json": ("UPDATE events SET body = X'7B' WHERE id = ?", PLAIN_NOT_JSON + "Input data was truncated"),
    "text_not_utf8": ("UPDATE events SET body = CAST(X'FF7B7D' AS TEXT) WHERE id = ?",
                      PLAIN_NOT_JSON + "JSON is malformed: invalid character (byte 0)"),
    "string_not_utf8": ("""UPDATE events SET body = X'7B2261223A22FF227D' WHERE id = ?""",  # {"a":"\xff"}
                        PLAIN_NOT_JSON + "Invalid UTF-8 encoded string"),
    "array": ("UPDATE events SET body = '[1]' WHERE id = ?", PLAIN_NOT_JSON + "Expected `object`, got `array`"),
    "other_action": ("""UPDATE events SET body = '{"event_action": "resolve", "dedup_key": "b"}' WHERE id = ?""",
                     "the stored body's event_action is not the item's action 'trigger'"),
    "other_dedup_key": ("""UPDATE events SET body = '{"event_action": "trigger", "dedup_key": "z"}' WHERE id = ?""",
                        "the stored body's dedup_key is not the item's dedup key"),
    # a text column other than the body that is not UTF-8 once failed every claim, the good rows' too
    "routing_key_not_utf8": ("UPDATE events SET routing_key = CAST(X'64FF' AS TEXT) WHERE id = ?",
                             "the stored row is malformed (a text column is not UTF-8)"),
    "dedup_key_not_utf8": ("UPDATE events SET dedup_key = CAST(X'62FF' AS TEXT) WHERE id = ?",
                           "the stored row is malformed (a text column is not UTF-8)"),
    "own_routing_key": ("""UPDATE events SET body = json_set(body, '$.routing_key', 'elsewhere') WHERE id = ?""",
                        "the stored body names a routing key of its own"),
}


def keyring() -> Keyring:
    return Keyring.from_keys([KEY])


async def four_queued(path: Path, keys: Keyring | None) -> list[int]:
    """An outbox with triggers a, b, c, d queued, oldest first; their ids."""
    box = SQLiteOutbox(path, clock=FakeClock(), keyring=keys)
    await box.open()
    await box.enqueue(b"{}", [ev(k) for k in "abcd"], [], resend_interval=HOUR)
    ids = [i.id for i in await box.items()]
    await box.close()
    return ids


def alter(path: Path, sql: str, *args: Any) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, args)
    conn.close()


def seal_as_its_row(path: Path, item_id: int, body: bytes) -> None:
    """Replace a row's sealed body with ``body`` sealed exactly as pdrelay seals that row (so only its content
    is wrong): what a bug, or a holder of the key, could store."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        sealer = Sealer(keyring())
        sealer.attach(conn, str(path), encrypt_plain=False)
        rk, ref, action, phash = conn.execute(
            "SELECT routing_key, dedup_key, action, payload_hash FROM events WHERE id = ?", (item_id,)).fetchone()
        conn.execute("UPDATE events SET body = ? WHERE id = ?",
                     (sealer.seal_event(body, item_id, rk, ref, action, phash), item_id))
    finally:
        conn.close()


async def claimed_and_reported(path: Path, keys: Keyring | None) -> tuple[list[str], list[Report], SQLiteOutbox]:
    told: list[Report] = []
    box = SQLiteOutbox(path, clock=FakeClock(), keyring=keys, on_unreadable=lambda *r: told.append(r))
    await box.open()
    claimed = [i.dedup_key for i in await box.claim(10, ())]
    return claimed, told, box


@pytest.mark.parametrize("case", sorted(PLAIN))
async def test_a_plain_row_that_is_not_its_event_is_set_aside_and_the_others_go(tmp_path: Path, case: str) -> None:
    path = tmp_path / "o.db"
    ids = await four_queued(path, None)
    sql, error = PLAIN[case]
    alter(path, sql, ids[1])
    claimed, told, box = await claimed_and_reported(path, None)
    try:
        assert claimed == ["a", "c", "d"]
        assert told == [(ids[1], Reason.UNREADABLE, error, "d\udcff" if case == "routing_key_not_utf8" else "default")]
        (dead,) = await box.items(status="dead")
        assert (dead.id, dead.reason, dead.last_error, dead.attempts) == (ids[1], "unreadable", error, 1)
        assert await box.get(ids[1]) == dead  # operators see it, whatever its bytes
        assert (box.depth().queued, box.depth().dead) == (3, 1)
        assert await box.claim(10, ()) != []  # set aside once: the next claim reports nothing new
        assert len(told) == 1
    finally:
        await box.close()


SEALED = {
    # TEXT that is not UTF-8 once stopped the outbox from opening at all
    "text_not_utf8": (Reason.UNDECRYPTABLE, "cannot decrypt: not a pdrelay encrypted value, or an unknown format "
                                            "version (first byte 0xff; this pdrelay reads version 1)"),
    "sealed_array": (Reason.UNREADABLE, PLAIN_NOT_JSON + "Expected `object`, got `array`"),
    "sealed_other_action": (Reason.UNREADABLE, "the stored body's event_action is not the item's action 'trigger'"),
}


@pytest.mark.parametrize("case", sorted(SEALED))
async def test_an_encrypted_row_that_is_not_its_event_is_set_aside_and_the_others_go(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "o.db"
    ids = await four_queued(path, keyring())
    if case == "text_not_utf8":
        alter(path, "UPDATE events SET body = CAST(X'FF7B7D' AS TEXT) WHERE id = ?", ids[1])
    elif case == "sealed_array":
        seal_as_its_row(path, ids[1], b"[1]")
    else:
        seal_as_its_row(path, ids[1], b'{"event_action": "resolve", "dedup_key": "b"}')
    reason, error = SEALED[case]
    claimed, told, box = await claimed_and_reported(path, keyring())
    try:
        assert claimed == ["a", "c", "d"]
        assert told == [(ids[1], reason, error, "default")]
        (dead,) = await box.items(status="dead")
        assert (dead.id, dead.reason, dead.last_error) == (ids[1], reason.value, error)
        # What `outbox show` prints: the body if it can be read at all, else the reason and why.
        readable = case == "sealed_other_action"
        shown = {"event_action": "resolve", "dedup_key": "b"} if readable else {reason.value: error}
        assert dead.body == shown
    finally:
        await box.close()


# ---------------------------------------------------------------------- the running service


def settings_for(tmp_path: Path, keys: bool) -> Settings:
    (tmp_path / "rules.yaml").write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n")
    return Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret("r" * 32)}, concurrency=1),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"),
        rules=RulesSettings(paths=(tmp_path / "rules.yaml",)),
        security=SecuritySettings(encryption_keys=(Secret(KEY),) if keys else ()),
    )


LOGGED = {
    Reason.UNREADABLE: "stored event cannot be read (not UTF-8 JSON, or not the event of its row); "
                       "dead-lettered, never sent",
    Reason.UNDECRYPTABLE: "stored event fails authentication (altered on disk, or moved or copied from another "
                          "row); dead-lettered, never sent",
}


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("keys", "sql", "reason"), [
    (False, "UPDATE events SET body = X'7B' WHERE id = ?", Reason.UNREADABLE),
    (False, "UPDATE events SET body = CAST(X'FF7B7D' AS TEXT) WHERE id = ?", Reason.UNREADABLE),
    (True, "UPDATE events SET body = CAST(X'FF7B7D' AS TEXT) WHERE id = ?", Reason.UNDECRYPTABLE),
], ids=["plain-not-json", "plain-text-not-utf8", "encrypted-text-not-utf8"])
async def test_the_service_delivers_around_a_bad_row_and_counts_logs_and_audits_it(
    tmp_path: Path, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture,
    keys: bool, sql: str, reason: Reason,
) -> None:
    """The good events reach PagerDuty in order, the bad one is a dead letter with its reason, counted in
    pdrelay_events_dead_lettered_total, logged and audited; a notification posted afterwards is delivered too."""
    settings = settings_for(tmp_path, keys)
    ids = await four_queued(settings.outbox.path, keyring() if keys else None)
    alter(settings.outbox.path, sql, ids[1])
    sender = FakeSender(lambda body: SendResult(ok=True, status=202))
    audit = MemoryAudit()
    caplog.set_level(logging.ERROR, logger="pdrelay")
    client = await aiohttp_client(create_app(settings, Deps(registry=CollectorRegistry(), sender=sender,
                                                            audit=audit)))
    await until(lambda: len(sender.calls) == 3)
    assert [b["dedup_key"] for _, b in sender.calls] == ["a", "c", "d"]
    metrics = await (await client.get("/metrics")).text()
    assert f'pdrelay_events_dead_lettered_total{{reason="{reason.value}",routing_key="default"}} 1.0' in metrics
    (entry,) = [e for e in audit.entries if e["event"] == "event.dead_lettered"]
    assert (entry["item_id"], entry["reason"]) == (ids[1], reason.value)
    (line,) = [r for r in caplog.records if getattr(r, "item_id", None) == ids[1]]
    assert (line.getMessage(), getattr(line, "reason", None)) == (LOGGED[reason], reason.value)
    body = {"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": {"alertname": "Later"}, "annotations": {},
                        "startsAt": "2024-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": "0123456789abcdef"}]}
    assert (await client.post("/v1/alertmanager", json=body)).status == 200
    await until(lambda: len(sender.calls) == 4)
    assert (await client.get("/readyz")).status == 200
