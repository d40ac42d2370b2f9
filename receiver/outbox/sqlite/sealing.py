"""How the SQLite outbox stores alert content: in clear, or sealed with AES-256-GCM.

With ``security.encryption_key`` configured, every stored value that carries alert content
is encrypted by :class:`~receiver.crypto.Keyring`: the Alertmanager body of each
notification and each event's body (queued or dead-lettered). Dedup keys (which a rule may
build from labels) are looked up and ordered by, so the ``dedup_key`` columns of events and
state rows hold a keyed HMAC of the key (a blind index) instead of the key; an event's key
is read back from its sealed body. The associated data of every ciphertext names its row
(an event's id, routing key, index, action and payload hash; a notification's id), so a
value copied into another row, or a row copied under a new id, fails to decrypt instead of
being sent for the wrong alert, or twice.

Payload hashes (what duplicate suppression compares) are keyed as well: ``hk:`` and an
HMAC of the hash under a key derived from the index key, so a guess about an alert's
content cannot be confirmed from what is stored. Intake keys each incoming event's hash
the same way before comparing, so what was a duplicate stays one.

The blind index uses a random 256-bit index key made when the outbox is first encrypted
and stored in ``meta``, sealed with the primary encryption key. Rotating encryption keys
therefore never changes an index: ``rekey`` re-encrypts values and the index key, and the
old key can be removed afterwards.

A file encrypted before event ids were bound and payload hashes keyed is upgraded when
``serve`` or ``outbox rekey`` opens it (:meth:`Sealer.attach`): in one transaction, each
event is opened as it was sealed and sealed again bound to its id, with its payload hash
keyed, and the hashes in ``key_state`` are keyed alike. The ``hk:`` prefix tells a row's
format, so the upgrade is done once, and again for any row written the earlier way since.
Other operator commands leave a file not upgraded yet as it is (a server of the earlier
version may be running beside them): they read it, and a requeue writes the earlier way.
Once a file is upgraded, a value sealed the earlier way (restored from an old copy) is refused.

Start-up refuses, with a message naming ``security.encryption_key``, an encrypted outbox
without keys, with values under a key id that is not configured, or with encrypted values
but no index key (its ``meta`` row deleted: taken for a plain file, its sealed values would
be sealed a second time). A plain outbox is encrypted in place the first time keys are
configured.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any

from receiver.crypto import OVERHEAD, DecryptError, blob_key_id
from receiver.errors import ConfigError
from receiver.outbox.contract import OpenReport
from receiver.outbox.sealing import INDEX_KEY_AAD as _INDEX_KEY_AAD
from receiver.outbox.sealing import KEYED as _KEYED
from receiver.outbox.sealing import ValueSealer
from receiver.outbox.sealing import legacy_aad as _legacy_aad
from receiver.outbox.sealing import notification_aad as _notification_aad

__all__ = ["Sealer"]

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
# A stored value that begins like a ciphertext: a plain body is JSON and never starts with byte 0x01.
_LOOKS_SEALED = f"substr(CAST(body AS BLOB), 1, 1) = X'01' AND length(CAST(body AS BLOB)) >= {OVERHEAD}"
_SEALED_VALUES = (f"SELECT EXISTS (SELECT 1 FROM events WHERE {_LOOKS_SEALED}) "
                  f"OR EXISTS (SELECT 1 FROM notifications WHERE {_LOOKS_SEALED})")
_UNKEYED_EVENTS = f"FROM events WHERE substr(payload_hash, 1, 3) != '{_KEYED}'"
_UNKEYED_STATES = (f"FROM key_state WHERE substr(told_hash, 1, 3) != '{_KEYED}' "
                   f"OR substr(tail_hash, 1, 3) != '{_KEYED}'")
_EVENT_ROWS = "SELECT id, routing_key, dedup_key, action, payload_hash, CAST(body AS BLOB)"


class Sealer(ValueSealer):
    """Seals and opens the SQLite outbox's stored values (:class:`ValueSealer`), and checks, encrypts,
    upgrades and re-encrypts the file's rows."""

    # ------------------------------------------------------------------ start-up

    def attach(self, conn: sqlite3.Connection, where: str, *, encrypt_plain: bool = True) -> OpenReport:
        """Check the file against the configured keys, load the index key, encrypt a plain file
        (unless ``encrypt_plain`` is false: then a plain file with keys configured is refused) or
        upgrade one sealed the old way (only when ``encrypt_plain``).

        Raises :class:`ConfigError` when the file cannot be read with the configured keys.
        """
        conn.execute(_META)
        row = conn.execute("SELECT value FROM meta WHERE key = 'index_key'").fetchone()
        if row is None and conn.execute(_SEALED_VALUES).fetchone()[0]:
            raise ConfigError(
                f"config: security.encryption_key: the outbox {where} holds encrypted values but its index key "
                "(table meta, key 'index_key') is missing, so they cannot be read; restore the file from a "
                "backup, or move it aside to start with an empty outbox")
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
            self.set_index_key(self._keyring.decrypt_bytes(bytes(row[0]), _INDEX_KEY_AAD))
        except DecryptError as exc:
            raise ConfigError(f"config: security.encryption_key: cannot open the outbox {where}: {exc}") from None
        if encrypt_plain:
            return OpenReport(resealed=self._upgrade(conn))
        # An operator's command beside a possibly older server: the file stays as it is, and what the command
        # writes (a requeue) is written the way the file already is.
        self._legacy = self._needs_upgrade(conn)
        return OpenReport()

    @staticmethod
    def key_ids_in_use(conn: sqlite3.Connection) -> set[str]:
        ids: set[str] = set()
        for table, column in (("events", "body"), ("notifications", "body")):
            # substr: enough of each value for its header (an encrypted value is at least OVERHEAD bytes)
            for (blob,) in conn.execute(f"SELECT DISTINCT substr(CAST({column} AS BLOB), 1, {OVERHEAD}) "
                                        f"FROM {table} WHERE {column} IS NOT NULL"):
                with contextlib.suppress(DecryptError):  # not encrypted: reported when the row is read
                    ids.add(blob_key_id(bytes(blob)))
        return ids

    def _encrypt_plain_file(self, conn: sqlite3.Connection) -> OpenReport:
        """First start with keys: make the index key and seal every row already stored, in one transaction."""
        assert self._keyring is not None
        index_key = os.urandom(32)
        self.set_index_key(index_key)
        conn.execute("PRAGMA secure_delete=ON")  # the clear pages are overwritten, not just freed
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO meta (key, value) VALUES ('index_key', ?)",
                         (self._keyring.encrypt_bytes(index_key, _INDEX_KEY_AAD),))
            notes = conn.execute("SELECT id, CAST(body AS BLOB) FROM notifications").fetchall()
            conn.executemany("UPDATE notifications SET body = ? WHERE id = ?",
                             [(self.seal_notification(bytes(b), nid), nid) for nid, b in notes])
            events = conn.execute(f"{_EVENT_ROWS} FROM events").fetchall()
            updates = []
            for eid, rk, dk, action, phash, body in events:
                ref, keyed = self.index(dk), self.payload_hash(phash)
                updates.append((ref, keyed, self.seal_event(bytes(body), eid, rk, ref, action, keyed), eid))
            conn.executemany("UPDATE events SET dedup_key = ?, payload_hash = ?, body = ? WHERE id = ?", updates)
            states = conn.execute("SELECT routing_key, dedup_key, told_hash, tail_hash FROM key_state").fetchall()
            conn.executemany(
                "UPDATE key_state SET dedup_key = ?, told_hash = ?, tail_hash = ? "
                "WHERE routing_key = ? AND dedup_key = ?",
                [(self.index(dk), self._keyed_once(told), self._keyed_once(tail), rk, dk)
                 for rk, dk, told, tail in states])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("PRAGMA secure_delete=OFF")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and the WAL that held the new pages is emptied
        return OpenReport(events=len(events), notifications=len(notes), states=len(states), encrypted_now=True)

    def _upgrade(self, conn: sqlite3.Connection) -> int:
        """Seal again, bound to its id and with its payload hash keyed, every event sealed before both (no
        ``hk:`` prefix), and key the hashes of ``key_state`` alike; one transaction. Returns how many events."""
        if not self._needs_upgrade(conn):
            return 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            events = conn.execute(f"{_EVENT_ROWS} {_UNKEYED_EVENTS}").fetchall()
            conn.executemany("UPDATE events SET payload_hash = ?, body = ? WHERE id = ?",
                             [self._sealed_again(*r) for r in events])
            states = conn.execute(f"SELECT routing_key, dedup_key, told_hash, tail_hash {_UNKEYED_STATES}").fetchall()
            conn.executemany(
                "UPDATE key_state SET told_hash = ?, tail_hash = ? WHERE routing_key = ? AND dedup_key = ?",
                [(self._keyed_once(told), self._keyed_once(tail), rk, dk) for rk, dk, told, tail in states])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(events)

    @staticmethod
    def _needs_upgrade(conn: sqlite3.Connection) -> bool:
        found = conn.execute(f"SELECT EXISTS (SELECT 1 {_UNKEYED_EVENTS}) OR EXISTS (SELECT 1 {_UNKEYED_STATES})")
        return bool(found.fetchone()[0])

    def _sealed_again(self, eid: int, rk: str, ref: str, action: str, phash: str, blob: bytes) -> tuple[Any, ...]:
        assert self._keyring is not None
        keyed = self.payload_hash(phash)
        try:
            body = self._keyring.decrypt_bytes(bytes(blob), _legacy_aad(rk, ref, action, phash))
        except DecryptError:  # unreadable already: it stays so, and is set aside when claimed
            return keyed, blob, eid
        return keyed, self.seal_event(body, eid, rk, ref, action, keyed), eid

    def _keyed_once(self, payload_hash: str | None) -> str | None:
        if payload_hash is None or payload_hash.startswith(_KEYED):
            return payload_hash
        return self.payload_hash(payload_hash)

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
            for nid, blob in conn.execute("SELECT id, CAST(body AS BLOB) FROM notifications").fetchall():
                if (new := keyring.rotate_blob(bytes(blob), _notification_aad(nid))) is not None:
                    conn.execute("UPDATE notifications SET body = ? WHERE id = ?", (new, nid))
                    n_notes += 1
            for eid, rk, ref, action, phash, blob in conn.execute(f"{_EVENT_ROWS} FROM events").fetchall():
                if (new := keyring.rotate_blob(bytes(blob), self._aad(eid, rk, ref, action, phash))) is not None:
                    conn.execute("UPDATE events SET body = ? WHERE id = ?", (new, eid))
                    n_events += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return OpenReport(events=n_events, notifications=n_notes)
