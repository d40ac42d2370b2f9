"""The Redis outbox's hashes as values: an item's fields ↔ :class:`~receiver.outbox.OutboxItem`, a key's
state fields ↔ :class:`~receiver.delivery.KeyState`.

Every field is text (redis-py decodes replies as UTF-8, a value that is not as lone surrogates);
a body is sealed bytes and read as such. An item that cannot be sent (its body fails authentication,
is not JSON, or is not the event its fields say) raises :class:`Unreadable` — or, for operators,
shows ``{reason: why}`` instead of its body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.delivery import KeyState, Word
from receiver.outbox.contract import OutboxItem
from receiver.outbox.sealing import Unreadable, ValueSealer, open_body

__all__ = ["Unreadable", "item_from", "state_fields", "state_from"]



def _text(fields: Mapping[bytes, bytes], name: str, default: str = "") -> str:
    raw = fields.get(name.encode())
    return default if raw is None else raw.decode("utf-8", "surrogateescape")


def _number(fields: Mapping[bytes, bytes], name: str) -> float | None:
    raw = fields.get(name.encode())
    return None if raw is None or raw == b"" else float(raw)


def item_from(item_id: int, fields: Mapping[bytes, bytes], sealer: ValueSealer, *, lenient: bool = False,
              superseded: bool = False) -> OutboxItem:
    """An item hash (raw bytes) as an item; raises :class:`Unreadable` unless ``lenient``."""
    rk, ref, action, phash = (_text(fields, n) for n in ("rk", "ref", "action", "phash"))
    try:
        body = _body(item_id, fields, sealer, rk, ref, action, phash, check=not lenient)
    except Unreadable as exc:
        if not lenient:
            raise
        body = {exc.reason.value: str(exc)}
    dedup_key = ref
    if sealer.encrypted and isinstance(body.get("dedup_key"), str):
        dedup_key = body["dedup_key"]  # the field holds a blind index; the body has the key
    status = _number(fields, "lstatus")
    return OutboxItem(
        id=item_id, routing_key=rk, dedup_key=dedup_key, action=action, body=body,
        status=_text(fields, "status"), attempts=int(_number(fields, "attempts") or 0),
        created_at=_number(fields, "created") or 0.0, next_attempt_at=_number(fields, "next") or 0.0,
        payload_hash=phash, rules=tuple(r for r in _text(fields, "rules").split(",") if r),
        reason=_text(fields, "reason") or None, last_status=None if status is None else int(status),
        last_error=_text(fields, "lerror") or None, superseded=superseded,
    )


def _body(item_id: int, fields: Mapping[bytes, bytes], sealer: ValueSealer, rk: str, ref: str, action: str,
          phash: str, *, check: bool) -> dict[str, Any]:
    return open_body(sealer, fields.get(b"body", b""), item_id, rk, ref, action, phash, check=check)


def _word(fields: Mapping[bytes, bytes], p: str) -> Word | None:
    action = fields.get(f"{p}a".encode())
    if action is None:
        return None
    return Word(action.decode(), _text(fields, f"{p}h"), float(fields[f"{p}t".encode()]),  # type: ignore[arg-type]
                int(fields[f"{p}i".encode()]))


def state_from(fields: Mapping[bytes, bytes]) -> KeyState:
    if not fields:
        return KeyState()
    return KeyState(told=_word(fields, "t"), tail=_word(fields, "q"), latest=int(fields.get(b"latest", b"0")),
                    uncertain=_text(fields, "unc") or None)


def state_fields(state: KeyState) -> dict[str, str | int | float]:
    """The fields of a state hash (written whole: DEL then HSET)."""
    out: dict[str, str | int | float] = {"latest": state.latest}
    for p, word in (("t", state.told), ("q", state.tail)):
        if word is not None:
            out.update({f"{p}a": word.action, f"{p}h": word.payload_hash, f"{p}t": repr(word.at),
                        f"{p}i": word.item_id})
    if state.uncertain is not None:
        out["unc"] = state.uncertain
    return out
