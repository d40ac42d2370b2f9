"""The facts behind ``GET /status``: :func:`status_snapshot` builds the JSON dict (the HTML page
renders the same dict), and :class:`RecentErrors` keeps the last delivery errors for it.

Everything here is read, not computed again: per routing key name its queue and dead letters
from the outbox (one grouped query: they survive restarts and follow operators' purges and
replays, which counters since start would not), its budget and next send from the limiter,
its 429s since start from the metrics; the breaker's state; the rules' hash, load time and
last reload error from the rulebook. Only configured routing key names are listed, never a
secret; texts that came from PagerDuty or an exception are capped and stripped of control
characters before they are kept.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from receiver.clock import Clock
from receiver.errors import Reason
from receiver.metrics import UNKNOWN_KEY

if TYPE_CHECKING:
    from receiver.state import AppState

__all__ = ["MAX_ERRORS", "MAX_MESSAGE", "RecentErrors", "clean_text", "rfc3339", "status_snapshot"]

MAX_ERRORS = 20
"""How many delivery errors /status keeps (newest first)."""
MAX_MESSAGE = 300
"""The longest error message kept, in characters (an ellipsis ends a cut one)."""
MAX_RULE_ERRORS = 20
MAX_RULE_ERROR = 500
"""A failed reload shows its first 20 ``file:line: message`` errors, each at most 500 characters."""


def rfc3339(epoch: float) -> str:
    """``2026-12-02T12:00:00Z`` for epoch seconds (whole seconds, UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_text(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with every control or format character (newlines, escapes, bidi overrides, lone
    surrogates) replaced by a space, runs of spaces collapsed, cut to ``limit`` characters."""
    cleaned = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text[: limit * 4])
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class RecentErrors:
    """A bounded ring of the latest delivery errors (in memory; a restart forgets them)."""

    def __init__(self, clock: Clock, routing_keys: frozenset[str], size: int = MAX_ERRORS) -> None:
        self._clock = clock
        self._keys = routing_keys
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, routing_key: str, reason: Reason, message: str) -> None:
        """Keep one error: ``routing_key`` as its configured name (``unknown`` otherwise), ``message`` cleaned."""
        self._ring.append({
            "at": rfc3339(self._clock.now()),
            "routing_key": routing_key if routing_key in self._keys else UNKNOWN_KEY,
            "reason": reason.value,
            "message": clean_text(message),
        })

    def snapshot(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [dict(e) for e in reversed(self._ring)]


async def status_snapshot(st: AppState) -> dict[str, Any]:
    """The /status dict (see the README's "Status" section for its keys)."""
    import receiver

    pd = st.settings.pagerduty
    clock = st.clock
    depths = await st.outbox.depth_by_key()
    now = clock.now()
    keys = []
    for name in sorted(pd.routing_keys):
        depth = depths.get(name)
        used, limit, window, next_in = st.limiter.budget(name)
        dead = dict.fromkeys((r.value for r in Reason), 0)
        oldest = None
        if depth is not None:
            for reason, n in depth.dead.items():
                if reason in dead:  # a reason no version of pdrelay writes (a hand-edited row) is not shown
                    dead[reason] += n
            if depth.oldest_queued_at is not None:
                oldest = round(max(0.0, now - depth.oldest_queued_at), 3)
        keys.append({
            "name": name,
            "queued": depth.queued if depth is not None else 0,
            "oldest_queued_age_seconds": oldest,
            "budget": {"used": used, "limit": limit, "window_seconds": window},
            "next_send_in_seconds": round(next_in, 3),
            "throttled_429": st.metrics.throttled_by_key.get(name, 0),
            "dead_letters": dead,
        })
    total = st.outbox.depth()
    breaker = st.breaker.snapshot()
    retry_in = breaker["retry_in"]
    rulebook = st.rulebook
    failed = rulebook.last_reload_error
    return {
        "version": str(receiver.__version__),
        "dry_run": st.dry_run,
        "events_url": pd.events_url,
        "routing_keys": keys,
        "outbox": {"queued": total.queued, "dead": total.dead},
        "breaker": {
            "endpoint": breaker["name"],
            "state": breaker["state"],
            "failures": breaker["failures"],
            "failure_threshold": breaker["failure_threshold"],
            "recovery_timeout": float(breaker["recovery_timeout"]),
            "retry_in_seconds": None if retry_in is None else round(retry_in, 3),
        },
        "last_errors": st.errors.snapshot(),
        "rules": {
            "sha256": rulebook.current.sha256,
            "sources": [str(p) for p in rulebook.current.sources],
            "loaded_at": rfc3339(rulebook.loaded_at),
            "rule_names": list(rulebook.rule_names),
            "last_reload_error": None if failed is None else {
                "at": rfc3339(failed[0]),
                "errors": [clean_text(e, MAX_RULE_ERROR) for e in failed[1][:MAX_RULE_ERRORS]],
            },
        },
        "encryption": _encryption(st),
    }


def _encryption(st: AppState) -> dict[str, Any]:
    """Whether stored alert content is encrypted, and with which key ids (one-way ids, not keys)."""
    keyring = st.keyring
    if keyring is None:
        return {"at_rest": "off"}
    return {"at_rest": "aes-256-gcm", "key_ids": list(keyring.ids), "encrypts_with": keyring.primary_id}
