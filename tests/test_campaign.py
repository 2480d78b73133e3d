"""The fault campaign's short variant: three minutes of incidents, a storm of 1,000 alert
groups and faults on a fixed seed, against three real instances, two real Alertmanagers and a
real Prometheus; the checker's verdict must be that every promise was kept.

It runs `bench/campaign.py` as a process (it starts and stops every process of its stack by
process id) and reads the verdict it writes. About four minutes on a 2-core machine. The long
run and its figures are in bench/README.md.
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

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.mark.timeout(420)
def test_a_three_minute_fault_campaign_keeps_every_promise(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "campaign.py"),
            "--minutes",
            "3",
            "--seed",
            str(SEED),
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
    assert verdict["ok"], report
    assert run.returncode == 0, run.stderr[-3000:]
    # It did what it says: the faults ran, the storm was sent, people got messages.
    figures = verdict["figures"]
    assert [f["fault"].split()[0] for f in figures["faults"]] == ["stop", "store-ro"]
    assert figures["messages"]["mail"] > 50
    assert figures["changes"]["settled states x channels"] > 2000  # the storm's among them
