"""deploy/Dockerfile read as data: its stages and instructions, each RUN split into the commands it chains.

Only the subset the image uses is understood; anything else (a RUN with pipes, redirections or
`;`, an instruction this reader does not know) is refused with an exact message, so the tests
that replay the file fail loudly instead of replaying something else.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"

KNOWN = frozenset({"FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK",
                   "ENTRYPOINT", "CMD"})
SHELL_SYNTAX = re.compile(r"[|;&<>`$(){}*?]")


class DockerfileError(ValueError):
    """The Dockerfile says something the replay cannot reproduce."""


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    flags: tuple[str, ...]  # e.g. ("--from=build",)
    args: str  # the rest of the line, continuation lines joined

    def words(self) -> list[str]:
        return shlex.split(self.args)

    def exec_form(self) -> list[str]:
        """The JSON array form of CMD / ENTRYPOINT / HEALTHCHECK CMD / VOLUME."""
        text = self.args.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise DockerfileError(f"{self.keyword}: expected a JSON array of strings, got {text!r}")
        return value

    def commands(self) -> list[list[str]]:
        """A RUN's commands: the words of each part of its `&&` chain."""
        parts = [part.strip() for part in self.args.split("&&")]
        for part in parts:
            if not part or SHELL_SYNTAX.search(part):
                raise DockerfileError(f"RUN: not a plain command: {part!r}")
        return [shlex.split(part) for part in parts]


@dataclass(slots=True)
class Stage:
    image: str
    name: str | None
    steps: list[Instruction] = field(default_factory=list)


def logical_lines(text: str) -> list[str]:
    """Lines with comments dropped and `\\`-continued lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        raise DockerfileError("the file ends inside a continued line")
    return lines


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword not in KNOWN:
            raise DockerfileError(f"unknown instruction {keyword}")
        flags: list[str] = []
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        step = Instruction(keyword, tuple(flags), rest)
        if keyword == "FROM":
            words = step.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3) or (len(words) == 3 and name is None):
                raise DockerfileError(f"FROM: cannot read {rest!r}")
            stages.append(Stage(words[0], name))
        elif not stages:
            raise DockerfileError(f"{keyword} before FROM")
        else:
            stages[-1].steps.append(step)
    return stages


def read() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))
