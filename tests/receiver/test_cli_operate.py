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
import yaml

from receiver.errors import ConfigError
from receiver.settings import load_settings

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


UNSET_SECRETS_CONFIG = """\
outbox: {path: outbox.db}
rules: {paths: [rules.yaml]}
audit: {path: audit.jsonl}
pagerduty:
  routing_keys: {default: "${PD_ROUTING_KEY}", db: {env: PD_DB_KEY}, web: {file: web.key}}
auth:
  bearer_tokens: ["${PDRELAY_TOKEN}"]
  admin_tokens: {env: PDRELAY_ADMIN_TOKEN}
security:
  jwt_secret: {file: jwt.secret}
"""
SECRET_VARS = ("PD_ROUTING_KEY", "PD_DB_KEY", "PDRELAY_TOKEN", "PDRELAY_ADMIN_TOKEN", "PD_ENC_KEY")


def run_with(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return subprocess.run([PDRELAY, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
                          env={**base, **env}, stdin=subprocess.DEVNULL)


def fill_outbox(d: Path, key: str | None = None) -> None:
    """Store the captured firing body's two events (one a line in ``outbox list``), encrypted under ``key``."""
    import asyncio

    from receiver.crypto import Keyring
    from receiver.models import parse_notification
    from receiver.outbox.sqlite import SQLiteOutbox
    from transforms import load_rules

    (d / "rules.yaml").write_text(RULES)
    source = FIRING.read_bytes()
    evaluation = load_rules([d / "rules.yaml"]).evaluate(parse_notification(source))

    async def fill() -> None:
        box = SQLiteOutbox(d / "outbox.db", keyring=Keyring.from_keys([key]) if key else None)
        await box.open()
        await box.enqueue(source, evaluation.events, evaluation.invalid, resend_interval=3600.0)
        await box.close()

    asyncio.run(fill())


def test_the_serve_config_refuses_unset_secrets(tmp_path: Path) -> None:
    """The reproducer's premise: the service itself still refuses a routing key whose variable is unset."""
    (tmp_path / "pdrelay.yaml").write_text(UNSET_SECRETS_CONFIG)
    from receiver.errors import ConfigError
    from receiver.settings import load_settings

    with pytest.raises(ConfigError, match=r"^config: pagerduty\.routing_keys\.default: environment variable "
                                          r"PD_ROUTING_KEY is not set$"):
        load_settings(tmp_path / "pdrelay.yaml", environ={})


def test_outbox_list_and_show_run_with_the_secrets_unset(tmp_path: Path) -> None:
    """`outbox list/show` read the outbox although no routing key, token or JWT secret is available."""
    fill_outbox(tmp_path)
    (tmp_path / "pdrelay.yaml").write_text(UNSET_SECRETS_CONFIG)
    listed = run_with({}, "outbox", "list", "--json", cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert [json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()] == [
        "d55413deeb88df6c", "0ee71a229f2262e7"]
    shown = run_with({}, "outbox", "show", "1", "--json", cwd=tmp_path)
    assert (shown.returncode, shown.stderr) == (0, "")
    assert json.loads(shown.stdout)["body"]["dedup_key"] == "d55413deeb88df6c"


def test_check_rules_and_test_rules_run_with_the_secrets_unset(tmp_path: Path) -> None:
    """`check-rules --config` still checks the routing key names, and `test-rules` ignores ./pdrelay.yaml."""
    (tmp_path / "pdrelay.yaml").write_text(UNSET_SECRETS_CONFIG)
    (tmp_path / "rules.yaml").write_text("version: 1\ndefaults: {routing_key: db, dedup: alert}\nrules: []\n")
    (tmp_path / "bad.yaml").write_text("version: 1\ndefaults: {routing_key: nope, dedup: alert}\nrules: []\n")
    checked = run_with({}, "check-rules", "--config", "pdrelay.yaml", "rules.yaml", cwd=tmp_path)
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr
    assert checked.stdout.startswith("ok: 1 file(s), sha256 ")
    refused = run_with({}, "check-rules", "--config", "pdrelay.yaml", "bad.yaml", cwd=tmp_path)
    assert refused.returncode == 1 and "nope" in refused.stderr, refused.stderr
    (tmp_path / "b.json").write_bytes(FIRING.read_bytes())
    tested = run_with({}, "test-rules", "--rules", "rules.yaml", "b.json", cwd=tmp_path)
    assert (tested.returncode, tested.stderr) == (0, "")


def test_audit_verify_runs_with_the_secrets_unset(tmp_path: Path) -> None:
    """`audit verify --config` gives the same answer with the routing keys and tokens unset as with them set."""
    (tmp_path / "pdrelay.yaml").write_text(UNSET_SECRETS_CONFIG)
    (tmp_path / "audit.jsonl").write_text("")
    unset = run_with({}, "audit", "verify", "--config", "pdrelay.yaml", cwd=tmp_path)
    (tmp_path / "web.key").write_text("w" * 32)
    (tmp_path / "jwt.secret").write_text("j" * 32)
    every = {"PD_ROUTING_KEY": "r" * 32, "PD_DB_KEY": "d" * 32, "PDRELAY_TOKEN": "t" * 32,
             "PDRELAY_ADMIN_TOKEN": "a" * 32}
    set_ = run_with(every, "audit", "verify", "--config", "pdrelay.yaml", cwd=tmp_path)
    assert "not set" not in unset.stderr
    assert (unset.returncode, unset.stdout, unset.stderr) == (set_.returncode, set_.stdout, set_.stderr)


def test_an_encrypted_outbox_lists_with_its_key_and_names_the_key_without_it(tmp_path: Path) -> None:
    """The encryption key is still read: given, the rows list; named but unset, the command says it needs it."""
    from receiver.crypto import generate_key

    key = generate_key()
    fill_outbox(tmp_path, key)
    (tmp_path / "pdrelay.yaml").write_text(UNSET_SECRETS_CONFIG + "  encryption_key: ${PD_ENC_KEY}\n")
    listed = run_with({"PD_ENC_KEY": key}, "outbox", "show", "2", "--json", cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert json.loads(listed.stdout)["body"]["dedup_key"] == "0ee71a229f2262e7"
    refused = run_with({}, "outbox", "list", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == "pdrelay: config: security.encryption_key: environment variable PD_ENC_KEY is not set\n"


def test_only_unavailable_values_of_the_unused_secrets_are_replaced(tmp_path: Path) -> None:
    """Set variables, fallbacks and readable files are read as written; only an unavailable secret under the
    parts read-only commands never use becomes a placeholder, and the secrets they do use stay required."""
    (tmp_path / "k").write_text("x" * 32)
    keys = {"a": "${SET}", "b": "${GONE:-" + "f" * 32 + "}", "c": {"file": "k"},
            "d": "${GONE}", "e": {"env": "GONE"}, "f": {"file": "missing"}}
    (tmp_path / "pdrelay.yaml").write_text(yaml.safe_dump(
        {"pagerduty": {"routing_keys": keys}, "security": {"jwt_secret": "${GONE}"}}))
    settings = load_settings(tmp_path / "pdrelay.yaml", {"SET": "s" * 32}, secrets_may_be_unset=True)
    read = {name: secret.reveal() for name, secret in settings.pagerduty.routing_keys.items()}
    assert {k: read[k] for k in "abc"} == {"a": "s" * 32, "b": "f" * 32, "c": "x" * 32}
    replaced = [read["d"], read["e"], read["f"]]
    assert all(len(v) >= 32 and "$" not in v for v in replaced) and len(set(replaced)) == 3
    with pytest.raises(ConfigError, match=r"^config: pagerduty.routing_keys.d: environment variable GONE is not set$"):
        load_settings(tmp_path / "pdrelay.yaml", {"SET": "s" * 32})
    (tmp_path / "pdrelay.yaml").write_text(yaml.safe_dump({"security": {"encryption_key": "${GONE}"}}))
    with pytest.raises(ConfigError, match=r"^config: security.encryption_key: environment variable GONE is not set$"):
        load_settings(tmp_path / "pdrelay.yaml", {}, secrets_may_be_unset=True)


def complete(line: str) -> list[str]:
    """What bash offers for ``line`` (a trailing space: a new, empty word) with pdrelay's completion sourced."""
    script = ('source <("$PDRELAY" completion bash)\n'
              'read -ra COMP_WORDS <<< "$1"; [[ "$1" == *" " ]] && COMP_WORDS+=("")\n'
              'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _pdrelay; printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script, "_", line], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "PDRELAY": PDRELAY})
    return done.stdout.split()


def test_bash_completion_is_valid_bash() -> None:
    """`bash -n` accepts the script, which ends by registering _pdrelay for pdrelay."""
    done = pdrelay("completion", "bash")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.endswith("\ncomplete -o default -F _pdrelay pdrelay\n")
    checked = subprocess.run(["bash", "-n"], input=done.stdout, capture_output=True, text=True, timeout=60)
    assert (checked.returncode, checked.stderr) == (0, "")


def test_bash_completion_completes_commands_actions_options_and_closed_sets() -> None:
    """Sourced into bash, _pdrelay completes from the parser: commands, actions, options and their values."""
    assert complete("pdrelay ou") == ["outbox"]
    assert complete("pdrelay c") == ["check-rules", "completion"]
    assert complete("pdrelay --v") == ["--version"]
    assert complete("pdrelay outbox ") == ["-h", "--help", "list", "show", "replay", "purge", "rekey"]
    assert complete("pdrelay outbox list --st") == ["--state"]
    assert complete("pdrelay outbox list --state ") == ["queued", "dead"]
    assert complete("pdrelay outbox replay --reason un") == ["unknown_routing_key", "undecryptable", "unreadable"]
    assert complete("pdrelay serve --log-level W") == ["WARNING"]
    assert complete("pdrelay completion ") == ["-h", "--help", "bash", "zsh"]
    assert complete("pdrelay outbox list --config ") == []  # a file: the shell's own completion


def test_zsh_completion_runs_the_same_function_through_bashcompinit() -> None:
    """The zsh script is the bash function behind zsh's bash completion emulation."""
    bash, zsh = pdrelay("completion", "bash").stdout, pdrelay("completion", "zsh").stdout
    assert zsh.startswith("#compdef pdrelay\n")
    assert "autoload -U +X bashcompinit && bashcompinit\n" in zsh
    assert zsh.endswith(bash.split("\n", 1)[1])


def test_an_unknown_shell_is_refused() -> None:
    """`completion fish` exits 2 naming the shells there are scripts for."""
    done = pdrelay("completion", "fish")
    assert done.returncode == 2
    assert done.stderr.endswith("error: argument shell: invalid choice: 'fish' (choose from 'bash', 'zsh')\n")
