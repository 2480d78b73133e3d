"""Recovery: time from kill -9 to /readyz 200, and to the first delivery, with N stored alerts.

    python bench/campaign.py --recovery 10000,1000000 [--workdir DIR] [--keep]

For each N: one instance (no peers: a start-up pull from peers adds at most their timeout)
with a store filled through the API with N firing alerts in N/100 alert groups (100 a payload;
group_wait 1h, so none of them is notified), restarted once with group_wait 1s; then, ROUNDS
times: an alert is posted, its mail is notified and the SMTP sink holds its answer to DATA; the
instance is killed (-9) while it waits and restarted at once (as systemd's Restart=always with
RestartSec=0 would). Measured from the kill: /readyz answering 200, and the sink receiving the
mail again (the outbox hands back a send a crash interrupted, at start-up). The held mail
itself is never accepted (the sink holds it past the measurement), so the first mail after the
kill is the one sent again.

Then a profile of the start-up (cProfile of Core.open() in this process, on a copy of the
store), to show where the time goes.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from campaign_stack import BENCH, REPO, MailSink, PipedProcess
from e2e_processes import http_ok
from e2e_stack import free_port

ROUNDS = 3
HOLD = 600.0  # seconds the sink holds the interrupted mail: longer than any measurement

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "mm-recovery"

[storage]
path = "mm.db"

[convergence]
group_by = ["alertname", "cluster"]
group_wait = "{group_wait}"
group_interval = "5s"
repeat_interval = "4h"

[delivery]
retry_initial = "1s"
retry_max = "5s"

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "Monitor Manager <alerts@example.com>"
timeout = "{hold}s"

[[contact_groups]]
name = "bulk"
channels = []

[[contact_groups]]
name = "oncall"
channels = ["mail"]
members = [{{ name = "On call", email = "oncall@example.com" }}]

[routing]
default_groups = ["bulk"]

[[routes]]
match = {{ team = "oncall" }}
groups = ["oncall"]
"""


def recovery(sizes: list[int], workdir_arg: str, keep: bool) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(workdir_arg or BENCH / "results" / f"recovery-{stamp}").resolve()
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        results.append(measure(n, root / f"stored-{n}"))
        print(json.dumps(results[-1], indent=1), flush=True)
    text = render(results)
    (root / "recovery.md").write_text(text + "\n")
    (root / "recovery.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    if not keep:
        for n in sizes:
            for name in ("mm.db", "mm.db-wal", "mm.db-shm", "profile.db"):
                (root / f"stored-{n}" / name).unlink(missing_ok=True)
    return 0


def measure(n: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    sink = MailSink(workdir / "mail.jsonl")
    sink.start()
    port = free_port()
    config = workdir / "mm.toml"
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "monitor_manager", "serve", "--config", str(config)]
    process = PipedProcess("mm-recovery", argv, workdir, f"http://127.0.0.1:{port}/readyz", env)
    url = f"http://127.0.0.1:{port}"

    def write_config(group_wait: str) -> None:
        config.write_text(
            CONFIG.format(port=port, group_wait=group_wait, smtp=sink.port, hold=int(HOLD + 60))
        )

    result: dict[str, Any] = {"stored": n}
    try:
        write_config("1h")
        process.start(60)
        started = time.time()
        asyncio.run(fill(url, n))
        result["fill_seconds"] = round(time.time() - started, 1)
        process.kill()
        write_config("1s")
        launched = time.time()
        process.start(600)
        result["cold_start_to_ready"] = round(time.time() - launched, 2)
        rounds = []
        for i in range(ROUNDS):
            rounds.append(one_round(process, sink, url, i))
        result["rounds"] = rounds
        for key in ("kill_to_ready", "kill_to_first_delivery", "restart_to_listening"):
            result[key] = round(statistics.median(r[key] for r in rounds), 2)
        result["rss_mb_after_start"] = _rss_mb(process)
        process.kill()
        result["store_mb"] = round(sum(f.stat().st_size for f in workdir.glob("mm.db*")) / 2**20, 1)
        result["profile"] = profile(workdir, config)
    finally:
        process.kill()
        sink.stop()
    return result


async def fill(url: str, n: int, per_payload: int = 100, concurrency: int = 4) -> None:
    """N firing alerts, 100 a payload (one alert group each), 4 requests at a time."""
    now = time.time()
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(0, n, per_payload):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            first = queue.get_nowait()
            alerts = [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "Stored",
                        "cluster": f"c{first // per_payload}",
                        "instance": f"node-{j}",
                    },
                    "annotations": {"summary": f"stored alert {j}"},
                    "startsAt": starts,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                }
                for j in range(first, min(first + per_payload, n))
            ]
            body = {
                "version": "4",
                "status": "firing",
                "receiver": "fill",
                "groupKey": "{}:{}",
                "externalURL": "http://fill",
                "alerts": alerts,
            }
            async with session.post(f"{url}/webhook/alertmanager", json=body) as response:
                assert response.status == 200, await response.text()

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def one_round(process: PipedProcess, sink: MailSink, url: str, i: int) -> dict[str, float]:
    """An alert notified, its mail held by the sink, the instance killed while it waits."""
    sink.data_delay = HOLD
    before = len(sink.mails)
    alert: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": f"Recovery{i}", "cluster": "r", "team": "oncall"},
        "annotations": {"summary": "recovery"},
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "endsAt": "0001-01-01T00:00:00Z",
    }
    body: dict[str, Any] = {"version": "4", "status": "firing", "receiver": "r"}
    body |= {"groupKey": "{}:{}", "externalURL": "http://r", "alerts": [alert]}
    request = urllib.request.Request(
        f"{url}/webhook/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    deadline = time.time() + 60
    while not sink.held and time.time() < deadline:
        time.sleep(0.01)
    assert sink.held, "the mail never reached the sink"
    sink.data_delay = 0.0  # from now on mails are taken at once; the held one stays held
    killed = time.time()
    process.kill()
    process.launch()
    listening = ready = 0.0
    while time.time() < killed + 600:
        now = time.time()
        if not listening and http_ok(f"{url}/healthz", timeout=0.5):
            listening = now
        if http_ok(f"{url}/readyz", timeout=0.5):
            ready = now
            break
        time.sleep(0.02)
    while len(sink.mails) <= before and time.time() < killed + 600:
        time.sleep(0.01)
    delivered = sink.mails[before]["t"] if len(sink.mails) > before else float("nan")
    return {
        "restart_to_listening": round((listening or ready) - killed, 3),
        "kill_to_ready": round(ready - killed, 3),
        "kill_to_first_delivery": round(delivered - killed, 3),
    }


def profile(workdir: Path, config: Path) -> list[str]:
    """Where Core.open() spends its time on this store (cProfile, in this process)."""
    for suffix in ("", "-wal", "-shm"):
        source = workdir / f"mm.db{suffix}"
        if source.exists():
            shutil.copy(source, workdir / f"profile.db{suffix}")
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.path.insert(0, str(REPO))
    from monitor_manager.build import build_core
    from monitor_manager.config import load_config

    cfg = load_config(str(config))
    import dataclasses

    cfg = dataclasses.replace(
        cfg, storage=dataclasses.replace(cfg.storage, path=str(workdir / "profile.db"))
    )

    async def stages() -> tuple[list[str], cProfile.Profile]:
        """Core.open() step by step; the in-memory rebuild (it runs on the store thread, which
        cProfile does not see) once more under cProfile, on this thread."""
        core = build_core(cfg)
        timings = []
        t = time.perf_counter()
        await core.store.open()
        timings.append(("store.open (connect, migrations)", time.perf_counter() - t))
        t = time.perf_counter()
        await core.parts.load()
        timings.append(("parts log", time.perf_counter() - t))
        t = time.perf_counter()
        await core.pipeline.load()
        timings.append(("pipeline.load (the in-memory index, then gc)", time.perf_counter() - t))
        t = time.perf_counter()
        await core.store.write(await core.ha.pull())
        timings.append(("peers' log (no peers here)", time.perf_counter() - t))
        t = time.perf_counter()
        await core.outbox.recover()
        timings.append(("outbox.recover", time.perf_counter() - t))
        profiler = cProfile.Profile()
        conn = core.store._conn
        assert conn is not None
        profiler.enable()
        core.pipeline._load(conn)
        profiler.disable()
        await core.close()
        return [f"{took:6.2f}s {what}" for what, took in timings], profiler

    lines, profiler = asyncio.run(stages())
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(20)
    (workdir / "startup-profile.txt").write_text(out.getvalue())
    lines.append("the rebuild under cProfile, by own time:")
    for (filename, _, function), row in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: -item[1][2],
    )[:8]:
        name = filename.split("monitor_manager/")[-1].split("/lib/python3.11/")[-1]
        lines.append(f"  {row[2]:6.2f}s own, {row[3]:6.2f}s cumulative: {name}:{function}")
    return lines


def _rss_mb(process: PipedProcess) -> float:
    assert process.proc is not None
    try:
        for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Recovery: kill -9, restart at once",
        "",
        "| stored alerts | kill → /readyz 200 | kill → first delivery | restart → listening "
        "| cold start → ready | RSS after start | store |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['stored']:,} | {r['kill_to_ready']} s | {r['kill_to_first_delivery']} s "
            f"| {r['restart_to_listening']} s | {r['cold_start_to_ready']} s "
            f"| {r['rss_mb_after_start']} MB | {r['store_mb']} MB |"
        )
    lines.append("")
    lines.append(f"Medians of {ROUNDS} kills each. Start-up profiles:")
    for r in results:
        lines.append("")
        lines.append(f"{r['stored']:,} stored:")
        lines += [f"    {line}" for line in r["profile"]]
    return "\n".join(lines)
