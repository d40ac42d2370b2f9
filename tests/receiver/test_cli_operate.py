"""The command line's rough edges, run as users run it: ``--version``, a closed output pipe,
closed sets of option values, read-only commands without secrets, and shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PDRELAY = str(Path(sys.executable).parent / "pdrelay")


def pdrelay(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PDRELAY, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_version_prints_the_installed_package_version() -> None:
    """`pdrelay --version` prints the version the package metadata records, on stdout, and exits 0."""
    done = pdrelay("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"pdrelay {version('pdrelay')}\n", "")


def test_version_imports_no_command_module() -> None:
    """`--version` stays as light as `--help`: none of the server's or the rules' packages load."""
    code = ("import contextlib, io, json, sys\nfrom receiver.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        main(['--version'])\n"
            "    except SystemExit as exc:\n        code = exc.code\n"
            "heavy = {'aiohttp', 'uvloop', 'sqlite3', '_sqlite3', 'jinja2', 'transforms'}\n"
            "print(json.dumps({'code': code, 'loaded': sorted({n.partition('.')[0] for n in sys.modules} & heavy)}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert json.loads(done.stdout) == {"code": 0, "loaded": []}


FIRING = ROOT / "tests" / "e2e" / "captured" / "am-0.25_firing.json"
RULES = "version: 1\ndefaults: {routing_key: default, dedup: alert}\nrules: []\n"


def many_alerts(n: int) -> bytes:
    """The captured firing body with ``n`` alerts, each its own fingerprint."""
    body = json.loads(FIRING.read_text())
    first = body["alerts"][0]
    body["alerts"] = [{**first, "fingerprint": f"{i:016x}", "labels": {**first["labels"], "i": str(i)}}
                      for i in range(n)]
    return json.dumps(body).encode()


def head_1(*args: str, cwd: Path) -> tuple[str, int, str]:
    """Run ``pdrelay args | head -1`` through a real pipe: the first line, the exit status and stderr.

    The output is larger than a pipe holds, so the writer is still writing when the reader closes. Python
    runs with its usual buffered stdout (``PYTHONUNBUFFERED`` unset, as in a user's shell)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with subprocess.Popen([PDRELAY, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline().decode()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        return first, proc.wait(timeout=60), err


def test_test_rules_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`pdrelay test-rules … | head -1` prints its first line and exits 141, as git does, without a traceback."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "b.json").write_bytes(many_alerts(400))
    first, code, err = head_1("test-rules", "--rules", "rules.yaml", "b.json", cwd=tmp_path)
    assert (first, code, err) == ("{\n", 141, "")


def test_outbox_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`pdrelay outbox list | head -1` prints the table's heading and exits 141 without a traceback."""
    import asyncio

    from receiver.models import parse_notification
    from receiver.outbox.sqlite import SQLiteOutbox
    from transforms import load_rules

    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "pdrelay.yaml").write_text("outbox: {path: outbox.db}\nrules: {paths: [rules.yaml]}\n")
    source = many_alerts(1500)
    evaluation = load_rules([tmp_path / "rules.yaml"]).evaluate(parse_notification(source))

    async def fill() -> None:
        box = SQLiteOutbox(tmp_path / "outbox.db")
        await box.open()
        await box.enqueue(source, evaluation.events, evaluation.invalid, resend_interval=3600.0)
        await box.close()

    asyncio.run(fill())
    whole = pdrelay("outbox", "list", "--limit", "1500", cwd=tmp_path)
    assert whole.returncode == 0 and len(whole.stdout) > 1 << 16, whole.stderr
    first, code, err = head_1("outbox", "list", "--limit", "1500", cwd=tmp_path)
    assert (first, code, err) == (whole.stdout.splitlines(keepends=True)[0], 141, "")


REASONS = ("rate_limited", "server_error", "timeout", "connection", "client_error", "auth_error", "invalid_event",
           "unknown_routing_key", "expired", "undecryptable", "unreadable")


def test_the_reasons_offered_are_the_closed_set_of_reasons() -> None:
    """The CLI offers exactly receiver.errors.Reason's values, in its order."""
    from receiver.errors import Reason

    assert tuple(r.value for r in Reason) == REASONS


@pytest.mark.parametrize("argv", [["outbox", "list"], ["outbox", "replay"], ["outbox", "purge"]])
def test_an_unknown_reason_is_refused_with_the_allowed_values(argv: list[str], tmp_path: Path) -> None:
    """`--reason bogus` exits 2 naming every allowed reason, before any outbox is opened."""
    done = pdrelay(*argv, "--reason", "bogus", cwd=tmp_path)
    allowed = ", ".join(f"'{r}'" for r in REASONS)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.endswith(f"pdrelay {' '.join(argv)}: error: argument --reason: invalid choice: 'bogus' "
                                f"(choose from {allowed})\n"), done.stderr
    assert not (tmp_path / "data").exists() and list(tmp_path.iterdir()) == []


def test_an_unknown_state_or_log_level_is_refused_with_the_allowed_values(tmp_path: Path) -> None:
    """`outbox list --state` and `serve --log-level` name their allowed values too."""
    state = pdrelay("outbox", "list", "--state", "gone", cwd=tmp_path)
    assert state.returncode == 2
    assert state.stderr.endswith("error: argument --state: invalid choice: 'gone' (choose from 'queued', 'dead')\n")
    level = pdrelay("serve", "--log-level", "LOUD", cwd=tmp_path)
    assert level.returncode == 2
    assert level.stderr.endswith("error: argument --log-level: invalid choice: 'LOUD' "
                                 "(choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR')\n")


@pytest.mark.parametrize("argv", [["outbox", "list"], ["outbox", "replay"], ["outbox", "purge"]])
def test_help_lists_the_reasons(argv: list[str]) -> None:
    """`--help` names every reason (argparse wraps the line; the words are what count)."""
    done = pdrelay(*argv, "--help")
    assert done.returncode == 0
    words = " ".join(done.stdout.split())
    assert ", ".join(REASONS) in words
    if argv == ["outbox", "list"]:
        assert "--state STATE one of queued, dead" in words
