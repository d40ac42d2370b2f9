"""Step types by name, and plugin transforms (``transform: name`` + ``with: {...}``).

:data:`STEP_TYPES` is the explicit, greppable map from a step's action key to its
factory. A plugin is found by entry-point name in the ``pdrelay.transforms`` group
(``importlib.metadata``) or as ``module:callable``; the callable is a factory that gets
the ``with`` mapping as keyword arguments and returns a transform. Importing happens
while the rules load (the only side effect here); a plugin that fails then is a load
error. A plugin that raises while running is recorded as ``"rule.transform: ..."`` and
the alert goes on unchanged: a plugin bug must not lose the page.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from transforms.base import AlertEvent, Transform
from transforms.spec import LineDict, StepContext, describe, plain
from transforms.steps import build_drop, build_extract, build_set, build_severity_map

__all__ = [
    "PLUGIN_GROUP",
    "STEP_TYPES",
    "PluginError",
    "PluginStep",
    "StepFactory",
    "build_plugin",
    "resolve_plugin",
]

PLUGIN_GROUP = "pdrelay.transforms"

StepFactory = Callable[[Any, StepContext], "Transform | None"]


class PluginError(Exception):
    """A plugin reference that cannot be resolved or built."""


def resolve_plugin(ref: str) -> Callable[..., Any]:
    """The factory named by ``ref``: ``module:attr.path`` or an entry-point name.

    Raises:
        PluginError: the module, attribute or entry point is missing or fails to import.
    """
    if ":" in ref:
        module_name, _, attr_path = ref.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
        for attr in attr_path.split("."):
            try:
                target = getattr(target, attr)
            except AttributeError:
                raise PluginError(f"{module_name!r} has no attribute {attr_path!r}") from None
    else:
        found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == ref]
        if not found:
            raise PluginError(
                f"no plugin named {ref!r} (no entry point of that name in group {PLUGIN_GROUP!r};"
                " or write module:callable)"
            )
        try:
            target = found[0].load()
        except Exception as exc:
            raise PluginError(f"cannot load entry point {ref!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(target):
        raise PluginError(f"{ref!r} is {describe(target)}, not a callable factory")
    return target  # type: ignore[no-any-return]


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
        factory = resolve_plugin(value)
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
