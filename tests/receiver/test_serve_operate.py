"""A running ``pdrelay serve`` as an operator meets it: it picks up what ``outbox replay`` requeues from
another process, and says at stop which signal ended it and what it leaves queued."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
            # Only the dead letter left: the accepted event's ack is committed too.
            dead = wait_until(lambda: _only_dead(cli(relay, "outbox", "list", "--json").stdout),
                              what="the refused event's dead letter, and nothing else stored")
            ((dead_id, dead_key),) = [(item["id"], item["dedup_key"]) for item in dead]  # whichever was sent first
            assert {dead_key, first[0].triple[1]} == {DB1, DB2}
            start = time.monotonic()
            replayed = cli(relay, "outbox", "replay", "--all")
            cli_done = time.monotonic()
            assert (replayed.returncode, replayed.stdout) == (0, f"replayed {dead_id} (routing key default)\n"), \
                replayed.stderr
            again = wait_until(lambda: [r for r in pd.received() if r.triple[1] == dead_key and r.accepted],
                               what="the replayed event at the stand-in", timeout=20.0)
            print(f"replay exited → sent: {again[0].at - cli_done:.3f} s (the command took {cli_done - start:.3f} s)")
            assert [(r.triple[1], r.status) for r in pd.received()] == [
                (dead_key, 400), (first[0].triple[1], 202), (dead_key, 202)]
        finally:
            relay.stop()


def _only_dead(listing: str) -> list[dict[str, object]] | None:
    items = [json.loads(line) for line in listing.splitlines()]
    return items if items and all(item["state"] == "dead" for item in items) else None


class HeldPagerDuty:
    """A PagerDuty endpoint on loopback that holds each send in flight until :meth:`answer` (then 202) or its
    exit (then no answer). Counts the requests it holds."""

    def __init__(self) -> None:
        self.held = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._answer = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sent = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with outer._lock:
                    outer.held += 1
                outer._release.wait(60.0)
                if outer._answer:
                    body = json.dumps({"status": "success", "message": "Event processed",
                                       "dedup_key": sent.get("dedup_key")}).encode()
                    self.send_response(202)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v2/enqueue"

    def answer(self) -> None:
        """Answer every held send, and every later one, 202."""
        self._answer = True
        self._release.set()

    def __enter__(self) -> HeldPagerDuty:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def stop_lines(relay: PdRelay) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log().splitlines() if line.startswith("{")]
    return [line for line in lines if str(line["msg"]).startswith("pdrelay stopped")]


def test_sigterm_logs_the_signal_the_drained_sends_and_what_stays_queued(tmp_path: Path) -> None:
    """SIGTERM with two sends in flight: the listener closes, the sends are drained (PagerDuty answers them
    once shutdown has begun) and exactly one line says so."""
    with HeldPagerDuty() as pd:
        relay = PdRelay(tmp_path, events_url=pd.url, pagerduty={"api_timeout": 30}).start()
        try:
            assert relay.post_alertmanager(FIRING.read_bytes()).status_code == 200
            wait_until(lambda: pd.held == 2, what="both sends held in flight")
            assert relay.proc is not None
            os.kill(relay.proc.pid, signal.SIGTERM)
            wait_until(lambda: not _listening(relay.port), what="the listener closed: shutdown began")
            pd.answer()
            assert relay.proc.wait(30.0) == 0
        finally:
            relay.stop()
    (line,) = stop_lines(relay)
    assert line["msg"] == "pdrelay stopped on SIGTERM: 2 in-flight send(s) drained, 0 cancelled; 0 event(s) stay queued"
    assert (line["signal"], line["drained"], line["cancelled"], line["queued"]) == ("SIGTERM", 2, 0, 0)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def test_sigint_with_nothing_in_flight_says_so(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) while the events wait for their next retry: nothing to drain, both stay queued."""
    with PagerDutyStandIn() as pd:
        pd.set_default(500)
        relay = PdRelay(tmp_path, events_url=pd.events_url,
                        pagerduty={"retry": {"initial_backoff": 600, "max_backoff": 600}}).start()
        try:
            assert relay.post_alertmanager(FIRING.read_bytes()).status_code == 200
            wait_until(lambda: relay.log().count('"msg": "delivery failed, will retry"') == 2,
                       what="both first attempts answered 500 and rescheduled")
            assert relay.kill(signal.SIGINT, timeout=30.0) == 0
        finally:
            relay.stop()
    (line,) = stop_lines(relay)
    assert line["msg"] == "pdrelay stopped on SIGINT: 0 in-flight send(s) drained, 0 cancelled; 2 event(s) stay queued"
