"""The render budget: what one render of one rule template may do, and the counters that hold it to that. No I/O.

A rule template is code a rules file runs for every alert; without a bound, one line
(``{{ 'a' * 300000000 }}``, two nested ``range`` loops) takes seconds and gigabytes, or
never ends, and with it the intake of every alert behind it. Each Jinja render (see
:mod:`transforms.sandbox`) gets a fresh :class:`Budget`; whatever would go past a limit
raises :class:`BudgetExceeded` *before* the work is done, and the field fails like any
template error (recorded as ``rule.field: BudgetExceeded: …``, counted, the default used).

The limits are far above what alert templates need — label maps have at most a few
hundred entries, PagerDuty takes at most 512,000 bytes for a whole event — so hitting one
means a runaway template, not a large alert:

- :data:`MAX_SIZE`: no value a template builds, and no output, exceeds 512,000 characters
  (strings) or items (lists and maps, counted through nesting, a shared item each time it
  appears, each string by its length);
- :data:`MAX_ITERATIONS`: 10,000 loop iterations per render, all loops together (an inner
  loop's iterations add up over the outer one's: two nested loops over 99 items fit, over
  100 they do not), and ``range()`` makes at most that many numbers;
- :data:`MAX_CALLS`: 10,000 calls of functions, methods and macros per render;
- :data:`MAX_INT_BITS`: integers built by ``*`` and ``**`` stay under 4,096 bits;
- :data:`MAX_INSPECTED`: checking sizes inspects at most 200,000 items per render (a
  string is one item, whatever its length), about a tenth of a second of work.

Templates on the fast path (:mod:`transforms.fastpath`) only look values up and never
reach Jinja, and straight templates (:mod:`transforms.straight`: no loops, macros or
multiplying operations) run each part once on alert data: neither needs the counting nor
pays for it; the output limit holds for them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar, Token
from typing import Any

__all__ = [
    "MAX_CALLS",
    "MAX_INSPECTED",
    "MAX_INT_BITS",
    "MAX_ITERATIONS",
    "MAX_SIZE",
    "Budget",
    "BudgetExceeded",
    "bounded_range",
    "checked",
    "counted",
    "current",
    "finish",
    "joined",
    "start",
    "too_big",
]

MAX_SIZE = 512_000
MAX_ITERATIONS = 10_000
MAX_CALLS = 10_000
MAX_INT_BITS = 4_096
MAX_INSPECTED = 200_000

_SCALARS = frozenset({int, float, bool})
_STRINGS = frozenset({str})
_FLAT = frozenset({list, tuple, set, frozenset, type({}.keys()), type({}.values())})
# What measure walks into besides dicts: the containers a template can build or be given.
_CONTAINERS: tuple[type[Iterable[Any]], ...] = (
    list, tuple, set, frozenset, type({}.keys()), type({}.values()), type({}.items())
)


class BudgetExceeded(Exception):
    """A render that would go past one of the limits; raised before the work is done."""


def too_big(what: str, size: int, unit: str = "characters") -> BudgetExceeded:
    """``'*' would make 300000000 characters (limit 512000)``."""
    return BudgetExceeded(f"{what} would make {size} {unit} (limit {MAX_SIZE})")


class Budget:
    """The counters of one render."""

    __slots__ = ("calls", "inspected", "iterations", "last", "last_size", "output")

    def __init__(self) -> None:
        self.iterations = 0
        self.calls = 0
        self.output = 0
        self.inspected = 0
        self.last: Any = None  # the container measured last, and its size: a call's result is
        self.last_size = 0  # often the next filter's value (``labels.values() | join``)

    def iterate(self) -> None:
        """One more loop iteration."""
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise BudgetExceeded(f"loops over the limit of {MAX_ITERATIONS} iterations")

    def call(self) -> None:
        """One more call of a function, method or macro."""
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise BudgetExceeded(f"calls over the limit of {MAX_CALLS}")

    def emit(self, size: int) -> None:
        """``size`` more characters of output (every ``{{ … }}``, in macros and blocks too)."""
        self.output += size
        if self.output > MAX_SIZE:
            raise BudgetExceeded(f"output over the limit of {MAX_SIZE} characters")

    def measure(self, value: Any) -> int:
        """The size of ``value``: a string's (or bytes') length; lists, tuples, sets and maps count 1 plus the sizes
        of their items (keys too), an item shared *n* times *n* times; anything else 1.

        Raises :class:`BudgetExceeded` past :data:`MAX_SIZE`, or once this render has inspected
        :data:`MAX_INSPECTED` items in all. Iterators are not consumed (they count 1)."""
        kind = type(value)
        if kind is str:  # the usual case: one check, no walk
            if len(value) > MAX_SIZE:
                raise BudgetExceeded(f"a value over the limit of {MAX_SIZE} characters and items")
            return len(value)
        if kind in _SCALARS or value is None:
            return 1
        if value is self.last:
            return self.last_size
        total = self._flat(value, kind)
        if total is None:
            total = self._walk(value)
        self.last, self.last_size = value, total
        return total

    def _flat(self, value: Any, kind: type) -> int | None:
        """The size of a map, list or view holding only strings (label maps, their values), counted in C;
        None for anything else."""
        parts = (value.keys(), value.values()) if kind is dict else (value,) if kind in _FLAT else ()
        total = 1
        for part in parts:
            if not _STRINGS.issuperset(map(type, part)):
                return None
            self.inspected += len(part)
            total += sum(map(len, part))
        if not parts:
            return None
        if total > MAX_SIZE:
            raise BudgetExceeded(f"a value over the limit of {MAX_SIZE} characters and items")
        if self.inspected > MAX_INSPECTED:
            raise BudgetExceeded(f"values inspected over the limit of {MAX_INSPECTED} items")
        return total

    def _walk(self, value: Any) -> int:
        total = 0
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            self.inspected += 1
            if isinstance(item, str | bytes):
                total += len(item)
            else:
                total += 1
                if isinstance(item, dict):
                    stack.extend(item.keys())
                    stack.extend(item.values())
                elif isinstance(item, _CONTAINERS):
                    stack.extend(item)
            if total > MAX_SIZE:
                raise BudgetExceeded(f"a value over the limit of {MAX_SIZE} characters and items")
            if self.inspected > MAX_INSPECTED:
                raise BudgetExceeded(f"values inspected over the limit of {MAX_INSPECTED} items")
        return total


_CURRENT: ContextVar[Budget | None] = ContextVar("pdrelay_render_budget", default=None)


def start() -> Token[Budget | None]:
    """Gives the render about to run (in this thread or task) a fresh budget; pass the token to :func:`finish`."""
    return _CURRENT.set(Budget())


def finish(token: Token[Budget | None]) -> None:
    _CURRENT.reset(token)


def current() -> Budget:
    """The budget of the render running here; a throwaway one outside renders (Jinja folds constant
    expressions while compiling, through the same checks)."""
    return _CURRENT.get() or Budget()


def joined(chunks: Iterable[str]) -> str:
    """A render's output pieces, joined; past :data:`MAX_SIZE` characters the render stops where it is."""
    parts = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_SIZE:
            raise BudgetExceeded(f"output over the limit of {MAX_SIZE} characters")
        parts.append(chunk)
    return "".join(parts)


def bounded_range(*args: int) -> range:
    """``range`` for templates: at most :data:`MAX_ITERATIONS` numbers."""
    numbers = range(*args)
    step = numbers.step
    count = max(0, (numbers.stop - numbers.start + step - (1 if step > 0 else -1)) // step)
    if count > MAX_ITERATIONS:
        raise BudgetExceeded(f"range() would make {count} items (limit {MAX_ITERATIONS})")
    return numbers


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a ``for`` loop iterates over: each item taken costs one iteration of the render's budget."""
    budget = current()
    for item in iterable:
        budget.iterate()
        yield item


def checked(value: Any) -> Any:
    """``value`` unchanged once measured: what ``set``, ``with`` and a single expression's result go through,
    so no variable holds more than :data:`MAX_SIZE` (a name built from itself twice, again and again,
    stops here instead of doubling on)."""
    current().measure(value)
    return value
