"""The command line's rough edges, run as users run it: ``--version``, a closed output pipe,
closed sets of option values, read-only commands without secrets, and shell completion."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

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
