"""Sealing of stored values that every outbox backend shares: pure, no storage.

With a :class:`~receiver.crypto.Keyring`, alert content is sealed with AES-256-GCM; each
ciphertext's associated data names what it belongs to (an event's id, routing key, dedup key
index, action and keyed payload hash; a notification's id), so a value copied elsewhere fails
to open. Dedup keys are stored as a keyed blind index (``ix:`` and an HMAC) and payload hashes
keyed (``hk:`` and an HMAC) under a random index key that the backend keeps sealed with the
primary key (associated data :data:`INDEX_KEY_AAD`). Without a keyring every function is the
identity. How a backend stores the index key, and checks its storage against the configured
keys, is its own (:mod:`receiver.outbox.sqlite.sealing`, :mod:`receiver.outbox.redis.sealing`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from receiver.crypto import DecryptError, DecryptFailure, Keyring
from receiver.errors import Reason

__all__ = ["INDEX_KEY_AAD", "KEYED", "Unreadable", "ValueSealer", "event_aad", "legacy_aad", "notification_aad",
           "open_body"]

_DECODE = msgspec.json.Decoder(dict[str, Any]).decode

KEYED = "hk:"  # the prefix of a keyed payload hash (and of a row sealed bound to its id)
INDEX_KEY_AAD = b"pdrelay.outbox.meta.index_key"
_PAYLOAD_KEY_INFO = b"pdrelay.outbox.payload_hash"


class ValueSealer:
    """Seals and opens an outbox's stored values; the identity when no keyring is configured."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self._keyring = keyring
        self._index: hmac.HMAC | None = None
        self._payload: hmac.HMAC | None = None
        self._legacy = False  # values in the earlier format (SQLite only: read by an operator, not upgraded yet)

    @property
    def encrypted(self) -> bool:
        return self._keyring is not None

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring

    def set_index_key(self, key: bytes) -> None:
        """Use ``key`` (32 random bytes, the backend's index key) for blind indexes and keyed hashes."""
        self._index = hmac.new(key, digestmod=hashlib.sha256)
        self._payload = hmac.new(hmac.digest(key, _PAYLOAD_KEY_INFO, "sha256"), digestmod=hashlib.sha256)

    # ------------------------------------------------------------------ values

    def index(self, dedup_key: str) -> str:
        """What the ``dedup_key`` columns hold: the key itself, or its blind index."""
        if self._index is None:
            return dedup_key
        h = self._index.copy()
        h.update(dedup_key.encode())
        return "ix:" + h.hexdigest()[:40]

    def payload_hash(self, payload_hash: str) -> str:
        """What the ``payload_hash`` columns hold: the hash itself, or ``hk:`` and its HMAC when sealed
        (unless the file is still in the earlier format: then as it holds them)."""
        if self._payload is None or self._legacy:
            return payload_hash
        h = self._payload.copy()
        h.update(payload_hash.encode())
        return KEYED + h.hexdigest()

    def seal_event(self, body: bytes, item_id: int, routing_key: str, ref: str, action: str,
                   payload_hash: str) -> bytes:
        """``body`` sealed for event ``item_id`` (``payload_hash`` as :meth:`payload_hash` gives it)."""
        if self._keyring is None:
            return body
        return self._keyring.encrypt_bytes(body, self._aad(item_id, routing_key, ref, action, payload_hash))

    def open_event(self, blob: bytes, item_id: int, routing_key: str, ref: str, action: str,
                   payload_hash: str) -> bytes:
        """The event body; raises :class:`~receiver.crypto.DecryptError` for a value that fails authentication."""
        if self._keyring is None:
            return blob
        return self._keyring.decrypt_bytes(blob, self._aad(item_id, routing_key, ref, action, payload_hash))

    def _aad(self, item_id: int, routing_key: str, ref: str, action: str, payload_hash: str) -> bytes:
        if payload_hash.startswith(KEYED):
            return event_aad(item_id, routing_key, ref, action, payload_hash)
        if self._legacy:
            return legacy_aad(routing_key, ref, action, payload_hash)
        raise DecryptError(
            "cannot decrypt: sealed the way of an earlier pdrelay, without its item id, in an outbox upgraded "
            "since (copied or restored from an older file)", DecryptFailure.AUTHENTICATION)

    def seal_notification(self, body: bytes, nid: int) -> bytes:
        return body if self._keyring is None else self._keyring.encrypt_bytes(body, notification_aad(nid))

    def open_notification(self, blob: bytes, nid: int) -> bytes:
        return blob if self._keyring is None else self._keyring.decrypt_bytes(blob, notification_aad(nid))


def event_aad(item_id: int, routing_key: str, ref: str, action: str, payload_hash: str) -> bytes:
    return "\0".join(("pdrelay.outbox.events.v2", str(item_id), routing_key, ref, action, payload_hash)).encode()


def legacy_aad(routing_key: str, ref: str, action: str, payload_hash: str) -> bytes:
    """What a value sealed before event ids were bound was bound to."""
    return "\0".join(("pdrelay.outbox.events", routing_key, ref, action, payload_hash)).encode()


def notification_aad(nid: int) -> bytes:
    return f"pdrelay.outbox.notifications\0{nid}".encode()


class Unreadable(Exception):
    """A stored event that cannot be sent: its value fails authentication, or is not an event of its item."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def open_body(sealer: ValueSealer, stored: bytes, item_id: int, routing_key: str, ref: str, action: str,
              payload_hash: str, *, check: bool) -> dict[str, Any]:
    """A stored event body, opened and decoded; with ``check``, also that it is the event its item says (its
    action and dedup key, and no routing key of its own: the sender adds the configured one).

    Raises:
        Unreadable: ``undecryptable`` when the value fails authentication, else ``unreadable``.
    """
    try:
        data = sealer.open_event(stored, item_id, routing_key, ref, action, payload_hash)
    except DecryptError as exc:
        raise Unreadable(Reason.UNDECRYPTABLE, str(exc)) from None
    try:
        body = _DECODE(data)
    except msgspec.DecodeError as exc:
        raise Unreadable(Reason.UNREADABLE, f"the stored body is not a UTF-8 JSON object: {str(exc)[:200]}") from None
    if check:
        dedup_key = body.get("dedup_key")
        # A Change Event's body has no event_action: that absence is what sends it to /v2/change/enqueue.
        if body.get("event_action", "change") != action or (action == "change" and "event_action" in body):
            raise Unreadable(Reason.UNREADABLE, f"the stored body's event_action is not the item's action {action!r}")
        if not isinstance(dedup_key, str) or sealer.index(dedup_key) != ref:
            raise Unreadable(Reason.UNREADABLE, "the stored body's dedup_key is not the item's dedup key")
        if "routing_key" in body:
            raise Unreadable(Reason.UNREADABLE, "the stored body names a routing key of its own")
    return body
