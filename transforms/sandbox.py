"""The Jinja environment rule templates compile in: immutable sandbox plus the render budget. No I/O.

Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` keeps templates away from
attributes and mutation; it does not bound what they cost. Here every way a template can
grow work goes through :mod:`transforms.budget`:

- the operators ``*``, ``**``, ``+`` and ``%`` are intercepted and checked first
  (:func:`transforms.growth.check_binop`);
- every filter measures what it is given (but those that only hand back one of their
  inputs or a number, like ``default`` and ``length``), and the filters that multiply are
  checked from their arguments first (:data:`transforms.growth.FILTER_CHECKS`);
- every call (function, method, macro, a recursive loop's ``loop(…)``) counts, its
  arguments and result are measured (not the result of a string's, map's or list's own
  method: that is at most a few times its owner), string methods that multiply are
  checked first;
- ``range`` makes at most :data:`~transforms.budget.MAX_ITERATIONS` numbers and
  ``lipsum`` (paragraphs of filler text by the count) is not there;
- :func:`bound` rewrites a parsed template so every ``for`` loop counts its iterations and
  every ``set`` / ``with`` value (and a single expression's result) is measured;
- every ``{{ … }}`` output is measured and counted against the output limit.

Unsafe attribute access raises ``SecurityError`` instead of Jinja's silent empty string.
Templates that cannot outgrow their inputs (:mod:`transforms.straight`) compile in
:class:`StraightEnvironment` instead: the same sandbox without the counting.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from types import BuiltinMethodType
from typing import Any, NoReturn

from jinja2 import Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

from transforms.budget import bounded_range, checked, counted, current
from transforms.growth import FILTER_CHECKS, check_binop, check_method

__all__ = ["RuleEnvironment", "StraightEnvironment", "bound"]

# The filters bound() inserts; the dot keeps them apart from the filters templates name.
_COUNTED = "pdrelay.counted"
_CHECKED = "pdrelay.checked"
_SCOPE_KWARGS = ("_loop_vars", "_block_vars")
_OWNERS = frozenset({str, dict, list, tuple})
# Filters that hand back one of their inputs or a number, and look no deeper than the value's top:
# nothing to measure (default is in most templates).
_PASS_THROUGH = frozenset({"default", "d", "length", "count", "first", "last", "attr", "abs", "round", "random"})


def _finalize(value: Any) -> Any:
    """Every ``{{ … }}`` on its way to the output: measured and counted."""
    budget = current()
    if type(value) is str:
        budget.emit(len(value))
    elif not isinstance(value, Undefined):
        budget.emit(budget.measure(value))
    return value


def _measured(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, a filter: its value and arguments measured, then its own check, if it has one.

    Its result is not measured: a filter makes at most a few times what it is given (those
    that multiply are checked first), and wherever the result goes next -- another filter, a
    call, ``set``, the output -- it is measured there."""
    check = FILTER_CHECKS.get(name)
    skip = 0 if _PassArg.from_obj(function) is None else 1  # the context / environment Jinja passes first

    @wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        size = budget.measure(args[skip]) if len(args) > skip else 0
        for argument in (*args[skip + 1:], *kwargs.values()):
            budget.measure(argument)
        if check is not None and (value := check(budget, size, *args[skip:], **kwargs)) is not args[skip]:
            args = (*args[:skip], value, *args[skip + 1:])
        return function(*args, **kwargs)

    return run


class StraightEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox for straight templates (:mod:`transforms.straight`): immutable, loud about unsafe
    attributes, the same names in scope as on the budget, nothing counted."""

    def __init__(self, finalize: Callable[[Any], Any] | None = None) -> None:
        super().__init__(autoescape=False, finalize=finalize)
        self.globals["range"] = bounded_range
        del self.globals["lipsum"]

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


class RuleEnvironment(StraightEnvironment):
    """The sandbox for every other rule template: a render in it runs on the budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(finalize=_finalize)
        self.filters = {
            name: function if name in _PASS_THROUGH else _measured(name, function)
            for name, function in self.filters.items()
        }
        self.filters[_COUNTED] = counted
        self.filters[_CHECKED] = checked

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(current(), operator, left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.call()
        scopes = {}
        if kwargs:  # Jinja passes the enclosing loop's / block's variables along; Context.call takes them out
            scopes = {key: kwargs.pop(key) for key in _SCOPE_KWARGS if key in kwargs}
            for argument in kwargs.values():
                budget.measure(argument)
        for argument in args:
            budget.measure(argument)
        if type(__obj) is LoopContext and args:  # a recursive loop going one level down
            args = (counted(args[0]), *args[1:])
        args = check_method(__obj, args, kwargs)
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        result = __context.call(__obj, *args, **kwargs, **scopes)
        # A method of a string, map or list gives back at most a few times its owner (the ones that
        # multiply were checked above); anything else -- macros, dict.fromkeys, namespace() -- is measured.
        if not (type(__obj) is BuiltinMethodType and type(__obj.__self__) in _OWNERS):
            budget.measure(result)
        return result


def _filter(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def bound(tree: nodes.Template) -> nodes.Template:
    """``tree`` (changed in place) with every ``for`` loop's iterable counted and every ``set`` / ``with``
    value measured."""
    for loop in tree.find_all(nodes.For):
        loop.iter = _filter(loop.iter, _COUNTED)
    for assign in tree.find_all(nodes.Assign):
        assign.node = _filter(assign.node, _CHECKED)
    for scope in tree.find_all(nodes.With):
        scope.values = [_filter(value, _CHECKED) for value in scope.values]
    return tree
