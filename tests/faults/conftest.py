"""Fixtures of the fault-injection tests: a rate-limited PagerDuty stand-in and pdrelay processes.

Reuses the end-to-end harness in ``tests/e2e/e2e_support.py`` (servers on port 0 that report
the port they got, bounded polls, processes stopped by PID). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

_E2E = str(Path(__file__).resolve().parent.parent / "e2e")
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)

from e2e_support import PdRelayFactory, attach_process_logs  # noqa: E402
from fault_support import LimitedPagerDuty  # noqa: E402


@pytest.fixture
def limited_pd() -> Iterator[LimitedPagerDuty]:
    """A PagerDuty stand-in enforcing 20 events / 1 s per routing key, stopped after the test."""
    with LimitedPagerDuty(per_key=20, window_seconds=1.0) as stand_in:
        yield stand_in


@pytest.fixture
def relays(tmp_path: Path, limited_pd: LimitedPagerDuty) -> Iterator[PdRelayFactory]:
    """Start pdrelay processes posting to ``limited_pd``; each is stopped by PID after the test."""
    factory = PdRelayFactory(tmp_path, limited_pd)
    yield factory
    for relay in factory.started:
        relay.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the pdrelay processes a failed test started to its report."""
    report = yield
    attach_process_logs(item, report)
    return report
