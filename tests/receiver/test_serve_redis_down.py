"""`pdrelay serve` with ``outbox.backend: redis`` and its Redis not answering at start: one line naming the
server (never its password) and exit status 2, as for any outbox that cannot be opened; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RULES = "version: 1\ndefaults: {routing_key: default, severity: warning}\nrules: []\n"
PASSWORD = "hunter2-" + "q" * 24


def test_serve_with_redis_unreachable_at_start_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    socket_path = tmp_path / "nobody-listens.sock"  # no server: connecting fails at once
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "pdrelay.yaml").write_text(
        f"pagerduty: {{routing_keys: {{default: '{'r' * 32}'}}, dry_run: true}}\n"
        f"outbox: {{backend: redis, redis: {{url: 'unix://{socket_path}', key_prefix: gone, username: pd, "
        "password: '${PDRELAY_TEST_REDIS_PW}'}}\n"
        "rules: {paths: [rules.yaml]}\naudit: {path: audit.jsonl}\n")
    env = {**os.environ, "PDRELAY_TEST_REDIS_PW": PASSWORD}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "receiver", "serve", "--config", "pdrelay.yaml",
         "--listen", "127.0.0.1:0", "--port-file", str(tmp_path / "pdrelay.port")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"pdrelay: Redis outbox: opening unix://{socket_path} (key prefix 'gone') failed: ConnectionError: "
        f"Error 2 connecting to {socket_path}. No such file or directory.\n"
    )
    assert PASSWORD not in done.stderr
    assert not (tmp_path / "pdrelay.port").exists()  # it never listened
