"""The Dockerfile reader the replay relies on refuses what it could not replay, with an exact message."""

from __future__ import annotations

import pytest
from dockerfile_steps import DockerfileError, parse

TEXT = """# a comment
FROM python:3.11-slim-bookworm AS build
RUN mkdir -p /a \\
    && ln -s /a /b
COPY --from=build /a /a
CMD ["serve"]
"""


def test_reads_stages_flags_and_the_commands_of_a_run() -> None:
    (stage,) = parse(TEXT)
    assert (stage.image, stage.name) == ("python:3.11-slim-bookworm", "build")
    assert [step.keyword for step in stage.steps] == ["RUN", "COPY", "CMD"]
    assert stage.steps[0].commands() == [["mkdir", "-p", "/a"], ["ln", "-s", "/a", "/b"]]
    assert (stage.steps[1].flags, stage.steps[1].words()) == (("--from=build",), ["/a", "/a"])
    assert stage.steps[2].exec_form() == ["serve"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x\nRUN a | b\n", "RUN: not a plain command: 'a | b'"),
        ("FROM x\nRUN a; b\n", "RUN: not a plain command: 'a; b'"),
        ("FROM x\nRUN test -f c || exit 1\n", "RUN: not a plain command: 'test -f c || exit 1'"),
        ("FROM x\nRUN echo $HOME\n", "RUN: not a plain command: 'echo $HOME'"),
        ("FROM x\nADD a b\n", "unknown instruction ADD"),
        ("RUN a\n", "RUN before FROM"),
        ("FROM x\nRUN a \\\n", "the file ends inside a continued line"),
    ],
)
def test_refuses_what_it_cannot_replay(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        for stage in parse(text):
            for step in stage.steps:
                step.commands()
    assert str(caught.value) == message
