"""A running ``pdrelay serve`` as an operator meets it: it picks up what ``outbox replay`` requeues from
another process, and says at stop which signal ended it and what it leaves queued."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.e2e_support import PagerDutyStandIn, PdRelay, wait_until

ROOT = Path(__file__).resolve().parents[2]
FIRING = ROOT / "tests" / "e2e" / "captured" / "am-0.25_firing.json"
DB1, DB2 = "d55413deeb88df6c", "0ee71a229f2262e7"  # the firing body's two alerts (dedup: alert)


def cli(relay: PdRelay, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args, "--config", str(relay.config_path)],
                          cwd=relay.workdir, capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


def test_the_server_sends_an_event_replayed_from_the_cli(tmp_path: Path) -> None:
    """A dead event requeued by `outbox replay` in another process is sent by the running server without any
    other activity to wake it: the stand-in receives it again (the latency is printed, for the record)."""
    with PagerDutyStandIn() as pd:
        pd.queue(400, 202)  # the first event is refused as invalid, the second accepted
        pd.set_default(202)
        relay = PdRelay(tmp_path, events_url=pd.events_url).start()
        try:
            assert relay.post_alertmanager(FIRING.read_bytes()).status_code == 200
            first = pd.wait_accepted(lambda got: len(got) == 1, what="the accepted event")
            dead = wait_until(lambda: [line for line in cli(relay, "outbox", "list", "--json").stdout.splitlines()
                                       if json.loads(line)["state"] == "dead"], what="the refused event's dead letter")
            (dead_key,) = [json.loads(line)["dedup_key"] for line in dead]
            assert {dead_key, first[0].triple[1]} == {DB1, DB2}
            start = time.monotonic()
            replayed = cli(relay, "outbox", "replay", "--all")
            cli_done = time.monotonic()
            assert (replayed.returncode, replayed.stdout) == (0, "replayed 1 (routing key default)\n"), replayed.stderr
            again = wait_until(lambda: [r for r in pd.received() if r.triple[1] == dead_key and r.accepted],
                               what="the replayed event at the stand-in", timeout=20.0)
            print(f"replay exited → sent: {again[0].at - cli_done:.3f} s (the command took {cli_done - start:.3f} s)")
            assert [(r.triple[1], r.status) for r in pd.received()] == [
                (dead_key, 400), (first[0].triple[1], 202), (dead_key, 202)]
        finally:
            relay.stop()
