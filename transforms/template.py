"""Rule templates: Jinja2 in an immutable sandbox on a render budget, compiled when the rules load. No I/O.

Names in scope: ``labels``, ``annotations``, ``vars`` (what ``extract`` captured),
``alert`` (status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint) and
``group`` (receiver, status, groupKey, groupLabels, commonLabels, commonAnnotations,
externalURL, truncatedAlerts, notification_reason, routeLabels).

- A string without ``{{`` or ``{%`` is a constant; Jinja never sees it.
- A template that is exactly one ``{{ expression }}`` keeps the expression's type:
  ``'{{ labels }}'`` is a mapping. Anything else renders to ``str``.
- A missing name or key is Jinja's default ``Undefined``: it renders as ``""`` (and a
  single-expression template yields ``""``) and works with ``default(...)``; going
  *through* a missing key (``labels.a.b``) is an error, as in Jinja.
- Unsafe attribute access (``labels.__class__``) raises ``SecurityError`` instead of
  Jinja's silent empty string.
- Every Jinja render runs on a fresh :class:`~transforms.budget.Budget` (output, loop
  iterations, calls, value sizes; see :mod:`transforms.budget` and
  :mod:`transforms.sandbox`): a template that would go past it fails with
  ``BudgetExceeded: …`` before doing the work. A template whose AST shows it cannot
  outgrow the alert (:mod:`transforms.straight`: no loops, macros, ``*``...) renders
  without the counting.
- Every render failure is raised as :class:`RenderError`; the caller records it and
  falls back.
- Templates made of plain paths, constants and ``default`` take :mod:`transforms.fastpath`,
  which gives Jinja's result without Jinja's per-render cost.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Literal

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.environment import TemplateExpression

from transforms import budget
from transforms.base import Alert, AlertEvent, Group
from transforms.fastpath import MISSING, Evaluate, Getter, Slow, expression, interpolation, key_render
from transforms.sandbox import RuleEnvironment, StraightEnvironment, bound
from transforms.straight import is_straight

__all__ = [
    "RenderError",
    "Template",
    "TemplateError",
    "alert_dict",
    "compile_template",
    "group_dict",
    "template_context",
]


class TemplateError(ValueError):
    """A template that does not compile (reported when the rules load)."""


class RenderError(Exception):
    """A template that failed while rendering one alert."""


# Configuration only (no loader; each render's budget is its own): sharing one instance is safe.
_ENV = RuleEnvironment()
_STRAIGHT_ENV = StraightEnvironment()


def alert_dict(alert: Alert) -> dict[str, Any]:
    """The ``alert`` template name: the alert as Alertmanager's webhook spells it."""
    return {
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": alert.starts_at,
        "endsAt": alert.ends_at,
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def group_dict(group: Group) -> dict[str, Any]:
    """The ``group`` template name; fields a body lacks are ``""`` / ``{}``, never None."""
    return {
        "receiver": group.receiver,
        "status": group.status,
        "groupKey": group.group_key,
        "groupLabels": group.group_labels,
        "commonLabels": group.common_labels,
        "commonAnnotations": group.common_annotations,
        "externalURL": group.external_url,
        "truncatedAlerts": group.truncated_alerts,
        "routeLabels": group.route_labels,
        "notification_reason": group.notification_reason or "",
    }


def template_context(event: AlertEvent) -> dict[str, Any]:
    """The names a template sees for one alert."""
    return {
        "labels": event.alert.labels,
        "annotations": event.alert.annotations,
        "alert": alert_dict(event.alert),
        "group": group_dict(event.group),
        "vars": event.vars,
    }


# Each name in scope read from the work item, for the fast path; "alert.x" / "group.x" read
# one field without building the whole map (the dicts above spell the same names out).
_ROOTS: dict[str, Getter] = {
    "labels": attrgetter("alert.labels"),
    "annotations": attrgetter("alert.annotations"),
    "alert": lambda event: alert_dict(event.alert),
    "group": lambda event: group_dict(event.group),
    "vars": attrgetter("vars"),
    "alert.status": attrgetter("alert.status"),
    "alert.labels": attrgetter("alert.labels"),
    "alert.annotations": attrgetter("alert.annotations"),
    "alert.startsAt": attrgetter("alert.starts_at"),
    "alert.endsAt": attrgetter("alert.ends_at"),
    "alert.generatorURL": attrgetter("alert.generator_url"),
    "alert.fingerprint": attrgetter("alert.fingerprint"),
    "group.receiver": attrgetter("group.receiver"),
    "group.status": attrgetter("group.status"),
    "group.groupKey": attrgetter("group.group_key"),
    "group.groupLabels": attrgetter("group.group_labels"),
    "group.commonLabels": attrgetter("group.common_labels"),
    "group.commonAnnotations": attrgetter("group.common_annotations"),
    "group.externalURL": attrgetter("group.external_url"),
    "group.truncatedAlerts": attrgetter("group.truncated_alerts"),
    "group.routeLabels": attrgetter("group.route_labels"),
    "group.notification_reason": lambda event: event.group.notification_reason or "",
}


def _to_native(value: Any) -> Any:
    return "" if isinstance(value, Undefined) else value


def _failed(exc: Exception) -> RenderError:
    return RenderError(f"{type(exc).__name__}: {exc}")


Kind = Literal["constant", "fast", "jinja"]


class Template:
    """One compiled template.

    ``render(event)`` returns its value for one alert (native for a single expression,
    else ``str``) and raises :class:`RenderError` on any failure. ``kind`` says how:
    ``constant`` (the source itself), ``fast`` (:mod:`transforms.fastpath`, Jinja where it
    gives up) or ``jinja``.
    """

    __slots__ = ("kind", "render", "source")

    def __init__(self, source: str, kind: Kind, render: Callable[[AlertEvent], Any]) -> None:
        self.source = source
        self.kind: Kind = kind
        self.render = render

    @property
    def is_constant(self) -> bool:
        return self.kind == "constant"

    def __repr__(self) -> str:
        return f"Template({self.source!r}, kind={self.kind!r})"


def compile_template(source: str, *, fast: bool = True) -> Template:
    """Compiles ``source``; ``fast=False`` always uses Jinja (what the fast path is tested and measured against).

    Raises:
        TemplateError: on a Jinja syntax error.
    """
    if "{{" not in source and "{%" not in source:
        return Template(source, "constant", lambda _event: source)
    try:
        tree = _ENV.parse(source)
        output = tree.body[0] if len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output) else None
        only = output.nodes[0] if output is not None and len(output.nodes) == 1 else None
        if only is not None and not isinstance(only, nodes.TemplateData):  # exactly one {{ expression }}
            return _expression(source, only, fast)
        straight = is_straight(tree)
        jinja = _STRAIGHT_ENV.from_string(tree) if straight else _ENV.from_string(bound(tree))
    except TemplateSyntaxError as exc:
        where = f" (template line {exc.lineno})" if exc.lineno > 1 else ""
        raise TemplateError(f"template syntax error in {source!r}: {exc.message}{where}") from None

    def render_straight(event: AlertEvent) -> str:
        try:
            return budget.joined(jinja.generate(template_context(event)))
        except Exception as exc:
            raise _failed(exc) from exc

    def render_jinja(event: AlertEvent) -> str:
        token = budget.start()
        try:
            return budget.joined(jinja.generate(template_context(event)))
        except Exception as exc:
            raise _failed(exc) from exc
        finally:
            budget.finish(token)

    render = render_straight if straight else render_jinja
    evaluate = interpolation(output, _ROOTS) if fast and output is not None else None
    if evaluate is None:
        return Template(source, "jinja", render)
    return Template(source, "fast", _fast_or_jinja(evaluate, render))


def _expression(source: str, expr: nodes.Expr, fast: bool) -> Template:
    """A template that is one ``{{ expression }}``: evaluated to a native value."""
    straight = is_straight(expr)
    body = nodes.Template([nodes.Assign(nodes.Name("result", "store", lineno=1), expr, lineno=1)], lineno=1)
    compiled = TemplateExpression(_STRAIGHT_ENV.from_string(body) if straight else _ENV.from_string(bound(body)),
                                  False)

    def render_straight(event: AlertEvent) -> Any:
        try:
            return _to_native(compiled(template_context(event)))
        except Exception as exc:
            raise _failed(exc) from exc

    def render_jinja(event: AlertEvent) -> Any:
        token = budget.start()
        try:
            return _to_native(compiled(template_context(event)))
        except Exception as exc:
            raise _failed(exc) from exc
        finally:
            budget.finish(token)

    render = render_straight if straight else render_jinja
    if fast and (direct := key_render(expr, _ROOTS, render)) is not None:
        return Template(source, "fast", direct)
    evaluate = expression(expr, _ROOTS) if fast else None
    if evaluate is None:
        return Template(source, "jinja", render)
    return Template(source, "fast", _fast_or_jinja(evaluate, render))


def _fast_or_jinja(evaluate: Evaluate, render_jinja: Callable[[AlertEvent], Any]) -> Callable[[AlertEvent], Any]:
    """The fast path's value (``""`` when missing), Jinja's where the fast path gives up."""

    def render(event: AlertEvent) -> Any:
        try:
            value = evaluate(event)
        except Slow:
            return render_jinja(event)
        except Exception as exc:
            raise _failed(exc) from exc
        return "" if value is MISSING else value

    return render
