"""Hostile intake traffic against a pdrelay process: the bodies, the clients that send them, its RSS.

Used by ``test_intake_memory_e2e.py`` (the bound, asserted) and ``tests/bench/bench_memory.py`` (the
figures). Every client here behaves as Alertmanager does when refused: a 503, or a connection
closed under it, is tried again until another answer or a deadline.
"""

from __future__ import annotations

import functools
import json
import selectors
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

FIRST_PAUSE, LAST_PAUSE = 0.2, 2.0  # between tries after a refusal, growing 1.5 times: as Alertmanager's backoff


# --------------------------------------------------------------------------- bodies


def envelope(alerts: list[dict[str, object]], group: str = "Attack") -> bytes:
    body = {
        "receiver": "pdrelay", "status": "firing", "alerts": alerts, "groupLabels": {"alertname": group},
        "commonLabels": {"alertname": group}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}', "truncatedAlerts": 0,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def alert(fingerprint: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, object]:
    return {"status": "firing", "labels": labels, "annotations": annotations,
            "startsAt": "2026-11-25T16:54:52.112179Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up", "fingerprint": fingerprint}


@functools.cache
def many_labels_body(size: int) -> bytes:
    """One alert with as many labels as fit in ``size`` bytes (600,000 in 10 MiB), ``size`` or a little less."""
    count = size * 95 // 100 // 17  # a label is 16.9 bytes on average here
    labels = {"alertname": "ManyLabels", **{f"l{i:05x}": f"{i:x}" for i in range(count)}}
    return envelope([alert("0" * 16, labels, {})], "ManyLabels")


def ten_thousand_alerts_body(seed: int, count: int = 10_000) -> bytes:
    """A storm as Alertmanager sends it: ``count`` realistic alerts (6.5 MiB for 10,000), new ones per ``seed``."""
    alerts = []
    for n in range(count):
        instance = f"db-{seed}-{n}.example.com:9100"
        alerts.append(alert(f"{seed:04x}{n:012x}", {
            "alertname": "NodeFilesystemAlmostFull", "cluster": "eu-west-1", "device": "/dev/nvme0n1p1",
            "fstype": "ext4", "instance": instance, "job": "node", "mountpoint": "/var/lib/postgresql",
            "severity": "critical", "team": "storage",
        }, {
            "description": f"Only 3.1% of /var/lib/postgresql is free on {instance}.",
            "runbook_url": "https://runbooks.example.com/node/NodeFilesystemAlmostFull",
            "summary": f"Filesystem /var/lib/postgresql on {instance} has less than 5% space left",
        }))
    return envelope(alerts, "NodeFilesystemAlmostFull")


def wide_alerts_body(seed: int, size: int, count: int = 10_000) -> bytes:
    """About the most a valid body of at most ``size`` bytes can cost: ``count`` alerts with as many distinct
    labels as fit (48 each in 10 MiB)."""

    def build(labels: int) -> bytes:
        alerts = [alert(f"{seed:04x}{n:012x}", {"alertname": "Wide", **{f"k{j}": f"{n}.{j}" for j in range(labels)}},
                        {"summary": f"wide {n}"}) for n in range(count)]
        return envelope(alerts, "Wide")

    labels = size // count // 19  # an alert of n labels is ~19n + 140 bytes: a first guess above
    while len(body := build(labels)) > size:
        labels -= 1
    return body


@functools.cache
def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """gzip of ``inflated`` zero bytes (a whole number of MiB): 1 MiB that inflates to 1 GiB.

    Built in a second rather than deflating a GiB: after a full flush the deflater starts afresh,
    so one MiB of zeros deflates to the same block every time, and the stream is that block repeated.
    """
    chunk = bytes(1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the gzip header and trailer are added here
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    last = packer.flush()  # the final (empty) block
    crc = 0
    for _ in range(inflated // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name, no mtime, best compression
    return header + block * (inflated // len(chunk)) + last + struct.pack("<II", crc, inflated & 0xFFFFFFFF)


# --------------------------------------------------------------------------- clients


@dataclass
class Outcome:
    """The answer a client got in the end, and how many times it was refused (503 or dropped) first."""

    status: int | None = None
    refused: int = 0
    error: str | None = None  # set when the deadline passed without another answer


def post_until_answered(url: str, body: bytes, *, headers: dict[str, str] | None = None,
                        deadline: float) -> Outcome:
    """POST ``body`` again after each 503 or dropped connection, until another answer or ``deadline``
    (a ``time.monotonic()`` value)."""
    outcome = Outcome()
    sent = {"Content-Type": "application/json", **(headers or {})}
    pause = FIRST_PAUSE
    while True:
        try:
            response = httpx.post(url, content=body, headers=sent, timeout=60, trust_env=False)
        except httpx.TransportError as exc:  # the server closed the connection on a refusal mid-body
            outcome.error = type(exc).__name__
        else:
            if response.status_code != 503:
                outcome.status, outcome.error = response.status_code, None
                return outcome
            outcome.error = "503"
        outcome.refused += 1
        if time.monotonic() >= deadline:
            return outcome
        time.sleep(pause)
        pause = min(pause * 1.5, LAST_PAUSE)


def run_together(jobs: Sequence[Callable[[], Outcome]]) -> list[Outcome]:
    """Run every job in a thread of its own, all at once; their outcomes in the jobs' order."""
    results: list[Outcome] = [Outcome(error="not run") for _ in jobs]

    def run(index: int, job: Callable[[], Outcome]) -> None:
        results[index] = job()

    threads = [threading.Thread(target=run, args=(i, job), daemon=True) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class SlowBodies:
    """Connections that sent a request's headers and 16 bytes of a 1,000-byte body, and then nothing."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host, self.port, self.count = host, port, count
        self.sockets: list[socket.socket] = []
        self._received: dict[socket.socket, bytes] = {}
        self._ends: dict[socket.socket, str] = {}
        self._selector = selectors.DefaultSelector()

    def open(self) -> None:
        head = (b"POST /v1/alertmanager HTTP/1.1\r\nHost: pdrelay\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"version": "4",')
        for _ in range(self.count):
            sock = socket.create_connection((self.host, self.port), timeout=10)
            sock.sendall(head)
            sock.setblocking(False)
            self.sockets.append(sock)
            self._received[sock] = b""
            self._selector.register(sock, selectors.EVENT_READ)

    def answers(self, *, closed: int, timeout: float) -> list[str]:
        """Wait until ``closed`` connections in all were closed by the server, or ``timeout`` seconds; then for
        each connection, the status the server answered before closing it ("408", "503"), "closed" when it
        closed without an answer, or "open"."""
        deadline = time.monotonic() + timeout
        while len(self._ends) < closed and (left := deadline - time.monotonic()) > 0:
            for key, _ in self._selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if data:
                    self._received[sock] += data
                    continue
                self._selector.unregister(sock)
                got = self._received[sock]
                self._ends[sock] = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/1.1 ") else "closed"
        return [self._ends.get(sock, "open") for sock in self.sockets]

    def close(self) -> None:
        self._selector.close()
        for sock in self.sockets:
            sock.close()


@contextmanager
def slow_bodies(host: str, port: int, count: int) -> Iterator[SlowBodies]:
    slow = SlowBodies(host, port, count)
    try:
        slow.open()
        yield slow
    finally:
        slow.close()


# --------------------------------------------------------------------------- memory


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set since start or :func:`reset_peak` (VmHWM), in MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (``5`` to /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
