"""A plugin package for the allow-list tests: allowed as ``rules.allow_plugins: [acme_sample]``.

It also imports ``os`` and one of its functions, as real plugin modules do, so the tests can show
that a rules file cannot reach them through it (``acme_sample:os.system``, ``acme_sample:cwd``).
"""

from __future__ import annotations

import os
from os import getcwd as cwd

from transforms import AlertEvent, Transform

__all__ = ["cwd", "os", "tag"]


def tag(value: str, key: str = "tag") -> Transform:
    """Sets ``custom_details[key]`` to ``value``."""

    def transform(event: AlertEvent) -> AlertEvent:
        event.fields["custom_details"] = {**event.fields.get("custom_details", {}), key: value}
        return event

    return transform
