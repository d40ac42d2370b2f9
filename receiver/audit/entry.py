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

A :class:`~receiver.secret.Secret` is written as ``"********"`` (also inside lists and
dicts); tuples become lists; anything else JSON cannot hold is written as its ``str()``:
objects, NaN and infinities (``"nan"``), non-string dict keys. Text that UTF-8 cannot
encode (lone surrogates) is written with backslash escapes. The names ``seq``, ``ts``,
``prev`` and ``hash`` are reserved and refused as field names, like event names that are
not dotted lower-case (both raise :class:`AuditError`).

Hashing rule
------------
* entry hash = hex SHA-256 of the UTF-8 canonical JSON of the entry *without* its ``hash`` key;
* line hash = hex SHA-256 of the entry's full line as stored (the canonical JSON *with*
  ``hash``), without the trailing newline;
* ``prev`` of an entry = the line hash of the entry before it.

So the line hash commits to everything that line says, and each ``prev`` commits to the
whole history before it. The *head* of a chain is the line hash of its last entry: the
``prev`` the next entry will carry. Anyone can check a file with::

    import hashlib, json
    def canon(o):
        return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    prev = None                                   # unknown before the first line of the file
    for raw in open("audit.jsonl", "rb"):
        line = raw[:-1]                           # strip the single trailing b"\\n"
        entry = json.loads(line)
        claimed = entry.pop("hash")
        assert hashlib.sha256(canon(entry)).hexdigest() == claimed, "edited"
        assert prev is None or entry["prev"] == prev, "chain broken"
        prev = hashlib.sha256(line).hexdigest()
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from receiver.errors import PdrelayError
from receiver.secret import Secret

__all__ = [
    "REDACTED",
    "ZERO_HASH",
    "AuditError",
    "Chain",
    "canonical_json",
    "parse_entry",
    "prepare",
    "timestamp",
]

ZERO_HASH = "0" * 64
"""The ``prev`` of the first entry of a chain."""

REDACTED = "********"
"""What a :class:`~receiver.secret.Secret` is written as."""

_REQUIRED = ("seq", "ts", "event", "actor", "prev", "hash")  # every entry has them; refused as field names
_RESERVED = frozenset(_REQUIRED)
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_MAX_DEPTH = 32  # deeper lists and dicts are written as their str()

# Fed only values that prepare() made JSON-able, or what json.loads read back.
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


class AuditError(PdrelayError):
    """The audit log cannot take an entry (closed, or an invalid event or field name)."""


def canonical_json(value: object) -> str:
    """The canonical JSON text the hashing rule is defined over (keys sorted, no spaces, UTF-8)."""
    return _ENCODER.encode(value)


# --------------------------------------------------------------------------- values


def _text(text: str) -> str:
    """``text``, with what UTF-8 cannot encode (lone surrogates) written as backslash escapes."""
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


def timestamp(t: float) -> str:
    """``t`` (seconds since the epoch) in RFC 3339 UTC with milliseconds: ``2023-11-14T22:13:20.123Z``."""
    second, milli = divmod(math.floor(t * 1000.0), 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{milli:03d}Z"


# --------------------------------------------------------------------------- the chain


class Chain:
    """The head of a chain (last ``seq`` and line hash), and how the next line is made from it."""

    __slots__ = ("head", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.head = ZERO_HASH

    def build(self, event: str, actor: str | None, fields: Mapping[str, object], ts: str) -> tuple[bytes, str]:
        """The next entry's line (with its newline) and its line hash; the head does not move yet.

        ``actor`` and ``fields`` are what :func:`prepare` returned."""
        entry: dict[str, object] = {**fields, "seq": self.seq + 1, "ts": ts, "event": event, "actor": actor,
                                    "prev": self.head}
        entry["hash"] = hashlib.sha256(canonical_json(entry).encode("utf-8")).hexdigest()
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
    return obj, ""
