"""The /status JSON as rows of display text: durations made human, zeros left out, nothing escaped yet.

Pure functions from the status dict (see ``receiver.status``) to plain strings and lists of
strings; the template (:mod:`receiver.web.page`) escapes every one of them. A key the dict
lacks, or a value of an unexpected type, shows as "—" (or its text): the page an on-call
engineer opens during an incident never fails because one fact is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KeyRow", "StatusView", "human_duration", "status_view"]

MISSING = "—"
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def human_duration(seconds: object) -> str:
    """``252`` → ``"4 m 12 s"``: the two largest units (``"4 m"`` when the second is 0), whole seconds;
    under 10 s one decimal.

    ``None`` (or anything not a finite number ≥ 0) is ``"—"``.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
            or seconds < 0:
        return MISSING
    if seconds < 10:
        return f"{seconds:.1f} s"
    left = round(seconds)
    parts: list[str] = []
    for unit, size in _UNITS:
        if left >= size or parts:
            parts.append(f"{left // size} {unit}")
            left %= size
        if len(parts) == 2:
            break
    if len(parts) == 2 and parts[1].startswith("0 "):
        del parts[1]
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One routing key's line of the table."""

    name: str
    queued: str
    oldest: str
    budget: str
    next_send: str
    throttled: str
    dead_letters: list[str]


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything the page shows, as text."""

    version: str
    dry_run: bool
    events_url: str
    keys: list[KeyRow]
    queued: str
    dead: str
    breaker: list[tuple[str, str]]
    breaker_open: bool
    errors: list[list[str]]
    rules: list[tuple[str, str]]
    rules_sha256: str
    rule_names: list[str]
    reload_error_at: str | None
    reload_errors: list[str] = field(default_factory=list)
    encryption: list[tuple[str, str]] = field(default_factory=list)


def _text(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or MISSING
    return str(value)


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _key_row(entry: object) -> KeyRow:
    if not isinstance(entry, Mapping):  # a bare name
        return KeyRow(_text(entry), MISSING, MISSING, MISSING, MISSING, MISSING, [])
    budget = _map(entry.get("budget"))
    if budget:
        window = budget.get("window_seconds")
        budget_text = f"{_text(budget.get('used'))} / {_text(budget.get('limit'))} in {human_duration(window)}"
    else:
        budget_text = MISSING
    wait = entry.get("next_send_in_seconds")
    next_send = "now" if wait == 0 else human_duration(wait)
    oldest = entry.get("oldest_queued_age_seconds")
    dead = [f"{reason}: {_text(n)}" for reason, n in _map(entry.get("dead_letters")).items() if n]
    return KeyRow(
        name=_text(entry.get("name")), queued=_text(entry.get("queued")),
        oldest="none queued" if oldest is None else human_duration(oldest),
        budget=budget_text, next_send=next_send, throttled=_text(entry.get("throttled_429")), dead_letters=dead,
    )


def _breaker(breaker: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("state", _text(breaker.get("state")).replace("_", "-"))]
    if "endpoint" in breaker:
        rows.insert(0, ("endpoint", _text(breaker.get("endpoint"))))
    if "failures" in breaker:
        rows.append(("failures", f"{_text(breaker.get('failures'))} of {_text(breaker.get('failure_threshold'))}"))
    if breaker.get("recovery_timeout") is not None:
        rows.append(("recovery timeout", human_duration(breaker.get("recovery_timeout"))))
    if breaker.get("retry_in_seconds") is not None:
        rows.append(("next try in", human_duration(breaker.get("retry_in_seconds"))))
    return rows


def _encryption(enc: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("at rest", _text(enc.get("at_rest")))]
    if "key_ids" in enc:
        rows.append(("key ids", _text(enc.get("key_ids"))))
    if "encrypts_with" in enc:
        rows.append(("encrypts with", _text(enc.get("encrypts_with"))))
    return rows


def status_view(status: Mapping[str, Any]) -> StatusView:
    """The status dict as display text (see the module docstring)."""
    rules = _map(status.get("rules"))
    sha = _text(rules.get("sha256"))
    reload_error = rules.get("last_reload_error")
    failed = _map(reload_error)
    outbox = _map(status.get("outbox"))
    breaker = _map(status.get("breaker"))
    errors = [
        [_text(e.get("at")), _text(e.get("routing_key")), _text(e.get("reason")), _text(e.get("message"))]
        for e in _list(status.get("last_errors")) if isinstance(e, Mapping)
    ]
    return StatusView(
        version=_text(status.get("version")),
        dry_run=status.get("dry_run") is True,
        events_url=_text(status.get("events_url")),
        keys=[_key_row(entry) for entry in _list(status.get("routing_keys"))],
        queued=_text(outbox.get("queued")),
        dead=_text(outbox.get("dead")),
        breaker=_breaker(breaker),
        breaker_open=breaker.get("state") == "open",
        errors=errors,
        rules=[("sources", _text(rules.get("sources"))), ("loaded at", _text(rules.get("loaded_at")))],
        rules_sha256=sha,
        rule_names=[_text(n) for n in _list(rules.get("rule_names"))],
        reload_error_at=None if reload_error is None else _text(failed.get("at")),
        reload_errors=[_text(e) for e in _list(failed.get("errors"))],
        encryption=_encryption(_map(status.get("encryption"))),
    )
