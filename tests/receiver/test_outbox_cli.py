"""`pdrelay outbox list/show/replay/purge` as users run them, on an outbox written by the real SQLiteOutbox."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

from receiver.audit import verify_files
from receiver.errors import Reason
from receiver.models import parse_notification
from receiver.outbox.sqlite import SQLiteOutbox
from tests.fakes import FakeClock
from tests.receiver.test_serve import on_port_0, running, wait_ready
from transforms import load_rules

ROOT = Path(__file__).resolve().parents[2]
FIRING = ROOT / "tests" / "e2e" / "captured" / "am-0.25_firing.json"
DB1, DB2 = "d55413deeb88df6c", "0ee71a229f2262e7"  # the two alerts' fingerprints (dedup: alert)
RULES_AT_INTAKE = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"
FIXED_RULES = """version: 1
defaults: {routing_key: default, dedup: alert}
rules:
  - name: drop-db2
    match: ['instance="db-2.example.com:9100"']
    drop: true
  - name: fixed
    set: {summary: 'fixed {{ labels.instance }}'}
"""
CREATED = time.time() - 7200.0  # two hours ago: ages print as "2h"


def pdrelay(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", "outbox", *args], cwd=cwd, capture_output=True,
                          stdin=subprocess.DEVNULL, text=True, timeout=60, check=False)


def prepare(tmp_path: Path, dead: tuple[str, ...]) -> Path:
    """Write a config and store the firing body's two events, dead-lettering those whose dedup_key is in ``dead``."""
    (tmp_path / "rules.yaml").write_text(FIXED_RULES)
    (tmp_path / "pdrelay.yaml").write_text("outbox: {path: outbox.db}\nrules: {paths: [rules.yaml]}\n")
    source = FIRING.read_bytes()
    evaluation = load_rules([_write(tmp_path / "intake.yaml", RULES_AT_INTAKE)]).evaluate(parse_notification(source))

    async def fill() -> None:
        box = SQLiteOutbox(tmp_path / "outbox.db", clock=FakeClock(start=CREATED))
        await box.open()
        await box.enqueue(source, evaluation.events, evaluation.invalid, resend_interval=3600.0)
        for item in await box.claim(10, ()):
            if item.dedup_key in dead:
                await box.dead_letter(item, Reason.INVALID_EVENT, 400, "Event object is invalid")
        await box.close()

    asyncio.run(fill())
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(tmp_path / "outbox.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_list_prints_a_table_with_key_names(tmp_path: Path) -> None:
    """`outbox list` with ./pdrelay.yaml found by default prints one row per item, routing keys by name."""
    d = prepare(tmp_path, dead=(DB1,))
    done = pdrelay("list", cwd=d)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "ID  STATE   ROUTING_KEY  ACTION   DEDUP_KEY         ATTEMPTS  REASON         AGE  LAST_STATUS\n"
        f"1   dead    default      trigger  {DB1}  1         invalid_event  2h   400\n"
        f"2   queued  default      trigger  {DB2}  0         -              2h   -\n"
    )


def test_list_json_applies_the_filters(tmp_path: Path) -> None:
    """`outbox list --json` prints JSON lines, and --state/--routing-key/--reason/--limit select the items."""
    d = prepare(tmp_path, dead=(DB1,))
    done = pdrelay("list", "--config", "pdrelay.yaml", "--json", "--state", "dead", "--routing-key", "default",
                   "--reason", "invalid_event", cwd=d)
    assert (done.returncode, done.stderr) == (0, "")
    (line,) = done.stdout.splitlines()
    item = json.loads(line)
    assert abs(item.pop("age_seconds") - (time.time() - CREATED)) < 60  # CREATED is fixed at import
    assert item == {
        "id": 1, "state": "dead", "routing_key": "default", "action": "trigger", "dedup_key": DB1, "attempts": 1,
        "reason": "invalid_event", "last_status": 400, "last_error": "Event object is invalid", "rules": [],
        "created_at": CREATED, "next_attempt_at": CREATED,
    }
    queued = pdrelay("list", "--json", "--state", "queued", cwd=d).stdout.splitlines()
    assert [json.loads(x)["id"] for x in queued] == [2]
    first = pdrelay("list", "--json", "--limit", "1", cwd=d).stdout.splitlines()
    assert [json.loads(x)["id"] for x in first] == [1]
    assert pdrelay("list", "--json", "--reason", "timeout", cwd=d).stdout == ""
    assert pdrelay("list", "--json", "--routing-key", "db-oncall", cwd=d).stdout == ""


def test_show_prints_the_stored_event(tmp_path: Path) -> None:
    """`outbox show ID` prints the fields, PagerDuty's message and the body; --json the same as one object."""
    d = prepare(tmp_path, dead=(DB1,))
    done = pdrelay("show", "1", cwd=d)
    assert (done.returncode, done.stderr) == (0, "")
    head, body = done.stdout.split("body:\n")
    assert head.splitlines()[:10] == [
        "id:           1", "state:        dead", "routing_key:  default", "action:       trigger",
        f"dedup_key:    {DB1}", "attempts:     1", "reason:       invalid_event", "last_status:  400",
        "last_error:   Event object is invalid", "rules:        -",
    ]
    assert head.splitlines()[10].endswith(" (2h ago)")
    assert head.splitlines()[11:] == ["next_attempt: -"]
    assert body.startswith("{\n  ")
    shown = json.loads(body)
    assert (shown["dedup_key"], shown["event_action"]) == (DB1, "trigger")
    as_json = json.loads(pdrelay("show", "1", "--json", cwd=d).stdout)
    assert (as_json["body"], as_json["last_error"], as_json["state"]) == (shown, "Event object is invalid", "dead")


def test_show_unknown_id_exits_1(tmp_path: Path) -> None:
    """An unknown ID is named on stderr with exit code 1."""
    d = prepare(tmp_path, dead=())
    done = pdrelay("show", "99", cwd=d)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "pdrelay: no outbox item 99\n")


def test_replay_requeues_what_the_current_rules_render(tmp_path: Path) -> None:
    """`replay --all` re-renders dead items with the current rules; a dropped alert stays dead; exit 1."""
    d = prepare(tmp_path, dead=(DB1, DB2))
    done = pdrelay("replay", "--all", cwd=d)
    assert (done.returncode, done.stderr) == (1, "pdrelay: 1 item(s) not requeued: 2\n")
    assert done.stdout == "replayed 1 (routing key default)\nnot produced by the current rules 2\n"
    item = json.loads(pdrelay("show", "1", "--json", cwd=d).stdout)
    assert (item["state"], item["attempts"], item["reason"], item["last_status"], item["last_error"]) == (
        "queued", 0, None, None, None)
    assert item["rules"] == ["fixed"]
    assert item["body"]["payload"]["summary"] == "fixed db-1.example.com:9100"
    assert time.time() - 60 < item["next_attempt_at"] <= time.time()
    assert rows(d, "SELECT id, status, attempts, reason FROM events ORDER BY id") == [
        (1, "queued", 0, None), (2, "dead", 1, "invalid_event")]
    assert rows(d, "SELECT routing_key, dedup_key, tail_action, tail_id FROM key_state ORDER BY dedup_key") == [
        ("default", DB2, None, None), ("default", DB1, "trigger", 1)]
    replays = [json.loads(line) for line in (d / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["item_id"], e["result"]) for e in replays] == [
        ("event.replayed", 1, "replayed"), ("event.replayed", 2, "not_produced")]


def test_replay_never_touches_queued_items(tmp_path: Path) -> None:
    """`replay ID` of a queued item leaves it as it was and exits 1."""
    d = prepare(tmp_path, dead=())
    before = rows(d, "SELECT * FROM events")
    done = pdrelay("replay", "1", cwd=d)
    assert (done.returncode, done.stdout, done.stderr) == (1, "not dead 1: queued\n",
                                                           "pdrelay: 1 item(s) not requeued: 1\n")
    assert rows(d, "SELECT * FROM events") == before


def test_purge_deletes_dead_items_and_releases_their_notification(tmp_path: Path) -> None:
    """Purge needs --yes off a TTY and --force for queued items; the notification goes with its last event."""
    d = prepare(tmp_path, dead=(DB1,))
    done = pdrelay("purge", "--dead", cwd=d)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "pdrelay: refusing to purge 1 item(s) without --yes: stdin is not a terminal\n"
    done = pdrelay("purge", "2", "--yes", cwd=d)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "pdrelay: refusing to purge queued item(s) 2 without --force\n"
    assert rows(d, "SELECT id FROM events ORDER BY id") == [(1,), (2,)]
    done = pdrelay("purge", "--dead", "--yes", cwd=d)
    assert (done.returncode, done.stdout, done.stderr) == (0, "purged 1\n", "")
    assert rows(d, "SELECT id, status FROM events") == [(2, "queued")]
    assert rows(d, "SELECT id, refs FROM notifications") == [(1, 1)]
    done = pdrelay("purge", "2", "--yes", "--force", cwd=d)
    assert (done.returncode, done.stdout, done.stderr) == (0, "purged 1\n", "")
    assert rows(d, "SELECT COUNT(*) FROM events") == [(0,)]
    assert rows(d, "SELECT COUNT(*) FROM notifications") == [(0,)]
    assert rows(d, "SELECT COUNT(*) FROM key_state WHERE tail_id IS NOT NULL") == [(0,)]
    # Both purges are in the audit log beside the outbox, by whom, in one verified chain.
    audit = d / "audit.jsonl"
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["event"], e["purged"], e["item_ids"], e["forced"]) for e in entries] == [
        ("event.purged", 1, [1], False), ("event.purged", 1, [2], True)]
    assert all(e["actor"].startswith("cli:") for e in entries)
    assert verify_files([audit]).ok


# --------------------------------------------------------------------------- client text reaches the terminal escaped

HOSTILE_FINGERPRINT = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eab"  # retitle, BEL, clear, C1 CSI, bidi override
HOSTILE_NAME = "Esc\x1b[5mBlink"
PD_ERROR = "bad \x1b[31mred\x1b[0m field\x07"


class _PagerDutyRefuses(BaseHTTPRequestHandler):
    """PagerDuty answering 400, its error text carrying escape sequences."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"status": "invalid event", "message": "Event object is invalid", "errors": [PD_ERROR]})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


def raw_controls(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on or hide (all but the line breaks of the output)."""
    return sorted({ch for ch in text if not ch.isprintable() and ch != "\n"})


def test_outbox_list_and_show_escape_what_clients_sent(tmp_path: Path) -> None:
    """A fingerprint and labels carrying ESC/BEL sequences, through a real intake, and PagerDuty's error text
    carrying them too: `outbox list` and `show` print them escaped, `--json` as JSON escapes; no raw control
    character reaches the terminal."""
    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), _PagerDutyRefuses)
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "rules.yaml").write_text(
            "version: 1\ndefaults: {routing_key: default, dedup: alert}\n"
            "rules:\n  - name: text\n    set: {summary: '{{ labels.alertname }} {{ labels.note }}'}\n")
        (tmp_path / "pdrelay.yaml").write_text(yaml.safe_dump({
            "pagerduty": {"events_url": f"http://127.0.0.1:{stand_in.server_port}/v2/enqueue",
                          "allowed_hosts": ["127.0.0.1"], "routing_keys": {"default": "R" * 32}},
            "outbox": {"path": "outbox.db"}, "rules": {"paths": ["rules.yaml"]},
        }))
        body = json.loads(FIRING.read_text())
        body["alerts"] = body["alerts"][:1]
        body["alerts"][0]["fingerprint"] = HOSTILE_FINGERPRINT
        body["alerts"][0]["labels"] |= {"alertname": HOSTILE_NAME, "note": "\x07bell\r\nnext"}
        with running(["serve", "--config", "pdrelay.yaml", *on_port_0(tmp_path)], tmp_path) as proc:
            url = wait_ready(tmp_path, proc)
            assert httpx.post(f"{url}/v1/alertmanager", json=body, timeout=5).status_code == 200
            deadline = time.monotonic() + 20
            while rows(tmp_path, "SELECT status FROM events") != [("dead",)]:
                assert time.monotonic() < deadline, "the event was not dead-lettered"
                time.sleep(0.05)
    finally:
        stand_in.shutdown()
        stand_in.server_close()
        thread.join(timeout=10)

    escaped_fp = "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eab"
    listed = pdrelay("list", cwd=tmp_path)
    assert (listed.returncode, listed.stderr, raw_controls(listed.stdout)) == (0, "", [])
    assert listed.stdout.splitlines()[1].split()[:5] == ["1", "dead", "default", "trigger", escaped_fp]
    shown = pdrelay("show", "1", cwd=tmp_path)
    assert (shown.returncode, shown.stderr, raw_controls(shown.stdout)) == (0, "", [])
    head, body_text = shown.stdout.split("body:\n")
    assert f"dedup_key:    {escaped_fp}" in head.splitlines()
    (last_error,) = [line for line in head.splitlines() if line.startswith("last_error:")]
    assert last_error == "last_error:   invalid event: Event object is invalid: bad \\x1b[31mred\\x1b[0m field\\x07"
    stored = json.loads(body_text)
    assert stored["dedup_key"] == HOSTILE_FINGERPRINT
    assert stored["payload"]["summary"] == f"{HOSTILE_NAME} \x07bell\r\nnext"
    assert '"summary": "Esc\\u001b[5mBlink \\u0007bell\\r\\nnext"' in body_text
    assert '"dedup_key": "\\u001b]0;owned\\u0007\\u001b[2J\\u009b31m\\u202eab"' in body_text
    for args in (["list", "--json"], ["show", "1", "--json"]):
        done = pdrelay(*args, cwd=tmp_path)
        assert (done.returncode, done.stderr, raw_controls(done.stdout)) == (0, "", [])
        item = json.loads(done.stdout)
        assert (item["dedup_key"], item["last_error"]) == (HOSTILE_FINGERPRINT,
                                                          f"invalid event: Event object is invalid: {PD_ERROR}")
