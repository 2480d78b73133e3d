"""The end-to-end stack, started once per session and healed before every scenario.

Run alone with `python -m pytest tests/e2e -m e2e` (or `-m slow` with the other slow tests).
Prometheus and Alertmanager come from the Debian packages `prometheus` and
`prometheus-alertmanager`; without them these tests fail (they are not skipped), so a machine
that cannot run them cannot report them as passed.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e2e_stack import (
    ALERTMANAGER_BIN,
    INSTANCES,
    PROMETHEUS_BIN,
    Stack,
    wait_until,
)
from e2e_timeline import Timeline

STACK_READY_TIMEOUT = 40.0  # the first heartbeat needs Alertmanager's cluster to settle
QUIET = 2.5  # seconds without a page before a scenario begins

_running: list[Stack] = []


def _require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(
            f"{binary} is missing: install the Debian package {package} (scripts/test.sh does)",
            pytrace=False,
        )


def _heartbeats_seen(stack: Stack) -> bool:
    return all(
        beat["last_seen"] and beat["state"] == "ok"
        for name in INSTANCES
        for beat in stack.heartbeats(name).values()
    )


@pytest.fixture(scope="session")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _require(PROMETHEUS_BIN, "prometheus")
    _require(ALERTMANAGER_BIN, "prometheus-alertmanager")
    stack = Stack(tmp_path_factory.mktemp("e2e"))
    _running.append(stack)
    try:
        stack.start()
        wait_until(
            "both instances receive both heartbeats",
            lambda: _heartbeats_seen(stack),
            STACK_READY_TIMEOUT,
            stack.logs,
        )
        # Whatever start-up paged (nothing, scenario 1 checks) is over before the scenarios.
        stack.recorder.wait_quiet(QUIET, STACK_READY_TIMEOUT)
        stack.startup_pages = list(stack.recorder.pages)
        yield stack
    finally:
        _running.remove(stack)
        stack.stop()


@pytest.fixture
def stack(e2e_stack: Stack) -> Stack:
    """The running stack, with anything an earlier scenario left broken started again."""
    e2e_stack.heal()
    wait_until(
        "heartbeats flowing again",
        lambda: _heartbeats_seen(e2e_stack),
        STACK_READY_TIMEOUT,
        e2e_stack.logs,
    )
    # Pages caused by an earlier scenario (or by healing) must not fall into this one.
    e2e_stack.recorder.wait_quiet(QUIET, STACK_READY_TIMEOUT)
    return e2e_stack


@pytest.fixture
def timeline(stack: Stack) -> Iterator[Timeline]:
    line = Timeline(stack.recorder)
    yield line
    print(line.show())  # the measured timeline, shown with -s or -rP


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failed scenario shows the end of every process log beside its timeline."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("setup", "call") and _running:
        report.sections.append(("e2e process logs", _running[0].logs()))
