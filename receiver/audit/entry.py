"""One audit entry: its names and values, its canonical JSON line, and the hash chain that links lines.

On-disk format
--------------
UTF-8 text, one entry per line, each line ending in ``\\n``. A line is the *canonical JSON*
of the entry: ``json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
(no NaN or Infinity). Every entry has these keys, plus any fields the caller gave:

``seq``    int, 1 for the first entry of a chain, +1 per entry, across restarts and rotated files
``ts``     RFC 3339 UTC with milliseconds from the injected clock, ``2023-11-14T22:13:20.123Z``
``event``  dotted lower-case name, ``intake.accepted``
``actor``  who asked (token name, user, ``cli``) or ``null``
``prev``   the *line hash* of the previous entry; 64 zeros for the first entry of a chain
``hash``   the *entry hash* of this entry

and, when the chain is keyed (``audit.hmac_key``), ``"mac": "hmac-sha256"``.

A :class:`~receiver.secret.Secret` is written as ``"********"`` (also inside lists and
dicts); tuples become lists; anything else JSON cannot hold is written as its ``str()``:
objects, NaN and infinities (``"nan"``), non-string dict keys. Text that UTF-8 cannot
encode (lone surrogates) is written with backslash escapes. The names ``seq``, ``ts``,
``prev``, ``hash`` and ``mac`` are reserved and refused as field names, like event names that
are not dotted lower-case (both raise :class:`AuditError`).

Much of what an entry says comes from clients (a receiver name, a label name in an error,
an identity, a remote address). One rule bounds all of it: any text -- a value, a dict key,
a field name, the actor -- longer than ``CAP_OVER`` (256) characters is written as its first
``CAP_KEEP`` (64) characters, ``…`` and ``[sha256:<first 16 hex digits>, <length> chars]``
(the hash of the whole text in UTF-8), so that it can still be matched, never copied whole.

Hashing rule
------------
* entry hash = hex SHA-256 of the UTF-8 canonical JSON of the entry *without* its ``hash``
  key; in a keyed chain (the entry has ``"mac": "hmac-sha256"``), hex HMAC-SHA256 of the same
  bytes with the key, so that nobody without the key can rewrite entries consistently;
* line hash = hex SHA-256 of the entry's full line as stored (the canonical JSON *with*
  ``hash``), without the trailing newline;
* ``prev`` of an entry = the line hash of the entry before it.

So the line hash commits to everything that line says, and each ``prev`` commits to the
whole history before it. The *head* of a chain is the line hash of its last entry: the
``prev`` the next entry will carry; written with the entry's ``seq`` as ``"<seq>:<line
hash>"`` it is what the writer reports after each write, to be kept outside the file.
Anyone can check a file with (``KEY`` = ``audit.hmac_key`` as bytes, or ``None``)::

    import hashlib, hmac, json
    KEY = None
    def canon(o):
        return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    prev = None                                   # unknown before the first line of the file
    keyed = False                                 # once an entry is keyed, all later ones are
    with open("audit.jsonl", "rb") as f:
        for raw in f:
            line = raw[:-1]                       # strip the single trailing b"\\n"
            entry = json.loads(line)
            claimed = entry.pop("hash")
            if entry.get("mac") == "hmac-sha256":
                assert KEY is not None, "keyed entries: the key is needed to check them"
                keyed, own = True, hmac.new(KEY, canon(entry), "sha256").hexdigest()
            else:
                assert "mac" not in entry and not keyed, "not keyed after keyed entries"
                own = hashlib.sha256(canon(entry)).hexdigest()
            assert hmac.compare_digest(own, claimed), "edited"
            assert prev is None or entry["prev"] == prev, "chain broken"
            prev = hashlib.sha256(line).hexdigest()
    assert KEY is None or keyed, "a key was given but no entry is keyed"
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from receiver.errors import PdrelayError
from receiver.secret import Secret

__all__ = [
    "CAP_KEEP",
    "CAP_OVER",
    "MAC",
    "REDACTED",
    "ZERO_HASH",
    "AuditError",
    "Chain",
    "cap",
    "canonical_json",
    "entry_hash",
    "format_head",
    "parse_entry",
    "parse_head",
    "prepare",
    "timestamp",
]

ZERO_HASH = "0" * 64
"""The ``prev`` of the first entry of a chain."""

REDACTED = "********"
"""What a :class:`~receiver.secret.Secret` is written as."""

MAC = "hmac-sha256"
"""The ``mac`` of an entry of a keyed chain."""

CAP_OVER = 256
"""Text longer than this many characters is capped (see the module docstring)."""

CAP_KEEP = 64
"""How many characters of a capped text are kept."""

_REQUIRED = ("seq", "ts", "event", "actor", "prev", "hash")  # every entry has them; refused as field names
_RESERVED = frozenset((*_REQUIRED, "mac"))
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_HEAD_RE = re.compile(r"(0|[1-9][0-9]{0,18}):([0-9a-f]{64})")
_MAX_DEPTH = 32  # deeper lists and dicts are written as their str()

# Fed only values that prepare() made JSON-able, or what json.loads read back.
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


class AuditError(PdrelayError):
    """The audit log cannot take an entry (closed, or an invalid event or field name)."""


def canonical_json(value: object) -> str:
    """The canonical JSON text the hashing rule is defined over (keys sorted, no spaces, UTF-8)."""
    return _ENCODER.encode(value)


# --------------------------------------------------------------------------- values


def cap(text: str) -> str:
    """``text`` if it has at most ``CAP_OVER`` characters, else its first ``CAP_KEEP``, ``…`` and
    ``[sha256:<16 hex digits>, <length> chars]``: the one rule for text in an entry."""
    if len(text) <= CAP_OVER:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:16]
    return f"{text[:CAP_KEEP]}…[sha256:{digest}, {len(text)} chars]"


def _text(text: str) -> str:
    """``text`` capped, with what UTF-8 cannot encode (lone surrogates) written as backslash escapes."""
    text = cap(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clean(value: object, depth: int = 0) -> object:
    """A JSON-able copy of ``value`` that reads back the same: secrets redacted, the rest ``str()``."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {_clean_key(k): _clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_clean(v, depth + 1) for v in value]
    return _text(str(value))


def _clean_key(key: object) -> str:
    # Non-string keys become str() here, not in json: json would sort 2 before 10 and then
    # write "10" after "2", and the entry would not read back to the same canonical text.
    return _text(key if isinstance(key, str) else str(key))


def prepare(event: str, actor: object, fields: Mapping[str, object]) -> tuple[str | None, dict[str, object]]:
    """Check the event name and field names; the actor as text and a JSON-able copy of the fields.

    Raises :class:`AuditError` for an event name that is not dotted lower-case or a reserved field name.
    """
    if not isinstance(event, str) or not _EVENT_RE.fullmatch(event):
        raise AuditError(f"audit event must be a dotted lower-case name such as 'intake.accepted', got {event!r}")
    if not _RESERVED.isdisjoint(fields):
        taken = sorted(_RESERVED.intersection(fields))
        raise AuditError(f"audit field name(s) {', '.join(taken)} are reserved")
    text = None if actor is None else _text(actor if type(actor) is str else str(_clean(actor)))
    return text, {_clean_key(k): _clean(v) for k, v in fields.items()}


def format_head(seq: int, line_hash: str) -> str:
    """The head of a chain as it is kept outside the file: ``"<seq>:<line hash>"`` (``seq`` 0: empty)."""
    return f"{seq}:{line_hash}"


def parse_head(text: str) -> tuple[int, str]:
    """``seq`` and line hash of a head written by :func:`format_head`; :class:`ValueError` if it is not one."""
    match = _HEAD_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"a chain head is <seq>:<64 lower-case hex digits>, got {cap(text)!r}")
    seq, line_hash = int(match.group(1)), match.group(2)
    if seq == 0 and line_hash != ZERO_HASH:
        raise ValueError("the head of an empty chain (seq 0) has 64 zeros for its hash")
    return seq, line_hash


def head_lost(kept: str, start: str) -> str | None:
    """What the file lost, when the head ``kept`` outside it (the outbox's) is not in the file whose head
    is ``start`` at open; ``None`` when the file reaches it. A file ahead of it is fine (a crash before the
    head was kept, or entries written by operator commands), and whether it holds that very entry is what
    ``pdrelay audit verify --head`` checks."""
    try:
        kept_seq, kept_hash = parse_head(kept)
    except ValueError as exc:
        return f"the head kept in the outbox is not one: {exc}"
    seq, line_hash = parse_head(start)
    if seq < kept_seq:
        return f"the file ends at entry {seq}, before entry {kept_seq} (truncated, emptied or replaced)"
    if seq == kept_seq and line_hash != kept_hash:
        return f"entry {seq} is not the entry written (rewritten or replaced)"
    return None


def entry_hash(body: bytes, key: bytes | None) -> str:
    """The entry hash of ``body`` (canonical JSON without ``hash``): SHA-256, or HMAC-SHA256 with ``key``."""
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def timestamp(t: float) -> str:
    """``t`` (seconds since the epoch) in RFC 3339 UTC with milliseconds: ``2023-11-14T22:13:20.123Z``."""
    second, milli = divmod(math.floor(t * 1000.0), 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{milli:03d}Z"


# --------------------------------------------------------------------------- the chain


class Chain:
    """The head of a chain (last ``seq`` and line hash), and how the next line is made from it;
    keyed with ``key`` (HMAC-SHA256 entry hashes) when one is given."""

    __slots__ = ("_key", "head", "seq")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and not key:
            raise ValueError("an audit HMAC key must not be empty")
        self._key = key
        self.seq = 0
        self.head = ZERO_HASH

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def build(self, event: str, actor: str | None, fields: Mapping[str, object], ts: str) -> tuple[bytes, str]:
        """The next entry's line (with its newline) and its line hash; the head does not move yet.

        ``actor`` and ``fields`` are what :func:`prepare` returned."""
        entry: dict[str, object] = {**fields, "seq": self.seq + 1, "ts": ts, "event": event, "actor": actor,
                                    "prev": self.head}
        if self._key is not None:
            entry["mac"] = MAC
        entry["hash"] = entry_hash(canonical_json(entry).encode("utf-8"), self._key)
        line = canonical_json(entry).encode("utf-8")
        return line + b"\n", hashlib.sha256(line).hexdigest()

    def advance(self, line_hash: str) -> None:
        """The line just built was stored: it is the new head."""
        self.seq += 1
        self.head = line_hash


# --------------------------------------------------------------------------- reading back


def parse_entry(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The entry on a line (without its newline), or None and why it is not one."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        return None, "missing field(s) " + ", ".join(missing)
    seq = obj["seq"]
    if type(seq) is not int or seq < 1:
        return None, "seq is not a positive integer"
    for key in ("prev", "hash"):
        value = obj[key]
        if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
            return None, f"{key} is not 64 lower-case hex digits"
    if not isinstance(obj["ts"], str) or not isinstance(obj["event"], str):
        return None, "ts or event is not a string"
    if obj["actor"] is not None and not isinstance(obj["actor"], str):
        return None, "actor is neither a string nor null"
    if "mac" in obj and obj["mac"] != MAC:
        return None, f"mac is not {MAC!r}"
    return obj, ""
