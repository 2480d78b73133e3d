"""The `storm_windows` table: the storm window of each contact group, so a digest being
collected survives a restart. The only module that writes it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from monitor_manager.store.writer import Statement


def save(contact_group: str, started_at: float, count: int, digest_id: int | None) -> Statement:
    return (
        "INSERT OR REPLACE INTO storm_windows (contact_group, started_at, count, digest_id) "
        "VALUES (?, ?, ?, ?)",
        (contact_group, started_at, count, digest_id),
    )


def delete(contact_group: str) -> Statement:
    return ("DELETE FROM storm_windows WHERE contact_group = ?", (contact_group,))


def rows(conn: sqlite3.Connection) -> Iterator[tuple[str, float, int, int | None]]:
    """(contact group, started at, count, digest id)"""
    yield from conn.execute(
        "SELECT contact_group, started_at, count, digest_id FROM storm_windows"
    ).fetchall()
