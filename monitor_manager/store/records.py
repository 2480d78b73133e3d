"""The statements that record pipeline decisions: one builder per row kind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor_manager.models import AlertView, GroupView, Message
from monitor_manager.store import Op, Statement

if TYPE_CHECKING:
    from monitor_manager.converge.alerts import Alert
    from monitor_manager.converge.convergence import Group


def content_hash(message: Message) -> str:
    """The same alert groups with the same alert states: equal across instances."""
    states = sorted((g.key, a.fingerprint, a.status) for g in message.groups for a in g.alerts)
    return hashlib.blake2b(json.dumps(states).encode(), digest_size=16).hexdigest()


def insert_alert(
    alert: Alert,
    labels: str,
    annotations: str,
    generator_url: str,
    source: str,
    now: float,
    memberships: str,
) -> Op:
    return (
        "INSERT INTO alerts (id, fingerprint, labels, annotations, status, starts_at, ends_at, "
        "generator_url, source, updated_at, memberships, seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            alert.id,
            alert.fingerprint,
            labels,
            annotations,
            alert.status,
            alert.starts_at,
            alert.ends_at,
            generator_url,
            source,
            now,
            memberships,
            now,
        ),
    )


def update_alert(
    alert: Alert, annotations: str, generator_url: str, source: str, now: float, memberships: str
) -> Op:
    """A known alert's new state; an empty generatorURL or source keeps the stored one."""
    return (
        "UPDATE alerts SET annotations = ?, status = ?, starts_at = ?, ends_at = ?, "
        "generator_url = COALESCE(NULLIF(?, ''), generator_url), "
        "source = COALESCE(NULLIF(?, ''), source), updated_at = ?, memberships = ?, "
        "seen_at = ? WHERE id = ?",
        (
            annotations,
            alert.status,
            alert.starts_at,
            alert.ends_at,
            generator_url,
            source,
            now,
            memberships,
            now,
            alert.id,
        ),
    )


def upsert_group(group: Group, now: float, state: str = "open") -> Op:
    return (
        "INSERT INTO alert_groups (key, contact_group, group_labels, state, created_at, "
        "next_flush_at, last_notified_at, last_flush_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "state = excluded.state, created_at = excluded.created_at, "
        "next_flush_at = excluded.next_flush_at, last_notified_at = excluded.last_notified_at, "
        "last_flush_at = excluded.last_flush_at, updated_at = excluded.updated_at",
        (
            group.key,
            group.contact_group,
            json.dumps(group.group_labels),
            state,
            group.created_at,
            group.next_flush_at,
            group.last_notified_at,
            group.last_flush_at,
            now,
        ),
    )


def insert_notification(
    message: Message, group_key: str | None, digest_id: int | None
) -> Statement:
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
    """A notification decided in memory; its message is built when the op runs, from the
    alert rows as they stand at that point of the write queue (the decision's own state)."""

    header: Message  # id, kind, recipients ...; groups are filled in from the store
    group_key: str
    group_labels: dict[str, str]
    url: str
    # row id, fingerprint, status, starts_at, ends_at
    alerts: tuple[tuple[int, str, str, float, float | None], ...]


def write_group_notification(draft: Draft, digest_id: int | None) -> Op:
    def write(conn: sqlite3.Connection) -> None:
        ids = json.dumps([a[0] for a in draft.alerts])
        rows = {
            r[0]: r
            for r in conn.execute(
                "SELECT id, labels, annotations, generator_url FROM alerts "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (ids,),
            )
        }
        views = []
        for row_id, fp, status, starts_at, ends_at in draft.alerts:
            # Every alert memory knows has its row or a queued insert; never fail the whole
            # commit over one that has not.
            _, labels, annotations, url = rows.get(row_id) or (row_id, "{}", "{}", "")
            views.append(
                AlertView(
                    fp,
                    status,  # type: ignore[arg-type]
                    json.loads(labels),
                    json.loads(annotations),
                    starts_at,
                    ends_at,
                    url,
                )
            )
        group = GroupView(
            draft.group_key, draft.header.contact_group, draft.group_labels, tuple(views), draft.url
        )
        message = dataclasses.replace(draft.header, groups=(group,))
        conn.execute(*insert_notification(message, draft.group_key, digest_id))

    return write


def write_digest(header: Message) -> Op:
    """The digest names every alert group its notifications stood for, each as last seen."""

    def write(conn: sqlite3.Connection) -> None:
        latest: dict[str, GroupView] = {}
        for (text,) in conn.execute(
            "SELECT message FROM notifications WHERE digest_id = ? ORDER BY id", (header.id,)
        ):
            for group in Message.from_json(json.loads(text)).groups:
                latest[group.key] = group
        digest = dataclasses.replace(header, groups=tuple(latest.values()))
        conn.execute(*insert_notification(digest, None, None))

    return write
