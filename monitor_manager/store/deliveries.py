"""The `deliveries` table, one row per (notification, channel): the only module that writes it.

A row is inserted with its notification, before any network call (`insert`); the outbox
claims due rows with a conditional update (`claim`: `... WHERE state IN due states`), so no
two workers ever send one row, and records each attempt's outcome (`record`, from a
`deliver.decide.Transition`). A crash between sending and recording leaves the row `sending`;
`recover` at the next start, and `release_stuck` while running, make it due again: a message
may repeat, none is lost.

A row written off without being sent keeps state `delivered` (somebody has the message) and
says why: `superseded_by` names the newer notification of its alert group that went out
through the channel first; a note names the peer that sent it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from monitor_manager.models import Message
from monitor_manager.store.writer import Op, Statement


class DeliveryState(StrEnum):
    PENDING = "pending"  # written with its notification, not yet tried
    SENDING = "sending"  # claimed by a worker; the outcome is not recorded yet
    RETRYING = "retrying"  # failed for now; due again at next_attempt_at
    DELIVERED = "delivered"  # somebody has the message (or a newer one: see superseded_by)
    FAILED = "failed"  # failed for good (DeliveryFailed is raised)


DUE = (DeliveryState.PENDING, DeliveryState.RETRYING)
SUPERSEDED = "with a newer state of the alert group went out first"
_DUE_SQL = "('pending', 'retrying')"


@dataclass
class Delivery:
    """A row due for sending, with the message of its notification."""

    id: int
    notification_id: int
    channel: str
    attempts: int
    created_at: float
    message: Message
    group_key: str | None = None
    content_hash: str = ""
    note: str = ""  # what earlier attempts delivered, when they reached only some recipients
    only_to: tuple[str, ...] = ()  # the recipients still owed the message; () for all


@dataclass(frozen=True)
class Recorded:
    """What an attempt changes in its row (see deliver.decide)."""

    state: DeliveryState
    attempts: int
    note: str
    last_error: str
    next_attempt_at: float | None
    only_to: tuple[str, ...]


# -- writing -------------------------------------------------------------------------------------


def insert(delivery_id: int, notification_id: int, channel: str, due: float, now: float) -> Op:
    return (
        "INSERT INTO deliveries (id, notification_id, channel, state, attempts, "
        "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
        (delivery_id, notification_id, channel, due, now, now),
    )


def defer(delivery_id: int, until: float) -> Op:
    """A rate-limited channel has no slot before `until`: the row waits, still due."""
    return (
        f"UPDATE deliveries SET next_attempt_at = ? WHERE id = ? AND state IN {_DUE_SQL}",
        (until, delivery_id),
    )


def claim(conn: sqlite3.Connection, ids: Sequence[int], now: float) -> set[int]:
    """Rows of `ids` still due become `sending`; the ids this call claimed."""
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"UPDATE deliveries SET state = 'sending', updated_at = ? "
        f"WHERE id IN ({marks}) AND state IN {_DUE_SQL} RETURNING id",
        (now, *ids),
    ).fetchall()
    return {r[0] for r in rows}


def record(delivery_id: int, outcome: Recorded, now: float) -> Op:
    delivered = outcome.state is DeliveryState.DELIVERED
    return (
        "UPDATE deliveries SET state = ?, attempts = ?, note = ?, last_error = ?, "
        "next_attempt_at = ?, only_to = ?, updated_at = ?, "
        "delivered_at = CASE WHEN ? THEN ? ELSE delivered_at END WHERE id = ?",
        (
            outcome.state.value,
            outcome.attempts,
            outcome.note,
            outcome.last_error,
            outcome.next_attempt_at,
            json.dumps(outcome.only_to) if outcome.only_to else "",
            now,
            delivered,
            now,
            delivery_id,
        ),
    )


def superseded(delivery_id: int, by: int, now: float) -> Statement:
    """Not sent: notification `by`, a newer state of its alert group, went out first (said in
    the note too, after what earlier attempts noted)."""
    why = f"not sent: notification {by} {SUPERSEDED}"
    return (
        "UPDATE deliveries SET state = 'delivered', superseded_by = ?, "
        "note = CASE WHEN note = '' THEN ? ELSE note || '; then ' || ? END, updated_at = ?, "
        "delivered_at = ?, next_attempt_at = NULL WHERE id = ?",
        (by, why, why, now, now, delivery_id),
    )


def sent_by_peer(delivery_id: int, peer: str, now: float) -> Op:
    return (
        "UPDATE deliveries SET state = 'delivered', note = ?, updated_at = ?, delivered_at = ?, "
        "next_attempt_at = NULL WHERE id = ?",
        (f"not sent here: peer {peer} already sent it (or a newer state)", now, now, delivery_id),
    )


def supersede_older(sent: Delivery, now: float) -> Op:
    """A newer state of an alert group reached people through this channel: older messages
    of the group still waiting to retry there would arrive after it, stale. Those it covers
    (every alert they name is in it, with its newer state) are not sent; one that carries
    news the newer lacks (a resolution of an alert that has since left the group) still is."""
    covered = fingerprints(sent.message)

    def step(conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT d.id, n.message FROM deliveries d JOIN notifications n "
            "ON n.id = d.notification_id WHERE n.group_key = ? AND n.id < ? AND d.channel = ? "
            f"AND n.contact_group = ? AND d.state IN {_DUE_SQL}",
            (sent.group_key, sent.notification_id, sent.channel, sent.message.contact_group),
        ).fetchall()
        stale = [
            superseded(row_id, sent.notification_id, now)[1]
            for row_id, text in rows
            if fingerprints(Message.from_json(json.loads(text))) <= covered
        ]
        conn.executemany(superseded(0, 0, now)[0], stale)

    return step


def recover(conn: sqlite3.Connection, now: float) -> int:
    """At start-up: rows a crash left `sending` are due again (sent at least once)."""
    return conn.execute(
        "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, "
        "last_error = 'interrupted while sending (restart); sending again' "
        "WHERE state = 'sending'",
        (now,),
    ).rowcount


def release_stuck(conn: sqlite3.Connection, now: float, inflight: Sequence[int]) -> int:
    """Rows `sending` with no send in flight (recording their outcome failed) are due again."""
    marks = ",".join("?" * len(inflight))
    return conn.execute(
        "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, "
        "last_error = 'its outcome could not be recorded; sending again' "
        f"WHERE state = 'sending' AND id NOT IN ({marks})",
        (now, *inflight),
    ).rowcount


def purge(before: float) -> Op:
    """Finished rows of notifications older than `before` (the retention)."""
    return (
        "DELETE FROM deliveries WHERE notification_id IN "
        "(SELECT id FROM notifications WHERE created_at < ?) "
        "AND state IN ('delivered', 'failed')",
        (before,),
    )


# -- reading -------------------------------------------------------------------------------------


def due(conn: sqlite3.Connection, now: float, skip: set[int], limit: int) -> list[Delivery]:
    """Rows due at `now`, oldest first, with their messages; rows in `skip` left out."""
    rows = conn.execute(
        "SELECT d.id, d.notification_id, d.channel, d.attempts, d.created_at, n.message, "
        "n.group_key, n.content_hash, d.note, d.only_to "
        "FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        f"WHERE d.state IN {_DUE_SQL} AND d.next_attempt_at <= ? "
        "ORDER BY d.next_attempt_at, d.id LIMIT ?",
        (now, limit + len(skip)),
    ).fetchall()
    return [
        Delivery(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            Message.from_json(json.loads(r[5])),
            r[6],
            r[7],
            r[8],
            tuple(json.loads(r[9])) if r[9] else (),
        )
        for r in rows
        if r[0] not in skip
    ][:limit]


def superseded_by(conn: sqlite3.Connection, d: Delivery) -> int | None:
    """A newer message of the row's alert group that already went out through its channel
    and covers it (a retry that was in flight when that one went out). One that reached some
    recipients and is owed to the rest counts: everyone gets it, or has."""
    covered = fingerprints(d.message)
    for notification_id, text in conn.execute(
        "SELECT n.id, n.message FROM notifications n JOIN deliveries d2 "
        "ON d2.notification_id = n.id WHERE n.group_key = ? AND n.id > ? AND d2.channel = ? "
        "AND n.contact_group = ? AND (d2.state = 'delivered' AND d2.superseded_by IS NULL "
        "OR d2.state IN ('retrying', 'sending') AND d2.only_to != '') ORDER BY n.id DESC",
        (d.group_key, d.notification_id, d.channel, d.message.contact_group),
    ):
        if covered <= fingerprints(Message.from_json(json.loads(text))):
            return int(notification_id)
    return None


def overtaken_in_digest(conn: sqlite3.Connection, d: Delivery) -> set[str]:
    """The alert groups of a storm digest that a message decided after it already told through
    its channel (sent here, or written off as a peer's): held back by a rate limit or a retry,
    the digest would show them in an older state, after the newer one."""
    keys = [g.key for g in d.message.groups]
    if not keys:
        return set()
    return {
        key
        for (key,) in conn.execute(
            "SELECT DISTINCT n.group_key FROM notifications n JOIN deliveries d2 "
            "ON d2.notification_id = n.id WHERE d2.channel = ? AND n.contact_group = ? "
            "AND d2.state = 'delivered' AND d2.superseded_by IS NULL AND n.created_at > ? "
            "AND n.group_key IN (SELECT value FROM json_each(?))",
            (d.channel, d.message.contact_group, d.message.created_at, json.dumps(keys)),
        )
    }


def overtaken(delivery_id: int, now: float) -> Statement:
    """Not sent: a newer message of every alert group the digest names went out first."""
    why = "not sent: a newer message of every alert group it names went out first"
    return (
        "UPDATE deliveries SET state = 'delivered', "
        "note = CASE WHEN note = '' THEN ? ELSE note || '; then ' || ? END, updated_at = ?, "
        "delivered_at = ?, next_attempt_at = NULL WHERE id = ?",
        (why, why, now, now, delivery_id),
    )


def next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        f"SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN {_DUE_SQL}"
    ).fetchone()
    return row[0] if row else None


def backlog(conn: sqlite3.Connection) -> tuple[int, float | None]:
    """(rows not yet delivered or failed, when the oldest of them was written)."""
    row = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM deliveries "
        "WHERE state IN ('pending', 'retrying', 'sending')"
    ).fetchone()
    return int(row[0]), row[1]


def of_notification(conn: sqlite3.Connection, notification_id: int) -> list[dict[str, Any]]:
    """A notification's rows as the API shows them (times as Unix seconds)."""
    rows = conn.execute(
        "SELECT id, channel, state, attempts, last_error, note, next_attempt_at, "
        "delivered_at, updated_at, only_to, superseded_by FROM deliveries "
        "WHERE notification_id = ? ORDER BY id",
        (notification_id,),
    ).fetchall()
    return [
        {
            "id": d[0],
            "channel": d[1],
            "state": d[2],
            "attempts": d[3],
            "last_error": d[4],
            "note": d[5],
            "next_attempt_at": d[6],
            "delivered_at": d[7],
            "updated_at": d[8],
            "only_to": json.loads(d[9]) if d[9] else [],
            "superseded_by": d[10],
        }
        for d in rows
    ]


def max_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()[0])


def fingerprints(message: Message) -> set[str]:
    return {a.fingerprint for g in message.groups for a in g.alerts}
