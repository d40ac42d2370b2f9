"""Runs compiled rules over one Alertmanager notification. No I/O, no clock reads.

One :class:`~transforms.base.AlertEvent` per alert goes through the defaults and then the
rules, in order (:meth:`Engine.run`, the one loop over steps); the survivors are collapsed
per ``(routing_key, dedup_key)`` and rendered.

The time that ``when_time`` / ``unless_time`` steps test is the caller's ``now``; it is
converted into a step's zone only when such a step is reached, once per evaluation. A
:class:`Tracer` (:mod:`transforms.trace`) may watch the same loop step by step; without one
the loop pays a ``None`` test per step and copies nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from transforms.base import Alert, AlertEvent, Group, InvalidEvent, RenderedEvent
from transforms.collapse import collapse
from transforms.fields import DEFAULT_SEVERITY, FieldSetter
from transforms.render import render
from transforms.steps import Rule
from transforms.when import Moment

__all__ = ["Engine", "Evaluation", "SkippedBy", "StepObserver", "Tracer"]

SkippedBy = Literal["match", "when_time"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one notification produced."""

    events: tuple[RenderedEvent, ...]
    invalid: tuple[InvalidEvent, ...]
    dropped: tuple[tuple[str, str], ...]  # (fingerprint, rule name)
    template_errors: tuple[str, ...]  # "rule.field: message"
    suppressed_resolves: int  # resolves not produced because send_resolved is false


_NEEDS_NOW = "these rules have when_time or unless_time steps: evaluate them with now (a timezone-aware datetime)"


class StepObserver(Protocol):
    """What watches one alert's run: told of each step skipped, and around each step applied."""

    def skipped(self, rule: str, why: SkippedBy) -> None:
        """``rule`` did not apply: its matchers or its time guard said no."""

    def entered(self, rule: str, event: AlertEvent) -> None:
        """``rule`` (or ``"defaults"``) is about to change ``event``."""

    def left(self, event: AlertEvent | None) -> None:
        """The step entered last is done; ``event`` is the work item now (None: dropped)."""


class Tracer(Protocol):
    """Hands out one :class:`StepObserver` per alert of an evaluation."""

    def observe(self, alert: Alert) -> StepObserver:
        """The observer of ``alert``'s run."""
        ...


class Engine:
    """Compiled defaults + rules, and the default severity render falls back to."""

    __slots__ = ("_steps", "default_severity", "defaults", "rules", "timed")

    def __init__(
        self, defaults: Sequence[FieldSetter], rules: Sequence[Rule], default_severity: str = DEFAULT_SEVERITY
    ) -> None:
        self.defaults = tuple(defaults)
        self.rules = tuple(rules)
        self.default_severity = default_severity
        self.timed = any(rule.when is not None for rule in self.rules)  # some step has a time guard
        # Unpacked once here rather than read as attributes in the loop, per step and alert.
        self._steps = tuple((rule.guard, rule.when, rule.name, rule.action, rule.stop) for rule in self.rules)

    def run(
        self, alert: Alert, group: Group, moment: Moment | None = None, observer: StepObserver | None = None
    ) -> tuple[AlertEvent | None, AlertEvent]:
        """One alert through the defaults and the rules, in order.

        Returns the result (None when a step dropped the alert) and the last work item seen,
        whose ``fired`` then ends with the dropping rule. A step that sets ``stopped`` ends the run.
        ``moment`` is the time the time guards test (required when some step has one);
        ``observer`` is told of every step.
        """
        if moment is None and self.timed:
            raise ValueError(_NEEDS_NOW)
        event = AlertEvent(alert, group)
        if observer is not None and self.defaults:
            observer.entered("defaults", event)
        for setter in self.defaults:
            setter(event)
        if observer is not None and self.defaults:
            observer.left(event)
        for guard, when, name, action, stop in self._steps:
            if guard is not None and not guard(event.alert.labels):
                if observer is not None:
                    observer.skipped(name, "match")
                continue
            if when is not None and not when(moment):  # type: ignore[arg-type]  # checked above
                if observer is not None:
                    observer.skipped(name, "when_time")
                continue
            if observer is not None:
                observer.entered(name, event)
            event.fired.append(name)
            if action is not None:
                result = action(event)
                if result is None:
                    if observer is not None:
                        observer.left(None)
                    return None, event
                event = result  # a plugin may hand back another work item
            if stop:
                event.stopped = True
            if observer is not None:
                observer.left(event)
            if event.stopped:
                break
        return event, event

    def evaluate(self, group: Group, now: datetime | None = None, tracer: Tracer | None = None) -> Evaluation:
        """All alerts of ``group`` through the rules, collapse and render.

        ``now`` (timezone-aware) is the time the ``when_time`` / ``unless_time`` steps test:
        required when there are any. ``tracer`` watches every alert's run.
        """
        moment = None
        if now is not None:
            if now.utcoffset() is None:
                raise ValueError(f"now must carry a time zone, got naive {now.isoformat()}")
            if self.timed:
                moment = Moment(now)
        kept: list[AlertEvent] = []
        dropped: list[tuple[str, str]] = []
        errors: list[str] = []
        for alert in group.alerts:
            observer = tracer.observe(alert) if tracer is not None else None
            result, last = self.run(alert, group, moment, observer)
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
