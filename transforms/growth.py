"""The template operations that can make far more than they are given, checked before they run. No I/O.

Most of what a template does makes at most a few times what it gets, and what it gets
is already measured (:mod:`transforms.budget`). The operations here multiply instead: a
count or a width turns a short value into a huge one (``'a' * 300000000``, ``2 ** 10 **
9``, ``center(10 ** 9)``, ``batch(10 ** 9, 'x')``, ``'%999999999d'``), or one argument is
copied once per match, line or item (``replace``, ``join``, ``indent``, ``wordwrap``,
``urlize``, ``translate``, ``expandtabs``). Each is checked from the sizes of its
arguments, so the huge value is never built: :class:`~transforms.budget.BudgetExceeded`
is raised instead.

:func:`check_binop` covers the operators ``*``, ``**``, ``+`` and ``%``;
:data:`FILTER_CHECKS` the Jinja filters by name; :func:`check_method` the methods of
strings (``format`` and ``format_map`` included, as the sandbox hands them out).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from string import Formatter
from types import BuiltinMethodType
from typing import Any

from transforms.budget import MAX_INT_BITS, MAX_SIZE, Budget, BudgetExceeded, too_big

__all__ = ["FILTER_CHECKS", "MAX_JSON_INDENT", "check_binop", "check_method", "check_printf"]

MAX_JSON_INDENT = 16  # tojson(indent=…): more only pads every line of the output

# A printf-style conversion: %[(name)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?.", re.DOTALL)
_DIGITS = re.compile(r"\d+")


def _at_most(what: str, number: Any, limit: int = MAX_SIZE) -> None:
    """``what`` (a width, a count) may be at most ``limit``; digits as text are read without converting huge ones."""
    if isinstance(number, str):  # digits from a format string, any number of them
        digits = number.lstrip("0") or "0"
        if len(digits) <= len(str(limit)) and int(digits) <= limit:
            return
    elif not isinstance(number, int) or number <= limit:
        return
    shown = number if len(str(number)) <= 20 else f"{str(number)[:20]}…"
    raise BudgetExceeded(f"{what} {shown} is over the limit of {limit}")


def _within(what: str, size: int, unit: str = "characters") -> None:
    if size > MAX_SIZE:
        raise too_big(what, size, unit)


def _int_args(values: Any) -> list[Any]:
    """The numbers and digit strings among ``values`` (a tuple, a mapping or one value): widths a
    ``*`` or a nested ``{}`` may take."""
    items = values.values() if isinstance(values, dict) else values if isinstance(values, tuple) else (values,)
    return [v for v in items if isinstance(v, int) or (isinstance(v, str) and v.isdigit())]


def check_printf(fmt: str | bytes, args: Any) -> None:
    """``fmt % args``: every width and precision at most :data:`MAX_SIZE`, and so every number a ``*`` may take."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    star = False
    for match in _PRINTF.finditer(text):
        for number in match.group(1, 2):
            if number == "*":
                star = True
            elif number is not None:
                _at_most("format width", number)
    if star:
        for number in _int_args(args):
            _at_most("format width", number)


def _check_format(fmt: str, args: Any, kwargs: Any) -> None:
    """``fmt.format(*args, **kwargs)``: the numbers in every format spec at most :data:`MAX_SIZE`; with a
    nested ``{}`` in a spec, every number among the arguments too."""
    nested = False
    for _, _, spec, _ in Formatter().parse(fmt):
        if spec:
            nested = nested or "{" in spec
            for number in _DIGITS.findall(spec):
                _at_most("format width", number)
    if nested:
        for number in _int_args(tuple(args)) + _int_args(dict(kwargs)):
            _at_most("format width", number)


# ----------------------------------------------------------------------------- operators


def check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    """Before ``left <operator> right`` (``*``, ``**``, ``+``, ``%``)."""
    if operator == "*":
        _repeat(budget, left, right)
    elif operator == "**":
        _power(left, right)
    elif operator == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            _within("'+'", len(left) + len(right))
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            _within("'+'", budget.measure(left) + budget.measure(right) - 1, "characters and items")
    elif operator == "%" and isinstance(left, str | bytes):
        budget.measure(right)  # each argument is made text: none may be huge
        check_printf(left, right)


def _repeat(budget: Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise BudgetExceeded(f"'*' would make an integer of about {bits} bits (limit {MAX_INT_BITS})")
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if not isinstance(times, int) or times <= 0:
        return
    if isinstance(sequence, str | bytes):
        _within("'*'", len(sequence) * times)
    elif isinstance(sequence, list | tuple):
        _within("'*'", (budget.measure(sequence) - 1) * times + 1, "characters and items")


def _power(left: Any, right: Any) -> None:
    if not (isinstance(left, int) and isinstance(right, int)) or right <= 0 or abs(left) <= 1:
        return
    bits = right + 1 if right >= MAX_INT_BITS else int(right * math.log2(abs(left))) + 1
    if bits > MAX_INT_BITS:
        raise BudgetExceeded(f"'**' would make an integer of about {bits} bits (limit {MAX_INT_BITS})")


# ----------------------------------------------------------------------------- filters
# Each takes the budget, the measured size of the filtered value, then the filter's own
# arguments, and returns the value to filter (``join`` lists an iterator to count it).


def _replaced(what: str, text: Any, old: Any, new: Any, count: Any) -> None:
    if not isinstance(text, bytes):
        text, old, new = str(text), str(old), str(new)
    elif not (isinstance(old, bytes) and isinstance(new, bytes)):
        return  # bytes.replace refuses these itself
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _within(what, len(text) + found * (len(new) - len(old)))


def _filter_replace(budget: Budget, size: int, s: Any, old: Any, new: Any, count: Any = None) -> Any:
    _replaced("replace()", s, old, new, count)
    return s


def _filter_join(budget: Budget, size: int, value: Any, d: Any = "", attribute: Any = None) -> Any:
    if not hasattr(value, "__len__"):  # count what an iterator gives
        value = list(value)
        size = budget.measure(value)
    _within("join()", size + len(str(d)) * max(len(value) - 1, 0))
    return value


def _filter_center(budget: Budget, size: int, value: Any, width: Any = 80) -> Any:
    _at_most("center() width", width)
    return value


def _filter_indent(budget: Budget, size: int, s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> Any:
    per_line = len(width) if isinstance(width, str) else width
    if isinstance(per_line, int):
        text = str(s)
        _within("indent()", len(text) + (text.count("\n") + 1) * per_line)
    return s


def _filter_format(budget: Budget, size: int, value: Any, *args: Any, **kwargs: Any) -> Any:
    check_printf(str(value), kwargs or args)
    return value


def _filter_wordwrap(budget: Budget, size: int, s: Any, width: Any = 79, break_long_words: Any = True,
                     wrapstring: Any = None, break_on_hyphens: Any = True) -> Any:
    text = str(s)
    if isinstance(width, int) and width > 0:
        breaks = len(text) // width + text.count("\n") + 1
        _within("wordwrap()", len(text) + breaks * len(str(wrapstring or "\n")))
    return s


def _filter_urlize(budget: Budget, size: int, value: Any, trim_url_limit: Any = None, nofollow: Any = False,
                   target: Any = None, rel: Any = None, extra_schemes: Any = None) -> Any:
    text = str(value)
    per_link = 64 + len(str(target or "")) + len(str(rel or ""))
    _within("urlize()", 2 * len(text) + (len(text) // 2 + 1) * per_link)
    return value


def _filter_batch(budget: Budget, size: int, value: Any, linecount: Any, fill_with: Any = None) -> Any:
    _at_most("batch() size", linecount)
    if fill_with is not None and isinstance(linecount, int):  # the last batch is filled up with it
        _within("batch()", linecount * budget.measure(fill_with), "characters and items")
    return value


def _filter_slice(budget: Budget, size: int, value: Any, slices: Any, fill_with: Any = None) -> Any:
    _at_most("slice() count", slices)
    if fill_with is not None and isinstance(slices, int):  # a slice short of an item gets it
        _within("slice()", slices * budget.measure(fill_with), "characters and items")
    return value


def _filter_tojson(budget: Budget, size: int, value: Any, indent: Any = None) -> Any:
    _at_most("tojson() indent", len(indent) if isinstance(indent, str) else indent, MAX_JSON_INDENT)
    return value


FILTER_CHECKS: dict[str, Callable[..., Any]] = {
    "batch": _filter_batch,
    "center": _filter_center,
    "format": _filter_format,
    "indent": _filter_indent,
    "join": _filter_join,
    "replace": _filter_replace,
    "slice": _filter_slice,
    "tojson": _filter_tojson,
    "urlize": _filter_urlize,
    "wordwrap": _filter_wordwrap,
}


# ----------------------------------------------------------------------------- string methods


# Each takes the string, then the method's arguments; ``join`` returns its arguments with the
# iterable listed (to count it), the others None (call with the arguments as they are).


def _method_width(name: str) -> Callable[..., None]:
    def check(owner: Any, width: Any, fillchar: Any = " ") -> None:
        _at_most(f"{name}() width", width)

    return check


def _method_expandtabs(owner: Any, tabsize: Any = 8) -> None:
    if isinstance(tabsize, int):
        _within("expandtabs()", len(owner) + owner.count(b"\t" if isinstance(owner, bytes) else "\t") * tabsize)


def _method_replace(owner: Any, old: Any, new: Any, count: Any = -1) -> None:
    _replaced("replace()", owner, old, new, count)


def _method_join(owner: Any, iterable: Any) -> tuple[Any, ...]:
    items = list(iterable)
    _within("join()", sum(len(x) for x in items if isinstance(x, str | bytes)) + len(owner) * max(len(items) - 1, 0))
    return (items,)


def _method_translate(owner: Any, table: Any) -> None:
    longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1) if isinstance(table, dict) else 1
    _within("translate()", len(owner) * max(longest, 1))


_METHOD_CHECKS: dict[str, Callable[..., tuple[Any, ...] | None]] = {
    "center": _method_width("center"),
    "ljust": _method_width("ljust"),
    "rjust": _method_width("rjust"),
    "zfill": _method_width("zfill"),
    "expandtabs": _method_expandtabs,
    "replace": _method_replace,
    "join": _method_join,
    "translate": _method_translate,
}


def check_method(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Before a call from a template: the positional arguments to call ``function`` with (``join`` gets its
    iterable as a list, counted). Only methods of strings are checked; anything else passes."""
    if type(function) is BuiltinMethodType:
        owner = function.__self__
        check = _METHOD_CHECKS.get(function.__name__)
        if check is None or not isinstance(owner, str | bytes):
            return args
        try:
            checked = check(owner, *args, **kwargs)
        except TypeError:
            return args  # arguments the method does not take: the call fails with its own message
        return args if checked is None else checked
    wrapped = getattr(function, "__wrapped__", None)  # the sandbox's safe str.format / str.format_map
    owner = getattr(wrapped, "__self__", None)
    if wrapped is not None and isinstance(owner, str):
        if wrapped.__name__ == "format_map":
            _check_format(owner, (), args[0] if args and isinstance(args[0], dict) else {})
        else:
            _check_format(owner, args, kwargs)
    return args
