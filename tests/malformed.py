"""Requests aiohttp's parser refuses, carrying a credential where the parser would quote it back, and a raw
exchange to send them: for the tests that no malformed request is answered or logged with its bytes."""

from __future__ import annotations

import socket

__all__ = ["malformed_requests", "raw_exchange"]


def malformed_requests(token: str) -> list[bytes]:
    """Requests aiohttp's parser refuses, each carrying ``token`` where the parser quotes it back."""
    t = token.encode()
    return [
        b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t + b"\nX-After: 1\r\n\r\n",  # bare LF
        b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t + b"\x00\r\n\r\n",  # NUL
        b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t + b"x" * 9000 + b"\r\n\r\n",  # too long
        b"GET /status HTTP/1.1\r\nHost: x\r\n" + t + b"x" * 9000 + b": v\r\n\r\n",  # header name too long
        b"GET /status?access_token=" + t + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",  # request line
        t + b" /status HTTP/1.1\r\nHost: x\r\n\r\n",  # as the method
    ]


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out
