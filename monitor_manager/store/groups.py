"""The `alert_groups` table: one row per alert group (contact group and group label values),
the only module that writes it. Timers are columns, so a restart loses none."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from monitor_manager.store.writer import Op, Statement

if TYPE_CHECKING:
    from monitor_manager.converge.convergence import Group


def upsert(group: Group, now: float, state: str = "open") -> Statement:
    return (
        "INSERT INTO alert_groups (key, contact_group, group_labels, state, created_at, "
        "next_flush_at, last_notified_at, last_flush_at, updated_at, first_notified_at, "
        "escalated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "state = excluded.state, created_at = excluded.created_at, "
        "next_flush_at = excluded.next_flush_at, last_notified_at = excluded.last_notified_at, "
        "last_flush_at = excluded.last_flush_at, updated_at = excluded.updated_at, "
        "first_notified_at = excluded.first_notified_at, escalated = excluded.escalated",
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
            group.first_notified_at,
            group.escalated,
        ),
    )


def purge_closed(before: float) -> Op:
    return ("DELETE FROM alert_groups WHERE state = 'closed' AND updated_at < ?", (before,))


OpenRow = tuple[
    str, str, dict[str, str], float, float | None, float | None, float | None, float | None, int
]
"""key, contact group, group labels, created, next flush, last notified, last flush, first
notified, escalation steps taken"""


def open_rows(conn: sqlite3.Connection) -> Iterator[OpenRow]:
    for row in conn.execute(
        "SELECT key, contact_group, group_labels, created_at, next_flush_at, "
        "last_notified_at, last_flush_at, first_notified_at, escalated FROM alert_groups "
        "WHERE state = 'open'"
    ):
        yield (row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])


def listing(conn: sqlite3.Connection, limit: int) -> list[Any]:
    """Open groups first, then the most recently changed."""
    cur = conn.execute(
        "SELECT * FROM alert_groups ORDER BY (state = 'open') DESC, updated_at DESC LIMIT ?",
        (limit,),
    )
    cur.row_factory = sqlite3.Row
    return cur.fetchall()


def one(conn: sqlite3.Connection, key: str) -> Any | None:
    cur = conn.execute("SELECT * FROM alert_groups WHERE key = ?", (key,))
    cur.row_factory = sqlite3.Row
    return cur.fetchone()
