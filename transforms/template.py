"""Rule templates: Jinja2 in an immutable sandbox, compiled when the rules load. No I/O.

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
- Every render failure is raised as :class:`RenderError`; the caller records it and
  falls back.

Sandboxed rendering costs several microseconds, so expressions built only from plain
variable paths (``labels.instance``, ``vars["host"]``), constants and the ``default``
filter -- recognised on Jinja's parsed AST -- are evaluated by direct dict lookups. The
fast path gives up (and Jinja evaluates the template) whenever it would not be exactly
Jinja's result: a value that is not a plain ``dict``, a key that is also a ``dict``
attribute (``labels.items``) or starts with ``_``, or a path through a missing key.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Literal, NoReturn

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from transforms.base import Alert, AlertEvent, Group

__all__ = [
    "ROOT_NAMES",
    "RenderError",
    "Template",
    "TemplateError",
    "alert_dict",
    "compile_template",
    "group_dict",
    "template_context",
]

ROOT_NAMES = ("labels", "annotations", "alert", "group", "vars")


class TemplateError(ValueError):
    """A template that does not compile (reported when the rules load)."""


class RenderError(Exception):
    """A template that failed while rendering one alert."""


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, refusing unsafe attributes loudly instead of rendering ``""``."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


# Configuration only (no loader, no globals added): sharing one instance is safe.
_ENV = _Environment(autoescape=False)


# The webhook's field names of ``alert`` and ``group``, read from the dataclasses.
_ALERT_FIELDS: dict[str, Callable[[Alert], Any]] = {
    name: attrgetter(attr)
    for name, attr in (
        ("status", "status"),
        ("labels", "labels"),
        ("annotations", "annotations"),
        ("startsAt", "starts_at"),
        ("endsAt", "ends_at"),
        ("generatorURL", "generator_url"),
        ("fingerprint", "fingerprint"),
    )
}
_GROUP_FIELDS: dict[str, Callable[[Group], Any]] = {
    name: attrgetter(attr)
    for name, attr in (
        ("receiver", "receiver"),
        ("status", "status"),
        ("groupKey", "group_key"),
        ("groupLabels", "group_labels"),
        ("commonLabels", "common_labels"),
        ("commonAnnotations", "common_annotations"),
        ("externalURL", "external_url"),
        ("truncatedAlerts", "truncated_alerts"),
        ("routeLabels", "route_labels"),
    )
} | {"notification_reason": lambda group: group.notification_reason or ""}  # absent before 0.32


def alert_dict(alert: Alert) -> dict[str, Any]:
    """The ``alert`` template name: the alert as Alertmanager's webhook spells it."""
    return {name: get(alert) for name, get in _ALERT_FIELDS.items()}


def group_dict(group: Group) -> dict[str, Any]:
    """The ``group`` template name; fields a body lacks are ``""`` / ``{}``, never None."""
    return {name: get(group) for name, get in _GROUP_FIELDS.items()}


def template_context(event: AlertEvent) -> dict[str, Any]:
    """The names a template sees for one alert."""
    return {
        "labels": event.alert.labels,
        "annotations": event.alert.annotations,
        "alert": alert_dict(event.alert),
        "group": group_dict(event.group),
        "vars": event.vars,
    }


_ROOTS: dict[str, Callable[[AlertEvent], Any]] = {
    "labels": lambda e: e.alert.labels,
    "annotations": lambda e: e.alert.annotations,
    "alert": lambda e: alert_dict(e.alert),
    "group": lambda e: group_dict(e.group),
    "vars": lambda e: e.vars,
}


def _field_getter(root: str, name: str) -> Callable[[AlertEvent], Any] | None:
    """``alert.<name>`` / ``group.<name>`` read without building the whole dict."""
    if root == "alert" and (get_alert := _ALERT_FIELDS.get(name)) is not None:
        return lambda e: get_alert(e.alert)
    if root == "group" and (get_group := _GROUP_FIELDS.get(name)) is not None:
        return lambda e: get_group(e.group)
    return None


class _Missing:
    """Marks a missing key in the fast path (Jinja's Undefined)."""


_MISSING: Any = _Missing()


class _Slow(Exception):
    """The fast path cannot give Jinja's exact result for this alert; use Jinja."""


_Fast = Callable[[AlertEvent], Any]  # returns a value or _MISSING; raises _Slow


def _fast_path(root: str, keys: tuple[str, ...]) -> _Fast:
    get_root = _ROOTS[root]
    if keys and (getter := _field_getter(root, keys[0])) is not None:
        get_root = getter
        keys = keys[1:]
    if not keys:
        return get_root
    last = len(keys) - 1
    if last == 0:
        key = keys[0]

        def run_one(event: AlertEvent) -> Any:
            current = get_root(event)
            if type(current) is not dict:
                raise _Slow
            return current.get(key, _MISSING)

        return run_one

    def run(event: AlertEvent) -> Any:
        current = get_root(event)
        for index, key in enumerate(keys):
            if type(current) is not dict:
                raise _Slow
            current = current.get(key, _MISSING)
            if current is _MISSING:
                if index != last:
                    raise _Slow  # Jinja raises UndefinedError going through it
                return _MISSING
        return current

    return run


def _simple(node: nodes.Node) -> _Fast | None:
    """A fast evaluator for a plain path / constant / ``default`` filter, else None."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str | int | float | bool):
        value = node.value
        return lambda _event: value
    if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
        if node.node is None or node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) > 1:
            return None
        inner = _simple(node.node)
        fallback = _simple(node.args[0]) if node.args else (lambda _event: "")
        if inner is None or fallback is None:
            return None

        def run(event: AlertEvent, _inner: _Fast = inner, _fallback: _Fast = fallback) -> Any:
            value = _inner(event)
            return _fallback(event) if value is _MISSING else value

        return run
    keys: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if not isinstance(node.arg.value, str):
                return None
            keys.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name in _ROOTS:
            break
        else:
            return None
    if any(key.startswith("_") or hasattr(dict, key) for key in keys):
        return None
    return _fast_path(node.name, tuple(reversed(keys)))


def _to_native(value: Any) -> Any:
    return "" if value is _MISSING or isinstance(value, Undefined) else value


def _failed(exc: Exception) -> RenderError:
    return RenderError(f"{type(exc).__name__}: {exc}")


Kind = Literal["constant", "fast", "jinja"]


class Template:
    """One compiled template.

    ``render(event)`` returns its value for one alert (native for a single expression,
    else ``str``) and raises :class:`RenderError` on any failure. It is a plain attribute
    holding the kind's render function: this is the hot path, one call per field.
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
    """Compiles ``source``; ``fast=False`` always uses Jinja (tests compare the two).

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
        jinja = _ENV.from_string(tree)
    except TemplateSyntaxError as exc:
        where = f" (template line {exc.lineno})" if exc.lineno > 1 else ""
        raise TemplateError(f"template syntax error in {source!r}: {exc.message}{where}") from None

    def render_jinja(event: AlertEvent) -> str:
        try:
            return jinja.render(template_context(event))
        except Exception as exc:
            raise _failed(exc) from exc

    parts = _interpolation(output) if fast and output is not None else None
    if parts is None:
        return Template(source, "jinja", render_jinja)

    def render_fast(event: AlertEvent) -> str:
        out: list[str] = []
        try:
            for part in parts:
                if isinstance(part, str):
                    out.append(part)
                    continue
                value = part(event)
                if value is not _MISSING:
                    out.append(value if type(value) is str else str(value))
        except _Slow:
            return render_jinja(event)
        except Exception as exc:
            raise _failed(exc) from exc
        return "".join(out)

    return Template(source, "fast", render_fast)


def _interpolation(output: nodes.Output) -> list[str | _Fast] | None:
    parts: list[str | _Fast] = []
    for node in output.nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        evaluator = _simple(node)
        if evaluator is None:
            return None
        parts.append(evaluator)
    return parts


def _expression(source: str, expr: nodes.Expr, fast: bool) -> Template:
    """A template that is one ``{{ expression }}``: evaluated to a native value."""
    body = [nodes.Assign(nodes.Name("result", "store", lineno=1), expr, lineno=1)]
    compiled = TemplateExpression(_ENV.from_string(nodes.Template(body, lineno=1)), False)

    def render_jinja(event: AlertEvent) -> Any:
        try:
            return _to_native(compiled(template_context(event)))
        except Exception as exc:
            raise _failed(exc) from exc

    evaluator = _simple(expr) if fast else None
    if evaluator is None:
        return Template(source, "jinja", render_jinja)

    def render_fast(event: AlertEvent, _evaluate: _Fast = evaluator) -> Any:
        try:
            value = _evaluate(event)
        except _Slow:
            return render_jinja(event)
        except Exception as exc:
            raise _failed(exc) from exc
        return "" if value is _MISSING else value

    return Template(source, "fast", render_fast)
