"""Everything the console reads, in one place: SQL through the store's read-only connection
(`Store.read`, beside the writer, never holding up a commit) and what memory knows (open
groups and alert states in the convergence, heartbeats and Alertmanagers in the watchdog,
peers).

Fast on a big store: no page loads all rows to show one page. Open groups are ranked from
memory (a few hundred bytes each), and only the alerts shown are read from the store by row
id; notification lists walk an index (`notifications` by id or by group, `deliveries` by
state or by notification) and stop after one page. bench/run.py --only console measures every
page with 200,000 alerts and 5,000 open groups stored.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from aiohttp import web

from monitor_manager import keys
from monitor_manager.config import Config, RouteConfig
from monitor_manager.converge.acks import Ack
from monitor_manager.converge.convergence import Convergence, Group
from monitor_manager.converge.maintenance import MaintenanceWindow
from monitor_manager.converge.matchers import Matcher, to_text
from monitor_manager.converge.silences import (
    Silence,
    SilenceState,
    mutes_internal,
    sort_silences,
)
from monitor_manager.models import Message
from monitor_manager.watch.peers import PeerState
from monitor_manager.watch.watchdog import Heartbeat

DELIVERY_STATES = ("pending", "sending", "retrying", "delivered", "failed")
FAILING = ("failed", "retrying")
GroupState = Literal["firing", "pending", "resolving"]
_STATE_RANK = {"firing": 0, "pending": 1, "resolving": 2}
SEVERITY_RANK = {
    "critical": 0,
    "page": 0,
    "emergency": 0,
    "error": 1,
    "high": 1,
    "major": 1,
    "warning": 2,
    "warn": 2,
    "medium": 2,
    "minor": 3,
    "info": 4,
    "low": 4,
    "none": 5,
}
_UNKNOWN_SEVERITY = 2.5  # between warning and minor: an unlabelled group is not buried


# -- plain values handed to the templates ------------------------------------------------------


@dataclass
class GroupCard:
    """An open alert group at a glance."""

    key: str
    contact_group: str
    title: str
    group_labels: dict[str, str]
    state: GroupState
    firing: int
    total: int
    created_at: float
    last_notified_at: float | None
    next_flush_at: float | None
    severity: str = ""
    summary: str = ""
    badges: list[Any] = field(default_factory=list)  # from console hooks (ack, silenced, ...)
    _sample: int | None = None  # row id of the alert whose summary is shown


@dataclass
class ContactGroupSection:
    name: str
    cards: list[GroupCard]
    groups: int  # open groups in total
    alerts: int  # in them


@dataclass
class DeliveryRow:
    id: int
    channel: str
    state: str
    attempts: int
    last_error: str
    note: str
    next_attempt_at: float | None
    delivered_at: float | None
    updated_at: float
    only_to: list[str]


@dataclass
class NotificationRow:
    id: int
    group_key: str | None
    contact_group: str
    kind: str
    status: str
    created_at: float
    title: str
    alerts: int | None
    firing: int | None
    groups: int | None  # a digest: how many alert groups it stands for
    digest_id: int | None
    deliveries: list[DeliveryRow] = field(default_factory=list)
    digest_deliveries: list[DeliveryRow] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return any(d.state in FAILING for d in self.deliveries + self.digest_deliveries)


@dataclass
class FailingDelivery:
    delivery: DeliveryRow
    notification_id: int
    group_key: str | None
    contact_group: str
    kind: str
    title: str
    created_at: float


@dataclass
class ChannelHealthRow:
    name: str
    type: str
    failing_since: float | None
    last_error: str
    failed_for_good: str
    queued: dict[str, int]  # pending / sending / retrying / failed rows


@dataclass
class HeartbeatRow:
    name: str
    match: dict[str, str]
    timeout: float
    state: str
    last_seen: float | None
    via: str
    due_at: float
    missing_since: float | None
    hop: str | None  # "never" | "prometheus" | "alertmanager", when missing


@dataclass
class PeerRow:
    name: str
    url: str
    state: str
    latency: float | None
    last_probe_at: float | None
    last_ok_at: float | None
    failures: int
    last_error: str


@dataclass
class AlertRow:
    id: int
    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str
    source: str
    notified: bool = False
    # What the sender added (Grafana): links by name, http(s) only, and the value string.
    links: dict[str, str] = field(default_factory=dict)
    value: str = ""


@dataclass
class Pager:
    page: int
    per_page: int
    has_next: bool
    total: int | None = None

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def pages(self) -> int | None:
        if self.total is None:
            return None
        return max((self.total + self.per_page - 1) // self.per_page, 1)


# -- memory ------------------------------------------------------------------------------------


async def _memory(app: web.Application) -> Convergence:
    pipeline = app[keys.PIPELINE]
    await pipeline.load()  # after a failed commit memory is rebuilt first, as the API does
    return pipeline.convergence


def title_of(group_labels: dict[str, str], fallback: str) -> str:
    """The alertname first, then the other group label values (as messages title a group)."""
    values = [group_labels["alertname"]] if "alertname" in group_labels else []
    values += [v for k, v in sorted(group_labels.items()) if k != "alertname"]
    return " ".join(values) or fallback


def group_state(conv: Convergence, group: Group) -> GroupState:
    """Firing once people were told, waiting inside group_wait, resolving when no alert fires
    (the resolved message is due). Stops at the first firing alert: cheap for every group."""
    alerts = conv.alerts
    if not any(alerts[fp].status == "firing" for fp in group.members):
        return "resolving"
    return "pending" if group.last_notified_at is None else "firing"


def severity_rank(group: Group) -> float:
    return SEVERITY_RANK.get(group.group_labels.get("severity", "").lower(), _UNKNOWN_SEVERITY)


@dataclass
class Ranked:
    """Open alert groups, worst first (`groups[i]` is in state `states[i]`), and what the
    whole list adds up to."""

    groups: list[Group] = field(default_factory=list)
    states: list[GroupState] = field(default_factory=list)
    firing_groups: int = 0
    pending_groups: int = 0
    alerts: int = 0  # alerts in firing and waiting groups (some may have resolved since)


def ranked(conv: Convergence, contact_group: str | None = None) -> Ranked:
    """Every open alert group (of one contact group), worst first, from memory: firing before
    waiting before resolving; then by severity (a group label, when grouped by it), more
    alerts, firing longer.

    With 5,000 groups holding 200,000 alerts this takes about 10 ms and allocates nothing per
    group that the garbage collector tracks (no tuple per group: numbers in lists, sorted by
    one key at a time, the sort being stable), so it never sets off a full collection that
    would walk the alerts in memory (about 0.1 s there). Only a group's first firing alert is
    looked at; the alerts of the groups shown are counted by `card`."""
    groups: list[Group] = []
    states: list[GroupState] = []
    state_ranks: list[int] = []
    out = Ranked()
    alerts = conv.alerts
    for group in conv.groups.values():
        if contact_group is not None and group.contact_group != contact_group:
            continue
        # group_state, inlined: this runs for every open group on every overview.
        state: GroupState = "resolving"
        for fp in group.members:
            if alerts[fp].status == "firing":
                state = "pending" if group.last_notified_at is None else "firing"
                break
        groups.append(group)
        states.append(state)
        state_ranks.append(_STATE_RANK[state])
        if state != "resolving":
            out.alerts += len(group.members)
            if state == "firing":
                out.firing_groups += 1
            else:
                out.pending_groups += 1
    order = list(range(len(groups)))
    for key in (
        [g.key for g in groups],
        [g.created_at for g in groups],
        [-len(g.members) for g in groups],
        [severity_rank(g) for g in groups],
        state_ranks,
    ):  # least significant first
        order.sort(key=key.__getitem__)
    out.groups = [groups[i] for i in order]
    out.states = [states[i] for i in order]
    return out


def card(conv: Convergence, group: Group, state: GroupState) -> GroupCard:
    """One group shown in a list: its alerts counted, the oldest firing one picked for its
    summary (read from the store with the other cards' by `_fill_samples`)."""
    alerts = conv.alerts
    firing = 0
    sample: tuple[float, int] | None = None
    for fp in group.members:
        alert = alerts[fp]
        if alert.status == "firing":
            firing += 1
            if sample is None or alert.starts_at < sample[0]:
                sample = (alert.starts_at, alert.id)
    if sample is None and group.members:
        sample = (0.0, alerts[next(iter(group.members))].id)
    return GroupCard(
        key=group.key,
        contact_group=group.contact_group,
        title=title_of(group.group_labels, group.key),
        group_labels=group.group_labels,
        state=state,
        firing=firing,
        total=len(group.members),
        created_at=group.created_at,
        last_notified_at=group.last_notified_at,
        next_flush_at=group.next_flush_at,
        severity=group.group_labels.get("severity", ""),
        _sample=sample[1] if sample else None,
    )


@dataclass
class Overview:
    sections: list[ContactGroupSection]
    firing_groups: int
    pending_groups: int
    alerts: int  # in firing and waiting groups
    failing: list[FailingDelivery]
    failing_count: int
    heartbeats: list[HeartbeatRow]
    peers: list[PeerRow]
    channels: list[ChannelHealthRow]
    pager: Pager | None = None  # when one contact group is shown page by page


async def overview(
    app: web.Application,
    contact_group: str | None = None,
    per_section: int = 10,
    page: int = 1,
    per_page: int = 50,
) -> Overview:
    """The state at a glance: open alert groups by contact group (worst first, `per_section`
    of each; or one contact group, `per_page` at a time), failing deliveries, heartbeats,
    peers and channels."""
    conv = await _memory(app)
    everything = ranked(conv, contact_group)
    by_group: dict[str, list[int]] = {}  # positions in the ranking (ints: nothing to track)
    for i, group in enumerate(everything.groups):
        by_group.setdefault(group.contact_group, []).append(i)
    pager = None
    sections = []
    for name, positions in by_group.items():  # in the order of each one's worst group
        if contact_group is None:
            shown = positions[:per_section]
        else:
            start = (page - 1) * per_page
            shown = positions[start : start + per_page]
            pager = Pager(page, per_page, start + per_page < len(positions), len(positions))
        sections.append(
            ContactGroupSection(
                name,
                [card(conv, everything.groups[i], everything.states[i]) for i in shown],
                len(positions),
                sum(len(everything.groups[i].members) for i in positions),
            )
        )
    if contact_group is not None and pager is None:
        pager = Pager(page, per_page, False, 0)
    await _fill_samples(app, [c for s in sections for c in s.cards])
    store = app[keys.STORE]
    failing, failing_count, queued = await store.read(_deliveries_overview)
    return Overview(
        sections=sections,
        firing_groups=everything.firing_groups,
        pending_groups=everything.pending_groups,
        alerts=everything.alerts,
        failing=failing,
        failing_count=failing_count,
        heartbeats=heartbeats(app),
        peers=peers(app),
        channels=channels(app, queued),
        pager=pager,
    )


async def _fill_samples(app: web.Application, cards: list[GroupCard]) -> None:
    """The summary (and severity, where the group labels lack it) of one alert per card, read
    by row id: only the cards shown cost a read."""
    ids = [c._sample for c in cards if c._sample is not None]
    if not ids:
        return
    rows = await app[keys.STORE].read(partial(_labels_by_id, ids))
    for card in cards:
        labels, annotations = rows.get(card._sample or -1, ({}, {}))
        card.summary = annotations.get("summary") or annotations.get("description", "")
        card.severity = card.severity or labels.get("severity", "")


def _labels_by_id(
    ids: list[int], conn: sqlite3.Connection
) -> dict[int, tuple[dict[str, str], dict[str, str]]]:
    return {
        row[0]: (json.loads(row[1]), json.loads(row[2]))
        for row in conn.execute(
            "SELECT id, labels, annotations FROM alerts "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
    }


def _deliveries_overview(
    conn: sqlite3.Connection, limit: int = 10
) -> tuple[list[FailingDelivery], int, dict[str, dict[str, int]]]:
    queued: dict[str, dict[str, int]] = {}
    for channel, state, count in conn.execute(
        "SELECT channel, state, COUNT(*) FROM deliveries "
        "WHERE state IN ('pending', 'sending', 'retrying', 'failed') GROUP BY channel, state"
    ):
        queued.setdefault(channel, {})[state] = count
    failing_count = sum(n for c in queued.values() for s, n in c.items() if s in FAILING)
    rows = conn.execute(
        f"SELECT {_DELIVERY_COLUMNS}, n.id, n.group_key, n.contact_group, n.kind, n.created_at, "
        "g.group_labels FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        "LEFT JOIN alert_groups g ON g.key = n.group_key "
        # The latest few from the state index alone, then joined: joining first would look
        # up every failing delivery's notification before sorting them.
        "WHERE d.id IN (SELECT id FROM deliveries WHERE state IN ('failed', 'retrying') "
        "ORDER BY id DESC LIMIT ?) ORDER BY d.id DESC",
        (limit,),
    ).fetchall()
    failing = [
        FailingDelivery(
            delivery=_delivery(r[:10]),
            notification_id=r[10],
            group_key=r[11],
            contact_group=r[12],
            kind=r[13],
            title=_title(r[13], r[11], r[15]),
            created_at=r[14],
        )
        for r in rows
    ]
    return failing, failing_count, queued


_DELIVERY_COLUMNS = (
    "d.id, d.channel, d.state, d.attempts, d.last_error, d.note, d.next_attempt_at, "
    "d.delivered_at, d.updated_at, d.only_to"
)


def _delivery(r: Iterable[Any]) -> DeliveryRow:
    (id_, channel, state, attempts, last_error, note, next_at, delivered_at, updated_at, only) = r
    return DeliveryRow(
        id_,
        channel,
        state,
        attempts,
        last_error,
        note,
        next_at,
        delivered_at,
        updated_at,
        json.loads(only) if only else [],
    )


def _title(kind: str, group_key: str | None, labels_json: str | None) -> str:
    """A group notification's alert group title; a digest or a test is named in the page."""
    if kind == "group":
        labels = json.loads(labels_json) if labels_json else {}
        return title_of(labels, group_key or "?")
    return ""


def heartbeats(app: web.Application) -> list[HeartbeatRow]:
    watchdog = app[keys.PIPELINE].watchdog
    return [_heartbeat(b, watchdog.sources) for b in watchdog.heartbeats]


def silent_hop(beat: Heartbeat, sources: dict[str, float]) -> str | None:
    """Which hop went silent, by the rule HeartbeatMissing's page states (watch/watchdog.py):
    never seen; its Alertmanager still delivers other alerts (the Prometheus side is broken);
    or nothing at all (the Alertmanager or the network is)."""
    if beat.state != "missing":
        return None
    if beat.last_seen is None:
        return "never"
    return "prometheus" if sources.get(beat.via, 0.0) > beat.last_seen + 0.5 else "alertmanager"


def _heartbeat(beat: Heartbeat, sources: dict[str, float]) -> HeartbeatRow:
    return HeartbeatRow(
        name=beat.config.name,
        match=dict(beat.config.match),
        timeout=beat.config.timeout,
        state=beat.state,
        last_seen=beat.last_seen,
        via=beat.via,
        due_at=beat.due_at,
        missing_since=beat.missing_since,
        hop=silent_hop(beat, sources),
    )


def peers(app: web.Application) -> list[PeerRow]:
    down_after = app[keys.CONFIG].watchdog.peer_failures
    return [_peer(s, down_after) for s in app[keys.PEERS].states.values()]


def _peer(state: PeerState, down_after: int) -> PeerRow:
    return PeerRow(
        name=state.config.name,
        url=state.config.url,
        state="down" if state.failures >= down_after else "up",
        latency=state.latency,
        last_probe_at=state.last_probe_at,
        last_ok_at=state.last_ok_at,
        failures=state.failures,
        last_error=state.last_error,
    )


def alertmanagers(app: web.Application) -> list[tuple[str, float]]:
    """Alertmanagers (their externalURL) and when each last delivered, latest first."""
    sources = app[keys.PIPELINE].watchdog.sources
    return sorted(sources.items(), key=lambda item: -item[1])


def channels(app: web.Application, queued: dict[str, dict[str, int]]) -> list[ChannelHealthRow]:
    health = app[keys.PIPELINE].watchdog.channels
    out = []
    for channel in app[keys.CONFIG].channels:
        h = health.get(channel.name)
        out.append(
            ChannelHealthRow(
                name=channel.name,
                type=channel.type,
                failing_since=h.failing_since if h else None,
                last_error=h.last_error if h and h.failing_since is not None else "",
                failed_for_good=h.failed_for_good if h else "",
                queued=queued.get(channel.name, {}),
            )
        )
    return out


async def channel_health(app: web.Application) -> list[ChannelHealthRow]:
    """Channels with their queued rows (the watchdog page)."""
    _, _, queued = await app[keys.STORE].read(partial(_deliveries_overview, limit=0))
    return channels(app, queued)


# -- one alert group ---------------------------------------------------------------------------


@dataclass
class GroupDetail:
    key: str
    contact_group: str
    title: str
    group_labels: dict[str, str]
    open: bool
    state: str  # firing | pending | resolving | closed
    firing: int
    total: int
    created_at: float
    updated_at: float
    last_notified_at: float | None
    next_flush_at: float | None
    alerts: list[AlertRow]
    alerts_pager: Pager
    timeline: list[NotificationRow]
    timeline_pager: Pager
    badges: list[Any] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    snapshot_at: float | None = None  # a closed group: its alerts as its last message showed


async def group_detail(
    app: web.Application,
    key: str,
    alerts_page: int = 1,
    timeline_page: int = 1,
    alerts_per_page: int = 100,
    timeline_per_page: int = 20,
) -> GroupDetail | None:
    """One alert group: its alerts (labels and annotations whole), firing first and newest
    first, a page at a time; the timeline of its notifications with each channel's delivery.
    None when no such group is stored."""
    conv = await _memory(app)
    store = app[keys.STORE]
    row = await store.read(partial(_group_row, key))
    group = conv.groups.get(key)
    if row is None and group is None:
        return None
    alerts_pager = Pager(alerts_page, alerts_per_page, False)
    snapshot_at = None
    state: str
    if group is not None:
        shown_card = card(conv, group, group_state(conv, group))

        # Firing first, then newest first: the order people read a page in. String keys, as
        # in rank_key: a group of 10,000 alerts costs the garbage collector nothing.
        def order(fp: str) -> str:
            alert = conv.alerts[fp]
            firing = alert.status == "firing"
            return f"{0 if firing else 1}{1e11 - alert.starts_at:020.6f}{alert.id:012d}"

        members = sorted(group.members, key=order)
        start = (alerts_page - 1) * alerts_per_page
        shown = [conv.alerts[fp] for fp in members[start : start + alerts_per_page]]
        alerts_pager = Pager(
            alerts_page, alerts_per_page, start + alerts_per_page < len(members), len(members)
        )
        rows = await store.read(partial(_alert_rows, [a.id for a in shown]))
        alerts = [rows[a.id] for a in shown if a.id in rows]
        for alert in alerts:
            alert.notified = group.members.get(alert.fingerprint) == "firing"
            alert.status = conv.alerts[alert.fingerprint].status  # memory may be ahead
        state, firing, total = shown_card.state, shown_card.firing, shown_card.total
        contact_group, group_labels = group.contact_group, group.group_labels
        created_at, last_notified, next_flush = (
            group.created_at,
            group.last_notified_at,
            group.next_flush_at,
        )
        updated_at = row["updated_at"] if row is not None else group.created_at
    else:
        assert row is not None
        snapshot_at, alerts = await store.read(partial(_last_message_alerts, key))
        state, firing, total = "closed", 0, len(alerts)
        contact_group, group_labels = row["contact_group"], json.loads(row["group_labels"])
        created_at, last_notified, next_flush = (
            row["created_at"],
            row["last_notified_at"],
            None,
        )
        updated_at = row["updated_at"]
        alerts_pager = Pager(1, max(len(alerts), 1), False, len(alerts))
    timeline, count = await store.read(
        partial(_group_timeline, key, (timeline_page - 1) * timeline_per_page, timeline_per_page)
    )
    return GroupDetail(
        key=key,
        contact_group=contact_group,
        title=title_of(group_labels, key),
        group_labels=group_labels,
        open=group is not None,
        state=state,
        firing=firing,
        total=total,
        created_at=created_at,
        updated_at=updated_at,
        last_notified_at=last_notified,
        next_flush_at=next_flush,
        alerts=alerts,
        alerts_pager=alerts_pager,
        timeline=timeline,
        timeline_pager=Pager(
            timeline_page, timeline_per_page, timeline_page * timeline_per_page < count, count
        ),
        snapshot_at=snapshot_at,
    )


def _group_row(key: str, conn: sqlite3.Connection) -> sqlite3.Row | None:
    cur = conn.execute("SELECT * FROM alert_groups WHERE key = ?", (key,))
    cur.row_factory = sqlite3.Row
    row: sqlite3.Row | None = cur.fetchone()
    return row


def _alert_rows(ids: list[int], conn: sqlite3.Connection) -> dict[int, AlertRow]:
    rows = {}
    for r in conn.execute(
        "SELECT id, fingerprint, status, labels, annotations, starts_at, ends_at, "
        "generator_url, source, extras FROM alerts WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    ):
        extras = json.loads(r[9])
        rows[r[0]] = AlertRow(
            id=r[0],
            fingerprint=r[1],
            status=r[2],
            labels=json.loads(r[3]),
            annotations=json.loads(r[4]),
            starts_at=r[5],
            ends_at=r[6],
            generator_url=r[7],
            source=r[8],
            links=extras.get("links", {}),
            value=extras.get("value", ""),
        )
    return rows


def _last_message_alerts(key: str, conn: sqlite3.Connection) -> tuple[float | None, list[AlertRow]]:
    """A closed group's alerts as its last message showed them (they have left the group)."""
    row = conn.execute(
        "SELECT message, created_at FROM notifications WHERE group_key = ? "
        "ORDER BY id DESC LIMIT 1",
        (key,),
    ).fetchone()
    if row is None:
        return None, []
    message = Message.from_json(json.loads(row[0]))
    alerts = [
        AlertRow(
            id=0,
            fingerprint=a.fingerprint,
            status=a.status,
            labels=a.labels,
            annotations=a.annotations,
            starts_at=a.starts_at,
            ends_at=a.ends_at,
            generator_url=a.generator_url,
            source="",
            notified=True,
            links=a.links,
            value=a.value,
        )
        for g in message.groups
        if g.key == key
        for a in g.alerts
    ]
    return row[1], alerts


def _group_timeline(
    key: str, offset: int, limit: int, conn: sqlite3.Connection
) -> tuple[list[NotificationRow], int]:
    count = conn.execute("SELECT COUNT(*) FROM notifications WHERE group_key = ?", (key,))
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM notifications WHERE group_key = ? ORDER BY id DESC LIMIT ? OFFSET ?",
            (key, limit, offset),
        )
    ]
    total = count.fetchone()[0]
    return _notification_rows(conn, ids), total


# -- notifications -----------------------------------------------------------------------------


@dataclass
class NotificationFilter:
    state: str | None = None  # a delivery state, or "failing" (failed or retrying)
    channel: str | None = None
    contact_group: str | None = None


async def notifications(
    app: web.Application, filters: NotificationFilter, page: int = 1, per_page: int = 50
) -> tuple[list[NotificationRow], Pager, int]:
    """Notifications with their deliveries, newest first; without a state filter the failing
    ones (a delivery failed or retrying) come first. Also returns how many are failing."""
    return await app[keys.STORE].read(partial(_notifications_page, filters, page, per_page))


def _notifications_page(
    filters: NotificationFilter, page: int, per_page: int, conn: sqlite3.Connection
) -> tuple[list[NotificationRow], Pager, int]:
    offset = (page - 1) * per_page
    where, params = [], []
    if filters.contact_group:
        where.append("n.contact_group = ?")
        params.append(filters.contact_group)
    channel = filters.channel or None
    if filters.state in (None, "failing"):
        # Failing ones are few and indexed by state: all their ids, newest first.
        failing = _ids_by_delivery_state(conn, FAILING, channel, where, params)
    else:
        failing = []
    if filters.state == "failing":
        ids = failing[offset : offset + per_page + 1]
    elif filters.state in ("pending", "sending", "retrying", "failed"):
        ids = _ids_by_delivery_state(conn, (filters.state,), channel, where, params)
        ids = ids[offset : offset + per_page + 1]
    else:
        # Walk notifications newest first (primary key), stopping after one page; the
        # delivered state and the channel are checked per row through the deliveries index.
        rest_where = list(where)
        rest_params: list[Any] = list(params)
        if filters.state == "delivered" or channel:
            cond = ["d.notification_id = n.id"]
            if filters.state == "delivered":
                cond.append("d.state = 'delivered'")
            if channel:
                cond.append("d.channel = ?")
                rest_params.append(channel)
            rest_where.append(f"EXISTS (SELECT 1 FROM deliveries d WHERE {' AND '.join(cond)})")
        head = failing[offset : offset + per_page + 1]
        need = per_page + 1 - len(head)
        rest: list[int] = []
        if need > 0 and filters.state is None:
            rest_where.append("n.id NOT IN (SELECT value FROM json_each(?))")
            rest_params.append(json.dumps(failing))
        if need > 0:
            clause = f"WHERE {' AND '.join(rest_where)}" if rest_where else ""
            rest = [
                r[0]
                for r in conn.execute(
                    f"SELECT n.id FROM notifications n {clause} ORDER BY n.id DESC "
                    "LIMIT ? OFFSET ?",
                    (*rest_params, need, max(offset - len(failing), 0)),
                )
            ]
        ids = head + rest
    rows = _notification_rows(conn, ids[:per_page])
    return rows, Pager(page, per_page, len(ids) > per_page), len(failing)


def _ids_by_delivery_state(
    conn: sqlite3.Connection,
    states: tuple[str, ...],
    channel: str | None,
    where: list[str],
    params: list[Any],
) -> list[int]:
    marks = ", ".join("?" for _ in states)
    conds = [f"d.state IN ({marks})", *where]
    args: list[Any] = [*states, *params]
    if channel:
        conds.append("d.channel = ?")
        args.append(channel)
    # The notifications table only when a condition is on it: the deliveries index alone
    # answers the rest.
    join = "JOIN notifications n ON n.id = d.notification_id " if where else ""
    return [
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT d.notification_id FROM deliveries d {join}"
            f"WHERE {' AND '.join(conds)} ORDER BY d.notification_id DESC",
            args,
        )
    ]


def _notification_rows(conn: sqlite3.Connection, ids: list[int]) -> list[NotificationRow]:
    """Rows for these notification ids, in this order, each with its deliveries (and those
    of the digest it was merged into). Messages are not loaded whole: SQLite's JSON
    functions take the few values a list shows."""
    if not ids:
        return []
    rows = {
        r[0]: r
        for r in conn.execute(
            "SELECT n.id, n.group_key, n.contact_group, n.kind, n.status, n.created_at, "
            "n.digest_id, COALESCE(g.group_labels, "
            "  CASE WHEN n.kind = 'group' THEN json_extract(n.message, '$.groups[0].group_labels')"
            "  END), "
            "CASE WHEN n.kind = 'group' THEN json_array_length(n.message, '$.groups[0].alerts') "
            "END, "
            "CASE WHEN n.kind = 'group' THEN (SELECT COUNT(*) FROM "
            "  json_each(n.message, '$.groups[0].alerts') "
            "  WHERE json_extract(value, '$.status') = 'firing') END, "
            "CASE WHEN n.kind = 'digest' THEN json_array_length(n.message, '$.groups') END "
            "FROM notifications n LEFT JOIN alert_groups g ON g.key = n.group_key "
            "WHERE n.id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
    }
    out = [
        NotificationRow(
            id=r[0],
            group_key=r[1],
            contact_group=r[2],
            kind=r[3],
            status=r[4],
            created_at=r[5],
            digest_id=r[6],
            title=_title(r[3], r[1], r[7]),
            alerts=r[8],
            firing=r[9],
            groups=r[10],
        )
        for i in ids
        if (r := rows.get(i)) is not None
    ]
    wanted = {n.id for n in out} | {n.digest_id for n in out if n.digest_id is not None}
    deliveries: dict[int, list[DeliveryRow]] = {}
    for r in conn.execute(
        f"SELECT d.notification_id, {_DELIVERY_COLUMNS} FROM deliveries d "
        "WHERE d.notification_id IN (SELECT value FROM json_each(?)) ORDER BY d.id",
        (json.dumps(sorted(wanted)),),
    ):
        deliveries.setdefault(r[0], []).append(_delivery(r[1:]))
    for n in out:
        n.deliveries = deliveries.get(n.id, [])
        if n.digest_id is not None:
            n.digest_deliveries = deliveries.get(n.digest_id, [])
    return out


# -- contact groups and routes -----------------------------------------------------------------


@dataclass
class RouteRef:
    index: int
    text: str  # the route's matchers as written, e.g. team="db", severity=~"critical|page"
    continue_: bool
    groups: tuple[str, ...]


@dataclass
class ContactGroupInfo:
    name: str
    channels: list[tuple[str, str]]  # (name, type)
    members: list[Any]
    routes: list[RouteRef]
    default: bool  # in routing.default_groups
    watchdog: bool  # hears about broken monitoring
    open_groups: int
    alerts: int  # in its open groups


def route_text(route: RouteConfig) -> str:
    parts = [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in route.match.items()]
    parts += [f"{k}=~{json.dumps(v, ensure_ascii=False)}" for k, v in route.match_re.items()]
    return ", ".join(parts) or "*"


async def contact_groups(app: web.Application) -> list[ContactGroupInfo]:
    """Each contact group with its members, channels, the routes that lead to it, and how
    much of it is open now (memory)."""
    config: Config = app[keys.CONFIG]
    conv = await _memory(app)
    open_groups: dict[str, int] = {}
    alerts: dict[str, int] = {}
    for group in conv.groups.values():  # no walk over the alerts: counts only
        open_groups[group.contact_group] = open_groups.get(group.contact_group, 0) + 1
        alerts[group.contact_group] = alerts.get(group.contact_group, 0) + len(group.members)
    kinds = {c.name: c.type for c in config.channels}
    routes = [
        RouteRef(i, route_text(r), r.continue_, r.groups) for i, r in enumerate(config.routes)
    ]
    return [
        ContactGroupInfo(
            name=g.name,
            channels=[(c, kinds.get(c, "?")) for c in g.channels],
            members=list(g.members),
            routes=[r for r in routes if g.name in r.groups],
            default=g.name in config.routing.default_groups,
            watchdog=g.name in config.watchdog_groups,
            open_groups=open_groups.get(g.name, 0),
            alerts=alerts.get(g.name, 0),
        )
        for g in config.contact_groups
    ]


# -- acting: acknowledgements, escalation, silences, maintenance -------------------------------


def matchers_text(matchers: Iterable[Matcher]) -> str:
    """Matchers as amtool writes them: `{alertname="X", cluster=~"a|b"}`."""
    return "{" + ", ".join(to_text(m) for m in matchers) + "}"


@dataclass
class GroupActing:
    """What people did about an open alert group, from memory."""

    ack: Ack | None
    escalated: int  # escalation steps taken
    firing: int
    muted: int  # of the firing alerts, how many a silence or window mutes


def group_acting(conv: Convergence, key: str) -> GroupActing | None:
    """None when the group is not open (an acknowledgement ends with its group)."""
    group = conv.groups.get(key)
    if group is None:
        return None
    firing = muted = 0
    for fp in group.members:
        if conv.alerts[fp].status == "firing":
            firing += 1
            muted += conv.muting.is_muted(fp)
    return GroupActing(conv.acks.current(key, group.created_at), group.escalated, firing, muted)


@dataclass
class SilenceRow:
    id: str
    state: str  # pending | active | expired
    matchers: str  # amtool's text form
    created_by: str
    comment: str
    starts_at: float
    ends_at: float
    updated_at: float
    mutes_internal: bool  # could mute HeartbeatMissing, PeerDown, ...


@dataclass
class WindowRow:
    """A maintenance window of the config, and when it runs."""

    name: str
    matchers: str
    schedule: str
    time_zone: str
    duration: float
    active: tuple[float, float] | None  # [start, end) of the occurrence running now
    next_start: float | None


@dataclass
class SilencesView:
    current: list[SilenceRow]  # active (ending soonest first), then pending
    expired: list[SilenceRow]  # the most recently ended first, at most a page
    expired_total: int
    windows: list[WindowRow]  # running ones first


def _silence_row(silence: Silence, now: float) -> SilenceRow:
    return SilenceRow(
        id=silence.id,
        state=str(silence.state(now)),
        matchers=matchers_text(silence.matchers),
        created_by=silence.created_by,
        comment=silence.comment,
        starts_at=silence.starts_at,
        ends_at=silence.ends_at,
        updated_at=silence.updated_at,
        mutes_internal=mutes_internal(silence),
    )


def _window_row(window: MaintenanceWindow, now: float) -> WindowRow:
    return WindowRow(
        name=window.name,
        matchers=matchers_text(window.matchers),
        schedule=window.schedule,
        time_zone=window.time_zone,
        duration=window.duration,
        active=window.active_interval(now),
        next_start=window.next_start(now),
    )


async def silences(app: web.Application, now: float, expired_limit: int = 20) -> SilencesView:
    """Silences as Alertmanager lists them (active, pending, then expired), the expired ones
    cut to the latest few; the maintenance windows of the config."""
    conv = await _memory(app)
    ordered = sort_silences(conv.muting.silences.values(), now)
    current = [s for s in ordered if s.state(now) is not SilenceState.EXPIRED]
    expired = ordered[len(current) :]
    windows = [_window_row(w, now) for w in conv.muting.windows]
    windows.sort(key=lambda w: w.active is None)  # stable: config order otherwise
    return SilencesView(
        current=[_silence_row(s, now) for s in current],
        expired=[_silence_row(s, now) for s in expired[:expired_limit]],
        expired_total=len(expired),
        windows=windows,
    )


@dataclass
class ActingSummary:
    """The overview's guard rails (SPEC section 8): what is muted or taken in hand now."""

    active_silences: int
    pending_silences: int
    internal_silences: int  # active or pending ones that could mute internal alerts
    acked_groups: int
    windows: list[WindowRow]  # running now


async def acting_summary(app: web.Application, now: float) -> ActingSummary:
    conv = await _memory(app)
    active = pending = internal = 0
    for silence in conv.muting.silences.values():
        state = silence.state(now)
        if state is SilenceState.EXPIRED:
            continue
        active += state is SilenceState.ACTIVE
        pending += state is SilenceState.PENDING
        internal += mutes_internal(silence)
    acked = 0
    for key in conv.acks.entries:  # few: one per acknowledged group key
        group = conv.groups.get(key)
        acked += group is not None and conv.acks.current(key, group.created_at) is not None
    return ActingSummary(
        active_silences=active,
        pending_silences=pending,
        internal_silences=internal,
        acked_groups=acked,
        windows=[_window_row(w, now) for w, _, _ in conv.muting.active_windows(now)],
    )
