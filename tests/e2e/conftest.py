"""Fixtures of the end-to-end tests: a PagerDuty stand-in, real Alertmanager processes, pdrelay processes.

The helpers themselves (``wait_until``, ``PagerDutyStandIn``, ``Alertmanager``, ``AlertSpec``,
``PdRelay``) live in ``e2e_support``, importable from the tests and from ``capture_bodies.py``. Every
server listens on port 0 and reports the port it got. Every process a fixture starts is stopped by
PID at teardown, and the logs of the processes of a failed test are attached to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from e2e_support import (
    ALERTMANAGER_BIN,
    AlertmanagerFactory,
    PagerDutyStandIn,
    PdRelayFactory,
    attach_process_logs,
)


@pytest.fixture
def pd() -> Iterator[PagerDutyStandIn]:
    """A PagerDuty stand-in answering 202, stopped after the test."""
    with PagerDutyStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def start_pdrelay(tmp_path: Path, pd: PagerDutyStandIn) -> Iterator[PdRelayFactory]:
    """Start pdrelay processes that post to ``pd``; each is stopped by PID after the test."""
    factory = PdRelayFactory(tmp_path, pd)
    yield factory
    for relay in factory.started:
        relay.stop()


@pytest.fixture
def start_alertmanager(tmp_path: Path) -> Iterator[AlertmanagerFactory]:
    """Start real Alertmanager processes; each is stopped by PID after the test."""
    if not ALERTMANAGER_BIN.exists():
        pytest.fail(f"{ALERTMANAGER_BIN} is missing (Debian package prometheus-alertmanager)")
    factory = AlertmanagerFactory(tmp_path)
    yield factory
    for am in factory.started:
        am.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the processes a failed test started to its report."""
    report = yield
    attach_process_logs(item, report)
    return report
