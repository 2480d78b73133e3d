"""The `acks` table: the acknowledgement of each alert group (or its withdrawal), the only
module that writes it. One row per group key: the newest change wins, here and at peers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING

from monitor_manager.store.writer import Statement

if TYPE_CHECKING:
    from monitor_manager.converge.acks import Ack


def save(ack: Ack) -> Statement:
    return (
        "INSERT OR REPLACE INTO acks (group_key, by, at, comment, via, withdrawn, updated_at, "
        "origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ack.group_key,
            ack.by,
            ack.at,
            ack.comment,
            ack.via,
            int(ack.withdrawn),
            ack.updated_at,
            ack.origin,
        ),
    )


def purge(before: float) -> Statement:
    return ("DELETE FROM acks WHERE updated_at < ?", (before,))


def rows(conn: sqlite3.Connection) -> Iterator[tuple[str, str, float, str, str, bool, float, str]]:
    for r in conn.execute(
        "SELECT group_key, by, at, comment, via, withdrawn, updated_at, origin FROM acks"
    ):
        yield r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]
