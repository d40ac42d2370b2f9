"""Time guards on steps: ``when_time`` (the step applies only in the window) and ``unless_time``
(only outside it). No I/O, no clock reads: the time comes from the caller of ``evaluate``.

A window is a mapping::

    when_time:
      timezone: Europe/Berlin          # required: an IANA name, or UTC
      days: [mon-fri]                  # optional: mon..sun (or monday..sunday), ranges a-b
      hours: ["09:00-17:00"]           # optional: one range or a list, HH:MM-HH:MM

- The moment of evaluation is converted to ``timezone`` once (daylight saving time included),
  then ``days`` is checked on that local date and ``hours`` on that local time of day. At least
  one of them must be given; both must hold.
- A range includes its start and excludes its end; ``24:00`` may end one. A range whose end is
  before its start crosses midnight: ``22:00-06:00`` is 22:00 to midnight and midnight to 06:00
  *of the same local date*, so with ``days: [fri]`` it matches Friday 02:00, not Saturday 02:00.
  Several ranges match when any does. A range from a time to itself is empty and refused.
- A day range may wrap the week: ``fri-mon`` is Friday, Saturday, Sunday and Monday.
- ``unless_time`` takes the same mapping and inverts it ("outside business hours"). A step
  may carry both (in the window of one and outside the other); a step with ``match`` as well
  applies only when the matchers and the time guards all agree.

Every bad value is a load error with its line (:func:`compile_time_guard`). The engine makes
one :class:`Moment` per evaluation, and only for rules that have a time guard; it converts
the time into each zone at most once, when a guard first asks.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Any

from transforms.spec import LineDict, LineList, Problems, describe

__all__ = ["TIME_KEYS", "Moment", "TimeGuard", "TimeWindow", "compile_time_guard"]

TIME_KEYS = ("when_time", "unless_time")
_WINDOW_KEYS = ("timezone", "days", "hours")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {
    **{name: i for i, name in enumerate(_DAYS)},
    **{name: i for i, name in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                         "sunday"))},
}
_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


class Moment:
    """One instant of evaluation, converted lazily (and once) into each zone a guard asks for."""

    __slots__ = ("_local", "utc")

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"the evaluation time must carry a time zone, got naive {now.isoformat()}")
        self.utc = now
        self._local: dict[zoneinfo.ZoneInfo, tuple[int, int]] = {}

    def local(self, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
        """``(weekday, minute of the day)`` in ``zone``; Monday is 0."""
        found = self._local.get(zone)
        if found is None:
            here = self.utc.astimezone(zone)
            found = self._local[zone] = (here.weekday(), here.hour * 60 + here.minute)
        return found


class TimeWindow:
    """A compiled ``when_time`` / ``unless_time`` mapping."""

    __slots__ = ("days", "ranges", "zone")

    def __init__(self, zone: zoneinfo.ZoneInfo, days: frozenset[int] | None, ranges: tuple[tuple[int, int], ...]):
        self.zone = zone
        self.days = days  # None: any day
        self.ranges = ranges  # (start, end) minutes of the day, end exclusive; start > end crosses midnight

    def contains(self, moment: Moment) -> bool:
        weekday, minute = moment.local(self.zone)
        if self.days is not None and weekday not in self.days:
            return False
        if not self.ranges:
            return True
        for start, end in self.ranges:
            if (start <= minute < end) if start < end else (minute >= start or minute < end):
                return True
        return False


class TimeGuard:
    """The time guards of one step: every ``when_time`` window holds and no ``unless_time`` one does."""

    __slots__ = ("unless", "when")

    def __init__(self, when: TimeWindow | None, unless: TimeWindow | None) -> None:
        self.when = when
        self.unless = unless

    def __call__(self, moment: Moment) -> bool:
        if self.when is not None and not self.when.contains(moment):
            return False
        return self.unless is None or not self.unless.contains(moment)


def compile_time_guard(step: LineDict, problems: Problems) -> TimeGuard | None:
    """The step's time guard, or None when it has neither key (or after reporting a problem)."""
    if not any(key in step for key in TIME_KEYS):
        return None
    before = problems.count
    when = _window(step, "when_time", problems) if "when_time" in step else None
    unless = _window(step, "unless_time", problems) if "unless_time" in step else None
    if problems.count > before:
        return None
    return TimeGuard(when, unless)


def _window(step: LineDict, key: str, problems: Problems) -> TimeWindow | None:
    raw = step[key]
    line = step.line_of(key)
    if not isinstance(raw, LineDict):
        problems.add(line, f"{key} must be a mapping with timezone and days and/or hours, got {describe(raw)}")
        return None
    before = problems.count
    for name in raw:
        if name not in _WINDOW_KEYS:
            problems.add(raw.line_of(name), f"unknown key {name!r} in {key} (expected: {', '.join(_WINDOW_KEYS)})")
    if "timezone" not in raw:
        problems.add(line, f"{key} needs 'timezone' (an IANA name such as Europe/Berlin, or UTC)")
    if "days" not in raw and "hours" not in raw:
        problems.add(line, f"{key} needs 'days' or 'hours' (or both)")
    zone = _zone(raw, key, problems) if "timezone" in raw else None
    days = _days(raw, key, problems) if "days" in raw else None
    ranges = _ranges(raw, key, problems) if "hours" in raw else ()
    if problems.count > before or zone is None:
        return None
    return TimeWindow(zone, days, ranges)


def _zone(raw: LineDict, key: str, problems: Problems) -> zoneinfo.ZoneInfo | None:
    name = raw["timezone"]
    line = raw.line_of("timezone")
    if not isinstance(name, str) or not name.strip():
        problems.add(line, f"{key}.timezone must be an IANA time zone name such as Europe/Berlin, got {describe(name)}")
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # ValueError: a name zoneinfo refuses outright (an absolute path, "..").
        problems.add(line, f"{key}.timezone: unknown time zone {name!r} (an IANA name such as Europe/Berlin, or UTC)")
        return None


def _entries(raw: LineDict, name: str, key: str, problems: Problems) -> list[tuple[int, Any]] | None:
    """The ``(line, value)`` items of a list value; one string stands for a list of itself."""
    value = raw[name]
    line = raw.line_of(name)
    if isinstance(value, str):
        return [(line, value)]
    if isinstance(value, LineList) and value:
        return [(value.line_of(i), item) for i, item in enumerate(value)]
    shown = "an empty list" if value == [] else describe(value)
    problems.add(line, f"{key}.{name} must be a non-empty list of strings, got {shown}")
    return None


def _days(raw: LineDict, key: str, problems: Problems) -> frozenset[int] | None:
    """The weekdays (Monday is 0), or None after reporting a problem."""
    entries = _entries(raw, "days", key, problems)
    if entries is None:
        return None
    days: set[int] = set()
    ok = True
    for line, item in entries:
        parts = item.split("-") if isinstance(item, str) else []
        numbers = [_DAY_NAMES.get(part.strip().lower()) for part in parts]
        if not 1 <= len(parts) <= 2 or None in numbers:
            shown = repr(item) if isinstance(item, str) else describe(item)
            problems.add(
                line, f"{key}.days: bad day {shown} (expected one of: {', '.join(_DAYS)}, or a range such as mon-fri)"
            )
            ok = False
            continue
        first, last = numbers[0], numbers[-1]
        assert first is not None and last is not None
        day = first
        days.add(day)
        while day != last:  # a range may wrap the week: fri-mon
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days) if ok else None


def _ranges(raw: LineDict, key: str, problems: Problems) -> tuple[tuple[int, int], ...]:
    """The ranges in minutes of the day (empty after reporting a problem)."""
    entries = _entries(raw, "hours", key, problems)
    if entries is None:
        return ()
    ranges: list[tuple[int, int]] = []
    ok = True
    for line, item in entries:
        found = _RANGE.fullmatch(item.strip()) if isinstance(item, str) else None
        if found is None:
            shown = repr(item) if isinstance(item, str) else describe(item)
            problems.add(line, f"{key}.hours: bad range {shown} (expected HH:MM-HH:MM, such as \"09:00-17:00\")")
            ok = False
            continue
        start_h, start_m, end_h, end_m = (int(g) for g in found.groups())
        problem = _clock_problem(start_h, start_m, start=True) or _clock_problem(end_h, end_m, start=False)
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if problem is None and start == end:
            problem = "is empty (it starts where it ends); for the whole day leave out hours"
        if problem is not None:
            problems.add(line, f"{key}.hours: range {item!r} {problem}")
            ok = False
            continue
        ranges.append((start, end))
    return tuple(ranges) if ok else ()


def _clock_problem(hour: int, minute: int, *, start: bool) -> str | None:
    if minute > 59:
        return f"has a bad minute {minute:02d} (00 to 59)"
    if hour == 24 and minute == 0 and not start:
        return None
    if hour > 23:
        return f"has a bad hour {hour:02d} (00 to 23, or 24:00 as an end)"
    return None
