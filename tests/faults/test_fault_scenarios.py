"""Fault injection against a PagerDuty stand-in that enforces PagerDuty's real limits.

pdrelay's own limiter is configured to the stand-in's budget (20 events / 1 s per key), with
short windows, breaker and retry timings so every scenario runs in well under 25 s. The tests
assert outcomes only (what arrived, how often, in which order, how many 429s); how long things
took (drain time against the window's minimum, when sends resume after a restart) is measured by
``tests/bench/bench_storm.py`` and ``tests/bench/bench_faults.py``. Every wait is bounded.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest
from e2e_support import DEFAULT_WAIT, PdRelayFactory, Received, wait_until
from fault_support import LimitedPagerDuty, am_alert, am_body, fingerprint, outbox_cli

from tests.fakes import FakeClock

pytestmark = pytest.mark.e2e

PER_KEY, WINDOW = 20, 1.0
RATE = {"rate_limit": {"per_key": PER_KEY, "window_seconds": WINDOW}}


def pairs(events: list[Received]) -> Counter[tuple[str, str]]:
    """``(event_action, dedup_key)`` → how many times."""
    return Counter((e.triple[0], e.triple[1]) for e in events)


def actions_by_key(events: list[Received]) -> dict[str, list[str]]:
    out: defaultdict[str, list[str]] = defaultdict(list)
    for e in events:
        out[e.triple[1]].append(e.triple[0])
    return dict(out)


def post_ok(relay: Any, body: dict[str, Any]) -> None:
    response = relay.post_alertmanager(body)
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- 1. storm

STORM = 300
BUG_429_AT_BUDGET = (
    "regression of pdrelay bug A (429s at the exact budget): a send must count in the rate window from "
    "its answer, since PagerDuty counts it on arrival"
)
BUG_DOUBLE_SEND = (
    "regression of pdrelay bug B (an event already delivered sent again, depth below 0): the claim must "
    "exclude a snapshot of the in-flight set"
)
BUG_TRIGGER_AFTER_RESOLVE = (
    "pdrelay sent a trigger AFTER its resolve (seen once while bug B was present)"
)


def wait_drained(relay: Any, timeout: float = DEFAULT_WAIT) -> float:
    """Poll ``pdrelay_outbox_depth`` until it is ≤ 0 (negative is BUG B); return it."""
    def probe() -> tuple[float] | None:
        depth = relay.metric("pdrelay_outbox_depth")
        return (depth,) if depth is not None and depth <= 0 else None
    return wait_until(probe, what="an empty pdrelay outbox", timeout=timeout)[0]


def run_storm(limited_pd: LimitedPagerDuty, relays: PdRelayFactory, pdrelay_window: float) -> float:
    """Post 30 bodies × 10 alerts on one key; check every trigger arrived; return the outbox depth after."""
    relay = relays(pagerduty={"rate_limit": {"per_key": PER_KEY, "window_seconds": pdrelay_window},
                              "backoff_on_429": 1})
    for b in range(STORM // 10):
        post_ok(relay, am_body([am_alert(b * 10 + i) for i in range(10)]))
    wanted = {("trigger", fingerprint(n)) for n in range(STORM)}
    # The drain takes at least 14 windows; the bound only stops a stuck storm, it measures nothing.
    limited_pd.wait_accepted(lambda ev: set(pairs(ev)) >= wanted, what=f"{STORM} accepted triggers", timeout=90)
    depth = wait_drained(relay)
    accepted = limited_pd.accepted()
    dups = {k: c for k, c in pairs(accepted).items() if c > 1}
    print(f"\nstorm (pdrelay window {pdrelay_window}s, stand-in {WINDOW}s): {STORM} events; "
          f"429s answered: {limited_pd.throttled}; duplicates: {len(dups)}; depth {depth}")
    assert set(pairs(accepted)) == wanted  # nothing lost
    assert limited_pd.count(400) == 0
    return depth


def known_bugs(limited_pd: LimitedPagerDuty, depth: float) -> None:
    """Regressions of two bugs this suite found (both fixed): double sends, and 429s at the exact budget."""
    dups = {k: c for k, c in pairs(limited_pd.accepted()).items() if c > 1}
    assert not dups and depth >= 0, f"{BUG_DOUBLE_SEND}: {len(dups)} sent twice, depth {depth}"
    assert limited_pd.throttled == 0, f"{BUG_429_AT_BUDGET}: {limited_pd.throttled} × 429"


def test_storm_at_exact_budget_drains_without_429(limited_pd: LimitedPagerDuty, relays: PdRelayFactory) -> None:
    """300 triggers on one key, pdrelay's rate_limit = the stand-in's (20 / 1 s): each sent once, no 429.

    How close the drain comes to the window's minimum is a benchmark: ``tests/bench/bench_storm.py``."""
    depth = run_storm(limited_pd, relays, WINDOW)
    known_bugs(limited_pd, depth)


def test_storm_with_5pct_window_margin_drains_without_429(
    limited_pd: LimitedPagerDuty, relays: PdRelayFactory
) -> None:
    """Same storm, pdrelay's window 5 % longer than the stand-in's: each sent once, no 429."""
    depth = run_storm(limited_pd, relays, WINDOW * 1.05)
    known_bugs(limited_pd, depth)


# --------------------------------------------------------------------------- 2. 503 outage


def test_503_outage_while_alerts_fire_and_resolve(limited_pd: LimitedPagerDuty, relays: PdRelayFactory) -> None:
    """Triggers and resolves posted during a 503 outage are all delivered after it, trigger before resolve."""
    limited_pd.set_default(503)
    relay = relays(pagerduty={
        **RATE, "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 1},
        "retry": {"initial_backoff": 0.1, "max_backoff": 0.5}, "retry_attempts": 1000,
    })
    alerts = range(1, 9)
    post_ok(relay, am_body([am_alert(n) for n in alerts]))
    wait_until(lambda: limited_pd.count(503) >= 3, what="three 503 answers")
    # Half resolve during the outage, then the other half; one alert re-fires with a new body (annotation).
    post_ok(relay, am_body([am_alert(n, resolved=n <= 4) for n in alerts]))
    wait_until(lambda: limited_pd.count(503) >= 6, what="more 503 answers (breaker trials)")
    post_ok(relay, am_body([am_alert(n, resolved=True) for n in alerts]))
    assert not limited_pd.accepted()
    limited_pd.set_default(202)

    expected = Counter({(a, fingerprint(n)): 1 for n in alerts for a in ("trigger", "resolve")})
    limited_pd.wait_accepted(lambda ev: set(pairs(ev)) >= set(expected), what="every trigger and resolve")
    wait_drained(relay)
    accepted = limited_pd.accepted()
    print(f"\noutage: {limited_pd.count(503)} × 503 answered; {len(accepted)} accepted; "
          f"429s: {limited_pd.throttled}")
    assert set(pairs(accepted)) == set(expected)  # nothing lost
    for key, seq in actions_by_key(accepted).items():  # trigger before resolve (BUG B may repeat one)
        assert seq[-1] == "resolve" and seq == sorted(seq, key=lambda a: a == "resolve"), (key, seq)
    assert limited_pd.throttled == 0
    assert {r.status for r in limited_pd.received()} <= {202, 503}


# --------------------------------------------------------------------------- 3. hanging responses


def test_hanging_responses_time_out_and_are_retried(limited_pd: LimitedPagerDuty, relays: PdRelayFactory) -> None:
    """Answers slower than api_timeout: retried; the last accepted action per alert is the last posted."""
    relay = relays(pagerduty={
        **RATE, "api_timeout": 0.3, "settle_delay": 1, "retry_attempts": 1000,
        "retry": {"initial_backoff": 0.1, "max_backoff": 0.5},
        "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 1},
    })
    limited_pd.hang(8, 0.6)
    alerts = range(1, 9)
    post_ok(relay, am_body([am_alert(n) for n in alerts]))
    wait_until(lambda: len(limited_pd.received()) >= 2, what="the first hung requests")
    post_ok(relay, am_body([am_alert(n, resolved=n % 2 == 0) for n in alerts]))
    last_posted = {fingerprint(n): ("resolve" if n % 2 == 0 else "trigger") for n in alerts}

    def settled(events: list[Received]) -> bool:
        last = {k: v[-1] for k, v in actions_by_key(events).items()}
        depth = relay.metric("pdrelay_outbox_depth")
        return last == last_posted and depth is not None and depth <= 0

    try:
        limited_pd.wait_accepted(settled, what="every alert's last posted action accepted last")
    except TimeoutError:
        seen = [(round(r.at, 3), r.triple[0], r.triple[1][-2:], r.status) for r in limited_pd.received()]
        queued = outbox_cli(relay.config_path, "list", "--json").stdout
        raise AssertionError(f"not settled; outbox depth {relay.metric('pdrelay_outbox_depth')}; "
                             f"received {seen}; outbox:\n{queued}") from None
    accepted = limited_pd.accepted()
    counts = pairs(accepted)
    dups = {k: c for k, c in counts.items() if c > 1}
    print(f"\nhanging: {len(limited_pd.received())} requests, {len(accepted)} accepted, duplicates {dups}")
    assert set(counts) == {("trigger", fingerprint(n)) for n in alerts} | {
        ("resolve", fingerprint(n)) for n in alerts if n % 2 == 0}
    assert limited_pd.throttled == 0
    # Duplicates should only repeat the same (dedup_key, action) in place: never a trigger after a resolve.
    reopened = {key: seq for key, seq in actions_by_key(accepted).items()
                if seq != sorted(seq, key=lambda a: a == "resolve")}
    seen = [(round(r.at, 3), r.triple[0], r.triple[1][-2:], r.status) for r in limited_pd.received()]
    assert not reopened, f"{BUG_TRIGGER_AFTER_RESOLVE}: {reopened}; received {seen}"


# --------------------------------------------------------------------------- 4. SIGKILL mid-storm


def test_sigkill_mid_storm_then_restart_loses_nothing(
    limited_pd: LimitedPagerDuty, relays: PdRelayFactory
) -> None:
    """kill -9 while a 120-event storm drains; a restart on the same outbox delivers every trigger."""
    # pdrelay's window 5 % longer than the stand-in's: BUG A's jitter 429s stay out of the way.
    relay = relays(pagerduty={"rate_limit": {"per_key": PER_KEY, "window_seconds": WINDOW * 1.05},
                              "backoff_on_429": 1})
    total = 120
    for b in range(12):
        post_ok(relay, am_body([am_alert(b * 10 + i) for i in range(10)]))
    limited_pd.wait_accepted(lambda ev: len(ev) >= 30, what="30 accepted triggers")
    assert relay.kill(signal.SIGKILL) == -signal.SIGKILL
    before = len(limited_pd.accepted())
    throttled_before = limited_pd.throttled
    relay.start()

    wanted = {("trigger", fingerprint(n)) for n in range(total)}
    limited_pd.wait_accepted(lambda ev: wanted <= set(pairs(ev)), what="every posted trigger")
    wait_drained(relay)
    counts = pairs(limited_pd.accepted())
    print(f"\nsigkill: {before} accepted before the kill, {sum(counts.values())} in all, "
          f"{sum(c - 1 for c in counts.values())} resent; 429s answered: {throttled_before} before the kill, "
          f"{limited_pd.throttled - throttled_before} after the restart")
    assert set(counts) == wanted
    assert limited_pd.count(400) == 0


RESTORED = "rate window restored from the outbox"


def restored_sends(log: str) -> int:
    """The ``sends`` of pdrelay's start-up line saying how many send times it took back from the outbox."""
    lines = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return sum(int(line["sends"]) for line in lines if line.get("msg") == RESTORED)


def test_restart_remembers_the_rate_window(limited_pd: LimitedPagerDuty, relays: PdRelayFactory) -> None:
    """kill -9 right after a full window of sends; the restarted pdrelay takes the window's send times back
    from the outbox and waits it out instead of spending it again: not one 429, each trigger sent once.

    When the second window's sends start, against the window, is a benchmark: ``tests/bench/bench_faults.py``.
    """
    window = 6.0  # several restarts long, so the first window is normally still open when pdrelay is back
    limited_pd.window_seconds = window
    relay = relays(pagerduty={"rate_limit": {"per_key": PER_KEY, "window_seconds": window}, "backoff_on_429": 1})
    post_ok(relay, am_body([am_alert(n) for n in range(2 * PER_KEY)]))
    limited_pd.wait_accepted(lambda ev: len(ev) >= PER_KEY, what="a full window of triggers")
    wait_until(lambda: relay.metric("pdrelay_events_sent_total") == PER_KEY or None,
               what="the first window's acks")
    assert relay.kill(signal.SIGKILL) == -signal.SIGKILL
    log_before_restart = len(relay.log())
    relay.start()

    wanted = {("trigger", fingerprint(n)) for n in range(2 * PER_KEY)}
    limited_pd.wait_accepted(lambda ev: wanted <= set(pairs(ev)), what="every trigger", timeout=window + DEFAULT_WAIT)
    counts = pairs(limited_pd.accepted())
    restored = restored_sends(relay.log()[log_before_restart:])  # logged before the restarted pdrelay sent
    print(f"\nrestart: {restored} send times restored; 429s: {limited_pd.throttled}")
    assert limited_pd.throttled == 0, f"{limited_pd.throttled} × 429 after the restart: the window was forgotten"
    assert set(counts) == wanted and set(counts.values()) == {1}, counts
    if restored == 0:
        # Not a timing assertion: the scenario needs the restart to end inside the first window, and a
        # machine slow enough to take 6 s over it leaves nothing to remember (the outcome above is then
        # trivially right). Say so rather than pass on a scenario that did not happen.
        pytest.skip(f"the restart outlasted the {window:.0f} s rate window: nothing was left to remember")
    assert restored == PER_KEY


# --------------------------------------------------------------------------- 5. 400 → dead letter → replay

REJECT_RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error, send_resolved: true}
rules:
  - name: bad-source
    match: '{target="reject"}'
    set: {source: reject-me}
"""
FIXED_RULES = """\
version: 1
defaults: {routing_key: default, dedup: alert, severity: error, send_resolved: true}
rules: []
"""


def test_invalid_event_is_dead_lettered_then_replayed(limited_pd: LimitedPagerDuty, relays: PdRelayFactory) -> None:
    """A 400 dead-letters the event with PagerDuty's errors; after fixing the rules, replay delivers it."""
    relay = relays(rules=REJECT_RULES, pagerduty=RATE)
    bad, good = fingerprint(1), fingerprint(2)
    post_ok(relay, am_body([am_alert(1, extra_labels={"target": "reject"}), am_alert(2)]))
    limited_pd.wait_accepted(lambda ev: ("trigger", good) in pairs(ev), what="the good trigger")
    wait_until(lambda: limited_pd.count(400) >= 1, what="a 400 for the bad event")

    def dead() -> list[dict[str, Any]] | None:
        run = outbox_cli(relay.config_path, "list", "--state", "dead", "--json")
        assert run.returncode == 0, run.stderr
        items = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        return items or None

    items = wait_until(dead, what="a dead letter in `outbox list --state dead`")
    assert len(items) == 1, items
    item = items[0]
    assert item["dedup_key"] == bad and item["action"] == "trigger"
    assert item["reason"] == "invalid_event", item
    assert item["last_status"] == 400, item
    assert "reject-me" in (item["last_error"] or ""), item  # PagerDuty's errors[] text

    relay.rules_path.write_text(FIXED_RULES)
    run = outbox_cli(relay.config_path, "replay", "--all")
    assert run.returncode == 0, (run.stdout, run.stderr)
    delivered = limited_pd.wait_accepted(lambda ev: ("trigger", bad) in pairs(ev), what="the replayed trigger")
    replayed = [e for e in delivered if e.triple[1] == bad]
    assert len(replayed) == 1
    assert replayed[0].event["payload"]["source"] != "reject-me"
    wait_drained(relay)
    run = outbox_cli(relay.config_path, "list", "--state", "dead", "--json")
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout


# --------------------------------------------------------------------------- stand-in self-check


def test_stand_in_limits() -> None:
    """The stand-in itself: 429 past the window budget and again once the window has passed, 413 over
    512,000 bytes, 400 for source reject-me. Its window runs on a clock the test moves."""
    key = "0123456789abcdef0123456789abcdef"

    def event(source: str = "host", pad: int = 0) -> bytes:
        body = {"routing_key": key, "event_action": "trigger", "dedup_key": "x",
                "payload": {"summary": "s", "source": source, "severity": "error",
                            "custom_details": {"pad": "a" * pad}}}
        return json.dumps(body).encode()

    clock = FakeClock()
    with LimitedPagerDuty(per_key=PER_KEY, window_seconds=WINDOW, clock=clock.monotonic) as stand_in, \
            httpx.Client(trust_env=False, timeout=5) as client:
        statuses = [client.post(stand_in.events_url, content=event()).status_code for _ in range(PER_KEY + 1)]
        assert statuses == [202] * PER_KEY + [429]
        throttled = client.post(stand_in.events_url, content=event())
        assert throttled.json() == {"status": "throttle event",
                                    "message": "Requests for this service are arriving too quickly."}
        assert client.post(stand_in.events_url, content=event(pad=512_001)).status_code == 413
        clock.advance(WINDOW - 0.001)
        assert client.post(stand_in.events_url, content=event()).status_code == 429
        clock.advance(0.001)  # the first sends leave the window exactly one window after they came
        assert client.post(stand_in.events_url, content=event("reject-me")).status_code == 400
        assert client.post(stand_in.events_url, content=event()).status_code == 202
        assert (stand_in.throttled, stand_in.too_large) == (3, 1)


# --------------------------------------------------------------------------- 6. outbox disk full


def _prlimit_fsize(pid: int, limit: str) -> None:
    """Set the soft RLIMIT_FSIZE of the running process ``pid`` (by PID) with util-linux ``prlimit``;
    the hard limit stays unlimited so the soft one can be raised again without privileges."""
    run = subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={limit}:unlimited"], capture_output=True,
                         text=True, timeout=10, check=False)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="util-linux prlimit is missing")
def test_outbox_disk_full_answers_503_then_recovers(limited_pd: LimitedPagerDuty, relays: PdRelayFactory) -> None:
    """A file-size limit (EFBIG, like a full disk) makes intake answer 503 and store nothing half-way;
    once lifted, intake accepts again and every notification answered 200 is delivered."""
    relay = relays(pagerduty=RATE)
    assert relay.proc is not None
    post_ok(relay, am_body([am_alert(0)]))
    limited_pd.wait_accepted(lambda ev: len(ev) >= 1, what="the first trigger")
    sizes = [p.stat().st_size for p in relay.workdir.iterdir() if p.is_file()]
    _prlimit_fsize(relay.proc.pid, str(max(sizes) + 256 * 1024))
    accepted_ns: list[int] = [0]
    refused = 0
    n = 1
    for _ in range(60):  # bounded: until intake refuses a few bodies in a row
        alerts = [am_alert(n + i, extra_labels={"pad": "x" * 2000}) for i in range(10)]
        response = relay.post_alertmanager(am_body(alerts))
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            accepted_ns.extend(range(n, n + 10))
            refused = 0
        else:
            refused += 1
            if refused >= 3:
                break
        n += 10
    assert refused >= 3, "the file-size limit never made intake answer 503"
    assert len(accepted_ns) > 1, "intake refused from the start: the headroom is too small to show the change"
    assert relay.proc.poll() is None, "pdrelay died on a full disk"
    _prlimit_fsize(relay.proc.pid, "unlimited")
    wait_until(lambda: (r := relay.post_alertmanager(am_body([am_alert(10_000)]))).status_code == 200 and r,
               what="intake to accept again after the disk is freed", interval=0.3)
    accepted_ns.append(10_000)
    wanted = {("trigger", fingerprint(k)) for k in accepted_ns}
    limited_pd.wait_accepted(lambda ev: wanted <= set(pairs(ev)), what="every trigger answered 200")
    wait_drained(relay)
    # Nothing of a body answered 503 was stored (and so delivered) half-way.
    assert set(pairs(limited_pd.accepted())) == wanted
    print(f"\ndisk full: {len(accepted_ns)} alerts accepted, intake refused after {n - 1} alerts; all delivered")
