"""A PagerDuty stand-in that imitates the real limits, and helpers to build Alertmanager bodies.

:class:`LimitedPagerDuty` wraps the e2e stand-in (``e2e_support.PagerDutyStandIn``):

* per routing key, a sliding-window budget: more than ``per_key`` events in the last
  ``window_seconds`` (counted on arrival) → ``429 {"status": "throttle event", ...}``;
* a request body over ``max_bytes`` (PagerDuty: 512,000 bytes) → ``413``;
* an event PagerDuty would refuse → ``400`` with PagerDuty's error body; on top of the
  e2e checks, ``payload.source == reject_source`` ("reject-me") is refused, so a rule can
  produce a deterministic 400 (pdrelay normalises severities itself);
* ``hang(count, delay)``: the next ``count`` requests are ingested (recorded as accepted, as
  PagerDuty would) but answered only after ``delay`` seconds.

Its window runs on ``clock`` (``time.monotonic`` by default; a test of the stand-in itself passes
a clock it moves by hand).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from e2e_support import PagerDutyStandIn, Received, Reply, pd_body, validate_event

THROTTLE_BODY = {"status": "throttle event", "message": "Requests for this service are arriving too quickly."}
PD_MAX_BYTES = 512_000
REPO = Path(__file__).resolve().parents[2]


class LimitedPagerDuty(PagerDutyStandIn):
    """:class:`PagerDutyStandIn` with PagerDuty's per-key sliding window, size limit and a 400 rule."""

    def __init__(
        self,
        *,
        per_key: int = 20,
        window_seconds: float = 1.0,
        max_bytes: int = PD_MAX_BYTES,
        reject_source: str = "reject-me",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.per_key = per_key
        self.window_seconds = window_seconds
        self.max_bytes = max_bytes
        self.reject_source = reject_source
        self._windows: defaultdict[str, deque[float]] = defaultdict(deque)
        self._hang_count = 0
        self._hang_delay = 0.0
        self.throttled = 0
        self.too_large = 0
        self.throttle_ages: list[float] = []  # at each 429: age of the oldest event still in the window

    def hang(self, count: int, delay: float) -> None:
        """Ingest the next ``count`` requests but answer each only after ``delay`` seconds."""
        with self._lock:
            self._hang_count, self._hang_delay = count, delay

    def count(self, status: int) -> int:
        return sum(1 for r in self.received() if r.status == status)

    def _throttle(self, routing_key: str, now: float) -> bool:
        """True when ``routing_key`` already had ``per_key`` events in ``(now - window, now]``."""
        window = self._windows[routing_key]
        while window and window[0] <= now - self.window_seconds:
            window.popleft()
        if len(window) >= self.per_key:
            self.throttle_ages.append(now - window[0])
            return True
        window.append(now)
        return False

    async def _enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = self.clock()
        if len(raw) > self.max_bytes:
            with self._lock:
                self.too_large += 1
                self._received.append(Received({"_too_large": len(raw)}, 413, now))
            body = {"status": "invalid event", "message": "Request entity too large",
                    "errors": [f"Request body is {len(raw)} bytes, limit is {self.max_bytes}"]}
            return web.json_response(body, status=413)
        try:
            event: Any = json.loads(raw)
        except ValueError:
            body = {"status": "Unrecognized object", "message": "Event object format is unrecognized",
                    "errors": ["JSON parse error"]}
            return web.json_response(body, status=400)
        delay = 0.0
        with self._lock:
            reply = self._replies.pop(0) if self._replies else Reply(self._default)
            if self._hang_count > 0:
                self._hang_count -= 1
                delay = self._hang_delay
            status = reply.status
            body_out: Mapping[str, Any] | None = reply.body
            if 200 <= status < 300:
                key = str(event.get("routing_key")) if isinstance(event, dict) else ""
                if self._throttle(key, now):
                    self.throttled += 1
                    status, body_out = 429, THROTTLE_BODY
                else:
                    errors = validate_event(event)
                    payload = event.get("payload") if isinstance(event, dict) else None
                    if isinstance(payload, dict) and payload.get("source") == self.reject_source:
                        errors.append(f"'payload.source' {self.reject_source!r} is not accepted")
                    if errors:
                        status, body_out = 400, pd_body(400, errors=errors)
            recorded = event if isinstance(event, dict) else {"_not_an_object": event}
            self._received.append(Received(recorded, status, now))
        if body_out is None:
            dedup = event.get("dedup_key") if isinstance(event, dict) else None
            body_out = pd_body(status, dedup_key=dedup or uuid.uuid4().hex)
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(dict(body_out), status=status, headers=dict(reply.headers))


# --------------------------------------------------------------------------- Alertmanager bodies

FIRING_ENDS_AT = "0001-01-01T00:00:00Z"


def fingerprint(n: int) -> str:
    return f"{n:016x}"


def am_alert(n: int, *, resolved: bool = False, alertname: str = "Storm",
             extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One ``alerts[]`` item as Alertmanager 0.25 writes it; fingerprint = hex of ``n``."""
    labels = {"alertname": alertname, "instance": f"host-{n}:9100", "job": "node", "severity": "critical",
              **(extra_labels or {})}
    return {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": {"summary": f"{alertname} on host-{n}"},
        "startsAt": "2026-11-25T10:00:00.000Z",
        "endsAt": "2026-11-25T10:05:00.000Z" if resolved else FIRING_ENDS_AT,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
        "fingerprint": fingerprint(n),
    }


def am_body(alerts: Sequence[dict[str, Any]], group: str = "Storm") -> dict[str, Any]:
    """An Alertmanager 0.25 webhook body for one group (group_by [alertname])."""
    firing = any(a["status"] == "firing" for a in alerts)
    labels = [a["labels"] for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(lab.get(k) == v for lab in labels)}
    return {
        "receiver": "pdrelay", "status": "firing" if firing else "resolved", "alerts": list(alerts),
        "groupLabels": {"alertname": group}, "commonLabels": common, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}', "truncatedAlerts": 0,
    }


def outbox_cli(config: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """``python -m receiver outbox ARGS --config CONFIG`` (bounded by ``timeout``)."""
    cmd = [sys.executable, "-m", "receiver", "outbox", *args, "--config", str(config)]
    return subprocess.run(cmd, cwd=config.parent, capture_output=True, text=True, timeout=timeout, check=False)
