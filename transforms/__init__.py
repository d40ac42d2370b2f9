"""pdrelay's pure rule engine: Alertmanager alerts in, PagerDuty Events v2 bodies out.

No I/O except :func:`load_rules` reading the rules files (and importing plugins named in
them). The receiver parses a webhook body into a :class:`Group`, calls
:meth:`RuleSet.evaluate` and queues the :class:`RenderedEvent` items it gets back.
"""

from __future__ import annotations

from transforms.base import Action, Alert, AlertEvent, Chain, Group, InvalidEvent, RenderedEvent, Transform
from transforms.collapse import DEFAULT_ROUTING_KEY, MAX_DEDUP_KEY_CHARS, Collapsed, collapse
from transforms.engine import Engine, Evaluation
from transforms.fields import SEVERITIES
from transforms.match import Matcher, MatcherError, parse_matchers
from transforms.registry import PLUGIN_GROUP, STEP_TYPES
from transforms.render import (
    MAX_EVENT_BYTES,
    MAX_SUMMARY_CHARS,
    canonical_json,
    encoded_size,
    payload_hash,
    render_event,
)
from transforms.report import evaluation_to_json
from transforms.rules import RulesError, RuleSet, load_rules
from transforms.template import RenderError, Template, TemplateError, compile_template

__all__ = [
    "DEFAULT_ROUTING_KEY",
    "MAX_DEDUP_KEY_CHARS",
    "MAX_EVENT_BYTES",
    "MAX_SUMMARY_CHARS",
    "PLUGIN_GROUP",
    "SEVERITIES",
    "STEP_TYPES",
    "Action",
    "Alert",
    "AlertEvent",
    "Chain",
    "Collapsed",
    "Engine",
    "Evaluation",
    "Group",
    "InvalidEvent",
    "Matcher",
    "MatcherError",
    "RenderError",
    "RenderedEvent",
    "RuleSet",
    "RulesError",
    "Template",
    "TemplateError",
    "Transform",
    "canonical_json",
    "collapse",
    "compile_template",
    "encoded_size",
    "evaluation_to_json",
    "load_rules",
    "parse_matchers",
    "payload_hash",
    "render_event",
]
