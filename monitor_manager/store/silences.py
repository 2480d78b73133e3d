"""The `silences` table, the only module that writes it. One row per silence id: an update
in place or an expiry replaces the row; the newest change wins, here and at peers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

from monitor_manager.converge.matchers import Matcher
from monitor_manager.converge.silences import Silence
from monitor_manager.store.writer import Statement


def save(silence: Silence) -> Statement:
    matchers = [[m.name, m.value, m.is_regex, m.is_equal] for m in silence.matchers]
    return (
        "INSERT OR REPLACE INTO silences (id, matchers, starts_at, ends_at, created_by, comment, "
        "updated_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            silence.id,
            json.dumps(matchers),
            silence.starts_at,
            silence.ends_at,
            silence.created_by,
            silence.comment,
            silence.updated_at,
            silence.origin,
        ),
    )


def purge(before: float) -> Statement:
    """Silences that ended before `before` (the retention)."""
    return ("DELETE FROM silences WHERE ends_at < ?", (before,))


def rows(conn: sqlite3.Connection) -> Iterator[Silence]:
    for r in conn.execute(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, "
        "updated_at, origin FROM silences"
    ):
        matchers = tuple(Matcher(n, v, bool(x), bool(e)) for n, v, x, e in json.loads(r[1]))
        yield Silence(r[0], matchers, r[2], r[3], r[4], r[5], r[6], r[7])
