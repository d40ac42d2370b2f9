"""Runs compiled rules over one Alertmanager notification. No I/O.

One :class:`~transforms.base.AlertEvent` per alert goes through the defaults and then the
rules, in order (:meth:`Engine.run`, the one loop over steps); the survivors are collapsed
per ``(routing_key, dedup_key)`` and rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transforms.base import Alert, AlertEvent, Group, InvalidEvent, RenderedEvent
from transforms.collapse import collapse
from transforms.fields import DEFAULT_SEVERITY, FieldSetter
from transforms.render import render
from transforms.steps import Rule

__all__ = ["Engine", "Evaluation"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one notification produced."""

    events: tuple[RenderedEvent, ...]
    invalid: tuple[InvalidEvent, ...]
    dropped: tuple[tuple[str, str], ...]  # (fingerprint, rule name)
    template_errors: tuple[str, ...]  # "rule.field: message"
    suppressed_resolves: int  # resolves not produced because send_resolved is false


class Engine:
    """Compiled defaults + rules, and the default severity render falls back to."""

    __slots__ = ("default_severity", "defaults", "rules")

    def __init__(
        self, defaults: Sequence[FieldSetter], rules: Sequence[Rule], default_severity: str = DEFAULT_SEVERITY
    ) -> None:
        self.defaults = tuple(defaults)
        self.rules = tuple(rules)
        self.default_severity = default_severity

    def run(self, alert: Alert, group: Group) -> tuple[AlertEvent | None, AlertEvent]:
        """One alert through the defaults and the rules, in order.

        Returns the result (None when a step dropped the alert) and the last work item seen,
        whose ``fired`` then ends with the dropping rule. A step that sets ``stopped`` ends the run.
        """
        event = AlertEvent(alert, group)
        for setter in self.defaults:
            setter(event)
        for rule in self.rules:
            guard = rule.guard
            if guard is not None and not guard(event.alert.labels):
                continue
            event.fired.append(rule.name)
            if rule.action is not None:
                result = rule.action(event)
                if result is None:
                    return None, event
                event = result  # a plugin may hand back another work item
            if rule.stop:
                event.stopped = True
            if event.stopped:
                break
        return event, event

    def evaluate(self, group: Group) -> Evaluation:
        """All alerts of ``group`` through the rules, collapse and render."""
        kept: list[AlertEvent] = []
        dropped: list[tuple[str, str]] = []
        errors: list[str] = []
        for alert in group.alerts:
            result, last = self.run(alert, group)
            errors.extend(last.template_errors)
            if result is None:
                dropped.append((alert.fingerprint, last.fired[-1] if last.fired else ""))
            else:
                kept.append(result)
        collapsed, suppressed = collapse(kept)
        events: list[RenderedEvent] = []
        invalid: list[InvalidEvent] = []
        for item in collapsed:
            rendered = render(item, self.default_severity)
            if isinstance(rendered, RenderedEvent):
                events.append(rendered)
            else:
                invalid.append(rendered)
        return Evaluation(tuple(events), tuple(invalid), tuple(dropped), tuple(errors), suppressed)
