"""The Redis outbox across a restart of its own ``redis-server`` (AOF, ``appendfsync always``): unavailable
while it is down, and — with no reopen — everything it acknowledged still there when it is back.

The server is this test's own, on a unix socket in ``tmp_path`` (``--port 0``: no TCP port to race for);
the shared Redis is never touched.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.errors import OutboxUnavailable
from receiver.outbox.redis import RedisOutbox
from receiver.settings.model import RedisSettings
from tests.fakes import FakeClock
from tests.receiver.test_outbox_contract import HOUR, ev


class OwnRedis:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.socket = tmp_path / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.socket.exists():  # bounded wait for the server's socket
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not listen"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_unavailable_while_down_and_nothing_lost_after(own_redis: OwnRedis) -> None:
    settings = RedisSettings(url=f"unix://{own_redis.socket}", socket_timeout=0.5)
    box = RedisOutbox(settings, clock=FakeClock())
    await box.open()
    try:
        assert (await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).queued == 1
        own_redis.stop()
        with pytest.raises(OutboxUnavailable) as caught:
            await box.enqueue(b"{}", [ev("b")], [], resend_interval=HOUR)
        assert str(caught.value).startswith("Redis outbox: storing a notification failed: ConnectionError:")
        with pytest.raises(OutboxUnavailable):
            await box.check()
        with pytest.raises(OutboxUnavailable):
            await box.claim(10, ())
        own_redis.start()
        await box.check()  # the same client reconnects
        assert (await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).duplicates == 1  # still queued
        assert (await box.enqueue(b"{}", [ev("b")], [], resend_interval=HOUR)).queued == 1
        # id 2 was reserved by the duplicate's transaction: skipped, never reused
        assert [(i.dedup_key, i.id) for i in await box.claim(10, ())] == [("a", 1), ("b", 3)]
    finally:
        await box.close()
