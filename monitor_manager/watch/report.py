"""The daily report (`[report]`): a short summary sent at the crontab `schedule` to `groups`.

What it says, for the 24 hours before the moment the schedule fired: alerts received (that
started firing, that resolved; internal alerts not counted), notifications sent and failed per
channel, the ten noisiest alert names, and now: the open alert groups, heartbeats and peers.
The figures come from the store through its read-only connection (`Store.read`, beside the
writer) and from memory (open groups, heartbeats, peers); every name is cut short and every
list bounded, so a report fits one WeCom message (2048 bytes) in either language whatever the
names. It is rendered by the `report.txt` / `report.md` / `report.html` / `report_subject.txt`
templates (deliver/render.py picks them for a message of kind "report").

Once by the cluster: every instance runs the schedule, and each report goes through the outbox
like any notification, so the usual position wait applies and a survivor sends it when the
instances before it are down. Its notification log key is `report` (one per contact group and
channel) and its content hash names the period (`store.notifications.content_hash`), equal on
every instance that ran the same schedule: the second instance finds the first one's entry
and does not send.

Schedule: APScheduler's trigger from `converge.maintenance.cron_trigger` (weekdays as crontab
counts them), in `report.time_zone` (default: `templates.time_zone`, else the host's zone). A
run late by up to `GRACE_SECONDS` (a busy or suspended process) still sends, for the period
the schedule fired for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.base import BaseTrigger

from monitor_manager.clock import Clock, format_time, iso, time_zone
from monitor_manager.config import Config
from monitor_manager.converge.maintenance import cron_trigger
from monitor_manager.converge.notify import Written
from monitor_manager.ingest.payload import INTERNAL_SOURCE
from monitor_manager.models import Message
from monitor_manager.store import notifications

if TYPE_CHECKING:
    from monitor_manager.build import Core

PERIOD = 86400.0  # the report covers the 24 hours before its time
GRACE_SECONDS = 3600.0  # a run this late still sends (APScheduler's misfire grace)
REPORT_JOB: dict[str, Any] = {
    "max_instances": 1,
    "coalesce": True,
    "misfire_grace_time": int(GRACE_SECONDS),
}
NOISIEST = 10
MAX_CHANNELS = 5  # channels listed one by one; the rest are summed
MAX_CONTACT_GROUPS = 3  # contact groups with open alert groups listed
MAX_NAMES = 3  # missing heartbeats, peers down listed by name
NAME_CHARS, NAME_BYTES = 32, 48  # an alert name as the report shows it
LABEL_CHARS, LABEL_BYTES = 24, 40  # a channel, contact group, heartbeat or peer name
MAX_URL_CHARS = 100  # a longer external_url is left out rather than cut


def cut(text: str, chars: int, most_bytes: int) -> str:
    """`text` within `chars` characters and `most_bytes` UTF-8 bytes, "…" marking a cut."""
    if len(text) <= chars and len(text.encode()) <= most_bytes:
        return text
    text = text[: chars - 1]
    while len(text.encode()) > most_bytes - 3:  # "…" takes 3 bytes
        text = text[:-1]
    return text + "…"


def zone_of(config: Config) -> dt.tzinfo:
    """The zone the schedule runs in and the report's times are shown in."""
    zone = time_zone(config.report.zone_name(config.templates))
    if zone is None:  # the host's zone, as APScheduler reads it
        from tzlocal import get_localzone

        return get_localzone()
    return zone


def trigger_of(config: Config) -> BaseTrigger:
    return cron_trigger(config.report.schedule, zone_of(config))


def last_fire(trigger: BaseTrigger, now: float, zone: dt.tzinfo) -> float | None:
    """The latest moment not after `now` at which the schedule fired (None: not within a
    year): the period a run reports on, the same on every instance however late its job ran."""
    current = dt.datetime.fromtimestamp(now, zone)
    for lookback in (3600.0, 2 * 86400.0, 32 * 86400.0, 367 * 86400.0):
        fire = trigger.get_next_fire_time(None, current - dt.timedelta(seconds=lookback))
        if fire is None or fire > current:
            continue
        for _ in range(10_000):  # bounded: the first lookback that finds one holds few fires
            following = trigger.get_next_fire_time(fire, current)
            if following is None or following > current:
                break
            fire = following
        return float(fire.timestamp())
    return None


# -- the figures ---------------------------------------------------------------------------------


def stored_figures(conn: sqlite3.Connection, start: float, end: float) -> dict[str, Any]:
    """What the store says about [start, end): alerts that started firing and resolved (the
    senders' times; internal alerts left out), the noisiest alert names by alerts that started
    or resolved, and deliveries sent and failed per channel (sent: delivered here, not written
    off as a peer's or as superseded)."""
    source = INTERNAL_SOURCE[1]
    started, resolved = conn.execute(
        "SELECT COALESCE(SUM(starts_at >= :start AND starts_at < :end), 0), "
        "COALESCE(SUM(status = 'resolved' AND ends_at >= :start AND ends_at < :end), 0) "
        "FROM alerts WHERE source != :source",
        {"start": start, "end": end, "source": source},
    ).fetchone()
    noisiest = conn.execute(
        "SELECT COALESCE(json_extract(labels, '$.alertname'), ''), COUNT(*) FROM alerts "
        "WHERE source != :source AND ((starts_at >= :start AND starts_at < :end) "
        "OR (status = 'resolved' AND ends_at >= :start AND ends_at < :end)) "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT :top",
        {"start": start, "end": end, "source": source, "top": NOISIEST},
    ).fetchall()
    channels = conn.execute(
        "SELECT channel, "
        "COALESCE(SUM(state = 'delivered' AND delivered_at >= :start AND delivered_at < :end "
        "AND superseded_by IS NULL AND note NOT LIKE 'not sent here:%'), 0), "
        "COALESCE(SUM(state = 'failed' AND updated_at >= :start AND updated_at < :end), 0) "
        "FROM deliveries WHERE updated_at >= :start GROUP BY channel",
        {"start": start, "end": end},
    ).fetchall()
    return {
        "started": int(started),
        "resolved": int(resolved),
        "noisiest": [(str(name), int(count)) for name, count in noisiest],
        "channels": {str(name): (int(sent), int(failed)) for name, sent, failed in channels},
    }


def build(
    config: Config, core: Core, stored: dict[str, Any], period_end: float, now: float
) -> dict[str, Any]:
    """The report's content (JSON: it is stored with the notification), bounded."""
    zone = zone_of(config)
    start = period_end - PERIOD
    conv = core.pipeline.convergence
    firing_now = sum(
        1 for fp, a in conv.alerts.items() if a.status == "firing" and fp not in conv.internal
    )
    open_groups: Counter[str] = Counter(
        g.contact_group
        for g in conv.groups.values()
        if any(conv.alerts[fp].status == "firing" for fp in g.members)
    )
    channels = [
        (name, *stored["channels"].get(name, (0, 0))) for name in (c.name for c in config.channels)
    ]
    shown, rest = channels[:MAX_CHANNELS], channels[MAX_CHANNELS:]
    beats = core.pipeline.watchdog.heartbeats
    missing = [b.config.name for b in beats if b.state == "missing"]
    down_after = config.watchdog.peer_failures
    down = [name for name, p in core.peers.states.items() if p.failures >= down_after]
    url = config.server.base_url
    return {
        "language": config.report.language or config.templates.language,
        "period_start": iso(start),
        "period_end": iso(period_end),
        "period": f"{format_time(start, zone, '%Y-%m-%d %H:%M')} – "
        f"{format_time(period_end, zone, '%Y-%m-%d %H:%M %Z')}",
        "date": format_time(period_end, zone, "%Y-%m-%d"),
        "made_at": now,
        "instance": cut(config.server.instance, LABEL_CHARS, LABEL_BYTES),
        "url": url if len(url) <= MAX_URL_CHARS else "",
        "alerts": {
            "started": stored["started"],
            "resolved": stored["resolved"],
            "firing_now": firing_now,
        },
        "channels": [
            {"name": cut(name, LABEL_CHARS, LABEL_BYTES), "sent": sent, "failed": failed}
            for name, sent, failed in shown
        ],
        "channels_more": {
            "count": len(rest),
            "sent": sum(r[1] for r in rest),
            "failed": sum(r[2] for r in rest),
        },
        "noisiest": [
            {"name": cut(name, NAME_CHARS, NAME_BYTES), "count": count}
            for name, count in stored["noisiest"][:NOISIEST]
        ],
        "open_groups": {
            "total": sum(open_groups.values()),
            "by_contact_group": [
                {"name": cut(name, LABEL_CHARS, LABEL_BYTES), "count": count}
                for name, count in sorted(open_groups.items(), key=lambda i: (-i[1], i[0]))[
                    :MAX_CONTACT_GROUPS
                ]
            ],
            "more": max(len(open_groups) - MAX_CONTACT_GROUPS, 0),
        },
        "heartbeats": {
            "total": len(beats),
            "missing": [cut(n, LABEL_CHARS, LABEL_BYTES) for n in missing[:MAX_NAMES]],
            "missing_count": len(missing),
        },
        "peers": {
            "total": len(core.peers.states),
            "down": [cut(n, LABEL_CHARS, LABEL_BYTES) for n in down[:MAX_NAMES]],
            "down_count": len(down),
        },
    }


# -- sending ---------------------------------------------------------------------------------


class Reporter:
    """Builds the report at the schedule's time and hands it to the outbox, one notification
    per contact group of `report.groups`."""

    def __init__(self, config: Config, core: Core, clock: Clock) -> None:
        self.config = config
        self.core = core
        self.clock = clock
        self.trigger = trigger_of(config)
        self.zone = zone_of(config)

    async def send(self) -> list[Message]:
        """The report for the period the schedule last fired for (nothing when that was more
        than GRACE_SECONDS ago): its messages, written with their outbox rows."""
        now = self.clock()
        period_end = last_fire(self.trigger, now, self.zone)
        if period_end is None or now - period_end > GRACE_SECONDS:
            return []
        start = period_end - PERIOD
        stored = await self.core.store.read(lambda conn: stored_figures(conn, start, period_end))
        await self.core.pipeline.load()
        content = build(self.config, self.core, stored, period_end, now)
        notifier = self.core.pipeline.notifier
        written = Written()
        messages = []
        for name in self.config.report_groups:
            message = dataclasses.replace(
                notifier.message("report", name, (), now), extra={"report": content}
            )
            written.ops.append(notifications.insert(message, None, None))
            written.notifications += 1
            notifier.deliver(message.id, name, frozenset(), now, written)
            messages.append(message)
        await self.core.store.write(written.ops)
        self.core.pipeline.on_enqueued()
        return messages
