"""Step types by name, and plugin transforms (``transform: name`` + ``with: {...}``).

:data:`STEP_TYPES` is the explicit, greppable map from a step's action key to its
factory. A plugin is found by entry-point name in the ``pdrelay.transforms`` group
(``importlib.metadata``) or as ``module:callable``; the callable is a factory that gets
the ``with`` mapping as keyword arguments and returns a transform. Importing happens
while the rules load (the only side effect here); a plugin that fails then is a load
error. A plugin that raises while running is recorded as ``"rule.transform: ..."`` and
the alert goes on unchanged: a plugin bug must not lose the page.

A rules file must not be able to run code the deployment did not choose (``transform:
os:system`` would run a shell command at load, even under ``check-rules``). So a
``module:callable`` plugin loads only when its module is under one of the allowed
prefixes (``rules.allow_plugins``: ``acme`` allows ``acme`` and ``acme.x``, never
``acmex``); anything else is a load error and nothing is imported for it. The path
after the colon may not leave the allowed code either: every module it passes through
and the module the callable is defined in must be allowed too (``acme:os.system``, or a
name ``acme`` imported from ``os``, is refused). Entry-point plugins are installed code
and are always allowed.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from transforms.base import AlertEvent, Transform
from transforms.spec import LineDict, StepContext, describe, plain
from transforms.steps import build_drop, build_extract, build_set, build_severity_map

__all__ = [
    "PLUGIN_GROUP",
    "STEP_TYPES",
    "PluginError",
    "PluginNotAllowed",
    "PluginStep",
    "StepFactory",
    "build_plugin",
    "module_allowed",
    "resolve_plugin",
]

PLUGIN_GROUP = "pdrelay.transforms"

StepFactory = Callable[[Any, StepContext], "Transform | None"]


class PluginError(Exception):
    """A plugin reference that cannot be resolved or built."""


class PluginNotAllowed(PluginError):
    """A ``module:callable`` plugin outside ``rules.allow_plugins``; nothing was imported for it."""


_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def module_allowed(module: str, allowed: Collection[str]) -> bool:
    """Whether ``module`` is one of ``allowed`` or inside one of them (``acme`` allows ``acme.x``, not ``acmex``)."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def _refuse(ref: str, why: str, allowed: Collection[str]) -> PluginNotAllowed:
    configured = ("configured: " + ", ".join(allowed)) if allowed else "none configured"
    return PluginNotAllowed(f"plugin {ref!r} is not allowed: {why} not under rules.allow_plugins ({configured})")


def resolve_plugin(ref: str, allowed: Collection[str] = ()) -> Callable[..., Any]:
    """The factory named by ``ref``: ``module:attr.path`` or an entry-point name.

    ``allowed``: the module prefixes a ``module:attr.path`` may come from; the module is
    checked before anything is imported.

    Raises:
        PluginNotAllowed: the module, a module on the attribute path, or the module the
            callable is defined in is not under ``allowed``.
        PluginError: the module, attribute or entry point is missing or fails to import.
    """
    target = _from_module(ref, allowed) if ":" in ref else _from_entry_point(ref)
    if not callable(target):
        raise PluginError(f"{ref!r} is {describe(target)}, not a callable factory")
    return target  # type: ignore[no-any-return]


def _from_module(ref: str, allowed: Collection[str]) -> Any:
    """``module:attr.path``, importing the module only once it is known to be allowed."""
    module_name, _, attr_path = ref.partition(":")
    if not _MODULE_NAME.fullmatch(module_name):
        raise PluginError(f"{module_name!r} is not a module name (write module.name:callable)")
    if not module_allowed(module_name, allowed):
        raise _refuse(ref, f"module {module_name!r} is", allowed)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    attrs = attr_path.split(".")
    for depth, attr in enumerate(attrs, 1):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise PluginError(f"{module_name!r} has no attribute {attr_path!r}") from None
        if isinstance(target, ModuleType) and not module_allowed(target.__name__, allowed):
            where = f"{module_name}:{'.'.join(attrs[:depth])}"
            raise _refuse(ref, f"{where!r} is module {target.__name__!r}, which is", allowed)
    home = getattr(target, "__module__", None)
    if not isinstance(target, ModuleType) and not (isinstance(home, str) and module_allowed(home, allowed)):
        raise _refuse(ref, f"{attr_path!r} is defined in module {home!r}, which is", allowed)
    return target


def _from_entry_point(ref: str) -> Any:
    """The entry point ``ref`` of :data:`PLUGIN_GROUP`: installed code, always allowed."""
    found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == ref]
    if not found:
        raise PluginError(
            f"no plugin named {ref!r} (no entry point of that name in group {PLUGIN_GROUP!r};"
            " or write module:callable)"
        )
    try:
        return found[0].load()
    except Exception as exc:
        raise PluginError(f"cannot load entry point {ref!r}: {type(exc).__name__}: {exc}") from exc


class PluginStep:
    """Runs a plugin transform, turning its exceptions into recorded errors."""

    __slots__ = ("ref", "rule", "transform")

    def __init__(self, rule: str, ref: str, transform: Transform) -> None:
        self.rule = rule
        self.ref = ref
        self.transform = transform

    def __call__(self, event: AlertEvent) -> AlertEvent | None:
        try:
            result = self.transform(event)
        except Exception as exc:
            event.template_errors.append(
                f"{self.rule}.transform: plugin {self.ref} raised {type(exc).__name__}: {exc}"
            )
            return event
        if result is not None and not isinstance(result, AlertEvent):
            event.template_errors.append(
                f"{self.rule}.transform: plugin {self.ref} returned {type(result).__name__}, not an AlertEvent or None"
            )
            return event
        return result


def build_plugin(value: Any, ctx: StepContext) -> Transform | None:
    """``transform: ref`` with optional ``with: {param: value}``."""
    if not isinstance(value, str) or not value.strip():
        ctx.problems.add(ctx.line, f"transform must be a plugin name or module:callable, got {value!r}")
        return None
    params = ctx.step.get("with", {})
    if params is None:
        params = {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        line = ctx.step.line_of("with") if isinstance(ctx.step, LineDict) else ctx.line
        ctx.problems.add(line, f"with must be a mapping of parameter names to values, got {describe(params)}")
        return None
    try:
        factory = resolve_plugin(value, ctx.allow_plugins)
    except PluginNotAllowed as exc:
        ctx.problems.add(ctx.line, str(exc))
        return None
    except PluginError as exc:
        ctx.problems.add(ctx.line, f"transform {value!r}: {exc}")
        return None
    try:
        transform = factory(**plain(params))
    except Exception as exc:
        ctx.problems.add(ctx.line, f"transform {value!r}: factory failed: {type(exc).__name__}: {exc}")
        return None
    if not callable(transform):
        ctx.problems.add(
            ctx.line, f"transform {value!r}: factory returned {describe(transform)}, not a transform"
        )
        return None
    return PluginStep(ctx.rule, value, transform)


STEP_TYPES: dict[str, StepFactory] = {
    "set": build_set,
    "severity_map": build_severity_map,
    "extract": build_extract,
    "drop": build_drop,
    "transform": build_plugin,
}
