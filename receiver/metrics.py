"""Every ``pdrelay_*`` metric, on an injected registry, with every label combination
created at start so a failure reason shows 0 rather than "no data"."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from receiver.auth import REFUSAL_REASONS
from receiver.breaker import BreakerState
from receiver.errors import Reason
from receiver.settings import ENDPOINT_GROUPS

__all__ = ["AUTH_RESULTS", "REJECT_REASONS", "Metrics"]

REJECT_REASONS = (
    "invalid_body", "too_large", "outbox_unavailable", "busy", "unsupported_encoding", "body_timeout",
)
AUTH_RESULTS = ("allowed", "refused")
_BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Metrics:
    """The service's metrics; one instance per app, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.bodies_received = Counter(
            "pdrelay_bodies_received_total", "Alertmanager webhook bodies received.", registry=registry
        )
        self.bodies_accepted = Counter(
            "pdrelay_bodies_accepted_total",
            "Bodies answered 200 after their events were committed.",
            registry=registry,
        )
        self.bodies_rejected = Counter(
            "pdrelay_bodies_rejected_total", "Bodies refused, by reason.", ["reason"], registry=registry
        )
        self.alerts_received = Counter(
            "pdrelay_alerts_received_total", "Alerts in accepted bodies.", registry=registry
        )
        self.alerts_dropped = Counter(
            "pdrelay_alerts_dropped_total", "Alerts dropped by a rule.", registry=registry
        )
        self.template_errors = Counter(
            "pdrelay_template_errors_total",
            "Template renders that failed and fell back to the field's default.",
            registry=registry,
        )
        self.events_enqueued = Counter(
            "pdrelay_events_enqueued_total", "Events committed to the outbox.", registry=registry
        )
        self.events_duplicate = Counter(
            "pdrelay_events_duplicate_total",
            "Events not queued because PagerDuty was already told the same.",
            registry=registry,
        )
        self.events_superseded = Counter(
            "pdrelay_events_superseded_total",
            "Triggers not sent because their resolve was already queued (skip_superseded_triggers).",
            registry=registry,
        )
        self.events_sent = Counter(
            "pdrelay_events_sent_total", "Events PagerDuty accepted.", registry=registry
        )
        self.events_failed = Counter(
            "pdrelay_events_failed_total", "Failed delivery attempts, by reason.", ["reason"], registry=registry
        )
        self.events_dead_lettered = Counter(
            "pdrelay_events_dead_lettered_total", "Events dead-lettered, by reason.", ["reason"],
            registry=registry,
        )
        self.send_latency = Histogram(
            "pdrelay_send_duration_seconds",
            "Time of one PagerDuty request.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "pdrelay_outbox_depth", "Stored events, by state.", ["state"], registry=registry
        )
        self.rules_reload_success = Gauge(
            "pdrelay_rules_last_reload_successful", "1 if the last rules (re)load succeeded.",
            registry=registry,
        )
        self.rules_loaded_at = Gauge(
            "pdrelay_rules_last_reload_success_timestamp_seconds",
            "When rules were last loaded successfully.",
            registry=registry,
        )
        self.dry_run = Gauge("pdrelay_dry_run", "1 when pdrelay sends nothing (dry-run).", registry=registry)
        self.breaker_state = Gauge(
            "pdrelay_breaker_state",
            "Circuit breaker per PagerDuty endpoint: 0 closed, 1 half-open, 2 open.",
            ["endpoint"],
            registry=registry,
        )
        self.auth = Counter(
            "pdrelay_auth_total", "Requests to protected endpoints, by endpoint group and result.",
            ["group", "result"], registry=registry,
        )
        self.auth_refused = Counter(
            "pdrelay_auth_refused_total", "Requests refused by authentication (401/403/400), by group and reason.",
            ["group", "reason"], registry=registry,
        )
        self.dispatcher_restarts = Counter(
            "pdrelay_dispatcher_restarts_total", "Restarts of the dispatcher after an unexpected error.",
            registry=registry,
        )
        self.audit_errors = Counter(
            "pdrelay_audit_errors_total", "Audit entries that could not be written (and are lost).",
            registry=registry,
        )
        self.audit_head = Info(
            "pdrelay_audit_head",
            "The audit chain's head (<seq>:<line hash>) after the last write, for `pdrelay audit verify --head`.",
            registry=registry,
        )
        self.audit_head.info({"head": ""})
        for group in ENDPOINT_GROUPS:
            for result in AUTH_RESULTS:
                self.auth.labels(group, result)
            for why in REFUSAL_REASONS:
                self.auth_refused.labels(group, why)
        for reason in REJECT_REASONS:
            self.bodies_rejected.labels(reason)
        for r in Reason:
            self.events_failed.labels(r.value)
            self.events_dead_lettered.labels(r.value)

    def breaker_changed(self, endpoint: str, old: BreakerState, new: BreakerState) -> None:
        """A breaker listener: keep ``pdrelay_breaker_state`` current."""
        self.breaker_state.labels(endpoint).set(_BREAKER_VALUES[new])

    def audit_head_written(self, head: str) -> None:
        """An ``AuditLog`` ``on_head`` listener: keep ``pdrelay_audit_head_info`` current."""
        self.audit_head.info({"head": head})

    def track_depth(self, depth: Callable[[], tuple[int, int]]) -> None:
        """Read the outbox depth at scrape time: ``depth()`` returns (queued, dead)."""
        self.outbox_depth.labels("queued").set_function(lambda: depth()[0])
        self.outbox_depth.labels("dead").set_function(lambda: depth()[1])
