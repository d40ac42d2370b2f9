"""A module whose name starts like ``acme_sample`` but is not inside it: ``acme_sample`` never allows it.

The tests check that refusing it imports nothing: it is never in ``sys.modules``.
"""

from __future__ import annotations

from transforms import AlertEvent, Transform

__all__ = ["tag"]


def tag(value: str) -> Transform:
    """Sets the ``class`` field to ``value``."""

    def transform(event: AlertEvent) -> AlertEvent:
        event.fields["class"] = value
        return event

    return transform
