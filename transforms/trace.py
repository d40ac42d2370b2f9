"""The rule trace: what each step did to each alert, as plain JSON data. No I/O.

:func:`trace_to_json` runs the rule set's own evaluation (:meth:`transforms.engine.Engine.evaluate`,
the same loop as at intake) with a :class:`~transforms.engine.Tracer` watching it. The tracer
copies an alert's fields and vars before each step that applies and compares them after, so
the copying happens only when tracing. ``pdrelay test-rules --trace`` prints the result, and the
``/status`` playground shows it.

Per alert, the steps appear in order until the run ends: a step that drops the alert or stops
the chain is the last one listed. The defaults, when the rule set has any, come first as a
step named ``defaults``. A change names a field (``summary``, ``routing_key``, ...) or a var
(``vars.host``); ``old`` or ``new`` is null when the field was not set. Values are the engine's
own, made JSON-able (maps, lists, text, numbers, booleans; anything else as its text):
alert content is hostile, and whoever displays them escapes them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from transforms.base import Alert, AlertEvent, Group
from transforms.engine import SkippedBy
from transforms.report import evaluation_to_json
from transforms.rules import RuleSet

__all__ = ["trace_to_json"]


def trace_to_json(ruleset: RuleSet, group: Group, now: datetime) -> dict[str, Any]:
    """``evaluation_to_json`` of ``group`` evaluated at ``now``, plus ``trace`` and ``template_errors``.

    ``trace``: ``[{"fingerprint", "alertname", "steps": [{"rule", "matched", "skipped_by",
    "changes": [{"field", "old", "new"}], "dropped", "stopped"}]}]``, one entry per alert in
    the notification's order; ``skipped_by`` is null, ``"match"`` or ``"when_time"`` (the
    step's ``when_time`` or ``unless_time``). ``template_errors``: ``[{"fingerprint", "rule",
    "field", "message"}]`` for every template that failed and fell back, in order.
    """
    tracer = _Tracer()
    evaluation = ruleset.engine.evaluate(group, now, tracer)
    out = evaluation_to_json(evaluation)
    out["trace"] = [alert.to_json() for alert in tracer.alerts]
    out["template_errors"] = [error for alert in tracer.alerts for error in alert.errors]
    return out


class _Tracer:
    """Hands out one :class:`_AlertTrace` per alert and keeps them in order."""

    def __init__(self) -> None:
        self.alerts: list[_AlertTrace] = []

    def observe(self, alert: Alert) -> _AlertTrace:
        trace = _AlertTrace(alert)
        self.alerts.append(trace)
        return trace


class _AlertTrace:
    """The steps of one alert's run (a :class:`~transforms.engine.StepObserver`)."""

    def __init__(self, alert: Alert) -> None:
        self.fingerprint = alert.fingerprint
        self.alertname = alert.labels.get("alertname", "")
        self.steps: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        self._rule = ""
        self._event: AlertEvent | None = None
        self._before: tuple[dict[str, Any], dict[str, Any], int] = ({}, {}, 0)

    def skipped(self, rule: str, why: SkippedBy) -> None:
        self.steps.append(
            {"rule": rule, "matched": False, "skipped_by": why, "changes": [], "dropped": False, "stopped": False}
        )

    def entered(self, rule: str, event: AlertEvent) -> None:
        self._rule = rule
        self._event = event
        self._before = (copy.deepcopy(event.fields), copy.deepcopy(event.vars), len(event.template_errors))

    def left(self, event: AlertEvent | None) -> None:
        after = event if event is not None else self._event
        assert after is not None  # entered() came first
        fields, vars_, errors_seen = self._before
        changes = _changes(fields, after.fields, "")
        changes.extend(_changes(vars_, after.vars, "vars."))
        self.steps.append({
            "rule": self._rule, "matched": True, "skipped_by": None, "changes": changes,
            "dropped": event is None, "stopped": event is not None and event.stopped,
        })
        for entry in after.template_errors[errors_seen:]:
            self.errors.append(self._error(entry))
        self._event = None

    def _error(self, entry: str) -> dict[str, str]:
        """``"rule.field: message"`` split up (the rule is the step's own name, which may hold dots)."""
        field, message = "", entry
        prefix = self._rule + "."
        if entry.startswith(prefix):
            head, sep, tail = entry[len(prefix):].partition(": ")
            if sep:
                field, message = head, tail
        return {"fingerprint": self.fingerprint, "rule": self._rule, "field": field, "message": message}

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "alertname": self.alertname, "steps": self.steps}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``{"field", "old", "new"}`` for every key added, removed or changed, in the order the keys appear."""
    changes: list[dict[str, Any]] = []
    for key in (*old, *(k for k in new if k not in old)):
        before, after = old.get(key), new.get(key)
        if key in old and key in new and _same(before, after):
            continue
        changes.append({"field": prefix + str(key), "old": _jsonable(before), "new": _jsonable(after)})
    return changes


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # a plugin's value with an odd __eq__
        return False


def _jsonable(value: Any) -> Any:
    """``value`` as JSON data: maps (text keys), lists, text, numbers, booleans, null; anything else as text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)  # a Markup or other str subclass as plain text
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    return str(value)
