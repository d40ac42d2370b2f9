"""How the SQLite outbox stores alert content: in clear, or sealed with AES-256-GCM.

With ``security.encryption_key`` configured, every stored value that carries alert content
is encrypted by :class:`~receiver.crypto.Keyring`: the Alertmanager body of each
notification and each event's body (queued or dead-lettered). Dedup keys (which a rule may
build from labels) are looked up and ordered by, so the ``dedup_key`` columns of events and
state rows hold a keyed HMAC of the key (a blind index) instead of the key; an event's key
is read back from its sealed body, and a state row needs nothing else (routing key name,
action, payload hash and times carry no alert content). The associated data of every
ciphertext names its row (table, routing key, index, action, payload hash or notification
id), so a value copied into another row fails to decrypt instead of being sent for the
wrong alert.

The blind index uses a random 256-bit index key made when the outbox is first encrypted
and stored in ``meta``, sealed with the primary encryption key. Rotating encryption keys
therefore never changes an index: ``rekey`` re-encrypts values and the index key, and the
old key can be removed afterwards.

Start-up refuses, with a message naming ``security.encryption_key``, an encrypted outbox
without keys or with values under a key id that is not configured. A plain outbox is
encrypted in place the first time keys are configured.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3

from receiver.crypto import OVERHEAD, DecryptError, Keyring, blob_key_id
from receiver.errors import ConfigError
from receiver.outbox.contract import OpenReport

__all__ = ["Sealer"]

_INDEX_KEY_AAD = b"pdrelay.outbox.meta.index_key"
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)"


class Sealer:
    """Seals and opens the outbox's stored values; the identity when no keyring is configured."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self._keyring = keyring
        self._index: hmac.HMAC | None = None

    @property
    def encrypted(self) -> bool:
        return self._keyring is not None

    # ------------------------------------------------------------------ start-up

    def attach(self, conn: sqlite3.Connection, where: str, *, encrypt_plain: bool = True) -> OpenReport:
        """Check the file against the configured keys, load the index key, encrypt a plain file
        (unless ``encrypt_plain`` is false: then a plain file with keys configured is refused).

        Raises :class:`ConfigError` when the file cannot be read with the configured keys.
        """
        conn.execute(_META)
        row = conn.execute("SELECT value FROM meta WHERE key = 'index_key'").fetchone()
        if self._keyring is None:
            if row is not None:
                raise ConfigError(
                    f"config: security.encryption_key: the outbox {where} is encrypted; configure the key(s) "
                    "it was written with")
            return OpenReport()
        if row is None:
            if not encrypt_plain:
                raise ConfigError(
                    f"config: security.encryption_key: the outbox {where} is not encrypted yet; start "
                    "`pdrelay serve` once with the keys, or run `pdrelay outbox rekey`, to encrypt it")
            return self._encrypt_plain_file(conn)
        missing = sorted((self.key_ids_in_use(conn) | {blob_key_id(bytes(row[0]))}) - set(self._keyring.ids))
        if missing:
            raise ConfigError(
                f"config: security.encryption_key: the outbox {where} holds values encrypted with key id(s) "
                f"{', '.join(missing)}, which are not configured (configured: {', '.join(self._keyring.ids)}); "
                "add the old key after the new one, then run `pdrelay outbox rekey`")
        try:
            self._set_index_key(self._keyring.decrypt_bytes(bytes(row[0]), _INDEX_KEY_AAD))
        except DecryptError as exc:
            raise ConfigError(f"config: security.encryption_key: cannot open the outbox {where}: {exc}") from None
        return OpenReport()

    @staticmethod
    def key_ids_in_use(conn: sqlite3.Connection) -> set[str]:
        ids: set[str] = set()
        for table, column in (("events", "body"), ("notifications", "body")):
            # substr: enough of each value for its header (an encrypted value is at least OVERHEAD bytes)
            for (blob,) in conn.execute(f"SELECT DISTINCT substr({column}, 1, {OVERHEAD}) FROM {table} "
                                        f"WHERE {column} IS NOT NULL"):
                with contextlib.suppress(DecryptError):  # not encrypted: reported when the row is read
                    ids.add(blob_key_id(bytes(blob)))
        return ids

    def _set_index_key(self, key: bytes) -> None:
        self._index = hmac.new(key, digestmod=hashlib.sha256)

    def _encrypt_plain_file(self, conn: sqlite3.Connection) -> OpenReport:
        """First start with keys: make the index key and seal every row already stored, in one transaction."""
        assert self._keyring is not None
        index_key = os.urandom(32)
        self._set_index_key(index_key)
        conn.execute("PRAGMA secure_delete=ON")  # the clear pages are overwritten, not just freed
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO meta (key, value) VALUES ('index_key', ?)",
                         (self._keyring.encrypt_bytes(index_key, _INDEX_KEY_AAD),))
            notes = conn.execute("SELECT id, body FROM notifications").fetchall()
            conn.executemany("UPDATE notifications SET body = ? WHERE id = ?",
                             [(self.seal_notification(bytes(b), nid), nid) for nid, b in notes])
            events = conn.execute(
                "SELECT id, routing_key, dedup_key, action, payload_hash, body FROM events").fetchall()
            updates = []
            for eid, rk, dk, action, phash, body in events:
                ref = self.index(dk)
                updates.append((ref, self.seal_event(bytes(body), rk, ref, action, phash), eid))
            conn.executemany("UPDATE events SET dedup_key = ?, body = ? WHERE id = ?", updates)
            states = conn.execute("SELECT routing_key, dedup_key FROM key_state").fetchall()
            conn.executemany("UPDATE key_state SET dedup_key = ? WHERE routing_key = ? AND dedup_key = ?",
                             [(self.index(dk), rk, dk) for rk, dk in states])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("PRAGMA secure_delete=OFF")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and the WAL that held the new pages is emptied
        return OpenReport(events=len(events), notifications=len(notes), states=len(states), encrypted_now=True)

    def rekey(self, conn: sqlite3.Connection) -> OpenReport:
        """Re-encrypt with the primary key every value made with another key (and the index key)."""
        keyring = self._keyring
        if keyring is None:
            raise ConfigError("config: security.encryption_key: rekey needs the encryption keys configured")
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'index_key'").fetchone()
            if row is not None and (new := keyring.rotate_blob(bytes(row[0]), _INDEX_KEY_AAD)) is not None:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'index_key'", (new,))
            n_notes = n_events = 0
            for nid, blob in conn.execute("SELECT id, body FROM notifications").fetchall():
                if (new := keyring.rotate_blob(bytes(blob), self._notification_aad(nid))) is not None:
                    conn.execute("UPDATE notifications SET body = ? WHERE id = ?", (new, nid))
                    n_notes += 1
            for eid, rk, ref, action, phash, blob in conn.execute(
                    "SELECT id, routing_key, dedup_key, action, payload_hash, body FROM events").fetchall():
                if (new := keyring.rotate_blob(bytes(blob), self._event_aad(rk, ref, action, phash))) is not None:
                    conn.execute("UPDATE events SET body = ? WHERE id = ?", (new, eid))
                    n_events += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return OpenReport(events=n_events, notifications=n_notes)

    # ------------------------------------------------------------------ values

    def index(self, dedup_key: str) -> str:
        """What the ``dedup_key`` columns hold: the key itself, or its blind index."""
        if self._index is None:
            return dedup_key
        h = self._index.copy()
        h.update(dedup_key.encode())
        return "ix:" + h.hexdigest()[:40]

    def seal_event(self, body: bytes, routing_key: str, ref: str, action: str, payload_hash: str) -> bytes:
        if self._keyring is None:
            return body
        return self._keyring.encrypt_bytes(body, self._event_aad(routing_key, ref, action, payload_hash))

    def open_event(self, blob: bytes, routing_key: str, ref: str, action: str, payload_hash: str) -> bytes:
        """The event body; raises :class:`~receiver.crypto.DecryptError` for a value that fails authentication."""
        if self._keyring is None:
            return blob
        return self._keyring.decrypt_bytes(blob, self._event_aad(routing_key, ref, action, payload_hash))

    def seal_notification(self, body: bytes, nid: int) -> bytes:
        return body if self._keyring is None else self._keyring.encrypt_bytes(body, self._notification_aad(nid))

    def open_notification(self, blob: bytes, nid: int) -> bytes:
        return blob if self._keyring is None else self._keyring.decrypt_bytes(blob, self._notification_aad(nid))

    @staticmethod
    def _event_aad(routing_key: str, ref: str, action: str, payload_hash: str) -> bytes:
        return "\0".join(("pdrelay.outbox.events", routing_key, ref, action, payload_hash)).encode()

    @staticmethod
    def _notification_aad(nid: int) -> bytes:
        return f"pdrelay.outbox.notifications\0{nid}".encode()
