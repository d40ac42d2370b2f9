"""``pdrelay test-rules --trace``: the golden trace, --now on either side of a DST change, template
errors on stderr per alert and field (exit 1, or 0 with --allow-template-errors), escaped.

The golden files are under ``tests/receiver/golden/trace/``; after a deliberate change, regenerate with

    G=tests/receiver/golden/trace; pdrelay test-rules --trace --now 2026-03-30T07:30:00Z \\
        --rules $G/rules.yaml $G/webhook.json > $G/expected.json 2> $G/expected.stderr
    (and the same with --text > $G/expected.txt)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from receiver.cli import main

GOLDEN = Path(__file__).parent / "golden" / "trace"
RULES = str(GOLDEN / "rules.yaml")
BODY = str(GOLDEN / "webhook.json")
MONDAY_IN_HOURS = "2026-03-30T07:30:00Z"  # 09:30 in Berlin (CEST, the day after the change)
FRIDAY_BEFORE_HOURS = "2026-03-27T07:30:00Z"  # 08:30 in Berlin (CET, two days before it)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["test-rules", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_trace_matches_the_golden_output(capsys: pytest.CaptureFixture[str]) -> None:
    """--trace prints exactly the golden JSON and the golden stderr, and exits 1 for the template errors."""
    status, out, err = _run(capsys, "--trace", "--now", MONDAY_IN_HOURS, "--rules", RULES, BODY)
    assert out == (GOLDEN / "expected.json").read_text()
    assert err == (GOLDEN / "expected.stderr").read_text()
    assert status == 1


def test_text_trace_matches_the_golden_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """--trace --text prints one line per step (field: old → new), then the events, as in the golden file."""
    status, out, err = _run(capsys, "--trace", "--text", "--now", MONDAY_IN_HOURS, "--rules", RULES, BODY)
    assert out == (GOLDEN / "expected.txt").read_text()
    assert (status, err) == (1, (GOLDEN / "expected.stderr").read_text())


def test_text_trace_escapes_hostile_alert_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Terminal escapes in a fingerprint, an alert name and a changed value are shown escaped, never raw."""
    body = json.loads((GOLDEN / "webhook.json").read_text())
    body["alerts"] = body["alerts"][1:2]
    body["alerts"][0]["fingerprint"] = "f\x1b[2J"
    body["alerts"][0]["labels"]["alertname"] = "A\x1b]0;t\x07"
    body["alerts"][0]["labels"]["instance"] = "h\x1b[31m:1"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(body))
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules: [{name: s, set: {summary: '{{ labels.instance }}'}}]\n")
    status, out, _ = _run(capsys, "--trace", "--text", "--now", MONDAY_IN_HOURS, "--rules", str(rules), str(path))
    assert status == 0
    assert out.splitlines()[:2] == [
        "alert f\\x1b[2J (A\\x1b]0;t\\x07)",
        '  s: summary: null \u2192 "h\\u001b[31m:1"',
    ]
    assert "\x1b" not in out and "\x07" not in out


def test_allow_template_errors_exits_0_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """--allow-template-errors keeps the error lines, ends with a warning and exits 0."""
    status, out, err = _run(capsys, "--allow-template-errors", "--now", MONDAY_IN_HOURS, "--rules", RULES, BODY)
    assert status == 0
    assert err == (
        "d55413deeb88df6c text.component: ZeroDivisionError: integer division or modulo by zero\n"
        "0ee71a229f2262e7 text.component: ZeroDivisionError: integer division or modulo by zero\n"
        "warning: 2 template error(s); allowed by --allow-template-errors\n"
    )
    golden = json.loads((GOLDEN / "expected.json").read_text())
    assert json.loads(out) == {k: golden[k] for k in ("events", "invalid", "dropped")}  # no trace without --trace


def test_now_on_the_other_side_of_the_dst_change_routes_after_hours(capsys: pytest.CaptureFixture[str]) -> None:
    """The same UTC time of day three days earlier is before Berlin's office hours: night-oncall, step applied."""
    status, out, _ = _run(capsys, "--trace", "--allow-template-errors", "--now", FRIDAY_BEFORE_HOURS,
                          "--rules", RULES, BODY)
    assert status == 0
    result = json.loads(out)
    assert [e["routing_key"] for e in result["events"]] == ["night-oncall"]
    step = result["trace"][0]["steps"][2]
    assert step == {"rule": "after-hours", "matched": True, "skipped_by": None, "dropped": False, "stopped": False,
                    "changes": [{"field": "routing_key", "old": "default", "new": "night-oncall"}]}


@pytest.mark.parametrize("value", ["2026-03-30T07:30:00", "yesterday", "2026-03-30"])
def test_now_must_be_rfc3339_with_an_offset(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --now without an offset or not a time at all is refused with exit 2, before anything runs."""
    status, out, err = _run(capsys, "--now", value, "--rules", RULES, BODY)
    assert (status, out) == (2, "")
    assert err == (f"pdrelay test-rules: --now {value!r} is not an RFC 3339 time with an offset"
                   " (e.g. 2026-03-29T07:30:00Z or 2026-03-29T09:30:00+02:00)\n")


def test_template_error_lines_escape_hostile_alert_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fingerprint and a message carrying terminal escapes reach stderr as visible escapes, one line each."""
    body = json.loads((GOLDEN / "webhook.json").read_text())
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["fingerprint"] = "f\x1b[2J\nx"
    body["alerts"][0]["labels"]["mountpoint"] = "\x1b]0;pwned\x07"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(body))
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules: [{name: t, set: {summary: '{{ labels.mountpoint ~ (1 / 0) }}'}}]\n")
    status, _, err = _run(capsys, "--now", MONDAY_IN_HOURS, "--rules", str(rules), str(path))
    assert status == 1
    assert err == (
        "f\\x1b[2J\\nx t.summary: ZeroDivisionError: division by zero\n"
        "1 template error(s): those fields fell back to earlier values (--allow-template-errors to exit 0)\n"
    )


def test_help_and_completion_name_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """test-rules --help documents the flags, and the bash completion offers them."""
    with pytest.raises(SystemExit):
        main(["test-rules", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--trace", "--text", "--now RFC3339", "--allow-template-errors"):
        assert flag in help_text
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert all(flag in script for flag in ("--trace", "--text", "--now", "--allow-template-errors"))
