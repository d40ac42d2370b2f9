"""Encryption at rest: AES-256-GCM with a rotating keyring, and printable tokens for users' own secrets.

A :class:`Keyring` is built once, at start, from ``security.encryption_key``
(:meth:`Keyring.from_secrets`, ``None`` when no key is configured) — an ordered list of
keys, each the base64 (standard or URL-safe, padding optional) of exactly 32 random bytes
(:func:`generate_key` makes one; :func:`receiver.secret.decode_keys` reads them, the same
function the settings use to refuse a bad key at load). The first key encrypts; every key
decrypts, so a key is rotated by putting a new one first, running ``pdrelay outbox
rekey`` (:meth:`Keyring.rotate_blob`), and only then dropping the old one.

Key ids
    Every key has a 4-byte id, ``SHA-256(b"pdrelay key-id v1\\x00" ‖ key)[:4]``, shown as
    8 hex digits. It is one-way, stable across restarts, and stored beside each
    ciphertext so decryption picks the right key and a missing key is named.

Stored values (:meth:`Keyring.encrypt_bytes` / :meth:`Keyring.decrypt_bytes`)::

    0x01 │ key id (4) │ nonce (12, random) │ AES-256-GCM ciphertext ‖ tag (16)

  The associated data authenticated by GCM is ``header ‖ aad``, where ``header`` is the
  first 5 bytes (version and key id) and ``aad`` is what the caller binds the value to
  (the outbox names the row: table, routing key, dedup key index, action, payload hash), so a value copied to
  another row, or re-labelled with another key id, fails to decrypt. Overhead: 33 bytes.

Tokens (:meth:`Keyring.encrypt` / :meth:`Keyring.decrypt`), for users' own secrets::

    "pdr1." + URL-safe base64, without padding, of the stored-value format above

  whose associated data is ``b"pdrelay token|" ‖ context`` (UTF-8): a token made for one
  context does not decrypt in another, nor as a stored value.

The outbox finds rows by dedup keys it does not store in clear through a blind index with
a random index key of its own (:mod:`receiver.outbox.sqlite.sealing`), so rotating keys
never changes an index.

Every failure to decrypt is a :class:`DecryptError` (a :class:`CryptoError`) whose
:attr:`~DecryptError.failure` says why; a bad key in the configuration is a
:class:`~receiver.errors.ConfigError` naming its position. No message, ``repr`` or log
line ever contains key material: a :class:`Keyring` shows only key ids and does not keep
the raw keys after construction. The AES objects are built once; a keyring is immutable
and may be shared between threads and the event loop.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from receiver.errors import ConfigError, PdrelayError
from receiver.secret import KEY_SIZE, KeyFormatError, Secret, decode_keys

__all__ = [
    "FORMAT_VERSION",
    "KEY_SIZE",
    "OVERHEAD",
    "TOKEN_PREFIX",
    "CryptoError",
    "DecryptError",
    "DecryptFailure",
    "Keyring",
    "blob_key_id",
    "generate_key",
]

FORMAT_VERSION = 1
TOKEN_PREFIX = "pdr1."

_VERSION_BYTE = bytes([FORMAT_VERSION])
_ID_SIZE = 4
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = 1 + _ID_SIZE
_BODY_OFFSET = _HEADER_SIZE + _NONCE_SIZE
OVERHEAD = _BODY_OFFSET + _TAG_SIZE
"""Bytes an encrypted value adds to its plaintext (33)."""

_KEY_ID_PREFIX = b"pdrelay key-id v1\x00"
_TOKEN_AAD_PREFIX = b"pdrelay token|"

# URL-safe → standard alphabet for the strict decoder; "+", "/" and "=" become "!", which it refuses.
_TOKEN_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
_STD_TO_TOKEN = bytes.maketrans(b"+/", b"-_")


class CryptoError(PdrelayError):
    """Base of the errors of encryption at rest."""


class DecryptFailure(enum.StrEnum):
    """Why a value could not be decrypted (closed set; usable as a metric label)."""

    NOT_ENCRYPTED = "not_encrypted"  # not a pdrelay ciphertext, or a format version this pdrelay cannot read
    TRUNCATED = "truncated"  # shorter than any ciphertext can be
    UNKNOWN_KEY = "unknown_key"  # made with a key id that is not configured
    AUTHENTICATION = "authentication"  # wrong key, altered data, or moved from another row / context


class DecryptError(CryptoError):
    """A value could not be decrypted; the message says why and never contains key material."""

    def __init__(self, message: str, failure: DecryptFailure, key_id: str | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.key_id = key_id


def generate_key() -> str:
    """A new random 256-bit key as standard base64 (what ``pdrelay keygen`` prints)."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


def blob_key_id(blob: bytes) -> str:
    """The key id (8 hex digits) recorded in a stored value's header; no key is needed."""
    _check_header(blob)
    return blob[1:_HEADER_SIZE].hex()


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_PREFIX + key).digest()[:_ID_SIZE]


def _check_header(blob: bytes) -> None:
    if not blob:
        raise DecryptError("cannot decrypt: truncated (the value is empty)", DecryptFailure.TRUNCATED)
    if blob[0] != FORMAT_VERSION:
        raise DecryptError(
            f"cannot decrypt: not a pdrelay encrypted value, or an unknown format version "
            f"(first byte 0x{blob[0]:02x}; this pdrelay reads version {FORMAT_VERSION})",
            DecryptFailure.NOT_ENCRYPTED,
        )
    if len(blob) < OVERHEAD:
        raise DecryptError(
            f"cannot decrypt: truncated ({len(blob)} bytes; an encrypted value has at least {OVERHEAD})",
            DecryptFailure.TRUNCATED,
        )


class Keyring:
    """Ordered AES-256-GCM keys: the first encrypts, any decrypts. Shows only key ids."""

    __slots__ = ("_aeads", "_ids", "_primary", "_primary_raw_id", "_where")

    def __init__(self, keys: Sequence[bytes], *, where: str = "security.encryption_key") -> None:
        """Prefer :meth:`from_keys`; this takes decoded 32-byte keys (``where`` only names them in messages)."""
        if not keys:
            raise ValueError("a keyring needs at least one key")
        aeads: dict[bytes, AESGCM] = {}
        for i, key in enumerate(keys):
            if len(key) != KEY_SIZE:
                raise ValueError(f"key [{i}] must be {KEY_SIZE} bytes")
            if _key_id(key) in aeads:
                raise ValueError(f"key [{i}] is a duplicate, or its key id collides with an earlier key")
            aeads[_key_id(key)] = AESGCM(key)
        self._where = where
        self._aeads = aeads
        self._primary_raw_id = _key_id(keys[0])
        self._primary = aeads[self._primary_raw_id]
        self._ids = tuple(_key_id(key).hex() for key in keys)

    @classmethod
    def from_keys(cls, keys: Sequence[Secret | str], *, where: str = "security.encryption_key") -> Keyring:
        """Build from configured keys (primary first); a bad or duplicate key is a ConfigError naming ``where[i]``."""
        try:
            decoded = decode_keys(keys, where)
        except KeyFormatError as exc:
            raise ConfigError(f"config: {exc}") from None
        seen: dict[bytes, int] = {}
        for i, key in enumerate(decoded):
            key_id = _key_id(key)
            if key_id in seen:
                raise ConfigError(f"config: {where}[{i}]: key id {key_id.hex()} collides with {where}[{seen[key_id]}]; "
                                  "generate another key")
            seen[key_id] = i
        return cls(decoded, where=where)

    @classmethod
    def from_secrets(cls, keys: Sequence[Secret], *, where: str = "security.encryption_key") -> Keyring | None:
        """The keyring of ``security.encryption_key`` (``settings.security.encryption_keys``), or ``None`` when
        no key is configured: what pdrelay stores then stays in clear."""
        return cls.from_keys(keys, where=where) if keys else None

    def __repr__(self) -> str:
        return f"<Keyring primary={self._ids[0]} ids=[{', '.join(self._ids)}]>"

    # -- observation -------------------------------------------------------------

    @property
    def primary_id(self) -> str:
        """Id (8 hex digits) of the key that encrypts."""
        return self._ids[0]

    @property
    def ids(self) -> tuple[str, ...]:
        """Ids of every configured key, primary first."""
        return self._ids

    # -- stored values -----------------------------------------------------------

    def encrypt_bytes(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt with the primary key, bound to ``aad``: ``0x01 ‖ key id ‖ nonce ‖ ciphertext ‖ tag``."""
        header = _VERSION_BYTE + self._primary_raw_id
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + self._primary.encrypt(nonce, plaintext, header + aad)

    def decrypt_bytes(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of :meth:`encrypt_bytes`'s ``blob``, which must be bound to the same ``aad``."""
        _check_header(blob)
        raw_id = blob[1:_HEADER_SIZE]
        aead = self._aeads.get(raw_id)
        if aead is None:
            raise DecryptError(
                f"cannot decrypt: encrypted with key id {raw_id.hex()}, which is not configured "
                f"(configured in {self._where}: {', '.join(self._ids)})",
                DecryptFailure.UNKNOWN_KEY, raw_id.hex(),
            )
        try:
            return aead.decrypt(blob[_HEADER_SIZE:_BODY_OFFSET], blob[_BODY_OFFSET:], blob[:_HEADER_SIZE] + aad)
        except InvalidTag:
            raise DecryptError(
                f"cannot decrypt: authentication failed with key id {raw_id.hex()} "
                "(wrong key, the data was altered, or it was moved from another row)",
                DecryptFailure.AUTHENTICATION, raw_id.hex(),
            ) from None

    def needs_rekey(self, blob: bytes) -> bool:
        """Was ``blob`` made with a key other than the primary? Reads the header only (no decryption);
        :meth:`rotate_blob` asks it first."""
        _check_header(blob)
        return blob[1:_HEADER_SIZE] != self._primary_raw_id

    def rotate_blob(self, blob: bytes, aad: bytes) -> bytes | None:
        """``blob`` re-encrypted with the primary key, or ``None`` when it already uses it (for ``outbox rekey``)."""
        if not self.needs_rekey(blob):
            return None
        return self.encrypt_bytes(self.decrypt_bytes(blob, aad), aad)

    # -- tokens ------------------------------------------------------------------

    def encrypt(self, value: str | bytes, *, context: str = "") -> str:
        """A printable token ``pdr1.<base64url>`` of ``value``, bound to ``context``."""
        data = value.encode("utf-8") if isinstance(value, str) else value
        blob = self.encrypt_bytes(data, _TOKEN_AAD_PREFIX + context.encode("utf-8"))
        return TOKEN_PREFIX + binascii.b2a_base64(blob, newline=False).translate(_STD_TO_TOKEN).rstrip(b"=").decode()

    def decrypt(self, token: str, *, context: str = "") -> str:
        """The text of a token made by :meth:`encrypt` with the same ``context``."""
        data = self.decrypt_to_bytes(token, context=context)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("cannot decrypt: the token holds bytes that are not UTF-8 text; use decrypt_to_bytes",
                               DecryptFailure.NOT_ENCRYPTED) from None

    def decrypt_to_bytes(self, token: str, *, context: str = "") -> bytes:
        """The bytes of a token made by :meth:`encrypt` with the same ``context``."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise DecryptError(f"cannot decrypt: not an encrypted token (expected the prefix {TOKEN_PREFIX!r})",
                               DecryptFailure.NOT_ENCRYPTED)
        body = token[len(TOKEN_PREFIX):]
        try:
            blob = binascii.a2b_base64(body.encode("ascii").translate(_TOKEN_TO_STD) + b"=" * (-len(body) % 4),
                                       strict_mode=True)
        except (UnicodeEncodeError, binascii.Error):
            raise DecryptError("cannot decrypt: the token is not valid URL-safe base64 without padding",
                               DecryptFailure.NOT_ENCRYPTED) from None
        try:
            return self.decrypt_bytes(blob, _TOKEN_AAD_PREFIX + context.encode("utf-8"))
        except DecryptError as exc:
            if exc.failure is DecryptFailure.AUTHENTICATION:
                raise DecryptError(
                    f"cannot decrypt: authentication failed with key id {exc.key_id} "
                    "(wrong key, the token was altered, or it was made for another context)",
                    exc.failure, exc.key_id,
                ) from None
            raise
