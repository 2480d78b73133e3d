"""`monitor-manager replay`: a recording of webhook payloads through a config, on a virtual clock.

The recording is what `[server] record` writes (`ingest/record.py`): JSON lines
`{"at": RFC3339, "payload": {...}}`. Replay builds the service's core with `build_core` on a
`ManualClock`, as the tests do, over a store of its own in a temporary directory (deleted
afterwards; written without fsync: it is thrown away), and sends nothing: the outbox never
runs. For each payload it moves the clock to the payload's `at`, runs on the way every timer
that fell due (alert groups flushing, storm windows closing: `pipeline.next_due()`, and the
watchdog's minute for stale alerts), then hands the payload to `pipeline.receive`, as the
webhook would. After the last payload the timers run on for `tail()` (group_wait or
group_interval, plus a storm window), so the last changes are decided too. What would have been
sent is then read from the store: every notification with outbox rows (a notification storm
control held back has none: its digest has), with its channels.

What replay leaves out, on purpose:
- peers: an instance alone (no HA wait, nothing suppressed by a peer);
- heartbeat deadlines, unless `watchdog=True` (`--watchdog`): heartbeat alerts in the
  recording are still taken out of the stream (never notified), but a silence in it pages
  HeartbeatMissing only with `--watchdog`. A recording seldom holds all the heartbeats a
  service got (it starts, rotates and stops at other moments than the heartbeats' sources);
- what happens at send time: channel rate limits and the merging of what queues up behind
  them (robots), retries, failures and the pages about them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from monitor_manager.build import build_core
from monitor_manager.clock import ManualClock, format_time, iso
from monitor_manager.config import Config
from monitor_manager.deliver.render import Renderer
from monitor_manager.ingest.payload import Payload, PayloadError, parse_payload
from monitor_manager.ingest.record import RecordError, parse_line
from monitor_manager.metrics import Metrics
from monitor_manager.models import Message
from monitor_manager.pipeline import Pipeline

WATCH_SECONDS = 60.0  # the watchdog's stale walk runs at most this often, as live
INF = float("inf")
NO_DEADLINE = 100 * 365 * 86400.0  # heartbeat timeout when heartbeats are not watched
MAX_STILL_STEPS = 1000  # timer steps in a row at one instant before replay gives up (a bug)


@dataclass(frozen=True)
class Replayed:
    """One message that would have been sent."""

    at: float
    contact_group: str
    channels: tuple[str, ...]
    subject: str
    kind: str
    status: str
    alert_groups: tuple[str, ...]
    alerts: int


@dataclass
class Replay:
    messages: list[Replayed] = field(default_factory=list)
    payloads: int = 0
    alerts: int = 0
    skipped: list[str] = field(default_factory=list)  # "FILE:LINE: why"
    first_at: float | None = None
    last_at: float | None = None
    ended_at: float | None = None  # where the virtual clock stopped


def read_recording(
    paths: Iterable[str | Path], skipped: list[str]
) -> Iterator[tuple[float, Payload]]:
    """(at, payload) of every line of the files, in order; lines that cannot be read are noted
    in `skipped` ("FILE:LINE: why") and left out. OSError when a file cannot be opened."""
    for path in paths:
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    at, data = parse_line(line)
                    payload = parse_payload(data)
                except RecordError as exc:
                    skipped.append(f"{path}:{number}: {exc}")
                    continue
                except PayloadError as exc:
                    where = f"payload.{exc.field}" if exc.field else "payload"
                    skipped.append(f"{path}:{number}: {where}: {exc.message}")
                    continue
                yield at, payload


def replay_config(config: Config, store_path: str, *, watchdog: bool = False) -> Config:
    """The config as replay runs it: its own store, no peers, and heartbeat deadlines that
    never pass unless `watchdog`."""
    out = dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, path=store_path),
        peers=(),
    )
    if not watchdog:
        beats = tuple(
            dataclasses.replace(b, timeout=NO_DEADLINE) for b in config.watchdog.heartbeats
        )
        out = dataclasses.replace(
            out, watchdog=dataclasses.replace(config.watchdog, heartbeats=beats)
        )
    return out


def tail(config: Config) -> float:
    """How long timers run on after the last payload: its changes are decided by then (a new
    group's group_wait, an old one's group_interval, and the storm window that may hold it)."""
    conv = config.convergence
    return max(conv.group_wait, conv.group_interval) + config.storm.window


async def replay(
    config: Config,
    entries: Iterable[tuple[float, Payload]],
    *,
    watchdog: bool = False,
    details: bool = True,
) -> Replay:
    """Every message the config would have sent for these payloads (see the module doc);
    without `details`, messages carry no subject, alert groups or alert count (the summary
    needs none)."""
    out = Replay()
    stream = iter(entries)
    first = next(stream, None)
    if first is None:
        return out
    with tempfile.TemporaryDirectory(prefix="monitor-manager-replay-") as workdir:
        cfg = replay_config(config, str(Path(workdir) / "replay.db"), watchdog=watchdog)
        clock = ManualClock(first[0])
        core = build_core(
            cfg,
            clock=clock,
            stdout=io.StringIO(),  # never written: nothing is sent
            metrics=Metrics(CollectorRegistry(), channels=[c.name for c in cfg.channels]),
        )
        core.store.scratch = True  # thrown away afterwards: no fsync, no store thread
        await core.open()
        try:
            await _run(core.pipeline, clock, first, stream, out, tail(cfg), watchdog)
            renderer = core.renderer if details else None
            out.messages = await core.store.run(lambda conn: _messages(conn, renderer))
        finally:
            await core.close()
    return out


async def _run(
    pipeline: Pipeline,
    clock: ManualClock,
    first: tuple[float, Payload],
    rest: Iterator[tuple[float, Payload]],
    out: Replay,
    after: float,
    watchdog: bool,
) -> None:
    stale_after = pipeline.config.convergence.stale_after
    # No alert is older than the recording: none can go stale before this.
    next_watch = first[0] + stale_after if stale_after else INF

    async def watch() -> None:
        nonlocal next_watch
        await pipeline.watch()
        if clock.now >= next_watch:  # the stale walk ran (at most once a minute, as live)
            next_watch = max(clock.now + WATCH_SECONDS, _earliest_stale(pipeline))

    async def run_until(target: float) -> None:
        """Move the clock to `target`, running each timer at the moment it falls due."""
        stuck = 0  # steps that did not move the clock: a timer that never clears would spin
        while True:
            due = min(pipeline.next_due(), next_watch)
            if watchdog:  # heartbeat deadlines
                beats = pipeline.watchdog.heartbeats
                due = min([due, *(b.due_at for b in beats if b.state == "ok")])
            if due > target:
                break
            stuck = stuck + 1 if due <= clock.now else 0
            if stuck > MAX_STILL_STEPS:
                raise RuntimeError(f"replay: a timer due at {iso(due)} does not clear")
            clock.now = max(clock.now, due)
            await pipeline.tick()
            if watchdog or clock.now >= next_watch:
                await watch()
        clock.now = max(clock.now, target)

    for at, payload in _chain(first, rest):
        await run_until(at)
        await pipeline.receive(payload)
        if watchdog:  # a heartbeat that arrived resolves HeartbeatMissing at once, as live
            await watch()
        out.payloads += 1
        out.alerts += len(payload.alerts)
        out.first_at = at if out.first_at is None else out.first_at
        out.last_at = at
    assert out.last_at is not None
    await run_until(max(clock.now, out.last_at) + after)
    await pipeline.tick()
    out.ended_at = clock.now


def _earliest_stale(pipeline: Pipeline) -> float:
    """When the first firing alert could be closed as stale (none reported since): the
    earliest last report plus stale_after. Later reports and new alerts only move it later."""
    conv = pipeline.convergence
    seen = min(
        (
            a.seen_at
            for fp, a in conv.alerts.items()
            if a.status == "firing" and fp not in conv.internal
        ),
        default=INF,
    )
    return seen + conv.conv.stale_after


def _chain(
    first: tuple[float, Payload], rest: Iterator[tuple[float, Payload]]
) -> Iterator[tuple[float, Payload]]:
    yield first
    yield from rest


def _messages(conn: sqlite3.Connection, renderer: Renderer | None) -> list[Replayed]:
    """What would have been sent: notifications with outbox rows, in the order decided. Without
    a renderer, only what the summary counts (time, contact group, channels, kind, status):
    reading and rendering every message is a good part of replay's time."""
    channels: dict[int, list[str]] = {}
    for notification_id, channel in conn.execute(
        "SELECT notification_id, channel FROM deliveries ORDER BY id"
    ):
        channels.setdefault(notification_id, []).append(channel)
    out = []
    columns = "id, created_at, contact_group, kind, status" + (", message" if renderer else "")
    for row in conn.execute(f"SELECT {columns} FROM notifications ORDER BY created_at, id"):
        notification_id, created_at, contact_group, kind, status = row[:5]
        if notification_id not in channels:
            continue  # held back by storm control: its digest is the message
        subject, keys, alerts = "", tuple[str, ...](), 0
        if renderer is not None:
            message = Message.from_json(json.loads(row[5]))
            subject = renderer.subject(message)
            keys = tuple(g.key for g in message.groups)
            alerts = sum(len(g.alerts) for g in message.groups)
        out.append(
            Replayed(
                created_at,
                contact_group,
                tuple(channels[notification_id]),
                subject,
                kind,
                status,
                keys,
                alerts,
            )
        )
    return out


# -- what `monitor-manager replay` prints ----------------------------------------------------------


def message_json(m: Replayed) -> dict[str, Any]:
    return {
        "at": iso(m.at),
        "contact_group": m.contact_group,
        "channels": list(m.channels),
        "subject": m.subject,
        "kind": m.kind,
        "status": m.status,
        "alert_groups": list(m.alert_groups),
        "alerts": m.alerts,
    }


def format_messages(result: Replay, zone: dt.tzinfo | None, fmt: str = "text") -> Iterator[str]:
    """One line per message: `TIME  CONTACT-GROUP [CHANNELS]  SUBJECT`, or a JSON object."""
    for m in result.messages:
        if fmt == "json":
            yield json.dumps(message_json(m), ensure_ascii=False)
        else:
            channels = ", ".join(m.channels)
            yield f"{format_time(m.at, zone)}  {m.contact_group} [{channels}]  {m.subject}"


def summary(result: Replay, zone: dt.tzinfo | None) -> dict[str, Any]:
    """Counts per contact group and per hour (every hour of the recording, quiet ones too)."""
    groups = Counter(m.contact_group for m in result.messages)
    hours: Counter[float] = Counter(_hour(m.at, zone) for m in result.messages)
    span: list[float] = []
    if result.first_at is not None and result.ended_at is not None:
        hour = _hour(result.first_at, zone)
        while hour <= result.ended_at and len(span) < MAX_SUMMARY_HOURS:
            span.append(hour)
            hour = _hour(hour + 3600 + 60, zone)  # the next hour, across DST changes too
    for hour in hours:
        if hour not in span:
            span.append(hour)
    return {
        "payloads": result.payloads,
        "alerts": result.alerts,
        "from": iso(result.first_at),
        "to": iso(result.last_at),
        "messages": len(result.messages),
        "contact_groups": dict(sorted(groups.items(), key=lambda i: (-i[1], i[0]))),
        "hours": [{"hour": iso(h), "messages": hours.get(h, 0)} for h in sorted(span)],
    }


def format_summary(result: Replay, zone: dt.tzinfo | None, fmt: str = "text") -> Iterator[str]:
    data = summary(result, zone)
    if fmt == "json":
        yield json.dumps(data, ensure_ascii=False)
        return
    yield (
        f"{data['messages']} messages for {data['payloads']} payloads ({data['alerts']} alerts), "
        f"{format_time(result.first_at, zone)} to {format_time(result.last_at, zone)}"
    )
    yield ""
    yield "by contact group:"
    width = max((len(name) for name in data["contact_groups"]), default=0)
    for name, count in data["contact_groups"].items():
        yield f"  {name:<{width}}  {count:>6}"
    yield ""
    yield "by hour:"
    most = max((h["messages"] for h in data["hours"]), default=0)
    for h in data["hours"]:
        start = _parse_iso(h["hour"])
        bar = "#" * (round(40 * h["messages"] / most) if most else 0)
        yield f"  {format_time(start, zone, HOUR_FORMAT)}  {h['messages']:>6}  {bar}".rstrip()


HOUR_FORMAT = "%Y-%m-%d %H:00 %Z"
MAX_SUMMARY_HOURS = 24 * 400  # more than a year of hours is not a summary


def _hour(ts: float, zone: dt.tzinfo | None) -> float:
    """The start of the hour `ts` is in, on the wall clock of `zone`."""
    local = dt.datetime.fromtimestamp(ts, dt.UTC).astimezone(zone)
    return local.replace(minute=0, second=0, microsecond=0).timestamp()


def _parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
