"""The command line as users run it: a real subprocess per command."""

from __future__ import annotations

import base64
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from receiver import cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def pdrelay(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("case", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_test_rules_prints_the_golden_events(case: str) -> None:
    """`pdrelay test-rules` prints exactly the events of each golden fixture."""
    d = FIXTURES / case
    done = pdrelay("test-rules", "--rules", str(d / "rules.yaml"), str(d / "webhook.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((d / "expected.json").read_text())


def test_check_rules_accepts_the_example_rules() -> None:
    """The shipped example rules are valid."""
    done = pdrelay("check-rules", "rules/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 1 file(s), sha256 ")


def test_check_rules_reports_file_and_line(tmp_path: Path) -> None:
    """A broken rules file exits 1 with file:line: message."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: x\n    match: ['severity=~\"(\"']\n    drop: true\n")
    done = pdrelay("check-rules", str(bad))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{bad}:4: ")


def test_test_rules_refuses_a_body_that_is_not_a_notification(tmp_path: Path) -> None:
    """A bad body file is named with the field at fault, and the exit code is 1."""
    body = tmp_path / "b.json"
    body.write_text('{"version": "4"}')
    done = pdrelay("test-rules", "--rules", "rules/", str(body))
    assert done.returncode == 1
    assert done.stderr == f"{body}: not an Alertmanager webhook body at receiver: missing required field 'receiver'\n"


def test_test_rules_prints_alert_text_escaped(tmp_path: Path) -> None:
    """Terminal escapes in an alert reach the screen as JSON escapes, and still parse to the same text."""
    body = json.loads((FIXTURES / "am025-per-alert-firing" / "webhook.json").read_text())
    title = "\x1b]0;pwned\x07\x1b[2J"
    body["alerts"][0]["annotations"]["summary"] = title
    path = tmp_path / "b.json"
    path.write_text(json.dumps(body))
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults: {routing_key: default, dedup: alert}\n"
                     "rules: [{name: s, set: {summary: '{{ annotations.summary }}'}}]\n")
    done = pdrelay("test-rules", "--rules", str(rules), str(path))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\\u001b]0;pwned\\u0007\\u001b[2J" in done.stdout
    assert json.loads(done.stdout)["events"][0]["body"]["payload"]["summary"] == title
    bad = tmp_path / "bad\x1b[2J.json"  # a file name from a pull request
    bad.write_text('{"version": "4"}')
    refused = pdrelay("test-rules", "--rules", str(rules), str(bad))
    assert refused.returncode == 1 and "\x1b" not in refused.stderr and "\\x1b[2J" in refused.stderr, refused.stderr


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    """An invalid config stops serve at once with the key named, exit 2."""
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text("pagerduty: {retry_attempts: many}\n")
    done = pdrelay("serve", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stderr == "pdrelay: config: pagerduty.retry_attempts: expected an integer ≥ 1, got 'many'\n"


# Runs one command in a fresh interpreter, then reports which heavy packages it imported.
_IMPORTS_OF = """
import contextlib, io, json, sys
from receiver.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = {"aiohttp", "uvloop", "sqlite3", "_sqlite3", "jinja2", "transforms"}
loaded = sorted({name.partition(".")[0] for name in sys.modules} & heavy)
print(json.dumps({"code": code, "loaded": loaded, "out": out.getvalue()}))
"""


def _imports_of(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_help_imports_no_command_module() -> None:
    """`pdrelay --help` prints the commands without importing aiohttp, uvloop, sqlite3, jinja2 or the rules."""
    result = _imports_of("--help")
    assert result["code"] == 0
    assert result["loaded"] == []
    out = str(result["out"])
    assert out.startswith("usage: pdrelay ")
    assert all(name in out for name in ("serve", "check-rules", "test-rules", "outbox", "audit", "keygen"))


def test_keygen_imports_no_command_module() -> None:
    """`pdrelay keygen` prints one base64 key of 32 bytes, importing none of the server's or the rules' packages."""
    result = _imports_of("keygen")
    assert result["code"] == 0
    assert result["loaded"] == []
    assert len(base64.b64decode(str(result["out"]).strip(), validate=True)) == 32


@pytest.mark.parametrize("argv", [
    ["serve"], ["check-rules", "r.yaml"], ["test-rules", "--rules", "r.yaml", "b.json"],
    ["outbox", "list"], ["outbox", "show", "1"], ["outbox", "replay", "--all"], ["outbox", "purge", "--dead"],
    ["outbox", "rekey"], ["audit", "verify", "a.jsonl"], ["keygen"], ["completion", "bash"],
])
def test_every_command_names_a_function_that_exists(argv: list[str]) -> None:
    """Each command's lazy "module:function" target resolves to a callable."""
    args = cli._parser().parse_args(argv)
    assert callable(pkgutil.resolve_name(args.command))


def test_printable_shows_what_a_terminal_would_act_on_as_escapes() -> None:
    """Control and format characters become escapes, a backslash is doubled, every script stays as it is."""
    from receiver.cli.common import printable

    assert printable("\x1b]0;owned\x07\x1b[2J") == "\\x1b]0;owned\\x07\\x1b[2J"
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("\x7f\x9b31m\xa0") == "\\x7f\\x9b31m\\xa0"  # DEL, C1 CSI, no-break space
    assert printable("ab\u202ecd\u2066") == "ab\\u202ecd\\u2066"  # bidi override and isolate
    assert printable("\U000e0041\udcff") == "\\U000e0041\\udcff"  # a tag character, a lone surrogate
    assert printable("C:\\temp \\x1b") == "C:\\\\temp \\\\x1b"  # literal text never passes for an escape
    assert printable("Ünïcödé 日本語 🚨 ok") == "Ünïcödé 日本語 🚨 ok"


def test_json_text_is_json_whose_every_unprintable_character_is_escaped() -> None:
    """What `--json` prints: the same value back through json.loads, with only the indent's newlines raw."""
    from receiver.cli.common import json_text

    value = {"fp": "\x1b]0;x\x07", "c1": "\x9b\x7f", "bidi": "\u202e", "tag": "\U000e0041", "ok": "日本語 🚨",
             "nested": [{"k\x1b": "v\r\n"}]}
    for indent in (None, 2):
        text = json_text(value, indent=indent)
        assert json.loads(text) == value
        assert [ch for ch in text if not ch.isprintable() and ch != "\n"] == []
        assert "日本語 🚨" in text
    assert json_text({"c1": "\x9b", "bidi": "\u202e", "tag": "\U000e0041"}) == (
        '{"bidi": "\\u202e", "c1": "\\u009b", "tag": "\\udb40\\udc41"}')
    assert json_text({"fp": "\x1b"}, indent=2) == '{\n  "fp": "\\u001b"\n}'
