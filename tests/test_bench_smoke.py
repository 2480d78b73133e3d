"""The benchmark runs end to end at a tiny size and writes its report.

No figure is judged here (timing assertions do not belong in a test suite); the benchmark
itself is `python bench/run.py` (see bench/README.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "Machine",
    "Load generator check",
    "Ingest",
    "Storm",
    "Delivery",
    "Scale",
    "Hostile client",
    "Console",
    "Replay",
    "Memory",
    "Targets",
)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_benchmark_runs_at_a_tiny_size_and_writes_every_section(tmp_path: Path) -> None:
    # scripts/test.sh installs wrk; without it the benchmark cannot measure anything.
    assert shutil.which("wrk"), "wrk is not installed (Debian: apt-get install -y wrk)"
    out = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--smoke", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=145,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in report, f"section {section!r} missing:\n{report}"
    assert "Not run." not in report
    assert "| Monitor Manager |" in report  # the service was measured beside the baselines
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["mode"] == "smoke"
    assert not list(tmp_path.glob("work-*")), "the stores and logs were left behind"
