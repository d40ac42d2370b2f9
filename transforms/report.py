"""Evaluation → plain JSON data, as ``pdrelay test-rules`` prints it and golden tests compare it. No I/O."""

from __future__ import annotations

from typing import Any

from transforms.engine import Evaluation

__all__ = ["evaluation_to_json"]


def evaluation_to_json(evaluation: Evaluation) -> dict[str, Any]:
    """``{"events": [...], "invalid": [...], "dropped": [...]}`` for one evaluation.

    Events: ``routing_key`` (the key's name), ``dedup_key``, ``action``, ``body``, ``rules``.
    Invalid: the same keys with ``reason`` instead of ``body``. Dropped: ``fingerprint``, ``rule``.
    """
    return {
        "events": [
            {
                "routing_key": event.routing_key,
                "dedup_key": event.dedup_key,
                "action": event.action,
                "body": event.body,
                "rules": list(event.rules),
            }
            for event in evaluation.events
        ],
        "invalid": [
            {
                "routing_key": event.routing_key,
                "dedup_key": event.dedup_key,
                "action": event.action,
                "reason": event.reason,
                "rules": list(event.rules),
            }
            for event in evaluation.invalid
        ],
        "dropped": [{"fingerprint": fingerprint, "rule": rule} for fingerprint, rule in evaluation.dropped],
    }
