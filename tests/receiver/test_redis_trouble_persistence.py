"""What a Redis crash keeps of what the outbox acknowledged depends on Redis's persistence, not on pdrelay.

The outbox's own ``redis-server`` is killed with SIGKILL (a crash: nothing flushed on the way out) right after
an enqueue returned, then started again on the same data folder. With AOF and ``appendfsync always`` the
acknowledged event is there. With ``everysec`` it is there too: Redis writes the AOF to the kernel before it
replies, and only the fsync waits (up to a second) — what a crash of the *machine* can lose, which a test
cannot stage. With RDB snapshots only (none taken since the write) it is gone — the reason the README asks
for AOF (``always`` where a machine crash must not lose an answered 200) and ``maxmemory-policy noeviction``.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from receiver.outbox.redis import RedisOutbox
from receiver.settings.model import RedisSettings
from tests.fakes import FakeClock
from tests.receiver.redis_server import AOF_ALWAYS, AOF_EVERYSEC, NO_AOF, OwnRedis
from tests.receiver.test_outbox_contract import HOUR, ev


@pytest.mark.parametrize(("persistence", "kept"), [(AOF_ALWAYS, ["a"]), (AOF_EVERYSEC, ["a"]), (NO_AOF, [])],
                         ids=["aof-always", "aof-everysec", "rdb-only"])
async def test_an_acknowledged_event_after_a_redis_crash(
    tmp_path: Path, persistence: Sequence[str], kept: list[str],
) -> None:
    server = OwnRedis(tmp_path, persistence)
    server.start()
    settings = RedisSettings(url=server.url, key_prefix="crash", socket_timeout=0.5)
    try:
        box = RedisOutbox(settings, clock=FakeClock())
        await box.open()
        assert (await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).queued == 1  # intake's 200
        server.stop(signal.SIGKILL)
        await box.close()  # cannot reach Redis: its leases and notes are left as they are
        server.start()
        again = RedisOutbox(settings, clock=FakeClock())
        await again.open()
        try:
            assert [i.dedup_key for i in await again.claim(10, ())] == kept
            assert again.depth().queued == len(kept)
        finally:
            await again.close()
    finally:
        server.stop()
