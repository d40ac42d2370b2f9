"""Servers and processes for the end-to-end tests: a PagerDuty stand-in, a real Alertmanager, pdrelay.

Everything listens on 127.0.0.1 only. Every process is started with ``Popen`` and stopped by its
PID (terminate, then kill after a bounded wait); every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import redis
import yaml
from aiohttp import web

LOOPBACK = "127.0.0.1"
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
PD_SEVERITIES = frozenset({"critical", "error", "warning", "info"})
PD_ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
DEFAULT_WAIT = 20.0
EXTERNAL_URL = "http://alertmanager.example:9093"  # Alertmanager's --web.external-url: a name, never dialled
AM_LISTENING = re.compile(rf'msg="Listening on" address={re.escape(LOOPBACK)}:(\d+)')
AM_CLUSTER_PORT = re.compile(r"memberlist: Using dynamic bind port (\d+)")  # memberlist, when given port 0

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = DEFAULT_WAIT,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until it returns something truthy and return that, or raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0, verify: ssl.SSLContext | bool = True) -> httpx.Response | None:
    """GET ``url``; None when nothing answers (connection refused, timeout). ``verify``: TLS context for https."""
    try:
        return httpx.get(url, timeout=timeout, trust_env=False, verify=verify)
    except httpx.TransportError:
        return None


def http_post(url: str, body: bytes, timeout: float = 10.0) -> httpx.Response:
    """POST a JSON body as Alertmanager does (``application/json``)."""
    headers = {"Content-Type": "application/json", "User-Agent": "pdrelay-e2e"}
    return httpx.post(url, content=body, headers=headers, timeout=timeout, trust_env=False)


def metric_sum(text: str, name: str) -> float | None:
    """Sum every sample of metric ``name`` in a Prometheus text exposition; None if it is absent."""
    total: float | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0].strip() == name:
            total = (total or 0.0) + float(value)
    return total


def group_dedup_key(group_key: str) -> str:
    """The dedup_key Alertmanager's own PagerDuty notifier uses: lowercase hex SHA-256 of the group key."""
    return hashlib.sha256(group_key.encode()).hexdigest()


def rfc3339(moment: datetime) -> str:
    """Format a UTC datetime the way Alertmanager's API accepts it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop ``proc`` by its PID: SIGTERM, then SIGKILL after ``timeout`` s; return its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


# --------------------------------------------------------------------------- PagerDuty stand-in


@dataclass(frozen=True, slots=True)
class Reply:
    """One programmed answer of the stand-in; ``body`` None means PagerDuty's own body for ``status``."""

    status: int
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Received:
    """One event the stand-in received, with the status it answered."""

    event: dict[str, Any]
    status: int
    at: float  # time.monotonic()
    path: str = "/v2/enqueue"  # /v2/change/enqueue for a Change Event

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def triple(self) -> tuple[str, str, str]:
        """``(event_action, dedup_key, routing_key)``."""
        return (
            str(self.event.get("event_action")),
            str(self.event.get("dedup_key")),
            str(self.event.get("routing_key")),
        )


def pd_body(status: int, dedup_key: str | None = None, errors: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON body PagerDuty's Events API v2 answers with for ``status``."""
    if 200 <= status < 300:
        return {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    if status == 400:
        return {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}
    if status == 429:
        return {"status": "throttle event", "message": "Requests for this service are arriving too quickly"}
    return {"status": "error", "message": "Internal server error"}


def validate_event(event: Any) -> list[str]:
    """The reasons PagerDuty would reject ``event`` with a 400 (a subset of its checks)."""
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' is missing or not 32 characters")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' is missing or invalid")
    dedup = event.get("dedup_key")
    if action != "trigger" and not (isinstance(dedup, str) and dedup):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if isinstance(dedup, str) and len(dedup) > 255:
        errors.append("'dedup_key' is longer than 255 characters")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors.append("'payload.summary' is missing or blank")
        elif len(summary) > 1024:
            errors.append("Description is too long (maximum is 1024 characters)")
        source = payload.get("source")
        if not isinstance(source, str) or not source.strip():
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append("'payload.severity' is invalid")
    return errors


_CHANGE_KEYS = frozenset({"routing_key", "payload", "links", "images"})
_CHANGE_PAYLOAD_KEYS = frozenset({"summary", "source", "timestamp", "custom_details"})


def validate_change_event(event: Any) -> list[str]:
    """The reasons PagerDuty would reject Change Event ``event`` with a 400 (a subset of its checks; strict about
    fields alert events have and change events do not)."""
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' is missing or not 32 characters")
    errors.extend(f"unknown field '{k}'" for k in sorted(set(event) - _CHANGE_KEYS))
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return [*errors, "'payload' is missing"]
    errors.extend(f"unknown field 'payload.{k}'" for k in sorted(set(payload) - _CHANGE_PAYLOAD_KEYS))
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("Summary is too long (maximum is 1024 characters)")
    return errors


class PagerDutyStandIn:
    """A loopback PagerDuty Events v2 endpoint in its own thread and event loop.

    ``POST /v2/enqueue`` records every JSON event in arrival order and answers 202 with PagerDuty's
    body (400 for an event PagerDuty would reject); ``POST /v2/change/enqueue`` does the same for
    Change Events, in the same record (``Received.path`` tells them apart). Programmed replies
    (``queue``) are used first, then the default status (``set_default``). ``POST
    /capture/alertmanager`` records Alertmanager webhook bodies verbatim, so a test can see what
    Alertmanager sent next to what pdrelay sent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._captured: list[bytes] = []
        self._replies: list[Reply] = []
        self._default = 202
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="pd-stand-in", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v2/enqueue", self._enqueue)
        app.router.add_post("/v2/change/enqueue", self._change)
        app.router.add_post("/capture/alertmanager", self._capture)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # addresses -----------------------------------------------------------------------------------
    @property
    def events_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v2/enqueue"

    @property
    def capture_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/capture/alertmanager"

    # programming ---------------------------------------------------------------------------------
    def set_default(self, status: int) -> None:
        """Answer ``status`` (with PagerDuty's body) whenever no programmed reply is queued."""
        with self._lock:
            self._default = status

    def queue(self, *replies: Reply | int) -> None:
        """Use these answers, in order, for the next events (e.g. ``queue(500, 429, 400)``)."""
        with self._lock:
            self._replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    # observations --------------------------------------------------------------------------------
    def received(self) -> list[Received]:
        """Every event received so far, in arrival order, with the answer given."""
        with self._lock:
            return list(self._received)

    def accepted(self) -> list[Received]:
        """The events answered 2xx, in arrival order."""
        return [r for r in self.received() if r.accepted]

    def captured(self) -> list[bytes]:
        """The raw Alertmanager webhook bodies posted to ``capture_url``, in arrival order."""
        with self._lock:
            return list(self._captured)

    def captured_json(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.captured()]

    def wait_captured(self, count: int, *, timeout: float = DEFAULT_WAIT) -> list[bytes]:
        """Poll until at least ``count`` Alertmanager bodies were captured; return all of them."""

        def probe() -> list[bytes] | None:
            bodies = self.captured()
            return bodies if len(bodies) >= count else None

        return wait_until(probe, what=f"{count} captured Alertmanager bodies", timeout=timeout)

    def wait_accepted(
        self, done: Callable[[list[Received]], bool], *, what: str, timeout: float = DEFAULT_WAIT
    ) -> list[Received]:
        """Poll until ``done(accepted events)`` holds; return those events."""

        def probe() -> list[Received] | None:
            events = self.accepted()
            return events if done(events) else None

        return wait_until(probe, what=what, timeout=timeout)

    # handlers ------------------------------------------------------------------------------------
    async def _enqueue(self, request: web.Request) -> web.Response:
        return await self._answer(request, validate_event)

    async def _change(self, request: web.Request) -> web.Response:
        return await self._answer(request, validate_change_event)

    async def _answer(self, request: web.Request, validate: Callable[[Any], list[str]]) -> web.Response:
        raw = await request.read()
        try:
            event: Any = json.loads(raw)
        except ValueError:
            body = {"status": "Unrecognized object", "message": "Event object format is unrecognized"}
            return web.json_response({**body, "errors": ["JSON parse error"]}, status=400)
        with self._lock:
            reply = self._replies.pop(0) if self._replies else Reply(self._default)
        status, headers = reply.status, dict(reply.headers)
        body_out: Mapping[str, Any] | None = reply.body
        if 200 <= status < 300:
            errors = validate(event)
            if errors:
                status, body_out = 400, pd_body(400, errors=errors)
        if body_out is None:
            dedup = event.get("dedup_key") if isinstance(event, dict) else None
            body_out = pd_body(status, dedup_key=dedup or uuid.uuid4().hex)
        recorded = event if isinstance(event, dict) else {"_not_an_object": event}
        with self._lock:
            self._received.append(Received(recorded, status, time.monotonic(), request.path))
        return web.json_response(dict(body_out), status=status, headers=headers)

    async def _capture(self, request: web.Request) -> web.Response:
        raw = await request.read()
        with self._lock:
            self._captured.append(raw)
        return web.Response(status=200)


# --------------------------------------------------------------------------- Alertmanager


@dataclass(slots=True)
class AlertSpec:
    """An alert the test posts to Alertmanager's API; ``starts_at`` stays fixed so a resolve matches."""

    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    generator_url: str = "http://prometheus.example:9090/graph?g0.expr=up"

    def firing(self, lasts: timedelta = timedelta(hours=1)) -> dict[str, Any]:
        """The API object of this alert firing (``endsAt`` in the future)."""
        return self._api(datetime.now(UTC) + lasts)

    def resolved(self) -> dict[str, Any]:
        """The API object of this alert resolved now (``endsAt`` = now)."""
        return self._api(datetime.now(UTC))

    def _api(self, ends_at: datetime) -> dict[str, Any]:
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(ends_at),
            "generatorURL": self.generator_url,
        }


class Alertmanager:
    """A real Alertmanager 0.25 process on loopback, one webhook receiver; clustering off unless ``peers``.

    The root route groups by ``group_by`` (child ``routes`` optional); its receiver ``pdrelay`` has
    one ``webhook_configs`` entry (``send_resolved: true``) per URL in ``webhook_urls``, each with
    ``http_config`` when given (e.g. ``{"authorization": {...}}`` or ``{"tls_config": {...}}``).

    It listens on port 0; the kernel's choice is read back from its log, where Alertmanager 0.25
    (exporter-toolkit) writes ``msg="Listening on" address=127.0.0.1:PORT`` once the socket is bound
    and listening. Its external URL is fixed (``EXTERNAL_URL``), as the bound port is not known when
    it starts; it appears only in the bodies it sends (``externalURL``) and in links.
    """

    def __init__(
        self,
        workdir: Path,
        webhook_urls: Sequence[str],
        *,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        routes: Sequence[Mapping[str, Any]] = (),
        http_config: Mapping[str, Any] | None = None,
        peers: Sequence[str] | None = None,
        peer_timeout: str = "500ms",
    ) -> None:
        """``peers``: None, clustering off; else HA mode, gossip on ``127.0.0.1:0`` (``cluster_port`` once
        started) joining these ``HOST:PORT`` cluster addresses (none: the first peer), with short timings;
        ``peer_timeout``: how long a peer waits per position in the cluster before it notifies (``0s``: every
        peer notifies at once, as when gossip falls behind)."""
        self.workdir = workdir
        self.port = 0  # known once started
        self.peers = None if peers is None else list(peers)
        self.cluster_port = 0  # known once started, in HA mode
        self.peer_timeout = peer_timeout
        extra = {"http_config": dict(http_config)} if http_config else {}
        self.config_path = workdir / "alertmanager.yml"
        self.log_path = workdir / "alertmanager.log"
        self.config: dict[str, Any] = {
            "route": {
                "receiver": "pdrelay",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
                **({"routes": [dict(r) for r in routes]} if routes else {}),
            },
            "receivers": [
                {
                    "name": "pdrelay",
                    "webhook_configs": [{"url": url, "send_resolved": True, **extra} for url in webhook_urls],
                }
            ],
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = DEFAULT_WAIT) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        storage = self.workdir / "am-data"
        storage.mkdir(exist_ok=True)
        args = [
            str(ALERTMANAGER_BIN),
            f"--config.file={self.config_path}",
            f"--storage.path={storage}",
            f"--web.listen-address={LOOPBACK}:0",
            *self._cluster_args(),
            f"--web.external-url={EXTERNAL_URL}",
            "--log.level=debug",
        ]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.port = wait_until(lambda: self._bound_port(log_start), what="Alertmanager's listening address",
                               timeout=timeout)
        if self.peers is not None:
            self.cluster_port = wait_until(lambda: self._logged(AM_CLUSTER_PORT, log_start),
                                           what="Alertmanager's cluster port", timeout=timeout)
        wait_until(self._ready, what=f"Alertmanager /-/ready on {self.url}", timeout=timeout)
        return self

    def _cluster_args(self) -> list[str]:
        """Clustering off (empty listen address), or on: port 0 (memberlist binds it and logs the port it got,
        for the next peer's ``--cluster.peer``: no port is picked before it is bound), gossip every 50 ms, a
        full sync every second, a peer waits ``peer_timeout`` per position before it notifies, at most 3 s to
        settle."""
        if self.peers is None:
            return ["--cluster.listen-address="]
        return [f"--cluster.listen-address={LOOPBACK}:0", *(f"--cluster.peer={p}" for p in self.peers),
                "--cluster.gossip-interval=50ms", "--cluster.pushpull-interval=1s",
                f"--cluster.peer-timeout={self.peer_timeout}", "--cluster.settle-timeout=3s"]

    @property
    def cluster_address(self) -> str:
        """This peer's gossip address, for another peer's ``peers``."""
        return f"{LOOPBACK}:{self.cluster_port}"

    def cluster_peers(self) -> int:
        """How many peers ``/api/v2/status`` lists in this peer's cluster (itself included)."""
        response = http_get(f"{self.url}/api/v2/status")
        if response is None or response.status_code != 200:
            return 0
        return len(response.json().get("cluster", {}).get("peers") or [])

    def _logged(self, pattern: re.Pattern[str], log_start: int) -> int | None:
        """The number ``pattern`` captures in this run's log, once it is there."""
        self._check_alive()
        with self.log_path.open("rb") as log:
            log.seek(log_start)
            found = pattern.search(log.read().decode(errors="replace"))
        return int(found.group(1)) if found else None

    def _bound_port(self, log_start: int) -> int | None:
        """The port in this run's ``msg="Listening on" address=HOST:PORT`` log line, once it is there."""
        self._check_alive()
        with self.log_path.open("rb") as log:
            log.seek(log_start)
            found = AM_LISTENING.search(log.read().decode(errors="replace"))
        return int(found.group(1)) if found else None

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"Alertmanager exited with {self.proc.returncode}:\n{self.log()}")

    def _ready(self) -> bool:
        self._check_alive()
        response = http_get(f"{self.url}/-/ready")
        return response is not None and response.status_code == 200

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post_alerts(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """POST alert objects to ``/api/v2/alerts`` (Alertmanager answers 200 with an empty body)."""
        response = http_post(f"{self.url}/api/v2/alerts", json.dumps(list(alerts)).encode())
        if response.status_code != 200:
            raise RuntimeError(f"Alertmanager refused alerts: {response.status_code} {response.text}")

    def fire(self, *alerts: AlertSpec) -> None:
        self.post_alerts(a.firing() for a in alerts)

    def resolve(self, *alerts: AlertSpec) -> None:
        self.post_alerts(a.resolved() for a in alerts)

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the active alerts with their fingerprints."""
        response = http_get(f"{self.url}/api/v2/alerts")
        if response is None or response.status_code != 200:
            raise RuntimeError(f"GET /api/v2/alerts failed: {response}")
        result: list[dict[str, Any]] = response.json()
        return result

    def fingerprints(self, *alerts: AlertSpec, timeout: float = DEFAULT_WAIT) -> list[str]:
        """The fingerprint Alertmanager gave each of ``alerts`` (waits until all are listed)."""

        def probe() -> list[str] | None:
            by_labels = {json.dumps(a["labels"], sort_keys=True): a["fingerprint"] for a in self.alerts()}
            found = [by_labels.get(json.dumps(a.labels, sort_keys=True)) for a in alerts]
            return [fp for fp in found if fp] if all(found) else None

        return wait_until(probe, what="alerts listed by Alertmanager", timeout=timeout)


# --------------------------------------------------------------------------- pdrelay

DEFAULT_RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error, send_resolved: true}
rules: []
"""


class PdRelay:
    """pdrelay as a subprocess (``python -m receiver serve --config FILE``) with its config on disk.

    The config and the outbox survive ``kill``/``start`` cycles, so a restart resumes the same queue.
    stdout and stderr go to ``log_path`` (appended across restarts). Each start listens on port 0
    (``--listen 127.0.0.1:0``) and reports the port the kernel chose in ``port_file``; ``port`` and
    ``url`` follow it, so a restart usually has a new URL (whoever was given the old one, such as an
    Alertmanager, is not told).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        events_url: str,
        rules: str = DEFAULT_RULES,
        pagerduty: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        """``config``: more sections (``auth``, ``security``…; ``server`` keys are merged into the default
        ``server``); with ``server.tls`` pdrelay listens on https and ``client_tls`` is used for its probes."""
        self.workdir = workdir
        self.port = 0  # known once started
        self.port_file = workdir / "pdrelay.port"
        self.config_path = workdir / "pdrelay.yaml"
        self.rules_path = workdir / "rules.yaml"
        self.outbox_path = workdir / "outbox.db"
        self.log_path = workdir / "pdrelay.log"
        self.config: dict[str, Any] = {
            "server": {"body_limit": "10MiB"},  # listen: given on the command line
            "pagerduty": {
                "events_url": events_url,
                "allowed_hosts": [LOOPBACK],
                "routing_keys": {"default": ROUTING_KEY},
                "dry_run": False,
                "resend_interval": "4h",
                "api_timeout": 5,
                "retry": {"initial_backoff": 0.2, "max_backoff": 2},
                **(pagerduty or {}),
            },
            "outbox": {"backend": "sqlite", "path": str(self.outbox_path)},
            "rules": {"paths": [str(self.rules_path)]},
        }
        for section, value in (config or {}).items():
            if section == "server":
                self.config["server"].update(value)
            else:
                self.config[section] = value
        self.client_tls = client_tls
        self.rules = rules
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if "tls" in self.config["server"] else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def alertmanager_url(self) -> str:
        """The receiver URL to give Alertmanager's ``webhook_configs``."""
        return f"{self.url}/v1/alertmanager"

    def start(self, timeout: float = DEFAULT_WAIT) -> Self:
        """Start (or restart) the process, read its port, and wait until ``/readyz`` answers 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("pdrelay is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.rules_path.write_text(self.rules)
        self.port_file.unlink(missing_ok=True)  # a killed run's file names a port nobody listens on
        args = [sys.executable, "-m", "receiver", "serve", "--config", str(self.config_path),
                "--listen", f"{LOOPBACK}:0", "--port-file", str(self.port_file)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.port = wait_until(self._bound_port, what=f"pdrelay's port in {self.port_file}", timeout=timeout)
        wait_until(self._ready, what=f"pdrelay /readyz on {self.url}", timeout=timeout)
        return self

    def _bound_port(self) -> int | None:
        """The port in ``port_file``, once pdrelay has written it (whole: it is renamed into place)."""
        self._check_alive()
        try:
            return int(self.port_file.read_text())
        except FileNotFoundError:
            return None

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"pdrelay exited with {self.proc.returncode}:\n{self.log()[-4000:]}")

    def _ready(self) -> bool:
        self._check_alive()
        response = http_get(f"{self.url}/readyz", verify=self.client_tls or True)
        return response is not None and response.status_code == 200

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 10.0) -> int:
        """Send ``sig`` to the process (by PID) and wait for it to exit; return the exit code."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post_alertmanager(self, body: bytes | Mapping[str, Any]) -> httpx.Response:
        """POST one Alertmanager webhook body to ``/v1/alertmanager`` as Alertmanager would."""
        raw = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        return http_post(self.alertmanager_url, raw)

    def metric(self, name: str) -> float | None:
        """The sum of metric ``name`` over its label sets, from ``/metrics``."""
        response = http_get(f"{self.url}/metrics", verify=self.client_tls or True)
        if response is None or response.status_code != 200:
            return None
        return metric_sum(response.text, name)

    def wait_outbox_empty(self, timeout: float = DEFAULT_WAIT) -> None:
        """Poll ``pdrelay_outbox_depth`` until it reads 0."""
        wait_until(
            lambda: self.metric("pdrelay_outbox_depth") == 0, what="an empty pdrelay outbox", timeout=timeout
        )


# --------------------------------------------------------------------------- Redis outbox

REDIS_URL = "redis://127.0.0.1:6379"  # the shared Redis; each test keeps to its own key prefix


def redis_outbox(prefix: str, *, lease: float = 30.0) -> dict[str, Any]:
    """The ``outbox`` section of a pdrelay replica sharing the Redis outbox (and rate budget) under ``prefix``."""
    return {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix, "lease": lease}}


def drop_redis_prefix(prefix: str) -> None:
    """Delete every key of ``prefix`` (and only those) from the shared Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match="{" + prefix + "}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


# --------------------------------------------------------------------------- fixtures' factories


class PdRelayFactory:
    """Starts pdrelay processes posting to one PagerDuty stand-in; remembers them for teardown."""

    def __init__(self, workdir: Path, pd: PagerDutyStandIn) -> None:
        self.workdir, self.pd = workdir, pd
        self.started: list[PdRelay] = []

    def __call__(
        self,
        *,
        rules: str = DEFAULT_RULES,
        pagerduty: dict[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        client_tls: ssl.SSLContext | None = None,
    ) -> PdRelay:
        workdir = self.workdir / f"pdrelay-{len(self.started)}"
        relay = PdRelay(workdir, events_url=self.pd.events_url, rules=rules, pagerduty=pagerduty,
                        config=config, client_tls=client_tls)
        self.started.append(relay)
        return relay.start()

    def logs(self) -> list[tuple[str, str]]:
        return [(str(r.log_path), r.log()) for r in self.started]


class AlertmanagerFactory:
    """Starts real Alertmanager processes; remembers them for teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Alertmanager] = []

    def __call__(self, webhook_urls: Sequence[str], **route: Any) -> Alertmanager:
        am = Alertmanager(self.workdir / f"alertmanager-{len(self.started)}", webhook_urls, **route)
        self.started.append(am)
        return am.start()

    def logs(self) -> list[tuple[str, str]]:
        return [(str(a.log_path), a.log()) for a in self.started]


def attach_process_logs(item: Any, report: Any) -> None:
    """Add the logs of the pdrelay and Alertmanager processes a failed test started to its report."""
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, PdRelayFactory | AlertmanagerFactory):
            for path, text in value.logs():
                report.sections.append((f"log {path}", text[-20000:]))
