"""pdrelay's pure rule engine: Alertmanager alerts in, PagerDuty Events v2 bodies out.

No I/O except :func:`load_rules` reading the rules files (and importing the plugins named
in them: entry points, and ``module:callable`` from the modules its ``allow_plugins``
allows, none by default). The receiver parses a webhook body into a :class:`Group`, calls
:meth:`RuleSet.evaluate` and queues the :class:`RenderedEvent` items it gets back
(:class:`InvalidEvent` items are dead-lettered).

A plugin is a factory returning a :data:`Transform`, a callable
``(AlertEvent) -> AlertEvent | None``; it is named in a rules file as ``module:callable``
or by the name of an entry point in the :data:`PLUGIN_GROUP` group (see
:mod:`transforms.examples`).
"""

from __future__ import annotations

from transforms.base import Alert, AlertEvent, Group, InvalidEvent, RenderedEvent, Transform
from transforms.engine import Evaluation
from transforms.registry import PLUGIN_GROUP
from transforms.report import evaluation_to_json
from transforms.rules import RulesError, RuleSet, load_rules
from transforms.trace import trace_to_json

__all__ = [
    "PLUGIN_GROUP",
    "Alert",
    "AlertEvent",
    "Evaluation",
    "Group",
    "InvalidEvent",
    "RenderedEvent",
    "RuleSet",
    "RulesError",
    "Transform",
    "evaluation_to_json",
    "load_rules",
    "trace_to_json",
]
