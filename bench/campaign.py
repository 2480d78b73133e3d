"""Fault campaign (issue 13): a soak that kills, partitions and floods a three-AZ cluster and
counts what people received.

    python bench/campaign.py --minutes 30 --seed 7       # the soak; about 32 minutes
    python bench/campaign.py --minutes 3 --seed 7        # the short one (tests/test_campaign.py)
    python bench/campaign.py --check DIR                 # the checker again, on a kept run
    python bench/campaign.py --recovery 10000,1000000    # kill -9 to ready and to first delivery

Starts three service instances (peered), two peered Alertmanagers, one Prometheus (Debian
packages), an SMTP sink and the fake WeCom API on 127.0.0.1; drives incidents and a storm of
alert groups through the Alertmanagers and straight to the webhooks, acknowledges and silences
some incidents (the API, the real amtool) on random instances; injects faults on a
schedule drawn from the seed (campaign_faults.py); then the checker (campaign_check.py)
compares what the sinks received with every state change the load made, prints the report,
and exits 1 on a broken promise, printing the seed to replay it. Every process it starts it
stops by process id; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from campaign_check import check, load, render
from campaign_faults import Fault, Injector, schedule
from campaign_load import Load
from campaign_stack import BENCH, Stack, Timers

STORM_GROUPS = 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--storm", type=int, default=STORM_GROUPS, help="alert groups in the storm")
    parser.add_argument("--workdir", default="", help="default: bench/results/campaign-<time>")
    parser.add_argument("--keep", action="store_true", help="keep the stores and process logs")
    parser.add_argument("--no-faults", action="store_true", help="the load alone (a baseline)")
    parser.add_argument("--check", metavar="DIR", help="only run the checker on a kept run")
    parser.add_argument(
        "--recovery",
        metavar="N,N",
        help="measure kill -9 to /readyz 200 and to the first delivery with N stored alerts",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return report(Path(args.check))
    if args.recovery:
        from campaign_recovery import recovery

        return recovery([int(n) for n in args.recovery.split(",")], args.workdir, args.keep)
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(args.workdir or BENCH / "results" / f"campaign-{stamp}-seed{seed}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    faults = [] if args.no_faults else schedule(random.Random(f"faults-{seed}"), seconds)
    timers = Timers()
    meta: dict[str, Any] = {
        "seed": seed,
        "minutes": args.minutes,
        "timers": timers.to_json(),
        "storm_groups": args.storm,
        "plan": [f.to_json() for f in faults],
        "command": "python bench/campaign.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    say(f"seed {seed}: {len(faults)} faults over {args.minutes:g} minutes; work in {workdir}")
    for f in faults:
        say(f"  at +{f.start:5.0f}s {f.describe()}")
    stack = Stack(workdir, timers)
    meta["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
    try:
        started = time.time()
        stack.start()
        wait_for(stack.heartbeats_ok, 90, "every instance receives the heartbeat")
        meta["stack_ready_seconds"] = round(time.time() - started, 1)
        say(f"stack ready in {meta['stack_ready_seconds']}s")
        asyncio.run(campaign(stack, seed, seconds, faults, args.storm, meta))
    finally:
        (workdir / "wecom.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in stack.wecom.records())
        )
        stack.stop()
        meta["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
        (workdir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    code = report(workdir)
    if not args.keep:
        for name in ("prometheus-data", "am1", "am2", *stack.instances):
            shutil.rmtree(workdir / name, ignore_errors=True)
    return code


async def campaign(
    stack: Stack, seed: int, seconds: float, faults: list[Fault], storm: int, meta: dict[str, Any]
) -> None:
    rng = random.Random(f"load-{seed}")
    workdir = stack.workdir
    async with aiohttp.ClientSession() as session:
        load_ = Load(
            rng,
            workdir / "changes.jsonl",
            [stack.am_url(am) for am in stack.alertmanagers],
            {name: i.url for name, i in stack.instances.items()},
            session,
        )
        load_.start()
        t0 = time.time()
        meta["load_started"] = t0
        until = t0 + seconds
        injector = Injector(stack, say)
        watcher = asyncio.create_task(watch(stack, session, workdir / "watch.jsonl"))
        runner = asyncio.create_task(run_faults(injector, faults, t0, workdir / "faults.jsonl"))
        storm_at = t0 + 0.35 * seconds
        stormed = storm <= 0
        next_incident = t0
        while time.time() < until:
            now = time.time()
            if not stormed and now >= storm_at:
                say(f"+{now - t0:5.0f}s storm: {storm} alert groups, resolved after 60s")
                meta["storm_at"] = now
                load_.start_storm(storm, 60.0)
                stormed = True
            if now >= next_incident:
                load_.new_incident(until)
                next_incident = now + rng.expovariate(1 / 12.0)
            await asyncio.sleep(
                max(
                    min(next_incident, storm_at if not stormed else until, until) - time.time(), 0.0
                )
            )
        await runner  # the last fault is healed before the load ends (schedule's tail)
        meta["load_ended"] = time.time()
        await load_.finish()
        say(f"load ended: {load_.incidents} incidents, {load_.changes} changes; draining")
        await load_.drained(60)
        await quiet(stack, 20.0, 120.0)
        meta["checked_at"] = time.time()
        meta["load"] = load_.stats()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await load_.close()


async def run_faults(injector: Injector, faults: list[Fault], t0: float, log: Path) -> None:
    for fault in faults:
        await asyncio.sleep(max(t0 + fault.start - time.time(), 0))
        say(f"+{time.time() - t0:5.0f}s fault: {fault.describe()}")
        try:
            await injector.run(fault)
        except Exception as exc:  # the campaign goes on; the fault says what happened
            fault.notes["error"] = f"{type(exc).__name__}: {exc}"
            say(f"fault {fault.kind} failed: {exc}")
        say(f"+{time.time() - t0:5.0f}s healed: {fault.kind} {fault.target} {fault.notes or ''}")
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps(fault.to_json()) + "\n")


async def watch(stack: Stack, session: aiohttp.ClientSession, log: Path) -> None:
    """Every second, what each instance says of its peers and heartbeats, where it changed
    (`watch.jsonl`): evidence for the report, not part of the verdict."""
    last: dict[str, Any] = {}
    with open(log, "a", encoding="utf-8") as out:
        while True:
            for name, instance in stack.instances.items():
                try:
                    async with session.get(
                        f"{instance.url}/api/v1/watchdog", timeout=aiohttp.ClientTimeout(total=1)
                    ) as response:
                        body = await response.json()
                    state: dict[str, Any] = {
                        "peers": {p["name"]: p["consecutive_failures"] for p in body["peers"]},
                        "heartbeats": {h["name"]: h["state"] for h in body["heartbeats"]},
                    }
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                    state = {"unanswered": True}
                if state != last.get(name):
                    last[name] = state
                    out.write(json.dumps({"t": time.time(), "instance": name, **state}) + "\n")
                    out.flush()
            await asyncio.sleep(1.0)


async def quiet(stack: Stack, seconds: float, limit: float) -> None:
    """Until neither sink received anything for `seconds` (at most `limit`)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        last = max(
            [0.0]
            + [m["t"] for m in stack.mail.mails[-1:]]
            + [r.at for r in stack.wecom.fake.accepted[-1:]]
        )
        if time.time() - last >= seconds:
            return
        await asyncio.sleep(1.0)


def report(workdir: Path) -> int:
    data = load(workdir)
    verdict = check(data)
    text = render(verdict, data["meta"])
    (workdir / "report.md").write_text(text + "\n")
    (workdir / "verdict.json").write_text(
        json.dumps(
            {
                "ok": verdict.ok,
                "seed": verdict.seed,
                "broken": verdict.broken,
                "figures": verdict.figures,
            },
            indent=1,
        )
        + "\n"
    )
    print(text)
    if not verdict.ok:
        print(
            f"\nBROKEN PROMISES; replay with: python bench/campaign.py --minutes "
            f"{data['meta'].get('minutes'):g} --seed {verdict.seed}",
            file=sys.stderr,
        )
    return 0 if verdict.ok else 1


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout}s")


_T0 = time.time()


def say(line: str) -> None:
    print(f"[{time.time() - _T0:7.1f}] {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
