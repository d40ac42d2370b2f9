"""An example plugin transform, the shape third-party plugins follow. No I/O.

A plugin is a factory: called once at load with the step's ``with`` mapping as keyword
arguments, it validates them (raising makes it a load error) and returns the transform,
a callable ``(AlertEvent) -> AlertEvent | None``. With ``rules.allow_plugins:
[transforms.examples]`` in the config, use it from a rules file as::

    - name: owner
      transform: transforms.examples:add_owner
      with: {table: {payments: team-pay, db: team-dba}, label: team}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transforms.base import AlertEvent, Transform

__all__ = ["add_owner"]


def add_owner(table: Mapping[str, str], label: str = "team", key: str = "owner") -> Transform:
    """Sets ``custom_details[key]`` to ``table[labels[label]]`` when the label's value is in ``table``.

    Args:
        table: label value → owner.
        label: the label to look up.
        key: the custom_details key to write (merged into what earlier steps set).
    """
    if not isinstance(table, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise TypeError("table must map label values to owner names (strings)")
    owners = dict(table)

    def transform(event: AlertEvent) -> AlertEvent:
        owner = owners.get(event.alert.labels.get(label, ""))
        if owner is not None:
            current: Any = event.fields.get("custom_details")
            details = dict(current) if isinstance(current, Mapping) else {}
            details[key] = owner
            event.fields["custom_details"] = details
        return event

    return transform
