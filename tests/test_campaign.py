"""The fault campaign's short variant: three minutes of incidents, acks and silences, a storm
of 300 alert groups and faults on a fixed seed, against three real instances, two real
Alertmanagers and a real Prometheus; the checker's verdict must be that every promise was kept
but two known to be open (below), within bounds.

It runs `bench/campaign.py` as a process (it starts and stops every process of its stack by
process id) and reads the verdict it writes. About four minutes on a 2-core machine. The long
run and its figures are in bench/README.md.

Its storm has 300 alert groups, not the long run's 1,000: with every process of the stack on two
cores, the thousand-group storm's end still makes the instances learn each other's WeCom sends
seconds late, and a digest can pass WeCom's limit (open, see bench/README.md, Fault campaign).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Faults on this seed, in three minutes: an instance stopped for longer than the heartbeat
# timeout (a partition as its peers see it), then an instance's store refusing writes.
SEED = 52
STORM = 300

# Out of the default run (pyproject addopts) while it still finds, now and then, one settled
# state that reached nobody (open, bench/README.md, Fault campaign): `pytest -m campaign`.
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.campaign]


@pytest.mark.timeout(420)
def test_a_three_minute_campaign_keeps_every_promise_but_the_open_ones(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "campaign.py"),
            "--minutes",
            "3",
            "--seed",
            str(SEED),
            "--storm",
            str(STORM),
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    verdict_file = tmp_path / "verdict.json"
    assert verdict_file.exists(), f"no verdict\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    verdict = json.loads(verdict_file.read_text())
    report = (tmp_path / "report.md").read_text()
    figures = verdict["figures"]
    # Open, found by this campaign and not fixed yet (bench/README.md, Fault campaign), each
    # tolerated here by name, at most a few; every other broken promise fails the test:
    # - an instance may send an older state of a group after its own newer one, when that
    #   newer one lacked a resolution the older names and the peer's send of the older state
    #   was replaced in its notification log;
    # - a duplicate or stale message while healthy, now and then, when a peer learns of a send
    #   late on a loaded machine (the 10-minute run had 4; a clean-clone CI run had 2).
    duplicates = figures["duplicates"]
    own_stale = duplicates.get("stale from the instance that had sent the newer state", 0)
    assert own_stale <= 3, report
    healthy = duplicates.get("duplicate (healthy)", 0) + duplicates.get("stale (healthy)", 0)
    assert healthy - own_stale <= 3, report
    open_ = ("duplicate or stale messages while healthy", "arrived after a newer state")
    broken = [b for b in verdict["broken"] if not any(o in b for o in open_)]
    assert broken == [], report
    assert run.returncode in (0, 1), run.stderr[-3000:]
    # It did what it says: the faults ran, the storm was sent, people got messages.
    assert [f["fault"].split()[0] for f in figures["faults"]] == ["stop", "store-ro"]
    assert figures["messages"]["mail"] > 50
    assert figures["changes"]["settled states x channels"] > 1000  # the storm's among them
    # People acted: acknowledgements and silences were made and held.
    assert figures["acting on pages"]["actions"].get("ack ok", 0) >= 1
    assert figures["acting on pages"]["actions"].get("silence ok", 0) >= 1
