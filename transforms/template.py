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
filter -- recognised on Jinja's parsed AST -- are evaluated by direct dict lookups, each
compiled into a render function specialised to its shape (one key, a ``default`` chain,
a name). The fast path gives up (and Jinja evaluates the template) whenever it would not be exactly
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


# The webhook's field names of ``alert`` and ``group`` and the dataclass attributes they read
# (alert_dict and group_dict spell the same out as dict displays: several times faster).
_ALERT_ATTRS = (
    ("status", "status"),
    ("labels", "labels"),
    ("annotations", "annotations"),
    ("startsAt", "starts_at"),
    ("endsAt", "ends_at"),
    ("generatorURL", "generator_url"),
    ("fingerprint", "fingerprint"),
)
_GROUP_ATTRS = (
    ("receiver", "receiver"),
    ("status", "status"),
    ("groupKey", "group_key"),
    ("groupLabels", "group_labels"),
    ("commonLabels", "common_labels"),
    ("commonAnnotations", "common_annotations"),
    ("externalURL", "external_url"),
    ("truncatedAlerts", "truncated_alerts"),
    ("routeLabels", "route_labels"),
)  # then notification_reason, "" when absent (before 0.32)


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


_Getter = Callable[[AlertEvent], Any]

# Each name in scope, read from the work item (attrgetter: no Python frame per read).
_ROOTS: dict[str, _Getter] = {
    "labels": attrgetter("alert.labels"),
    "annotations": attrgetter("alert.annotations"),
    "alert": lambda e: alert_dict(e.alert),
    "group": lambda e: group_dict(e.group),
    "vars": attrgetter("vars"),
}
# ``alert.<name>`` / ``group.<name>`` read without building the whole dict.
_FIELD_GETTERS: dict[tuple[str, str], _Getter] = {
    **{("alert", name): attrgetter(f"alert.{attr}") for name, attr in _ALERT_ATTRS},
    **{("group", name): attrgetter(f"group.{attr}") for name, attr in _GROUP_ATTRS},
    ("group", "notification_reason"): lambda e: e.group.notification_reason or "",
}


class _Missing:
    """Marks a missing key in the fast path (Jinja's Undefined)."""


_MISSING: Any = _Missing()


class _Slow(Exception):
    """The fast path cannot give Jinja's exact result for this alert; use Jinja."""


_Fast = Callable[[AlertEvent], Any]  # returns a value or _MISSING; raises _Slow
_Path = tuple[_Getter, tuple[str, ...]]  # a name's getter, then dict keys
# Paths tried in order until one is present, then a constant (or _MISSING): what a plain
# path, a constant, or a chain of ``default`` filters over them evaluates to.
_Alternatives = tuple[tuple[_Path, ...], Any]


def _path(root: str, keys: tuple[str, ...]) -> _Path:
    if keys and (getter := _FIELD_GETTERS.get((root, keys[0]))) is not None:
        return getter, keys[1:]
    return _ROOTS[root], keys


def _walk(path: _Path) -> _Fast:
    """Evaluates one path: the value, _MISSING for a missing last key, _Slow where Jinja differs."""
    get_root, keys = path
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


def _evaluator(alternatives: _Alternatives) -> _Fast:
    paths, final = alternatives
    if not paths:
        return lambda _event: final
    walks = tuple(_walk(path) for path in paths)
    if len(walks) == 1 and final is _MISSING:
        return walks[0]

    def first_present(event: AlertEvent) -> Any:
        for walk in walks:
            value = walk(event)
            if value is not _MISSING:
                return value
        return final

    return first_present


def _simple(node: nodes.Node) -> _Alternatives | None:
    """The fast form of a plain path / constant / ``default`` filter, else None."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str | int | float | bool):
        return (), node.value
    if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
        if node.node is None or node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) > 1:
            return None
        inner = _simple(node.node)
        fallback = _simple(node.args[0]) if node.args else ((), "")
        if inner is None or fallback is None:
            return None
        paths, final = inner
        if final is not _MISSING:
            return inner  # ends in a constant, which is never undefined: the fallback is not used
        return (*paths, *fallback[0]), fallback[1]
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
    return (_path(node.name, tuple(reversed(keys))),), _MISSING


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
                if type(part) is str:
                    out.append(part)
                    continue
                value = part(event)  # type: ignore[operator]
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
        alternatives = _simple(node)
        if alternatives is None:
            return None
        parts.append(_evaluator(alternatives))
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

    alternatives = _simple(expr) if fast else None
    if alternatives is None:
        return Template(source, "jinja", render_jinja)
    return Template(source, "fast", _render_value(alternatives, render_jinja))


def _render_value(
    alternatives: _Alternatives, render_jinja: Callable[[AlertEvent], Any]
) -> Callable[[AlertEvent], Any]:
    """The render function of a fast single expression, specialised to its shape.

    Every shape gives what the generic one (last) gives: the first present value, else the
    constant, else ``""``; Jinja where the fast path would differ; failures as RenderError.
    """
    paths, final = alternatives
    if final is _MISSING:
        final = ""
    if not paths:
        return lambda _event: final
    if len(paths) == 1 and not paths[0][1]:  # a name or field: never missing
        get_value = paths[0][0]

        def render_name(event: AlertEvent) -> Any:
            try:
                return get_value(event)
            except Exception as exc:
                raise _failed(exc) from exc

        return render_name
    if all(len(keys) == 1 for _, keys in paths):  # ``labels.x | default(vars.y)``: one key each
        lookups = tuple((get_root, keys[0]) for get_root, keys in paths)
        if len(lookups) == 1:
            ((get_map, only_key),) = lookups

            def render_key(event: AlertEvent) -> Any:
                try:
                    current = get_map(event)
                    if type(current) is dict:
                        return current.get(only_key, final)
                except Exception as exc:
                    raise _failed(exc) from exc
                return render_jinja(event)

            return render_key

        def render_keys(event: AlertEvent) -> Any:
            try:
                for get_root, key in lookups:
                    current = get_root(event)
                    if type(current) is not dict:
                        break
                    value = current.get(key, _MISSING)
                    if value is not _MISSING:
                        return value
                else:
                    return final
            except Exception as exc:
                raise _failed(exc) from exc
            return render_jinja(event)

        return render_keys
    evaluate = _evaluator(alternatives)

    def render_fast(event: AlertEvent) -> Any:
        try:
            value = evaluate(event)
        except _Slow:
            return render_jinja(event)
        except Exception as exc:
            raise _failed(exc) from exc
        return final if value is _MISSING else value

    return render_fast
