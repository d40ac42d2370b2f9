"""Encryption at rest in the Redis outbox: its index key, checked against the configured keys, and ``rekey``.

The values are sealed as in every backend (:class:`~receiver.outbox.sealing.ValueSealer`: item
bodies and notifications under AES-256-GCM bound to their item or notification id, dedup keys
as blind indexes, payload hashes keyed). The random index key lives in the ``meta`` hash,
sealed with the primary key; replicas starting together agree on one with ``HSETNX``.

Refused at start, with a message naming ``security.encryption_key``: an encrypted outbox
without keys, one holding a value (the index key, an item body, a notification: all read once at
start) sealed with a key that is not configured, and keys configured for an outbox that already
holds values in clear (encrypting one in place is not supported: drain or purge it first, or use
a new ``key_prefix``).
"""

from __future__ import annotations

import contextlib
import os

from receiver.crypto import DecryptError, blob_key_id
from receiver.errors import ConfigError
from receiver.outbox.contract import OpenReport
from receiver.outbox.redis.connect import Client
from receiver.outbox.redis.keys import Keys
from receiver.outbox.redis.scripts import UPDATE_IF_EXISTS
from receiver.outbox.sealing import INDEX_KEY_AAD, ValueSealer, event_aad, notification_aad

__all__ = ["attach", "rekey"]

_BATCH = 500


async def attach(client: Client, keys: Keys, sealer: ValueSealer, where: str) -> None:
    """Load (or make) the index key; raises :class:`ConfigError` when the stored values do not fit the keys."""
    keyring = sealer.keyring
    stored = await client.hget(keys.meta, "index_key")
    if keyring is None:
        if stored is not None:
            raise ConfigError(f"config: security.encryption_key: the Redis outbox {where} is encrypted; configure "
                              "the key(s) it was written with")
        return
    if stored is None:
        if await client.exists(keys.items, keys.next_id):
            raise ConfigError(
                f"config: security.encryption_key: the Redis outbox {where} holds values stored in clear; "
                "encrypting it in place is not supported: deliver or purge them first (pdrelay outbox list), "
                "or start with another outbox.redis.key_prefix")
        await client.hsetnx(keys.meta, "index_key", keyring.encrypt_bytes(os.urandom(32), INDEX_KEY_AAD))
        stored = await client.hget(keys.meta, "index_key")  # another replica may have made it first
        assert stored is not None
    blob = bytes(stored)
    try:
        key_id = blob_key_id(blob)
    except DecryptError as exc:
        raise ConfigError(f"config: security.encryption_key: cannot open the Redis outbox {where}: {exc}") from None
    missing = sorted(({key_id} | await _key_ids_in_use(client, keys)) - set(keyring.ids))
    if missing:
        raise ConfigError(
            f"config: security.encryption_key: the Redis outbox {where} holds values encrypted with key id(s) "
            f"{', '.join(missing)}, which are not configured (configured: {', '.join(keyring.ids)}); add the old "
            "key after the new one, then run `pdrelay outbox rekey`")
    try:
        sealer.set_index_key(keyring.decrypt_bytes(blob, INDEX_KEY_AAD))
    except DecryptError as exc:
        raise ConfigError(f"config: security.encryption_key: cannot open the Redis outbox {where}: {exc}") from None


async def _key_ids_in_use(client: Client, keys: Keys) -> set[str]:
    """The key ids of every stored item body and notification (read whole: one pass at start)."""
    ids = [int(i) for i in await client.zrange(keys.items, 0, -1)]
    found: set[str] = set()
    for start in range(0, len(ids), _BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for item_id in ids[start:start + _BATCH]:
                pipe.hmget(keys.item(item_id), "body", "nid")
            rows = await pipe.execute()
        notes = {nid for _, nid in rows if nid}
        async with client.pipeline(transaction=False) as pipe:
            for nid in notes:
                pipe.hget(keys.note(nid.decode()), "body")
            blobs = [body for body, _ in rows] + await pipe.execute()
        for blob in blobs:
            if blob is not None:
                with contextlib.suppress(DecryptError):  # not encrypted: reported when the item is read
                    found.add(blob_key_id(bytes(blob)))
    return found


async def rekey(client: Client, keys: Keys, sealer: ValueSealer) -> OpenReport:
    """Re-encrypt with the primary key every value sealed with another one (the index key, items, notifications).
    Each value is rewritten on its own, only if it still exists: a server may run beside."""
    keyring = sealer.keyring
    if keyring is None:
        raise ConfigError("config: security.encryption_key: rekey needs the encryption keys configured")
    stored = await client.hget(keys.meta, "index_key")
    if stored is not None and (new := keyring.rotate_blob(bytes(stored), INDEX_KEY_AAD)) is not None:
        await client.hset(keys.meta, "index_key", new)
    update = client.register_script(UPDATE_IF_EXISTS)
    ids = [int(i) for i in await client.zrange(keys.items, 0, -1)]
    n_events = n_notes = 0
    seen_notes: set[bytes] = set()
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start:start + _BATCH]
        async with client.pipeline(transaction=False) as pipe:
            for item_id in chunk:
                pipe.hmget(keys.item(item_id), "body", "rk", "ref", "action", "phash", "nid")
            rows = await pipe.execute()
        for item_id, (body, rk, ref, action, phash, nid) in zip(chunk, rows, strict=True):
            if body is None:
                continue
            aad = event_aad(item_id, rk.decode(), ref.decode(), action.decode(), phash.decode())
            if (new := keyring.rotate_blob(bytes(body), aad)) is not None:
                n_events += await update(keys=[keys.item(item_id)], args=["body", new])
            if nid and nid not in seen_notes:
                seen_notes.add(nid)
                note = await client.hget(keys.note(nid.decode()), "body")
                if note is not None and (new := keyring.rotate_blob(bytes(note),
                                                                    notification_aad(int(nid)))) is not None:
                    n_notes += await update(keys=[keys.note(nid.decode())], args=["body", new])
    return OpenReport(events=n_events, notifications=n_notes)
