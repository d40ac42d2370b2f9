"""Runs compiled rules over one Alertmanager notification. No I/O.

One :class:`~transforms.base.AlertEvent` per alert goes through the defaults and then
the rules (the semantics of :class:`~transforms.base.Chain`, plus a note of which rule
dropped it); the survivors are collapsed per ``(routing_key, dedup_key)`` and rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transforms.base import Alert, AlertEvent, Chain, Group, InvalidEvent, RenderedEvent
from transforms.collapse import pending_events
from transforms.fields import DEFAULT_SEVERITY, FieldSetter
from transforms.render import render_pending
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

    @property
    def chain(self) -> Chain:
        """Defaults and rules as one transform."""
        return Chain((*self.defaults, *self.rules))

    def run(self, alert: Alert, group: Group) -> tuple[AlertEvent | None, AlertEvent, str | None]:
        """The result (None if dropped), the last work item seen, and the dropping rule."""
        event = AlertEvent(alert, group, {}, {}, [], [])
        for setter in self.defaults:
            event = setter(event)
        labels = event.alert.labels
        for rule in self.rules:  # Rule.__call__, inlined: this loop runs for every rule and alert
            guard = rule.guard
            if guard is not None and not guard(labels):
                continue
            event.fired.append(rule.name)
            action = rule.action
            if action is not None:
                result = action(event)
                if result is None:
                    return None, event, rule.name
                event = result
                labels = event.alert.labels  # a plugin may hand back (or change) the work item
            if rule.stop:
                event.stopped = True
            if event.stopped:
                break
        return event, event, None

    def apply(self, alert: Alert, group: Group) -> AlertEvent | None:
        """One alert through the rules; None when a rule dropped it."""
        return self.run(alert, group)[0]

    def evaluate(self, group: Group) -> Evaluation:
        """All alerts of ``group`` through the rules, collapse and render."""
        kept: list[AlertEvent] = []
        dropped: list[tuple[str, str]] = []
        errors: list[str] = []
        for alert in group.alerts:
            result, last, dropped_by = self.run(alert, group)
            errors.extend(last.template_errors)
            if result is None:
                dropped.append((alert.fingerprint, dropped_by or ""))
            else:
                kept.append(result)
        pending, suppressed = pending_events(kept)
        events: list[RenderedEvent] = []
        invalid: list[InvalidEvent] = []
        for item in pending:
            rendered = render_pending(item, self.default_severity)
            if isinstance(rendered, RenderedEvent):
                events.append(rendered)
            else:
                invalid.append(rendered)
        return Evaluation(tuple(events), tuple(invalid), tuple(dropped), tuple(errors), suppressed)
