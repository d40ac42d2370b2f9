"""No module of receiver/ or transforms/ grows past 400 lines: past that, split it by responsibility."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("receiver", "transforms")
LIMIT = 400


def line_counts(root: Path) -> dict[str, int]:
    """Path relative to ``root`` → number of lines, for every module of :data:`PACKAGES`."""
    return {
        path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def test_no_module_is_over_the_limit() -> None:
    counts = line_counts(ROOT)
    assert len(counts) > 10  # the packages were found
    over = [f"{path}: {n} lines" for path, n in counts.items() if n > LIMIT]
    assert not over, f"modules over {LIMIT} lines (split them by responsibility):\n" + "\n".join(over)
