"""A ``redis-server`` of a test's own, on a unix socket in the test's folder: started, stopped (SIGTERM) or killed
(SIGKILL) by its PID, and started again on the same socket and data folder. Never the shared Redis.

``--port 0`` turns TCP off, so there is no port to race for. The persistence is the caller's choice; the
default is AOF with ``appendfsync always`` (every acknowledged write is on disk before the reply).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["AOF_ALWAYS", "AOF_EVERYSEC", "NO_AOF", "OwnRedis"]

AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
AOF_EVERYSEC = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
NO_AOF = ("--appendonly", "no", "--save", "")  # RDB only, and no snapshot taken: what a crash keeps is the last dump


class OwnRedis:
    """One ``redis-server`` process on ``<folder>/redis.sock``, its files in ``folder``."""

    def __init__(self, folder: Path, persistence: Sequence[str] = AOF_ALWAYS, password: str | None = None) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "redis.sock"
        self.persistence = tuple(persistence)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> None:
        args = ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.dir),
                *self.persistence]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():  # bounded wait for the server's socket
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not listen"
            time.sleep(0.01)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server by its PID: SIGTERM (it writes what its persistence keeps) or SIGKILL (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        self.proc = None
        self.socket.unlink(missing_ok=True)
