"""Every ``pdrelay_*`` metric, on an injected registry, with every label combination
created at start so a failure reason shows 0 rather than "no data"; and prometheus_client's
process, platform and gc collectors on the same registry.

Per routing key metrics are labelled by the key's configured *name* (never the secret). A
name a template produced that the config does not define is labelled ``unknown``: a label
value is never a raw value from a client. Rule names come from the rule files; every name
of the loaded rules is created at each (re)load, and names of earlier loads are kept.
The queue per key is read from the outbox at scrape time (:meth:`Metrics.refresh`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from receiver.auth import REFUSAL_REASONS
from receiver.breaker import BreakerState
from receiver.errors import OutboxUnavailable, Reason
from receiver.settings import ENDPOINT_GROUPS

if TYPE_CHECKING:
    from receiver.outbox.contract import KeyDepth
    from transforms import Evaluation

__all__ = ["AUTH_RESULTS", "INTAKE_CODES", "OUTBOX_OPERATIONS", "REJECT_REASONS", "UNKNOWN_KEY", "Metrics"]

REJECT_REASONS = (
    "invalid_body", "too_large", "outbox_unavailable", "busy", "unsupported_encoding", "body_timeout",
)
AUTH_RESULTS = ("allowed", "refused")
OUTBOX_OPERATIONS = ("intake", "delivery", "settle", "readiness", "scrape")
"""``pdrelay_outbox_unavailable_total{operation}``: what found the outbox unavailable — intake's commit, the
dispatcher's claim, a settle after a send (retried until it goes through), ``/readyz``'s check, a scrape."""
UNKNOWN_KEY = "unknown"
"""The label of every routing key name the config does not define."""
INTAKE_CODES = ("200", "400", "401", "403", "408", "413", "415", "429", "500", "503")
"""``pdrelay_intake_responses_total{code}``: these codes by themselves, any other by its class (``4xx``)."""
_INTAKE_CLASSES = ("2xx", "3xx", "4xx", "5xx")
_WAIT_BUCKETS = (0.0, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Metrics:
    """The service's metrics; one instance per app, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, routing_keys: Iterable[str] = (),
                 version: str | None = None) -> None:
        self.registry = registry
        self.routing_keys = frozenset(routing_keys)
        self._labels = (*sorted(self.routing_keys), UNKNOWN_KEY)
        self.throttled_by_key: dict[str, int] = dict.fromkeys(self._labels, 0)  # for /status: 429s since start
        self._refresh: Callable[[], Awaitable[None]] | None = None
        self._hits: dict[str, Counter] = {}  # rule name -> its pdrelay_rule_hits_total child
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
            "pdrelay_events_enqueued_total", "Events committed to the outbox, by routing key name.",
            ["routing_key"], registry=registry,
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
            "pdrelay_events_sent_total", "Events PagerDuty accepted, by routing key name.", ["routing_key"],
            registry=registry,
        )
        self.events_throttled = Counter(
            "pdrelay_events_throttled_total", "PagerDuty 429 answers, by routing key name.", ["routing_key"],
            registry=registry,
        )
        self.events_failed = Counter(
            "pdrelay_events_failed_total", "Failed delivery attempts, by reason.", ["reason"], registry=registry
        )
        self.events_dead_lettered = Counter(
            "pdrelay_events_dead_lettered_total", "Events dead-lettered, by routing key name and reason.",
            ["routing_key", "reason"], registry=registry,
        )
        self.outbox_queued = Gauge(
            "pdrelay_outbox_queued", "Queued events, by routing key name (read at scrape).", ["routing_key"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "pdrelay_outbox_oldest_queued_age_seconds",
            "Age of the first queued event (arrival order), by routing key name; 0 when none is queued.",
            ["routing_key"], registry=registry,
        )
        self.limiter_wait = Histogram(
            "pdrelay_limiter_wait_seconds",
            "Time an event ready to send waited for its routing key's budget (rate limit or 429 pause).",
            ["routing_key"], buckets=_WAIT_BUCKETS, registry=registry,
        )
        self.limiter_store_errors = Counter(
            "pdrelay_limiter_store_errors_total",
            "Shared rate budget operations that failed in Redis (sends wait and retry; none goes out unpaced).",
            registry=registry,
        )
        self.outbox_unavailable = Counter(
            "pdrelay_outbox_unavailable_total",
            "Outbox operations that failed because the outbox was unavailable (Redis unreachable, the SQLite file "
            "not writable), by operation.", ["operation"], registry=registry,
        )
        self.outbox_available = Gauge(
            "pdrelay_outbox_available",
            "1 if the latest outbox operation went through, 0 if it found the outbox unavailable.",
            registry=registry,
        )
        self._outbox_down = False
        self.rule_hits = Counter(
            "pdrelay_rule_hits_total",
            "Rules that applied, by rule name: once per event produced (or alert dropped) that the rule shaped.",
            ["rule"], registry=registry,
        )
        self.build_info = Gauge("pdrelay_build_info", "1, labelled with pdrelay's version.", ["version"],
                                registry=registry)
        self.intake_responses = Counter(
            "pdrelay_intake_responses_total", "Answers to POST /v1/alertmanager, by status code (or class).",
            ["code"], registry=registry,
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
        self._unavailable = {op: self.outbox_unavailable.labels(op) for op in OUTBOX_OPERATIONS}
        self.outbox_available.set(1)  # the outbox opened at start, or pdrelay did not start
        for r in Reason:
            self.events_failed.labels(r.value)
        self._enqueued = {key: self.events_enqueued.labels(key) for key in self._labels}
        for key in self._labels:
            self.events_sent.labels(key)
            self.events_throttled.labels(key)
            self.outbox_queued.labels(key)
            self.outbox_oldest_age.labels(key)
            self.limiter_wait.labels(key)
            for r in Reason:
                self.events_dead_lettered.labels(key, r.value)
        for code in (*INTAKE_CODES, *_INTAKE_CLASSES):
            self.intake_responses.labels(code)
        self.build_info.labels(version if version is not None else _version()).set(1)
        if registry is not REGISTRY:  # prometheus_client's default registry has them already
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    # ------------------------------------------------------------------ per routing key

    def key(self, name: str) -> str:
        """The label for routing key name ``name``: itself when configured, else ``unknown``."""
        return name if name in self.routing_keys else UNKNOWN_KEY

    def enqueued(self, by_key: Mapping[str, int]) -> None:
        children = self._enqueued
        for name, n in by_key.items():
            if n:
                children[name if name in children else UNKNOWN_KEY].inc(n)

    def sent(self, routing_key: str) -> None:
        self.events_sent.labels(self.key(routing_key)).inc()

    def dead_lettered(self, routing_key: str, reason: Reason, n: int = 1) -> None:
        if n:
            self.events_dead_lettered.labels(self.key(routing_key), reason.value).inc(n)

    def throttled(self, routing_key: str) -> None:
        """PagerDuty answered 429 for ``routing_key``."""
        label = self.key(routing_key)
        self.events_throttled.labels(label).inc()
        self.throttled_by_key[label] += 1

    def limiter_waited(self, routing_key: str, seconds: float) -> None:
        self.limiter_wait.labels(self.key(routing_key)).observe(max(0.0, seconds))

    # ------------------------------------------------------------------ rules and intake

    def rules_loaded(self, names: Iterable[str]) -> None:
        """Create ``pdrelay_rule_hits_total`` for every rule name of a (re)load; earlier names stay."""
        for name in names:
            if name not in self._hits:
                self._hits[name] = self.rule_hits.labels(name)

    def hit(self, counts: Mapping[str, int]) -> None:
        """Add ``counts`` (rule name → hits) to the rule hit counters: one lock per rule, not per event."""
        hits = self._hits
        for name, n in counts.items():
            child = hits.get(name)
            if child is None:  # a name no load announced (a rule set swapped in by hand): created now
                child = hits[name] = self.rule_hits.labels(name)
            child.inc(n)

    def evaluated(self, evaluation: Evaluation) -> None:
        """Count the rule hits of one notification (on intake's path: one pass, no label lookup): each rule
        named by an event it produced (valid or not), and the rule that dropped each dropped alert."""
        counts: dict[str, int] = {}
        for events in (evaluation.events, evaluation.invalid):
            for ev in events:
                for name in ev.rules:
                    counts[name] = counts.get(name, 0) + 1
        for _, rule in evaluation.dropped:
            if rule:
                counts[rule] = counts.get(rule, 0) + 1
        if counts:
            self.hit(counts)

    def intake_answered(self, status: int) -> None:
        code = str(status)
        self.intake_responses.labels(code if code in INTAKE_CODES else f"{status // 100}xx").inc()

    # ------------------------------------------------------------------ outbox availability

    def outbox_failed(self, operation: str) -> None:
        """``operation`` (one of :data:`OUTBOX_OPERATIONS`) found the outbox unavailable."""
        self._unavailable[operation].inc()
        self._outbox_down = True
        self.outbox_available.set(0)

    def outbox_reached(self) -> None:
        """An outbox operation went through (free while the outbox was not found down)."""
        if self._outbox_down:
            self._outbox_down = False
            self.outbox_available.set(1)

    # ------------------------------------------------------------------ scrape time

    def track_keys(self, read: Callable[[], Awaitable[Mapping[str, KeyDepth]]], now: Callable[[], float]) -> None:
        """At each :meth:`refresh`, set the per key queue gauges from ``read()`` (the outbox) at wall time ``now()``."""

        async def refresh() -> None:
            depths = await read()
            at = now()
            queued = dict.fromkeys(self._labels, 0)
            oldest: dict[str, float] = dict.fromkeys(self._labels, 0.0)
            for name, depth in depths.items():
                label = self.key(name)
                queued[label] += depth.queued
                if depth.oldest_queued_at is not None:
                    oldest[label] = max(oldest[label], at - depth.oldest_queued_at)
            for label in self._labels:
                self.outbox_queued.labels(label).set(queued[label])
                self.outbox_oldest_age.labels(label).set(max(0.0, oldest[label]))

        self._refresh = refresh

    async def refresh(self) -> None:
        """Bring what is read at scrape time up to date (before :func:`prometheus_client.generate_latest`).
        An unavailable outbox leaves the per key gauges as last read and is counted: the scrape still answers."""
        if self._refresh is not None:
            try:
                await self._refresh()
            except OutboxUnavailable:
                self.outbox_failed("scrape")
            else:
                self.outbox_reached()

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


def _version() -> str:
    import receiver

    return str(receiver.__version__)
