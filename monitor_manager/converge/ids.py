"""Row ids that memory assigns, in order: alerts, notifications, deliveries.

Memory is the single writer of these tables, so it hands out the ids and the rows are appends.
`load` continues after the highest id stored (a storm digest still being collected has an id
that no row has yet: the storm reserves it with `reserve`)."""

from __future__ import annotations

import sqlite3

from monitor_manager.store import alerts, deliveries, notifications


class Ids:
    def __init__(self) -> None:
        self._next = {"alert": 1, "notification": 1, "delivery": 1}

    def alert(self) -> int:
        return self._take("alert")

    def notification(self) -> int:
        return self._take("notification")

    def delivery(self) -> int:
        return self._take("delivery")

    def reserve(self, kind: str, used: int) -> None:
        """`used` is taken already (a digest id that has no row yet)."""
        self._next[kind] = max(self._next[kind], used + 1)

    def _take(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] = value + 1
        return value

    def load(self, conn: sqlite3.Connection) -> None:
        self._next = {
            "alert": alerts.max_id(conn) + 1,
            "notification": notifications.max_id(conn) + 1,
            "delivery": deliveries.max_id(conn) + 1,
        }
