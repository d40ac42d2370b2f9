"""A real ``pdrelay serve`` over an outbox holding a row whose body is TEXT that is not UTF-8.

SQLite hands such a value back as text that Python cannot decode; it once stopped ``serve``
from starting (encrypted outbox) or silently killed the dispatcher (plain outbox). Now the
process starts, the row is dead-lettered with its reason, counted and logged, the events
around it reach PagerDuty in order, and delivery goes on.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from e2e_support import ROUTING_KEY, PagerDutyStandIn, PdRelay, http_get, wait_until

from receiver.crypto import Keyring, generate_key
from receiver.outbox.sqlite import SQLiteOutbox
from tests.receiver.test_outbox_sqlite import ev

pytestmark = pytest.mark.e2e


async def queue_three(path: Path, key: str | None) -> list[int]:
    """Triggers a, b, c queued in a new outbox at ``path``; their ids."""
    box = SQLiteOutbox(path, keyring=Keyring.from_keys([key]) if key else None)
    await box.open()
    await box.enqueue(b"{}", [ev("a"), ev("b"), ev("c")], [], resend_interval=3600.0)
    ids = [i.id for i in await box.items()]
    await box.close()
    return ids


def alter(path: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, args)
    conn.close()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_serve_starts_and_delivers_around_a_text_body_that_is_not_utf8(
    tmp_path: Path, pd: PagerDutyStandIn, encrypted: bool
) -> None:
    key = generate_key() if encrypted else None
    relay = PdRelay(tmp_path / "pdrelay", events_url=pd.events_url, pagerduty={"concurrency": 1},
                    config={"security": {"encryption_key": key}} if key else None)
    relay.workdir.mkdir(parents=True)
    ids = asyncio.run(queue_three(relay.outbox_path, key))
    alter(relay.outbox_path, "UPDATE events SET body = CAST(X'FF7B7D' AS TEXT) WHERE id = ?", ids[1])
    reason = "undecryptable" if encrypted else "unreadable"
    try:
        relay.start()
        sent = pd.wait_accepted(lambda events: len(events) >= 2, what="the two readable events")
        assert [(r.event["dedup_key"], r.event["routing_key"]) for r in sent] == [("a", ROUTING_KEY),
                                                                                  ("c", ROUTING_KEY)]

        def dead_lettered() -> bool:
            response = http_get(f"{relay.url}/metrics")
            return response is not None and \
                f'pdrelay_events_dead_lettered_total{{reason="{reason}",routing_key="default"}} 1.0' in response.text

        wait_until(dead_lettered, what=f"the {reason} row counted")
        late = {"version": "4", "groupKey": "g", "status": "firing", "receiver": "pdrelay", "groupLabels": {},
                "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
                "alerts": [{"status": "firing", "labels": {"alertname": "Later"}, "annotations": {},
                            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                            "generatorURL": "", "fingerprint": "00000000000000d4"}]}
        assert relay.post_alertmanager(late).status_code == 200
        pd.wait_accepted(lambda events: len(events) == 3, what="the notification posted afterwards")
        ready = http_get(f"{relay.url}/readyz")
        assert ready is not None and ready.status_code == 200
    finally:
        relay.stop()
    lines = [json.loads(line) for line in relay.log().splitlines() if line.startswith("{")]
    (logged,) = [line for line in lines if line.get("item_id") == ids[1] and line["level"] == "error"]
    assert (logged["reason"], logged["msg"].endswith("dead-lettered, never sent")) == (reason, True)
    dead = [(i, r) for i, r in _rows(relay.outbox_path, "SELECT id, reason FROM events WHERE status = 'dead'")]
    assert dead == [(ids[1], reason)]


def _rows(path: Path, sql: str) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return [(int(r[0]), str(r[1])) for r in conn.execute(sql)]
    finally:
        conn.close()
