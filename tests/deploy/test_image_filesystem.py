"""The image as deploy/Dockerfile builds it, without a container engine: its filesystem laid out under a
temporary prefix by replaying the file's own RUN and COPY steps, then pdrelay started from it the way
the image starts it (ENV, USER, WORKDIR, ENTRYPOINT + CMD) as uid 10001, with every path but the data
volume read-only, on the embedded defaults and with a mounted config.

What the replay changes, and nothing else: absolute paths point into the prefix; ``python`` is this
interpreter (the test asserts it is the base image's Python minor version); ``pip install`` runs
without ``--no-cache-dir`` so it reuses this machine's pip cache; the ``groupadd`` / ``useradd`` of
the image's user are not run (the host's user database is left alone: ``setpriv`` switches to the
numeric uid/gid the Dockerfile gives them and USER names). What it cannot show: the base image's own
contents and the engine's read-only root (here: file modes), and /tmp stays writable on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_steps import REPO, Instruction, Stage, read
from e2e_support import http_get, stop_process, wait_until

pytestmark = pytest.mark.e2e

UID = 10001
SKIPPED = ("groupadd", "useradd")  # the image's user: its numbers are checked against USER instead


@dataclass
class Image:
    """The replayed image: a prefix standing for ``/``, and what the runtime stage declares."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    user: tuple[int, int] | None = None
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    seen: list[list[str]] = field(default_factory=list)  # every RUN command met, as the Dockerfile says it
    skipped: list[list[str]] = field(default_factory=list)  # those of them not run

    def host(self, path: str, cwd: str = "/") -> Path:
        """Where an image path (absolute, or relative to ``cwd``) lies under the prefix."""
        absolute = Path(cwd, path) if not path.startswith("/") else Path(path)
        return self.root / absolute.relative_to("/")

    def as_user(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        uid, gid = self.user
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


def rewrite(image: Image, word: str) -> str:
    return str(image.host(word)) if word.startswith("/") else word


def replay_run(image: Image, step: Instruction, cwd: str) -> None:
    for argv in step.commands():
        image.seen.append(argv)
        if argv[0] in SKIPPED:
            image.skipped.append(argv)
            continue
        command = [rewrite(image, word) for word in argv]
        if command[0] == "python":
            command[0] = sys.executable
        if Path(argv[0]).name == "pip":
            command = [word for word in command if word != "--no-cache-dir"]
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
        done = subprocess.run(image.as_user(command), cwd=image.host(cwd), env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"


def replay_copy(image: Image, step: Instruction, cwd: str) -> None:
    *sources, dest = step.words()
    if step.flags:  # COPY --from=<build stage>: that stage was laid out under the same prefix
        assert step.flags == ("--from=build",) and sources == [dest], step
        assert image.host(dest).is_dir()
        return
    target = image.host(dest, cwd)
    for source in sources:
        origin = REPO / source
        into = target / origin.name if dest.endswith("/") and not origin.is_dir() else target
        if origin.is_dir():
            shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


def replay_env(image: Image, step: Instruction) -> None:
    for word in step.words():
        name, _, value = word.partition("=")
        if name == "PATH":
            parts = [os.environ["PATH"] if part == "$PATH" else rewrite(image, part) for part in value.split(":")]
            value = ":".join(parts)
        image.env[name] = value


def replay_stage(image: Image, stage: Stage) -> None:
    cwd = "/"
    for step in stage.steps:
        if step.keyword == "WORKDIR":
            cwd = step.args
            image.host(cwd).mkdir(parents=True, exist_ok=True)
        elif step.keyword == "RUN":
            replay_run(image, step, cwd)
        elif step.keyword == "COPY":
            replay_copy(image, step, cwd)
        elif step.keyword == "ENV":
            replay_env(image, step)
        elif step.keyword == "USER":
            uid, _, gid = step.args.partition(":")
            image.user = (int(uid), int(gid))
        elif step.keyword == "VOLUME":
            image.volumes = step.exec_form()
        elif step.keyword == "EXPOSE":
            image.exposed = step.words()
        elif step.keyword == "HEALTHCHECK":
            image.healthcheck = step.exec_form()
        elif step.keyword == "ENTRYPOINT":
            image.command = step.exec_form() + image.command
        elif step.keyword == "CMD":
            image.command = image.command + step.exec_form()
        else:
            raise AssertionError(f"cannot replay {step.keyword} {step.args}")
    image.workdir = cwd


def make_read_only(root: Path, keep: Path) -> None:
    """Take every write bit off under ``root``, except under ``keep`` (the volume); symlinks stay as they are."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            if not path.is_symlink() and path != keep and keep not in path.parents:
                path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o222)
    root.chmod(0o555)


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    stages = read()
    assert [stage.name for stage in stages] == ["build", None]
    assert stages[0].image == stages[1].image  # the venv is built against the runtime's Python
    assert stages[0].image.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-slim")
    assert os.geteuid() == 0, "the replay runs the Dockerfile's RUN steps as root, as the build does"
    root = Path(tempfile.mkdtemp(prefix="pdrelay-image-"))
    root.chmod(0o755)  # mkdtemp's 0700 would keep uid 10001 out
    try:
        built = Image(root)
        replay_stage(built, stages[0])
        built.env, built.user = {}, None  # the runtime stage starts afresh
        replay_stage(built, stages[1])
        make_read_only(root, built.host(built.volumes[0]))
        yield built
    finally:
        shutil.rmtree(root)


@pytest.fixture
def data(image: Image) -> Iterator[Path]:
    """The data volume, empty for each test."""
    volume = image.host(image.volumes[0])
    yield volume
    for path in volume.iterdir():
        path.unlink()


def test_the_replay_is_the_dockerfile(image: Image) -> None:
    runs = [step for stage in read() for step in stage.steps if step.keyword == "RUN"]
    assert image.seen == [argv for step in runs for argv in step.commands()]
    assert [argv[0] for argv in image.seen if argv not in image.skipped] == [
        "python", "/opt/pdrelay/venv/bin/pip", "mkdir", "chown", "chmod", "ln", "ln",
    ]
    assert [argv[0] for argv in image.skipped] == ["groupadd", "useradd"]
    groupadd, useradd = image.skipped
    gid = groupadd[groupadd.index("--gid") + 1]
    uid, user_gid = useradd[useradd.index("--uid") + 1], useradd[useradd.index("--gid") + 1]
    assert image.user == (UID, UID) == (int(uid), int(gid)) == (UID, int(user_gid))
    assert image.exposed == ["9095"]
    assert image.volumes == ["/var/lib/pdrelay/data"]
    assert image.workdir == "/var/lib/pdrelay"
    assert image.command == ["pdrelay", "serve"]
    # What `pdrelay serve` looks for in its working directory leads into /etc/pdrelay.
    workdir = image.host(image.workdir)
    assert (workdir / "rules").resolve() == image.host("/etc/pdrelay/rules")
    assert sorted(path.name for path in (workdir / "rules").iterdir()) == ["default.yaml"]
    assert os.readlink(workdir / "pdrelay.yaml") == str(image.host("/etc/pdrelay/pdrelay.yaml"))


def test_only_the_volume_is_writable_by_the_image_user(image: Image) -> None:
    writable = []
    everything = [str(image.root)]
    for folder, dirs, files in os.walk(image.root):
        everything += (os.path.join(folder, entry) for entry in [*dirs, *files])
    for name in everything:
        info = os.lstat(name)
        if not stat.S_ISLNK(info.st_mode) and (info.st_uid == UID or info.st_mode & 0o002):
            writable.append(Path(name))
    assert writable == [image.host(image.volumes[0])]
    assert stat.S_IMODE(writable[0].stat().st_mode) == 0o700


def start(image: Image, data: Path, log: Path, args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int]:
    """Run the image's command (or ``args`` in place of its CMD) as the image user, on port 0."""
    port_file = data / "port"
    command = [*image.command[:1], *args] if args else image.command
    argv = [*(rewrite(image, word) for word in command), "--listen", "127.0.0.1:0", "--port-file", str(port_file)]
    env = {**image.env, "HOME": str(image.host("/var/lib/pdrelay")), "LANG": "C.UTF-8"}
    with log.open("wb") as out:
        proc = subprocess.Popen(image.as_user(argv), cwd=image.host(image.workdir), env=env,
                                stdout=out, stderr=subprocess.STDOUT)

    def bound() -> int | None:
        if proc.poll() is not None:
            raise AssertionError(f"pdrelay exited {proc.returncode}:\n{log.read_text()}")
        text = port_file.read_text() if port_file.exists() else ""
        return int(text) if text.endswith("\n") else None

    return proc, wait_until(bound, what="pdrelay's port file")


def check_serving(image: Image, port: int) -> None:
    # The image's HEALTHCHECK, as the image user, at the port this run got instead of 9095.
    probe = [part.replace(":9095/", f":{port}/") for part in image.healthcheck]
    assert probe != image.healthcheck
    done = subprocess.run(image.as_user(probe), cwd=image.host(image.workdir), env=image.env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    ready = http_get(f"http://127.0.0.1:{port}/readyz")
    assert ready is not None and ready.status_code == 200


def serve_once(image: Image, data: Path, log: Path, args: tuple[str, ...] = ()) -> dict[str, object]:
    """Start the image (as :func:`start`), check it serves, stop it; its start line."""
    proc, port = start(image, data, log, args)
    try:
        check_serving(image, port)
    finally:
        assert stop_process(proc) == 0
    return start_line(log)


def start_line(log: Path) -> dict[str, object]:
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record["msg"] == "pdrelay starting":
            return dict(record)
    raise AssertionError(f"no start line in:\n{log.read_text()}")


def test_starts_on_the_embedded_defaults_without_a_config(image: Image, data: Path, tmp_path: Path) -> None:
    assert not image.host("/etc/pdrelay/pdrelay.yaml").exists()
    record = serve_once(image, data, tmp_path / "pdrelay.log")
    assert (record["config"], record["outbox"]) == ("<embedded defaults>", "data/outbox.db")
    assert sorted(path.name for path in data.iterdir()) == ["audit.jsonl", "outbox.db", "port"]
    assert {path.stat().st_uid for path in data.iterdir()} == {UID}


def test_starts_with_the_config_mounted_at_etc_pdrelay(image: Image, data: Path, tmp_path: Path) -> None:
    mounted = image.host("/etc/pdrelay/pdrelay.yaml")
    mounted.write_text("outbox: {path: data/mounted.db}\nrules: {paths: [rules]}\n", encoding="utf-8")
    try:
        record = serve_once(image, data, tmp_path / "pdrelay.log")
    finally:
        mounted.unlink()
    assert (record["config"], record["outbox"]) == ("pdrelay.yaml", "data/mounted.db")
    assert sorted(path.name for path in data.iterdir()) == ["audit.jsonl", "mounted.db", "port"]


def test_starts_with_the_config_given_as_arguments(image: Image, data: Path, tmp_path: Path) -> None:
    # As a Kubernetes manifest may run it: `args: [serve, --config, /etc/pdrelay/pdrelay.yaml]`, its
    # paths then absolute (relative ones would be read from /etc/pdrelay).
    mounted = image.host("/etc/pdrelay/pdrelay.yaml")
    outbox, rules = image.host("/var/lib/pdrelay/data/given.db"), image.host("/etc/pdrelay/rules")
    mounted.write_text(f"outbox: {{path: {outbox}}}\nrules: {{paths: [{rules}]}}\n", encoding="utf-8")
    try:
        record = serve_once(image, data, tmp_path / "pdrelay.log", ("serve", "--config", "/etc/pdrelay/pdrelay.yaml"))
    finally:
        mounted.unlink()
    assert (record["config"], record["outbox"]) == (str(mounted), str(outbox))
    assert sorted(path.name for path in data.iterdir()) == ["audit.jsonl", "given.db", "port"]
