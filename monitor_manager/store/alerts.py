"""The `alerts` table: one row per alert identity, the only module that writes it.

A row holds what memory does not keep (labels, annotations, generatorURL, source, and the
`extras` a sender such as Grafana adds: links and a value string) beside what it does (status,
times, the alert groups it is in: `memberships`); rows are found by an id that memory assigns
in order, so a new alert is an append (no index on the random fingerprint).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from monitor_manager.store.writer import Op, Statement

if TYPE_CHECKING:
    from monitor_manager.converge.alerts import Alert

NO_EXTRAS = "{}"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def extras_json(extras: Mapping[str, Any] | None) -> str:
    """An alert's extras as stored ("{}" for none, the Alertmanager case)."""
    return _ENCODER.encode(extras) if extras else NO_EXTRAS


def insert(
    alert: Alert,
    labels: str,
    annotations: str,
    generator_url: str,
    source: str,
    now: float,
    memberships: str,
    extras: Mapping[str, Any] | None = None,
) -> Statement:
    return (
        "INSERT INTO alerts (id, fingerprint, labels, annotations, status, starts_at, ends_at, "
        "generator_url, source, updated_at, memberships, seen_at, extras) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            extras_json(extras),
        ),
    )


def update(
    alert: Alert,
    annotations: str,
    generator_url: str,
    source: str,
    now: float,
    memberships: str,
    extras: Mapping[str, Any] | None = None,
) -> Statement:
    """A known alert's new state; an empty generatorURL or source keeps the stored one. The
    extras are replaced, as the annotations are: they belong to the state reported."""
    return (
        "UPDATE alerts SET annotations = ?, status = ?, starts_at = ?, ends_at = ?, "
        "generator_url = COALESCE(NULLIF(?, ''), generator_url), "
        "source = COALESCE(NULLIF(?, ''), source), updated_at = ?, memberships = ?, "
        "seen_at = ?, extras = ? WHERE id = ?",
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
            extras_json(extras),
            alert.id,
        ),
    )


def seen(alert_id: int, now: float) -> Statement:
    """A sender reported it again, unchanged (written at most hourly per alert)."""
    return ("UPDATE alerts SET seen_at = ? WHERE id = ?", (now, alert_id))


def stale(alert_id: int, now: float) -> Statement:
    return ("UPDATE alerts SET status = 'stale', updated_at = ? WHERE id = ?", (now, alert_id))


def memberships(alert_id: int, text: str) -> Statement:
    return ("UPDATE alerts SET memberships = ? WHERE id = ?", (text, alert_id))


def delete(alert_id: int) -> Op:
    return ("DELETE FROM alerts WHERE id = ?", (alert_id,))


# -- reading -------------------------------------------------------------------------------------

Row = tuple[str, int, str, float, float | None, str, float]
"""fingerprint, id, status, starts_at, ends_at, memberships (JSON), seen_at"""


def memory_rows(conn: sqlite3.Connection) -> Iterator[Row]:
    """What memory keeps of every alert, in id order (a later row of one identity wins)."""
    return conn.execute(
        "SELECT fingerprint, id, status, starts_at, ends_at, memberships, seen_at FROM alerts "
        "ORDER BY id"
    )


def labels_from(conn: sqlite3.Connection, source: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(fingerprint, labels) of the alerts a source raised (the service's own: few)."""
    for fp, labels in conn.execute(
        "SELECT fingerprint, labels FROM alerts WHERE source = ?", (source,)
    ):
        yield fp, json.loads(labels)


def texts(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[str, str, str, str]]:
    """Row id -> (labels, annotations, generatorURL, extras), as stored (JSON text but for the
    URL)."""
    return {
        r[0]: (r[1], r[2], r[3], r[4])
        for r in conn.execute(
            "SELECT id, labels, annotations, generator_url, extras FROM alerts "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
    }


def firing_labels(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(fingerprint, labels JSON) of every firing alert (muting is decided again on them)."""
    return conn.execute("SELECT fingerprint, labels FROM alerts WHERE status = 'firing'").fetchall()


def max_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()[0])


COLUMNS = (
    "SELECT fingerprint, status, labels, annotations, starts_at, ends_at, generator_url, "
    "source, memberships, extras FROM alerts"
)


def listing(conn: sqlite3.Connection, status: str | None, limit: int) -> tuple[list[Any], int]:
    """The most recently changed alerts (of a status) and how many there are in all."""
    where, params = ("", ()) if status is None else ("WHERE status = ?", (status,))
    cur = conn.execute(f"{COLUMNS} {where} ORDER BY updated_at DESC LIMIT ?", (*params, limit))
    cur.row_factory = sqlite3.Row
    rows = cur.fetchall()
    total = conn.execute(f"SELECT COUNT(*) FROM alerts {where}", params).fetchone()[0]
    return rows, int(total)


def by_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> list[sqlite3.Row]:
    cur = conn.execute(
        f"{COLUMNS} WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),)
    )
    cur.row_factory = sqlite3.Row
    return cur.fetchall()
