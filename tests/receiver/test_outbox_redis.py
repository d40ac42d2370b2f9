"""What only the Redis outbox does: leases another replica reclaims, one decision for replicas enqueuing the
same notification at once, sealed values, WAIT for replicas, and Redis trouble as OutboxUnavailable.

Each test works under its own key prefix on the shared Redis (127.0.0.1:6379), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from receiver.crypto import Keyring, generate_key
from receiver.errors import ConfigError, OutboxUnavailable, Reason
from receiver.outbox.contract import KeyDepth
from receiver.outbox.redis import RedisOutbox
from receiver.outbox.redis.connect import Client
from receiver.settings.model import RedisSettings
from tests.fakes import FakeClock
from tests.receiver.test_outbox_contract import HOUR, REDIS_URL, drop_prefix, ev
from transforms.base import InvalidEvent

SOURCE = b'{"alerts": [{"labels": {"customer": "ACME-SECRET-CUSTOMER"}}]}'
Open = Callable[..., Awaitable[RedisOutbox]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def raw() -> AsyncIterator[Client]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def replica(clock: FakeClock) -> AsyncIterator[Open]:
    """Opens outboxes (replicas) on one new key prefix; closes them and deletes the prefix at the end."""
    prefix = f"pdrelay-test-{os.urandom(6).hex()}"
    opened: list[RedisOutbox] = []

    async def make(keyring: Keyring | None = None, told: list[tuple[object, ...]] | None = None,
                   **settings: object) -> RedisOutbox:
        name = str(settings.pop("replica", "host-a"))
        redis = RedisSettings(**{"url": REDIS_URL, "key_prefix": prefix, **settings})  # type: ignore[arg-type]
        box = RedisOutbox(redis, clock=clock, keyring=keyring, keep_sends_for=60.0, replica=name,
                          on_unreadable=None if told is None else lambda *report: told.append(report))
        await box.open()
        opened.append(box)
        return box

    make.prefix = prefix  # type: ignore[attr-defined]
    yield make
    for box in opened:
        await box.close()
    await drop_prefix(prefix)


async def test_a_dead_replicas_claim_is_delivered_by_another_after_the_lease(replica: Open, clock: FakeClock) -> None:
    """A claims the head and dies; B cannot take it while the lease runs (nor what queues behind it), takes
    it once the lease has run out (on the injected clock), and A's late ack then changes nothing."""
    a, b = await replica(lease=30.0), await replica(lease=30.0)
    await a.enqueue(b"{}", [ev("k")], [], resend_interval=HOUR)
    await a.enqueue(b"{}", [ev("k", "resolve")], [], resend_interval=HOUR)
    (held,) = await a.claim(10, ())
    assert await b.claim(10, ()) == []
    assert await b.next_due() == clock.now() + 30.0  # B wakes when the lease runs out
    clock.advance(29.9)
    assert await b.claim(10, ()) == []
    clock.advance(0.1)
    (taken,) = await b.claim(10, ())
    assert (taken.id, taken.action, taken.superseded) == (held.id, "trigger", True)
    assert await b.ack(taken) is False
    assert await a.ack(held) is False  # settled by B already
    (resolve,) = await b.claim(10, ())
    assert resolve.action == "resolve" and await a.claim(10, ()) == []
    assert await b.ack(resolve) is False
    assert await b.items() == [] and await a.next_due() is None  # an idle replica's look at the queue
    assert (b.depth().queued, a.depth().queued) == (0, 0)  # also refreshes its counts


async def test_a_claimed_head_left_unsent_comes_back_to_its_holder_only(replica: Open) -> None:
    """A head this replica claimed but did not start (no budget) is claimed again by it, not by another."""
    a, b = await replica(), await replica()
    await a.enqueue(b"{}", [ev("k")], [], resend_interval=HOUR)
    (first,) = await a.claim(1, ())
    assert await a.claim(1, [first.id]) == []  # in flight: excluded
    (again,) = await a.claim(1, ())
    assert again.id == first.id and await b.claim(1, ()) == []
    assert await a.claim(1, (), ["default"]) == []  # its routing key is blocked


async def test_replicas_enqueuing_the_same_notifications_at_once_queue_each_once(replica: Open) -> None:
    """Alertmanager HA: two peers post the same notifications to two replicas at the same moment."""
    a, b = await replica(), await replica()
    notes = [[ev(f"t{i}"), ev(f"r{i}", "resolve"), ev("shared")] for i in range(40)]
    results = await asyncio.gather(*(box.enqueue(b"{}", n, [], resend_interval=HOUR)
                                     for n in notes for box in (a, b)))
    assert sum(r.queued for r in results) == 81 and sum(r.duplicates for r in results) == 2 * 120 - 81
    for first, second in zip(results[::2], results[1::2], strict=True):  # one transaction per notification:
        assert sorted((first.queued, second.queued)) in ([0, 2], [0, 3])  # one replica queues it, whole
    queued = await a.items(status="queued")
    assert sorted((i.dedup_key, i.action) for i in queued) == sorted(
        [(f"t{i}", "trigger") for i in range(40)] + [(f"r{i}", "resolve") for i in range(40)] + [("shared", "trigger")])
    assert len({i.id for i in queued}) == len(queued) == a.depth().queued == 81


async def test_ids_and_counts_are_shared_by_the_replicas(replica: Open) -> None:
    a, b = await replica(), await replica()
    await a.enqueue(b"{}", [ev("x")], [], resend_interval=HOUR)
    await b.enqueue(b"{}", [ev("y")], [], resend_interval=HOUR)
    x, y = await a.items()
    assert y.id > x.id and (await a.claim(10, ()))[0].id == x.id
    assert (a.depth().queued, b.depth().queued) == (2, 2)
    assert (await b.depth_by_key())["default"].queued == 2


async def test_sealed_values_are_unreadable_without_the_key(replica: Open, raw: Client) -> None:
    """With keys, nothing of the alert is stored in clear (bodies, the notification, dedup keys in key names);
    without them the outbox is refused; a body moved to another item is set aside as undecryptable."""
    told: list[tuple[object, ...]] = []
    keyring = Keyring.from_keys([generate_key()])
    box = await replica(keyring, told)
    await box.enqueue(SOURCE, [ev("alpha-secret"), ev("beta-secret")], [], resend_interval=HOUR)
    prefix = replica.prefix  # type: ignore[attr-defined]
    names = [k async for k in raw.scan_iter(match="{" + prefix + "}:*")]
    stored = b"".join(names)
    for name in names:
        if await raw.type(name) == b"hash":
            stored += b"".join(k + v for k, v in (await raw.hgetall(name)).items())
        elif await raw.type(name) == b"list":
            stored += b"".join(await raw.lrange(name, 0, -1))
    assert b"secret" not in stored.lower() and b"ACME" not in stored
    a, b = await box.items()
    assert (a.dedup_key, a.body["payload"]["summary"]) == ("alpha-secret", "alpha-secret h1")
    assert await box.notification(a.id) == SOURCE
    with pytest.raises(ConfigError) as caught:
        await replica()
    assert str(caught.value) == (
        f"config: security.encryption_key: the Redis outbox {REDIS_URL} (key prefix {prefix!r}) is encrypted; "
        "configure the key(s) it was written with")
    body_a = await raw.hget(f"{{{prefix}}}:item:{a.id}", "body")
    await raw.hset(f"{{{prefix}}}:item:{b.id}", "body", body_a)  # a's sealed body copied into b's item
    assert [i.id for i in await box.claim(10, ())] == [a.id]  # b is set aside, not sent
    (dead,) = await box.items(status="dead")
    assert (dead.id, dead.reason) == (b.id, Reason.UNDECRYPTABLE.value)
    assert [(t[0], t[1], t[3]) for t in told] == [(b.id, Reason.UNDECRYPTABLE, "default")]


async def test_keys_refused_for_an_outbox_stored_in_clear(replica: Open) -> None:
    box = await replica()
    await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    with pytest.raises(ConfigError) as caught:
        await replica(Keyring.from_keys([generate_key()]))
    prefix = replica.prefix  # type: ignore[attr-defined]
    assert str(caught.value) == (
        f"config: security.encryption_key: the Redis outbox {REDIS_URL} (key prefix {prefix!r}) holds values "
        "stored in clear; encrypting it in place is not supported: deliver or purge them first (pdrelay outbox "
        "list), or start with another outbox.redis.key_prefix")


async def test_rekey_reseals_with_the_new_primary_key(replica: Open) -> None:
    """Keys that cannot read every stored value are refused at start; rekey reseals all with the primary key."""
    old, new = generate_key(), generate_key()
    box = await replica(Keyring.from_keys([old]))
    await box.enqueue(SOURCE, [ev("a")], [], resend_interval=HOUR)
    prefix = replica.prefix  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as caught:
        await replica(Keyring.from_keys([new]))
    assert str(caught.value) == (
        f"config: security.encryption_key: the Redis outbox {REDIS_URL} (key prefix {prefix!r}) holds values "
        f"encrypted with key id(s) {Keyring.from_keys([old]).ids[0]}, which are not configured (configured: "
        f"{Keyring.from_keys([new]).ids[0]}); add the old key after the new one, then run `pdrelay outbox rekey`")
    rotated = await replica(Keyring.from_keys([new, old]))
    report = await rotated.rekey()
    assert (report.events, report.notifications) == (1, 1)
    only_new = await replica(Keyring.from_keys([new]))
    (item,) = await only_new.claim(1, ())
    assert item.dedup_key == "a" and await only_new.notification(item.id) == SOURCE


async def test_wait_for_replicas_that_do_not_answer_is_unavailable(replica: Open) -> None:
    """The shared Redis has no replica: a write that WAIT cannot see on one is not answered as stored."""
    box = await replica(wait_replicas=1, wait_timeout=0.05)
    with pytest.raises(OutboxUnavailable) as caught:
        await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)
    assert str(caught.value) == ("Redis outbox: the write reached 0 of the 1 replicas outbox.redis.wait_replicas "
                                 "asks for within 0.05s")


async def test_an_unreachable_redis_is_unavailable(tmp_path: Path, clock: FakeClock) -> None:
    """Nothing listening: open fails with OutboxUnavailable naming the server, after bounded retries."""
    url = f"unix://{tmp_path}/none.sock"
    box = RedisOutbox(RedisSettings(url=url, socket_timeout=0.5), clock=clock)
    with pytest.raises(OutboxUnavailable) as caught:
        await box.open()
    assert str(caught.value).startswith(f"Redis outbox: opening {url} (key prefix 'pdrelay') failed: ConnectionError:")


async def test_depth_by_key_follows_what_is_stored(replica: Open, clock: FakeClock) -> None:
    """Queued count and oldest creation time per routing key name, dead letters by reason — kept as counters, so
    they follow acks, dead letters, requeues and purges without reading items."""
    t0 = clock.now()
    box = await replica()
    assert await box.depth_by_key() == {}
    await box.enqueue(b"{}", [ev("a"), ev("b", key="db")],
                      [InvalidEvent("db", "bad", "trigger", {}, "summary missing")], resend_interval=HOUR)
    clock.advance(5)
    await box.enqueue(b"{}", [ev("c"), ev("d", key="nowhere")], [], resend_interval=HOUR)
    assert await box.depth_by_key() == {
        "default": KeyDepth(queued=2, oldest_queued_at=t0),
        "db": KeyDepth(queued=1, oldest_queued_at=t0, dead={"invalid_event": 1}),
        "nowhere": KeyDepth(queued=1, oldest_queued_at=t0 + 5),
    }
    by_id = {i.dedup_key: i for i in await box.items(status="queued")}
    await box.ack(by_id["a"])
    await box.dead_letter(by_id["b"], Reason.EXPIRED, 503, "gave up")
    await box.dead_letter(by_id["d"], Reason.UNKNOWN_ROUTING_KEY, None, "not configured")
    assert await box.depth_by_key() == {
        "default": KeyDepth(queued=1, oldest_queued_at=t0 + 5),
        "db": KeyDepth(dead={"invalid_event": 1, "expired": 1}),
        "nowhere": KeyDepth(dead={"unknown_routing_key": 1}),
    }
    assert (await box.requeue(by_id["d"].id, ev("d"), resend_interval=HOUR)).result == "replayed"
    await box.purge([by_id["b"].id])
    assert await box.depth_by_key() == {
        "default": KeyDepth(queued=2, oldest_queued_at=t0 + 5),
        "db": KeyDepth(dead={"invalid_event": 1}),
    }
    assert (box.depth().queued, box.depth().dead) == (2, 1)


async def test_each_replica_keeps_the_head_of_its_own_audit_log(replica: Open) -> None:
    """Two replicas write two audit logs: each one's chain head is stored apart and read back by it alone."""
    a, b = await replica(replica="pod-0"), await replica(replica="pod-1")
    a.note_audit_head("1:" + "a" * 64)
    b.note_audit_head("1:" + "b" * 64)
    await a.enqueue(b"{}", [ev("x")], [], resend_interval=HOUR)
    await b.enqueue(b"{}", [ev("y")], [], resend_interval=HOUR)
    assert await (await replica(replica="pod-0")).audit_head() == "1:" + "a" * 64
    assert await (await replica(replica="pod-1")).audit_head() == "1:" + "b" * 64
    assert await (await replica(replica="pod-2")).audit_head() is None


async def test_a_replica_stopping_cleanly_gives_back_what_it_holds(replica: Open) -> None:
    """Claimed and not settled when it stops: due again at once for another replica, no lease to wait for."""
    a, b = await replica(), await replica()
    await a.enqueue(b"{}", [ev("k")], [], resend_interval=HOUR)
    (held,) = await a.claim(10, ())
    assert await b.claim(10, ()) == []
    await a.close()
    (taken,) = await b.claim(10, ())
    assert taken.id == held.id


async def test_two_replicas_draining_send_each_event_once_in_order_one_per_key_at_a_time(replica: Open) -> None:
    """Both replicas claim and ack at once: every event goes out once, a key never has two in flight, and each
    key's trigger goes before its resolve."""
    a, b = await replica(), await replica()
    for i in range(30):
        await a.enqueue(b"{}", [ev(f"k{i}")], [], resend_interval=HOUR)
    for i in range(30):
        await b.enqueue(b"{}", [ev(f"k{i}", "resolve")], [], resend_interval=HOUR)
    in_flight: set[str] = set()
    sent: list[tuple[str, str]] = []

    async def drain(box: RedisOutbox) -> None:
        idle = 0
        while idle < 3:  # bounded: a few empty looks once the other replica holds the last heads
            items = await box.claim(4, ())
            idle = 0 if items else idle + 1
            for item in items:
                assert item.dedup_key not in in_flight
                in_flight.add(item.dedup_key)
            await asyncio.sleep(0)  # the other replica claims meanwhile
            for item in items:
                sent.append((item.dedup_key, item.action))
                in_flight.discard(item.dedup_key)
                assert await box.ack(item) is False

    await asyncio.gather(drain(a), drain(b))  # a replica that acks a trigger claims its resolve next
    assert sorted(sent) == sorted((f"k{i}", action) for i in range(30) for action in ("trigger", "resolve"))
    for i in range(30):
        assert sent.index((f"k{i}", "trigger")) < sent.index((f"k{i}", "resolve"))
    assert await a.items() == []
