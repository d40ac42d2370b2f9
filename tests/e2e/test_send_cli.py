"""``pdrelay send`` end to end: the command posts to a real ``pdrelay serve`` (port 0, bearer auth), which
delivers to the PagerDuty stand-in; its output and exit status for accepted, refused, unauthorised and
unreachable."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.e2e_support import ROUTING_KEY, PagerDutyStandIn, PdRelayFactory

TOKEN = "send-cli-token-0123456789"


def pdrelay_send(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", "send", *args], capture_output=True, text=True,
                          timeout=30, check=False)


def test_send_triggers_and_resolves_through_a_running_pdrelay(
        start_pdrelay: PdRelayFactory, pd: PagerDutyStandIn, tmp_path: Path) -> None:
    relay = start_pdrelay(config={"auth": {"bearer_tokens": [TOKEN]}})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    common = ("--url", relay.url, "--routing-key", "default", "--token-file", str(token_file))

    trigger = pdrelay_send(*common, "--summary", "nightly load failed", "--source", "etl-1", "--severity", "critical")
    assert (trigger.returncode, trigger.stderr) == (0, "")
    key = trigger.stdout.strip()
    [got] = pd.wait_accepted(lambda got: len(got) == 1, what="the trigger")
    assert got.event == {"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": key,
                         "payload": {"summary": "nightly load failed", "source": "etl-1", "severity": "critical"}}

    resolve = pdrelay_send(*common, "--action", "resolve", "--dedup-key", key)
    assert (resolve.returncode, resolve.stdout, resolve.stderr) == (0, key + "\n", "")
    resolved = pd.wait_accepted(lambda got: len(got) == 2, what="the resolve")[1]
    assert resolved.event == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key}

    refused = pdrelay_send(*common, "--summary", "no source", "--severity", "info")
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1, "", "pdrelay send: pdrelay refused the event (400): payload.source is required\n")

    unknown = pdrelay_send("--url", relay.url, "--routing-key", "nope", "--token-file", str(token_file),
                           "--action", "resolve", "--dedup-key", key)
    assert (unknown.returncode, unknown.stderr) == (
        1, "pdrelay send: pdrelay refused the event (400): unknown routing key name\n")

    no_token = pdrelay_send("--url", relay.url, "--routing-key", "default", "--action", "resolve",
                            "--dedup-key", key)
    assert (no_token.returncode, no_token.stderr) == (
        1, "pdrelay send: pdrelay refused the event (401): authentication required\n")
    assert len(pd.received()) == 2


def test_send_exit_status_without_a_pdrelay_or_token(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    no_file = pdrelay_send("--routing-key", "default", "--token-file", str(missing), "--action", "resolve",
                           "--dedup-key", "k")
    assert (no_file.returncode, no_file.stderr) == (
        2, f"pdrelay send: cannot read the token file {str(missing)!r}: No such file or directory\n")
    # A port nobody listens on: bind one, read it back, close it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = pdrelay_send("--url", f"http://127.0.0.1:{port}", "--routing-key", "default", "--action", "resolve",
                        "--dedup-key", "k")
    assert down.returncode == 3
    assert down.stderr.startswith(f"pdrelay send: pdrelay not reached at http://127.0.0.1:{port}/v1/events: "
                                  "ConnectError: ")
