"""Secret values from the configuration: :class:`Secret`, and the format of encryption keys.

A :class:`Secret` is a string that never shows itself in ``repr``, ``str``, logs or JSON;
only :meth:`Secret.reveal` gives the value. :func:`decode_keys` reads the one secret with a
format of its own: an encryption key, the base64 (standard or URL-safe, padding optional)
of exactly :data:`KEY_SIZE` random bytes. Its messages name the key's position, never its
value.

A leaf: it imports nothing from pdrelay, so the settings that hold secrets and the code
that uses them (``receiver.crypto``) depend on it and not on each other. That is why a bad
key is a :class:`KeyFormatError` (a ``ValueError``) here; callers turn it into their own
error at their boundary.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

__all__ = ["KEY_SIZE", "KeyFormatError", "Secret", "decode_keys"]

KEY_SIZE = 32
"""Bytes in an encryption key (AES-256)."""

_KEY_CHARS = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class KeyFormatError(ValueError):
    """A configured key list is not a list of distinct keys; the message starts with the key's position."""


def decode_keys(keys: Sequence[Secret | str], where: str) -> list[bytes]:
    """The bytes of each key (primary first); the message of any error starts with ``where`` or ``where[i]``."""
    if isinstance(keys, str | Secret):
        raise KeyFormatError(f"{where}: expected a list of keys (primary first), got a single string")
    if not keys:
        raise KeyFormatError(f"{where}: no keys given; expected at least one (see pdrelay keygen)")
    decoded: list[bytes] = []
    for i, raw in enumerate(keys):
        key = _decode_key(raw, f"{where}[{i}]")
        if key in decoded:
            raise KeyFormatError(f"{where}[{i}]: duplicate of {where}[{decoded.index(key)}]")
        decoded.append(key)
    return decoded


def _decode_key(raw: object, where: str) -> bytes:
    value = raw.reveal() if isinstance(raw, Secret) else raw
    if not isinstance(value, str):
        raise KeyFormatError(f"{where}: expected a base64 string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise KeyFormatError(f"{where}: is empty; expected base64 of {KEY_SIZE} bytes (see pdrelay keygen)")
    if _KEY_CHARS.fullmatch(text) is None:
        raise KeyFormatError(f"{where}: not valid base64")
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    if len(text) % 4 == 1:
        raise KeyFormatError(f"{where}: not valid base64")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{where}: not valid base64") from None
    if len(key) != KEY_SIZE:
        raise KeyFormatError(f"{where}: expected base64 of {KEY_SIZE} bytes, got {len(key)} bytes")
    return key
