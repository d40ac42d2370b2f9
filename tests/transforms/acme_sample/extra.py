"""A submodule of the test plugin package: ``acme_sample`` allows it too."""

from __future__ import annotations

from transforms import AlertEvent, Transform

__all__ = ["component"]


def component(name: str) -> Transform:
    """Sets the ``component`` field to ``name``."""

    def transform(event: AlertEvent) -> AlertEvent:
        event.fields["component"] = name
        return event

    return transform
