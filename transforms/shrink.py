"""Fits ``custom_details`` into a byte budget, keeping its structure. No I/O.

PagerDuty refuses events over 512 KB; Alertmanager then throws all of ``custom_details``
away. Here the largest values are cut first, recursively: a long string keeps a prefix
and ends in ``…[truncated N bytes]``; a list keeps its first items and ends in
``…[truncated N items]``; a nested map keeps its keys while its values are cut, and is
replaced by a marker only when that is not enough. Many small list items are dropped
from the end rather than each cut. Top-level keys always stay. The paths
cut (``logs``, ``firing[3].annotations.description``, ``items[120:]``) are listed under
``_pdrelay_truncated``. Sizes are compact UTF-8 JSON, as sent (see
:func:`json_size`). Deterministic: ties go to the earlier key or item.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["TRUNCATED_KEY", "json_size", "shrink_details"]

TRUNCATED_KEY = "_pdrelay_truncated"
_SMALL = 64  # values this small are not worth cutting: the marker is about 30 bytes
_MARKER_ROOM = 40  # bytes a marker may take; cutting this much more than needed makes room for it
_MAX_PATHS = 50
_PATHS_ROOM = 256  # cut this much extra in the first round: the list of cut paths needs room too
_MAX_ROUNDS = 20


_ENCODE = msgspec.json.Encoder().encode


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: exactly what the sender puts on the wire."""
    return len(_ENCODE(value))


def shrink_details(details: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """A copy of ``details`` whose JSON takes at most ``budget`` bytes, or None if impossible.

    ``details`` must hold JSON-compatible values only; it is not modified.
    """
    paths: list[str] = []
    current = details
    for _ in range(_MAX_ROUNDS):
        marked = _mark(current, paths)
        size = json_size(marked)
        if size <= budget:
            return marked
        before = json_size(current)
        need = size - budget + (0 if paths else _PATHS_ROOM)
        smaller = _cut_map(current, need, "", paths, top=True)
        if not isinstance(smaller, dict) or json_size(smaller) >= before:
            return None
        current = smaller
    return None


def _mark(details: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    if not paths:
        return details
    shown = (
        paths
        if len(paths) <= _MAX_PATHS
        else [*paths[: _MAX_PATHS - 1], f"… and {len(paths) - _MAX_PATHS + 1} more"]
    )
    return {**details, TRUNCATED_KEY: list(shown)}


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _cut(value: Any, need: int, path: str, paths: list[str]) -> Any:
    if isinstance(value, str):
        return _cut_str(value, need, path, paths)
    if isinstance(value, dict):
        return _cut_map(value, need, path, paths, top=False)
    if isinstance(value, list):
        return _cut_list(value, need, path, paths)
    return value


def _cut_str(value: str, need: int, path: str, paths: list[str]) -> str:
    size = json_size(value)
    if size <= _SMALL:
        return value
    # Every character takes at least one byte, so dropping need + room characters saves
    # at least that many bytes, marker included.
    prefix = value[: max(0, len(value) - need - _MARKER_ROOM)]
    removed = len(value.encode("utf-8")) - len(prefix.encode("utf-8"))
    cut = f"{prefix}…[truncated {removed} bytes]"
    if json_size(cut) >= size:
        return value
    paths.append(path)
    return cut


def _cut_children(values: list[Any], labels: list[str], need: int, paths: list[str], floor: int) -> int:
    """Cuts ``values`` bigger than ``floor`` in place, largest first; returns the bytes still needed."""
    sizes = [json_size(v) for v in values]
    for index in sorted(range(len(values)), key=lambda i: (-sizes[i], i)):
        if need <= 0 or sizes[index] <= floor:
            break
        values[index] = _cut(values[index], need, labels[index], paths)
        need -= sizes[index] - json_size(values[index])
    return need


def _cut_map(value: dict[str, Any], need: int, path: str, paths: list[str], *, top: bool) -> Any:
    start = len(paths)
    keys = list(value)
    values = list(value.values())
    need = _cut_children(values, [_child(path, str(k)) for k in keys], need, paths, _SMALL)
    size = json_size(value)
    if need > 0 and not top and size > _SMALL:
        del paths[start:]  # the whole map goes; its children's cuts no longer matter
        paths.append(path)
        return f"…[truncated {size} bytes]"
    return dict(zip(keys, values, strict=True))


def _cut_list(value: list[Any], need: int, path: str, paths: list[str]) -> list[Any]:
    values = list(value)
    # Items that are big compared with what must go are cut; many small ones are dropped
    # from the end instead (cutting each would save a few bytes apiece).
    floor = max(_SMALL, need // 8)
    need = _cut_children(values, [f"{path}[{i}]" for i in range(len(values))], need, paths, floor)
    if need <= 0:
        return values
    keep = len(values)
    removed = 0
    while keep > 0 and removed < need + _MARKER_ROOM:
        keep -= 1
        removed += json_size(values[keep]) + 1  # the item and its comma
    if removed <= _MARKER_ROOM:
        return values
    paths.append(f"{path}[{keep}:]")
    return [*values[:keep], f"…[truncated {len(values) - keep} items]"]
