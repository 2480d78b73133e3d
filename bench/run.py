"""Monitor Manager benchmark: one command, a Markdown table on stdout and in a file.

    python bench/run.py                  # full: medians of 3 runs, about 12 minutes
    python bench/run.py --quick          # one short run of everything, about 3 minutes
    python bench/run.py --quick --smoke  # tiny sizes, under a minute (the test suite's smoke test)

Sections: machine, load generator check (wrk and the SMTP sink against do-nothing peers),
ingest against baselines (a) and (b) with latency at half the maximum rate, alert storm,
email delivery, ingest on a store holding 200,000 alerts, a good client's latency beside a
malicious one, the console's pages on a large store, `monitor-manager replay` of a day of
recorded traffic, peak memory, and with --profile py-spy profiles of the service under ingest
load. See bench/README.md.

Every load goes to 127.0.0.1 and is bounded in time or count. The service and the baselines
run on one core, wrk, the SMTP sink and this runner on another (taskset), where there are two.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import scenarios
from benchkit import BENCH, WRK, Pinning, Server, machine
from report import render

ALL = ("generator", "ingest", "storm", "delivery", "scale", "hostile", "console", "replay")
OPTIONAL = ("profile",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each figure")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="with --quick: tiny sizes, only to show the benchmark runs",
    )
    parser.add_argument(
        "--out",
        default=str(BENCH / "results" / "latest.md"),
        help="Markdown report (a .json with the raw figures goes beside it)",
    )
    parser.add_argument(
        "--workdir",
        default="",
        help="where stores and logs go (default: a new folder beside --out)",
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL),
        help=f"comma-separated subset of {','.join(ALL + OPTIONAL)}",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record py-spy profiles of the service under ingest load",
    )
    parser.add_argument(
        "--stored",
        type=int,
        default=0,
        help="alerts in the store for the scale section (default: 200,000; 50,000 with --quick)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument("--keep", action="store_true", help="keep stores and logs")
    parser.add_argument(
        "--record",
        action="store_true",
        help="services record every accepted payload ([server] record), to measure its cost",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ALL + OPTIONAL)
    if unknown:
        parser.error(f"--only: unknown sections {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(WRK).exists():
        print("wrk is needed as the load generator: apt-get install -y wrk", file=sys.stderr)
        return 2
    plan = scenarios.SMOKE if args.smoke else scenarios.QUICK if args.quick else scenarios.FULL
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.stored > 0:
        plan = scenarios.replace(plan, scale_stored=args.stored)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(args.workdir).resolve() if args.workdir else out.parent / f"work-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    scenarios.KEEP_FILES = args.keep
    scenarios.RECORD = args.record
    pinning = Pinning.detect(enabled=not args.no_pin)
    pinning.pin_self()
    only = set(args.only.split(","))

    peaks: dict[str, int] = {}

    def peak(label: str, server: Server) -> None:
        _, hwm = server.memory()
        peaks[label] = max(peaks.get(label, 0), hwm)

    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "plan": asdict(plan),
        "machine": machine(workdir, pinning),
        "memory": peaks,
    }
    try:
        if "generator" in only:
            results["generator"] = scenarios.generator_check(plan, workdir, pinning)
            results["sink"] = scenarios.sink_check(plan, workdir, pinning)
        if "ingest" in only:
            results["ingest"] = scenarios.ingest(plan, workdir, pinning, peak)
        if "storm" in only:
            results["storm"] = scenarios.storm(plan, workdir, pinning, peak)
        if "delivery" in only:
            results["delivery"] = scenarios.delivery(plan, workdir, pinning, peak)
        if "scale" in only:
            results["scale"] = scenarios.scale(plan, workdir, pinning, peak)
        if "hostile" in only:
            results["hostile"] = scenarios.hostile(plan, workdir, pinning, peak)
        if "console" in only:
            results["console"] = scenarios.console(plan, workdir, pinning, peak)
        if "replay" in only:
            results["replay"] = scenarios.replay(plan, workdir, pinning)
            peaks["replay (monitor-manager replay)"] = max(
                r["peak_rss_kb"] for r in results["replay"]["runs"]
            )
        if args.profile or "profile" in only:
            results["profile"] = scenarios.profile(
                plan, workdir, pinning, out.parent / f"profile-{stamp}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed"] = time.monotonic() - started
    results["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = render(results)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, default=_plain, indent=1) + "\n")
    print(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        data = asdict(value)
        for name in ("rps", "alerts_per_s"):
            if hasattr(value, name):
                data[name] = getattr(value, name)
        return data
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
