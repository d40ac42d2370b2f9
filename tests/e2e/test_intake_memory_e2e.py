"""pdrelay's memory stays under the deploy/ limit whatever intake is sent, all at once, at the defaults.

One ``pdrelay serve`` process with the default settings (body_limit 10 MiB, max_concurrent_intake,
max_labels 128) but body_timeout 5 s (how long the slow bodies hold intake, not what it holds in
memory: 30 s would only make the test longer) and the shipped rules/default.yaml gets, concurrently:

- 500 slow-body connections (headers and 16 bytes of a 1,000-byte body, then nothing), opened
  first, so that they hold every admission slot intake has;
- four 9.6 MiB bodies of one alert with 586,000 labels each;
- four gzip bombs (1 MiB inflating to 1 GiB each, ``Content-Encoding: gzip``);
- eight 6.5 MiB bodies of 10,000 alerts each.

Each client tries again after a 503 (or a connection closed under it), as Alertmanager does. Then
its peak RSS (VmHWM from /proc) must be under 256 MiB, the memory limit of deploy/kubernetes.

The margin: about 62 MiB idle, and the bodies in progress add up to at most server.body_limit
at once; all of this at once peaked at 196-229 MiB in tests/bench/bench_memory.py (where each
attack's own figure is), 27-60 MiB under the limit. Before the bounds the same attacks took
660 MiB, the four label bodies alone 628 MiB.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import LOOPBACK, PagerDutyStandIn, PdRelay
from intake_attacks import (
    gzip_bomb,
    many_labels_body,
    peak_rss_mib,
    post_until_answered,
    run_together,
    slow_bodies,
    ten_thousand_alerts_body,
)

from receiver.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
MEMORY_LIMIT_MIB = 256  # deploy/kubernetes: resources.limits.memory
SLOW, SLOTS = 500, 64  # slow-body connections; server.max_concurrent_intake's default
ATTACK_DEADLINE = 150.0  # seconds for every client to get its answer; the slow bodies hold intake for 5 s of it


@pytest.fixture
def relay(tmp_path: Path, pd: PagerDutyStandIn) -> Iterator[PdRelay]:
    """pdrelay with every server setting that bounds memory at its default (the harness's explicit body_limit
    taken out), and a short body_timeout."""
    relay = PdRelay(tmp_path / "pdrelay", events_url=pd.events_url, rules=(REPO / "rules" / "default.yaml").read_text())
    relay.config["server"].pop("body_limit")
    relay.config["server"]["body_timeout"] = "5s"
    try:
        yield relay.start()
    finally:
        relay.stop()


def test_peak_rss_stays_under_the_deploy_limit_under_every_intake_attack_at_once(relay: PdRelay) -> None:
    assert relay.proc is not None
    pid, url = relay.proc.pid, relay.alertmanager_url
    bodies = [ten_thousand_alerts_body(seed) for seed in range(8)]
    labels, bomb = many_labels_body(ServerSettings().body_limit), gzip_bomb()
    with slow_bodies(LOOPBACK, relay.port, SLOW) as slow:
        # The first 64 take every admission slot; the rest are refused and closed at once.
        first = slow.answers(closed=SLOW - SLOTS, timeout=30)
        assert (first.count("503"), first.count("open")) == (SLOW - SLOTS, SLOTS), first
        deadline = time.monotonic() + ATTACK_DEADLINE
        outcomes = run_together(
            [lambda: post_until_answered(url, labels, deadline=deadline)] * 4
            + [lambda: post_until_answered(url, bomb, headers={"Content-Encoding": "gzip"}, deadline=deadline)] * 4
            + [functools.partial(post_until_answered, url, body, deadline=deadline) for body in bodies]
        )
        answers = slow.answers(closed=SLOW, timeout=60)
    peak = peak_rss_mib(pid)

    assert [o.status for o in outcomes] == [413] * 4 + [415] * 4 + [200] * 8, outcomes
    # The admitted slow bodies were answered 408 after server.body_timeout and closed: none is left open.
    assert (answers.count("503"), answers.count("408")) == (SLOW - SLOTS, SLOTS)
    assert relay.metric("pdrelay_bodies_accepted_total") == 8
    assert relay.metric("pdrelay_alerts_received_total") == 80_000
    assert peak < MEMORY_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
