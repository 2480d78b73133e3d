"""The benchmark's scenarios: generator check, ingest, storm, delivery, scale, profile.

Each function runs its loads, stops what it started, and returns plain data (dicts and
LoadResults) for report.py. Servers start fresh for every measured run (a new store in a new
directory), and the kinds of server are interleaved run by run, so slow drift of the machine
falls on every kind alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from benchkit import (
    PYTHON,
    REPO,
    WRK,
    LoadResult,
    Pinning,
    Server,
    ServiceSettings,
    Sink,
    alert,
    http,
    median,
    payload,
    post_all,
    run_wrk,
    service_config,
    start_baseline,
    start_service,
)
from recording import TEAMS

SERVER_KINDS = ("a", "b", "service")
KEEP_FILES = False  # set by run.py --keep
RECORD = False  # set by run.py --record: services record every payload ([server] record)


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions; --quick and --smoke shrink them."""

    reps: int = 3
    seconds: float = 5.0
    warmup: float = 1.0
    sizes: tuple[int, ...] = (1, 10, 100)
    connections: int = 16
    storm_alerts: int = 20_000
    storm_groups: int = 1_000
    storm_contact_groups: int = 5
    storm_reps: int = 3
    storm_group_wait: float = 5.0
    storm_window: float = 5.0
    storm_threshold: int = 20
    delivery_mails: int = 2_000
    delivery_reps: int = 3
    scale_stored: int = 200_000
    scale_sizes: tuple[int, ...] = (1, 100)
    sink_check_mails: int = 2_000
    profile_seconds: float = 15.0
    console_alerts: int = 200_000
    console_groups: int = 5_000
    console_fetches: int = 200
    replay_payloads: int = 100_000  # a day of recorded traffic


FULL = Plan()
QUICK = Plan(
    reps=1,
    seconds=2.0,
    storm_alerts=4_000,
    storm_groups=200,
    storm_reps=1,
    delivery_mails=500,
    delivery_reps=1,
    scale_stored=50_000,
    sink_check_mails=500,
    profile_seconds=8.0,
    console_fetches=50,
    replay_payloads=100_000,
)
SMOKE = Plan(
    reps=1,
    seconds=1.0,
    warmup=0.0,
    sizes=(1, 100),
    storm_alerts=200,
    storm_groups=20,
    storm_reps=1,
    storm_group_wait=1.0,
    storm_window=2.0,
    storm_threshold=2,
    delivery_mails=20,
    delivery_reps=1,
    scale_stored=2_000,
    scale_sizes=(100,),
    sink_check_mails=20,
    profile_seconds=2.0,
    console_alerts=2_000,
    console_groups=50,
    console_fetches=5,
    replay_payloads=2_000,
)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _start(
    kind: str, workdir: Path, pinning: Pinning, settings: ServiceSettings | None = None
) -> Server:
    if kind == "service":
        settings = settings or ServiceSettings()
        if RECORD and not settings.record:
            settings = replace(settings, record="webhooks.jsonl")
        return start_service(workdir, service_config(settings), pinning)
    return start_baseline(kind, workdir, pinning)


def _done(server: Server) -> None:
    """Stop a server and, unless --keep, delete its directory (stores get large)."""
    server.stop()
    if not KEEP_FILES:
        shutil.rmtree(server.workdir, ignore_errors=True)


def _warm_and_measure(
    server: Server,
    size: int,
    plan: Plan,
    pinning: Pinning,
    rate: float | None = None,
    tag: str = "m",
) -> LoadResult:
    if plan.warmup:
        run_wrk(server, size, f"w{tag}", plan.warmup, pinning, plan.connections)
    return run_wrk(server, size, tag, plan.seconds, pinning, plan.connections, rate=rate)


# -- load generator check ------------------------------------------------------------------------


def generator_check(plan: Plan, workdir: Path, pinning: Pinning) -> list[dict[str, Any]]:
    """wrk against a server that does nothing: the ceiling of the generator and the loopback."""
    rows = []
    server = start_baseline("trivial", workdir / "trivial", pinning)
    try:
        for size in plan.sizes:
            result = run_wrk(server, size, f"g{size}", plan.seconds, pinning, plan.connections)
            rows.append({"size": size, "result": result})
            _log(
                f"generator check {size}/payload: {result.rps:,.0f} req/s, "
                f"wrk CPU {result.generator_cpu:.0%}"
            )
    finally:
        server.stop()
    return rows


def sink_check(plan: Plan, workdir: Path, pinning: Pinning) -> dict[str, Any]:
    """aiosmtplib straight at the sink (2 reused connections): the sink's own ceiling."""
    sink = Sink(workdir / "sink-check", pinning)
    # The blaster runs on the server's core, which is idle now, so that it does not share a
    # core with the sink it measures.
    if pinning.server_cpu is not None:
        import os

        os.sched_setaffinity(0, {pinning.server_cpu})
    try:
        count = plan.sink_check_mails
        seconds = asyncio.run(_blast(sink.port, count, connections=2))
        sink.poll()
        mails = sink.mails()
        return {
            "mails": count,
            "received": len(mails),
            "seconds": seconds,
            "bytes": mails[0]["bytes"] if mails else 0,
            "rate": count / seconds,
            "connections": sink.connections(),
        }
    finally:
        pinning.pin_self()
        sink.stop()


async def _blast(port: int, count: int, connections: int) -> float:
    # One message of the service's size, composed once: composing with the email package costs
    # more than the sink's work, and this measures the sink.
    body = "Benchmark mail body line with some text to make it realistic.\n" * 45
    mail = EmailMessage()
    mail["Subject"] = "[FIRING:1] sink check"
    mail["From"] = "bench@bench.invalid"
    mail["To"] = "ops@bench.invalid"
    mail.set_content(body)
    mail.add_alternative(f"<pre>{body}</pre>", subtype="html")
    raw = mail.as_bytes()
    left = list(range(count))

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench"
        )
        await client.connect()
        while left:
            left.pop()
            await client.sendmail("bench@bench.invalid", ["ops@bench.invalid"], raw)
        await client.quit()

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.monotonic() - start


# -- ingest ------------------------------------------------------------------------------------


def ingest(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    """Closed-loop throughput of (a), (b) and the service per payload size, then the service's
    latency paced at half its own maximum rate."""
    closed: dict[int, dict[str, list[LoadResult]]] = {
        size: {kind: [] for kind in SERVER_KINDS} for size in plan.sizes
    }
    for rep in range(plan.reps):
        for size in plan.sizes:
            for kind in SERVER_KINDS:
                server = _start(kind, workdir / f"ingest-{rep}-{size}-{kind}", pinning)
                try:
                    result = _warm_and_measure(server, size, plan, pinning)
                finally:
                    if kind == "service":
                        peak(f"ingest {size}/payload", server)
                    _done(server)
                closed[size][kind].append(result)
                _log(
                    f"ingest rep {rep + 1}/{plan.reps} {size:>3}/payload {kind:>7}: "
                    f"{result.alerts_per_s:>9,.0f} alerts/s p99 {result.p99_ms:6.1f} ms "
                    f"server CPU {result.server_cpu:.0%} wrk CPU {result.generator_cpu:.0%} "
                    f"other {result.other_cpu:.2f} errors {result.errors}"
                )
    paced: dict[int, list[LoadResult]] = {size: [] for size in plan.sizes}
    targets: dict[int, float] = {}
    for size in plan.sizes:
        targets[size] = median(r.rps for r in closed[size]["service"]) / 2
    for rep in range(plan.reps):
        for size in plan.sizes:
            server = _start("service", workdir / f"paced-{rep}-{size}", pinning)
            try:
                result = _warm_and_measure(server, size, plan, pinning, rate=targets[size], tag="p")
            finally:
                peak(f"ingest {size}/payload", server)
                _done(server)
            paced[size].append(result)
            _log(
                f"paced rep {rep + 1}/{plan.reps} {size:>3}/payload at {targets[size]:,.0f} "
                f"req/s: got {result.rps:,.0f} req/s p50 {result.p50_ms:.1f} ms "
                f"p99 {result.p99_ms:.1f} ms"
            )
    return {"closed": closed, "paced": paced, "paced_rate": targets}


# -- storm -------------------------------------------------------------------------------------


def storm(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> list[dict[str, Any]]:
    runs = []
    for rep in range(plan.storm_reps):
        runs.append(_storm_once(plan, workdir / f"storm-{rep}", pinning, peak))
        r = runs[-1]
        _log(
            f"storm rep {rep + 1}/{plan.storm_reps}: firing: posted in "
            f"{r['firing']['post_seconds']:.1f} s, last mail {r['firing']['lag']:.1f} s "
            f"after last POST; resolved: last mail "
            f"{r['resolved']['lag']:.1f} s after last POST; max per window "
            f"{r['max_per_window']}; complete {r['firing']['complete']}/"
            f"{r['resolved']['complete']}"
        )
    return runs


def _storm_once(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    names = [f"cg{i + 1}" for i in range(plan.storm_contact_groups)]
    sink = Sink(workdir, pinning, grep=r"Storm\d{5}")
    settings = ServiceSettings(
        smtp_port=sink.port,
        group_wait=f"{plan.storm_group_wait:g}s",
        group_interval=f"{plan.storm_group_wait:g}s",
        storm_threshold=plan.storm_threshold,
        storm_window=f"{plan.storm_window:g}s",
        contact_groups=tuple(names),
    )
    server = _start("service", workdir, pinning, settings)
    per_group = plan.storm_alerts // plan.storm_groups
    groups = [f"Storm{g:05d}" for g in range(plan.storm_groups)]

    def bodies(status: str) -> list[bytes]:
        # One payload per alert group, as Alertmanager sends them.
        return [
            payload(
                [
                    alert(
                        {
                            "alertname": name,
                            "cluster": "bench",
                            "team": names[g % len(names)],
                            "instance": f"host-{i:03d}:9100",
                            "severity": "warning",
                        },
                        status=status,
                    )
                    for i in range(per_group)
                ]
            )
            for g, name in enumerate(groups)
        ]

    try:
        firing = _storm_phase(server, sink, bodies("firing"), set(groups), plan)
        resolved = _storm_phase(server, sink, bodies("resolved"), set(groups), plan)
        status, body = http("GET", f"{server.url}/api/v1/notifications?limit=10000", timeout=60)
        notifications = body.get("notifications", []) if status == 200 else []
        windows = _window_counts(notifications, plan.storm_window)
        mails_per_group = Counter(r for m in sink.mails() for r in m["rcpt"])
    finally:
        peak("storm", server)
        sink.stop()
        _done(server)
    return {
        "firing": firing,
        "resolved": resolved,
        "windows": windows,
        "max_per_window": max((w["sent"] for w in windows), default=0),
        "max_direct_per_window": max((w["direct"] for w in windows), default=0),
        "max_digests_per_window": max((w["digests"] for w in windows), default=0),
        "notifications": len(notifications),
        "mails_per_contact_group": dict(mails_per_group),
        "undelivered": sum(
            1 for n in notifications for d in n["deliveries"] if d["state"] != "delivered"
        ),
    }


def _storm_phase(
    server: Server, sink: Sink, bodies: list[bytes], groups: set[str], plan: Plan
) -> dict[str, Any]:
    started = time.time()
    posted = post_all(server.url, bodies, concurrency=16)
    deadline = time.monotonic() + plan.storm_group_wait + plan.storm_window + 120
    seen: set[str] = set()
    mails: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        mails = sink.mails(since=started)
        seen = {t for m in mails for t in m.get("tokens", [])}
        if groups <= seen and _outbox_empty(server):
            break
        time.sleep(0.1)
    last_mail = max((m["t"] for m in mails), default=float("nan"))
    status, body = http("GET", f"{server.url}/api/v1/notifications?limit=10000", timeout=60)
    decided = [
        _epoch(n["created_at"]) for n in (body or {}).get("notifications", []) if status == 200
    ]
    last_decision = max((t for t in decided if t >= started), default=float("nan"))
    return {
        "after_decision": last_mail - last_decision,
        "requests": posted.requests,
        "post_failures": posted.failures,
        "post_seconds": posted.seconds,
        "alerts_per_s": len(bodies) * (plan.storm_alerts // plan.storm_groups) / posted.seconds,
        "lag": last_mail - posted.last_response,
        "mails": len(mails),
        "digests": sum(1 for m in mails if m.get("subject", "").startswith("[DIGEST]")),
        "complete": len(groups & seen),
        "groups": len(groups),
    }


def _outbox_empty(server: Server) -> bool:
    for state in ("pending", "retrying", "sending"):
        status, body = http("GET", f"{server.url}/api/v1/notifications?state={state}&limit=1")
        if status != 200 or body.get("notifications"):
            return False
    return True


def _window_counts(notifications: list[dict[str, Any]], window: float) -> list[dict[str, Any]]:
    """Rebuild the storm windows per contact group from the notification records.

    A window opens with the first notification at or after the previous window's end (as the
    service's storm control opens them). Per window: notifications sent directly, digests that
    stand for notifications of the window, and the two added up (what a member receives per
    channel).
    """
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in notifications:
        if n["kind"] == "group":
            by_group[n["contact_group"]].append(n)
    out: list[dict[str, Any]] = []
    for contact_group, items in by_group.items():
        items.sort(key=lambda n: (_epoch(n["created_at"]), n["id"]))
        windows: list[tuple[float, list[dict[str, Any]]]] = []
        for n in items:
            at = _epoch(n["created_at"])
            if not windows or at >= windows[-1][0] + window:
                windows.append((at, []))
            windows[-1][1].append(n)
        for start, members in windows:
            direct = sum(1 for m in members if m["digest_id"] is None)
            digests = len({m["digest_id"] for m in members if m["digest_id"] is not None})
            out.append(
                {
                    "contact_group": contact_group,
                    "start": start,
                    "direct": direct,
                    "digests": digests,
                    "sent": direct + digests,
                }
            )
    return out


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- delivery ----------------------------------------------------------------------------------


def delivery(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> list[dict[str, Any]]:
    runs = []
    for rep in range(plan.delivery_reps):
        run = _delivery_once(plan, workdir / f"delivery-{rep}", pinning, peak)
        runs.append(run)
        _log(
            f"delivery rep {rep + 1}/{plan.delivery_reps}: {run['received']}/{run['mails']} "
            f"mails, {run['rate']:.0f}/s over {run['connections']} SMTP connections"
        )
    return runs


def _delivery_once(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    sink = Sink(workdir, pinning)
    # One alert group per mail; storm control out of the way, so that every change is a mail.
    settings = ServiceSettings(
        smtp_port=sink.port, group_wait="1s", storm_threshold=10_000_000, storm_window="1m"
    )
    server = _start("service", workdir, pinning, settings)
    count = plan.delivery_mails
    try:
        alerts = [
            alert({"alertname": f"Deliver{i:05d}", "cluster": "bench", "instance": "host:9100"})
            for i in range(count)
        ]
        bodies = [payload(alerts[i : i + 100]) for i in range(0, count, 100)]
        started = time.time()
        post_all(server.url, bodies)
        deadline = time.monotonic() + 30 + count / 20
        mails: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            mails = sink.mails(since=started)
            if len(mails) >= count:
                break
            time.sleep(0.1)
        times = sorted(m["t"] for m in mails)
        seconds = times[-1] - times[0] if len(times) > 1 else float("nan")
        return {
            "mails": count,
            "received": len(mails),
            "seconds": seconds,
            "rate": (len(times) - 1) / seconds if len(times) > 1 and seconds > 0 else 0.0,
            "connections": sink.connections(since=started),
            "mean_bytes": sum(m["bytes"] for m in mails) / len(mails) if mails else 0,
        }
    finally:
        peak("delivery", server)
        sink.stop()
        _done(server)


# -- scale -------------------------------------------------------------------------------------


def scale(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    """Ingest on an empty store and on one holding `scale_stored` alerts, interleaved."""
    template = workdir / "scale-template"
    prepop = _prepopulate(plan, template, pinning, peak)
    results: dict[str, dict[int, list[LoadResult]]] = {
        "empty": {s: [] for s in plan.scale_sizes},
        "stored": {s: [] for s in plan.scale_sizes},
    }
    startup: dict[str, list[float]] = {"empty": [], "stored": []}
    rss_after_load: list[int] = []
    for rep in range(plan.reps):
        for size in plan.scale_sizes:
            for condition in ("empty", "stored"):
                run_dir = workdir / f"scale-{rep}-{size}-{condition}"
                run_dir.mkdir(parents=True)
                if condition == "stored":
                    shutil.copy(template / "service.db", run_dir / "service.db")
                started = time.monotonic()
                server = _start("service", run_dir, pinning)
                startup[condition].append(time.monotonic() - started)
                if condition == "stored":
                    rss_after_load.append(server.memory()[0])
                try:
                    result = _warm_and_measure(server, size, plan, pinning, tag="s")
                finally:
                    peak(f"scale ({condition} store)", server)
                    _done(server)
                results[condition][size].append(result)
                _log(
                    f"scale rep {rep + 1}/{plan.reps} {size:>3}/payload {condition:>6}: "
                    f"{result.alerts_per_s:,.0f} alerts/s p99 {result.p99_ms:.1f} ms"
                )
    return {
        "prepopulate": prepop,
        "results": results,
        "startup": startup,
        "rss_after_load_kb": rss_after_load,
    }


def _prepopulate(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    """Fill a store through the API (100 alerts per payload, in 1,000 alert groups)."""
    server = _start("service", workdir, pinning)
    try:
        per_payload = 100
        bodies = []
        for start in range(0, plan.scale_stored, per_payload):
            name = f"Stored{(start // per_payload) % 1000:04d}"
            bodies.append(
                payload(
                    [
                        alert(
                            {
                                "alertname": name,
                                "cluster": "bench",
                                "instance": f"pre-{i}:9100",
                                "job": "node",
                                "severity": "warning",
                            }
                        )
                        for i in range(start, min(start + per_payload, plan.scale_stored))
                    ]
                )
            )
        posted = post_all(server.url, bodies)
        status, body = http("GET", f"{server.url}/api/v1/alerts?limit=1", timeout=60)
        stored = body.get("total", 0) if status == 200 else 0
        rss, hwm = server.memory()
    finally:
        peak("scale (filling the store)", server)
        server.stop()  # SIGTERM: a clean close checkpoints the WAL into service.db
    _log(
        f"pre-populated {stored:,} alerts in {posted.seconds:.1f} s "
        f"({plan.scale_stored / posted.seconds:,.0f} alerts/s), RSS {rss / 1024:.0f} MB"
    )
    return {
        "alerts": stored,
        "seconds": posted.seconds,
        "failures": posted.failures,
        "rss_kb": rss,
        "hwm_kb": hwm,
        "db_bytes": (workdir / "service.db").stat().st_size,
    }


# -- console ----------------------------------------------------------------------------------

CONSOLE_CONTACT_GROUPS = tuple(f"cg{i + 1}" for i in range(5))


def console(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    """Every console page fetched `console_fetches` times, one request at a time, on a store
    filled through the API: `console_alerts` firing alerts in `console_groups` open groups
    over 5 contact groups, each group notified once through two channels (a console channel
    that delivers, an email channel to a port where nothing listens, retrying every hour: as
    many failing deliveries as groups)."""
    settings = ServiceSettings(
        group_wait="1s",
        storm_threshold=10_000_000,
        contact_groups=CONSOLE_CONTACT_GROUPS,
        retry_initial="1h",
        console_channel=True,
    )
    server = _start("service", workdir / "console", pinning, settings)
    try:
        fill = _fill_console_store(plan, server)
        _log(
            f"console: {fill['alerts']:,} alerts in {fill['groups']:,} groups, "
            f"{fill['notifications']:,} notifications, {fill['failing']:,} failing deliveries "
            f"({fill['seconds']:.1f} s)"
        )
        fill["rss_kb"], fill["hwm_kb"] = server.memory()
        pages = asyncio.run(
            _fetch_pages(server.url, plan.console_fetches, fill["group_key"], plan.console_groups)
        )
        fill["rss_after_pages_kb"], fill["hwm_after_pages_kb"] = server.memory()
        for page in pages:
            _log(
                f"console {page['page']}: p50 {page['p50_ms']:.1f} ms, p99 "
                f"{page['p99_ms']:.1f} ms, {page['kb']:.0f} kB, statuses {page['statuses']}"
            )
    finally:
        peak("console (pages on the large store)", server)
        _done(server)
    return {"fill": fill, "pages": pages}


def _fill_console_store(plan: Plan, server: Server) -> dict[str, Any]:
    per_group = max(plan.console_alerts // plan.console_groups, 1)
    severities = ("critical", "warning", "info")
    bodies = [
        payload(
            [
                alert(
                    {
                        "alertname": f"Console{g:05d}",
                        "cluster": "bench",
                        "team": CONSOLE_CONTACT_GROUPS[g % len(CONSOLE_CONTACT_GROUPS)],
                        "instance": f"host-{i:03d}:9100",
                        "severity": severities[g % len(severities)],
                        "job": "node",
                    },
                    summary=f"Console{g:05d} on host-{i:03d} is firing",
                )
                for i in range(per_group)
            ]
        )
        for g in range(plan.console_groups)
    ]
    started = time.monotonic()
    posted = post_all(server.url, bodies)
    posted_after = time.monotonic() - started
    db = server.workdir / "service.db"
    deadline = time.monotonic() + 120 + plan.console_groups / 50
    counts = (0, 0, 0)
    while time.monotonic() < deadline:
        counts = _console_counts(db)
        notifications, unsettled, _ = counts
        if notifications >= plan.console_groups and unsettled == 0:
            break
        time.sleep(0.5)
    status, body = http("GET", f"{server.url}/api/v1/alert-groups?limit=1")
    key = body["alert_groups"][0]["key"] if status == 200 and body.get("alert_groups") else ""
    return {
        "alerts": per_group * plan.console_groups,
        "groups": plan.console_groups,
        "post_failures": posted.failures,
        "notifications": counts[0],
        "failing": counts[2],
        "seconds": time.monotonic() - started,
        "post_seconds": posted_after,
        "group_key": key,
        "db_bytes": db.stat().st_size + _size(db.with_name("service.db-wal")),
    }


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _console_counts(db: Path) -> tuple[int, int, int]:
    """(notifications, deliveries not yet tried, deliveries failing), read beside the service."""
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        notifications = conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
        states = dict(conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))
    unsettled = states.get("pending", 0) + states.get("sending", 0)
    return notifications, unsettled, states.get("retrying", 0) + states.get("failed", 0)


def _console_pages(key: str, groups: int) -> list[tuple[str, str, str]]:
    """(name, method, path) of every page measured."""
    last = max((groups // len(CONSOLE_CONTACT_GROUPS) + 49) // 50, 1)
    return [
        ("overview", "GET", "/"),
        ("one contact group, page 1", "GET", "/?contact_group=cg1"),
        (f"one contact group, page {last}", "GET", f"/?contact_group=cg1&page={last}"),
        ("alert group", "GET", f"/groups/{key}"),
        ("notifications (failing first)", "GET", "/notifications"),
        ("notifications, page 50", "GET", "/notifications?page=50"),
        (
            "notifications, delivered via console",
            "GET",
            "/notifications?state=delivered&channel=console",
        ),
        ("notifications of one contact group", "GET", "/notifications?contact_group=cg3"),
        ("watchdog", "GET", "/watchdog"),
        ("contact groups", "GET", "/contact-groups"),
        ("route tester (POST)", "POST", "/contact-groups/route-test"),
    ]


async def _fetch_pages(url: str, fetches: int, key: str, groups: int) -> list[dict[str, Any]]:
    import re

    import aiohttp

    headers = {"Accept": "text/html"}
    out = []
    jar = aiohttp.CookieJar(unsafe=True)  # keeps the CSRF cookie of an IP address
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60), cookie_jar=jar
    ) as session:
        async with session.get(f"{url}/contact-groups", headers=headers) as response:
            page = await response.text()
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        form = {"csrf": m.group(1) if m else "", "labels": "alertname=Console00001, team=cg2"}
        for name, method, path in _console_pages(key, groups):
            times: list[float] = []
            statuses: Counter[int] = Counter()
            size = 0
            for _ in range(fetches + 2):  # the first two warm up
                start = time.perf_counter()
                if method == "GET":
                    request = session.get(f"{url}{path}", headers=headers)
                else:
                    request = session.post(f"{url}{path}", data=form, headers=headers)
                async with request as response:
                    body = await response.read()
                times.append(time.perf_counter() - start)
                statuses[response.status] += 1
                size = len(body)
            times = sorted(times[2:])
            out.append(
                {
                    "page": name,
                    "path": path,
                    "fetches": len(times),
                    "p50_ms": median(times) * 1000,
                    "p99_ms": times[min(int(len(times) * 0.99), len(times) - 1)] * 1000,
                    "max_ms": times[-1] * 1000,
                    "kb": size / 1024,
                    "statuses": dict(statuses),
                }
            )
    return out


# -- hostile --------------------------------------------------------------------------------------

HOSTILE_RATE = 500.0  # requests/s of the good client: well inside what one core takes


def hostile(
    plan: Plan, workdir: Path, pinning: Pinning, peak: Callable[[str, Server], None]
) -> dict[str, Any]:
    """A good client paced at HOSTILE_RATE (1 alert per payload) with and without a malicious
    one beside it (bench/hostile_client.py), interleaved: the good client's p99 and whether
    every one of its alerts was stored."""
    runs: dict[str, list[LoadResult]] = {"quiet": [], "hostile": []}
    stored: dict[str, list[int]] = {"quiet": [], "hostile": []}
    bad: list[dict[str, int]] = []
    for rep in range(plan.reps):
        for condition in ("quiet", "hostile"):
            server = _start("service", workdir / f"hostile-{rep}-{condition}", pinning)
            attacker = None
            try:
                if condition == "hostile":
                    attacker = subprocess.Popen(
                        pinning.load(
                            [
                                PYTHON,
                                str(REPO / "bench" / "hostile_client.py"),
                                server.url,
                                f"{plan.warmup + plan.seconds + 1:.1f}",
                            ]
                        ),
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                result = _warm_and_measure(server, 1, plan, pinning, rate=HOSTILE_RATE, tag="h")
                if attacker is not None:
                    out, _ = attacker.communicate(timeout=60)
                    bad.append(json.loads(out.strip().splitlines()[-1]))
                count = _stored_with_tag(server.workdir / "service.db", "h")
            finally:
                if attacker is not None and attacker.poll() is None:
                    attacker.kill()
                peak(f"hostile ({condition})", server)
                _done(server)
            runs[condition].append(result)
            stored[condition].append(count)
            _log(
                f"hostile rep {rep + 1}/{plan.reps} {condition:>7}: p99 {result.p99_ms:.1f} ms, "
                f"{result.requests} requests, {result.errors} errors, {count} alerts stored"
            )
    return {"rate": HOSTILE_RATE, "runs": runs, "stored": stored, "bad": bad}


def _stored_with_tag(db: Path, tag: str) -> int:
    """Alerts of the measured wrk run (their instance label starts with its tag)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM alerts WHERE labels LIKE ?", (f'%"instance":"{tag}-%',)
            ).fetchone()[0]
        )


# -- replay ------------------------------------------------------------------------------------

REPLAY_CONTACT_GROUPS = TEAMS  # recording.py routes by team


def replay(plan: Plan, workdir: Path, pinning: Pinning) -> dict[str, Any]:
    """`monitor-manager replay` of a day of recorded traffic (bench/recording.py), run as a
    command on the server's core: wall time, CPU time and peak RSS per run."""
    run_dir = workdir / "replay"
    run_dir.mkdir(parents=True, exist_ok=True)
    recording = run_dir / "webhooks.jsonl"
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, str(REPO / "bench" / "recording.py"), str(recording), str(plan.replay_payloads)],
        check=True,
        capture_output=True,
        text=True,
    )
    traffic = json.loads(done.stdout)
    traffic["write_seconds"] = time.monotonic() - started
    config = run_dir / "replay.toml"
    settings = ServiceSettings(
        group_wait="30s",
        group_interval="5m",
        contact_groups=REPLAY_CONTACT_GROUPS,
        db=str(run_dir / "never-opened.db"),
    )
    config.write_text(
        service_config(settings).replace("{port}", "9")
        + '\n[[watchdog.heartbeats]]\nname = "prometheus"\n'
        'match = { alertname = "DeadMansSwitch" }\ntimeout = "5m"\n'
    )
    _log(
        f"replay: {traffic['payloads']:,} payloads ({traffic['alerts']:,} alerts) over "
        f"{traffic['hours']:.0f} h written in {traffic['write_seconds']:.1f} s"
    )
    runs = []
    for rep in range(plan.reps):
        run = _replay_once(config, recording, pinning)
        runs.append(run)
        _log(
            f"replay rep {rep + 1}/{plan.reps}: {run['seconds']:.1f} s, "
            f"{traffic['payloads'] / run['seconds']:,.0f} payloads/s, "
            f"CPU {run['cpu_seconds']:.1f} s, "
            f"peak RSS {run['peak_rss_kb'] / 1024:.0f} MB, {run['messages']:,} messages"
        )
    if (run_dir / "never-opened.db").exists():
        raise AssertionError("replay opened the config's own store")
    return {"traffic": traffic, "runs": runs}


def _replay_once(config: Path, recording: Path, pinning: Pinning) -> dict[str, Any]:
    argv = [PYTHON, "-m", "monitor_manager", "--log-level", "WARNING", "replay"]
    argv += ["--config", str(config), "--summary", "--format", "json", str(recording)]
    out_path, err_path = config.with_name("replay.out"), config.with_name("replay.err")
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(pinning.server(argv), stdout=out, stderr=err, cwd=config.parent)
        # wait4: this child's own CPU time and peak RSS (taskset execs the command: same pid)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"replay exited with {proc.returncode}: {err_path.read_text()[-2000:]}")
    summary = json.loads(out_path.read_text())
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_kb": usage.ru_maxrss,
        "messages": summary["messages"],
        "contact_groups": summary["contact_groups"],
        "busiest_hour": max((h["messages"] for h in summary["hours"]), default=0),
        "said": err_path.read_text().strip().splitlines()[-1:],
    }


# -- profile -----------------------------------------------------------------------------------


def profile(
    plan: Plan, workdir: Path, pinning: Pinning, outdir: Path, sizes: tuple[int, ...] = (1, 100)
) -> dict[int, dict[str, Any]]:
    """py-spy record against the service under closed-loop load; top functions by self and
    inclusive samples."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {}
    out: dict[int, dict[str, Any]] = {}
    for size in sizes:
        run_dir = workdir / f"profile-{size}"
        server = _start("service", run_dir, pinning)
        outdir.mkdir(parents=True, exist_ok=True)
        raw = outdir / f"profile-{size}-per-payload.txt"
        seconds = plan.profile_seconds
        try:
            wrk = subprocess.Popen(
                pinning.load(
                    [
                        WRK,
                        "-t1",
                        f"-c{plan.connections}",
                        f"-d{seconds + 3:.0f}s",
                        "-s",
                        str(REPO / "bench" / "wrk" / "webhook.lua"),
                        server.url,
                        "--",
                        str(size),
                        "prof",
                        "",
                    ]
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            subprocess.run(
                pinning.load(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(server.pid),
                        "--duration",
                        f"{seconds:.0f}",
                        "--rate",
                        "200",
                        "--threads",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                    ]
                ),
                check=False,
                capture_output=True,
                timeout=seconds + 60,
            )
            wrk.wait(seconds + 30)
        finally:
            server.stop()
        if raw.exists():
            out[size] = {"file": str(raw), **_summarise(raw)}
            _log(f"profile {size}/payload: {out[size]['samples']} samples -> {raw}")
    return out


def _summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # With --threads the first frame is "thread (TID): NAME".
        thread = next((f.split(": ", 1)[-1] for f in frames if f.startswith("thread ")), "?")
        functions = [_function(f) for f in frames if not f.startswith(("process ", "thread "))]
        if not functions:
            continue
        total += count
        threads[thread] += count
        self_counts[functions[-1]] += count
        for name in set(functions):
            inclusive[name] += count
    return {
        "samples": total,
        "threads": threads.most_common(),
        "self": self_counts.most_common(top),
        "inclusive": inclusive.most_common(top * 3),
    }


def _function(frame: str) -> str:
    """'fn (path/to/module.py:123)' -> 'fn (module.py)', dropping line numbers and dirs."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("site-packages", "monitor_manager", "channels", "python3.11"):
        if anchor in parts:
            path = "/".join(
                parts[
                    parts.index(anchor) + (1 if anchor in ("site-packages", "python3.11") else 0) :
                ]
            )
            break
    return f"{name} ({path})" if path else name


def settings_for_report(plan: Plan) -> dict[str, Any]:
    return asdict(plan)


__all__ = ["FULL", "QUICK", "SMOKE", "Plan", "replace"]
