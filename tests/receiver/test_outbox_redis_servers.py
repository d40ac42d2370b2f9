"""The Redis outbox reaching its server the other ways ``outbox.redis`` allows: TLS (``rediss://``) and Sentinel.

Each test starts its own ``redis-server`` processes on loopback (never the shared Redis). TLS and
Sentinel need TCP ports, which ``redis-server`` cannot pick itself (``--port 0`` turns TCP off): a
free port is taken from the kernel (bind to port 0, read it back, close) just before the server is
started on it, and the start is tried again on another one if something took it meanwhile.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from receiver.errors import OutboxUnavailable
from receiver.outbox.redis import RedisOutbox
from receiver.settings.model import RedisSettings
from tests.fakes import FakeClock
from tests.receiver.test_outbox_contract import HOUR, ev

Start = Callable[[Callable[[int], list[str]]], int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def servers() -> Iterator[Start]:
    """``start(args_for_port)`` runs ``redis-server`` on a free TCP port and returns the port once it listens."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: Callable[[int], list[str]]) -> int:
        for _ in range(3):
            port = _free_port()
            proc = subprocess.Popen(["redis-server", *args(port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            procs.append(proc)
            deadline = time.monotonic() + 10
            while proc.poll() is None and not _listening(port) and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None and _listening(port):
                return port
        raise AssertionError("redis-server did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def _certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pdrelay test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def _round_trip(settings: RedisSettings) -> None:
    box = RedisOutbox(settings, clock=FakeClock())
    await box.open()
    try:
        assert (await box.enqueue(b"{}", [ev("a")], [], resend_interval=HOUR)).queued == 1
        (item,) = await box.claim(1, ())
        assert await box.ack(item) is False and box.depth().queued == 0
    finally:
        await box.close()


async def test_tls_with_the_servers_ca_and_refused_without_it(tmp_path: Path, servers: Start) -> None:
    ca, cert, key = _certificates(tmp_path)
    port = servers(lambda p: ["--port", "0", "--tls-port", str(p), "--tls-cert-file", str(cert),
                              "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                              "--save", "", "--appendonly", "no"])
    await _round_trip(RedisSettings(url=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"))
    box = RedisOutbox(RedisSettings(url=f"rediss://127.0.0.1:{port}/0", socket_timeout=1.0), clock=FakeClock())
    with pytest.raises(OutboxUnavailable) as caught:  # the system's CAs do not know the test CA
        await box.open()
    assert "certificate verify failed" in str(caught.value)


async def test_sentinel_leads_to_the_master(tmp_path: Path, servers: Start) -> None:
    master = servers(lambda p: ["--port", str(p), "--save", "", "--appendonly", "no"])
    conf = tmp_path / "sentinel.conf"

    def sentinel(port: int) -> list[str]:
        conf.write_text(f"port {port}\ndir {tmp_path}\nsentinel monitor pdrelay 127.0.0.1 {master} 1\n")
        return [str(conf), "--sentinel"]

    port = servers(sentinel)
    await _round_trip(RedisSettings(sentinels=(("127.0.0.1", port),), service_name="pdrelay"))
