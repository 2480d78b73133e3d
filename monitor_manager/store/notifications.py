"""The `notifications` table: one row per message decided (a group change, a digest), the only
module that writes it.

A row stores its message as JSON, so a delivery retried after a restart sends exactly what was
decided. A group notification's message is built when its write runs, on the store thread,
from the alert rows as they stand at that point of the write queue (`write_group`): memory
keeps no labels or annotations. `digest_id` ties a notification that storm control held back
to the digest that stands for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from monitor_manager.ingest.payload import INTERNAL_SOURCE
from monitor_manager.models import AlertStatus, AlertView, GroupView, Message
from monitor_manager.store import alerts as alert_rows
from monitor_manager.store import deliveries
from monitor_manager.store.writer import Op, Statement


def content_hash(message: Message) -> str:
    """The same alert groups with the same alert states: equal across instances. An
    escalation step or an announcement is other news than the change it repeats: marked. A
    daily report's is the period it reports on: equal on every instance that ran the schedule."""
    if message.kind == "report":
        period = message.extra.get("report", {}).get("period_end")
        return hashlib.blake2b(json.dumps(["report", period]).encode(), digest_size=16).hexdigest()
    states: list[Any] = sorted(
        (g.key, a.fingerprint, a.status) for g in message.groups for a in g.alerts
    )
    for mark in ("escalation", "announce"):
        if mark in message.extra:
            states.append([mark, json.dumps(message.extra[mark], sort_keys=True)])
    return hashlib.blake2b(json.dumps(states).encode(), digest_size=16).hexdigest()


def insert(message: Message, group_key: str | None, digest_id: int | None) -> Statement:
    return (
        "INSERT INTO notifications (id, group_key, contact_group, kind, status, content_hash, "
        "message, digest_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message.id,
            group_key,
            message.contact_group,
            message.kind,
            message.status,
            content_hash(message),
            json.dumps(message.to_json()),
            digest_id,
            message.created_at,
        ),
    )


@dataclass(frozen=True, slots=True)
class Draft:
    """A group notification decided in memory, waiting for its alerts' text from the store."""

    header: Message  # id, kind, recipients ...; groups are filled in from the store
    group_key: str
    group_labels: dict[str, str]
    url: str
    # row id, fingerprint, status, starts_at, ends_at
    alerts: tuple[tuple[int, str, AlertStatus, float, float | None], ...]
    ack: dict[str, Any] | None = None
    ack_url: str = ""
    code: str = ""
    contact_group: str = ""  # the group's own (the message may go to another: escalation)


def write_group(draft: Draft, digest_id: int | None) -> Op:
    def write(conn: sqlite3.Connection) -> None:
        texts = alert_rows.texts(conn, [a[0] for a in draft.alerts])
        views = []
        for row_id, fp, status, starts_at, ends_at in draft.alerts:
            # Every alert memory knows has its row or a queued insert; never fail the whole
            # commit over one that has not.
            labels, annotations, url, extras = texts.get(row_id) or ("{}", "{}", "", "{}")
            more = json.loads(extras) if extras != alert_rows.NO_EXTRAS else {}
            views.append(
                AlertView(
                    fp,
                    status,
                    json.loads(labels),
                    json.loads(annotations),
                    starts_at,
                    ends_at,
                    url,
                    more.get("links", {}),
                    more.get("value", ""),
                )
            )
        group = GroupView(
            draft.group_key,
            draft.contact_group or draft.header.contact_group,
            draft.group_labels,
            tuple(views),
            draft.url,
            ack=draft.ack,
            ack_url=draft.ack_url,
            code=draft.code,
        )
        message = dataclasses.replace(draft.header, groups=(group,))
        conn.execute(*insert(message, draft.group_key, digest_id))

    return write


def write_digest(header: Message) -> Op:
    """The digest names every alert group its notifications stood for, each as last seen; the
    service's own alerts first (PeerDown, HeartbeatMissing, ...: the monitoring itself), so
    that a chat message cut at its last part never leaves them out."""

    def write(conn: sqlite3.Connection) -> None:
        latest: dict[str, GroupView] = {}
        for message in digested(conn, header.id):
            for group in message.groups:
                latest[group.key] = group
        groups = sorted(latest.values(), key=lambda g: not _internal(g))  # stable
        digest = dataclasses.replace(header, groups=tuple(groups))
        conn.execute(*insert(digest, None, None))

    return write


def _internal(group: GroupView) -> bool:
    name, value = INTERNAL_SOURCE
    return any(a.labels.get(name) == value for a in group.alerts)


def purge(before: float) -> Op:
    """Notifications older than `before` whose deliveries are all gone, unless a digest still
    being collected stands for them."""
    return (
        "DELETE FROM notifications WHERE created_at < ? AND NOT EXISTS "
        "(SELECT 1 FROM deliveries d WHERE d.notification_id = notifications.id) "
        "AND id NOT IN (SELECT digest_id FROM storm_windows WHERE digest_id IS NOT NULL)",
        (before,),
    )


# -- reading -------------------------------------------------------------------------------------


def digested(conn: sqlite3.Connection, digest_id: int) -> list[Message]:
    """The messages a digest stands for, in order."""
    return [
        Message.from_json(json.loads(text))
        for (text,) in conn.execute(
            "SELECT message FROM notifications WHERE digest_id = ? ORDER BY id", (digest_id,)
        )
    ]


def max_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM notifications").fetchone()[0])


def listing(
    conn: sqlite3.Connection,
    limit: int,
    *,
    group_key: str | None = None,
    delivery_state: str | None = None,
) -> list[dict[str, Any]]:
    """The newest notifications (of an alert group, or with a delivery in a state), each with
    its deliveries; times as Unix seconds."""
    where, params = "", tuple[Any, ...]()
    if group_key is not None:
        where, params = "WHERE n.group_key = ?", (group_key,)
    elif delivery_state is not None:
        where = "WHERE n.id IN (SELECT notification_id FROM deliveries WHERE state = ?)"
        params = (delivery_state,)
    rows = conn.execute(
        "SELECT n.id, n.group_key, n.contact_group, n.kind, n.status, n.content_hash, "
        f"n.digest_id, n.created_at, n.message FROM notifications n {where} "
        "ORDER BY n.id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    out = []
    for r in rows:
        message = json.loads(r[8])
        out.append(
            {
                "id": r[0],
                "alert_group": r[1],
                "contact_group": r[2],
                "kind": r[3],
                "status": r[4],
                "content_hash": r[5],
                "digest_id": r[6],
                "created_at": r[7],
                "alert_groups": [g["key"] for g in message["groups"]],
                "alerts": sum(len(g["alerts"]) for g in message["groups"]),
                "deliveries": deliveries.of_notification(conn, r[0]),
            }
        )
    return out
