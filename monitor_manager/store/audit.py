"""The `audit` table: every change people made (an ack, a silence, a reload), who, when and
through what. Append only; the only module that writes it."""

from __future__ import annotations

import sqlite3
from typing import Any

from monitor_manager.store.writer import Statement


def record(
    at: float, who: str, via: str, action: str, target: str, detail: str, instance: str
) -> Statement:
    return (
        "INSERT INTO audit (at, who, via, action, target, detail, instance) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, who[:256], via, action, target[:256], detail[:4096], instance),
    )


def purge(before: float) -> Statement:
    return ("DELETE FROM audit WHERE at < ?", (before,))


def listing(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT at, who, via, action, target, detail, instance FROM audit ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        {
            "at": r[0],
            "who": r[1],
            "via": r[2],
            "action": r[3],
            "target": r[4],
            "detail": r[5],
            "instance": r[6],
        }
        for r in rows
    ]
