"""Storm control: past `storm.threshold` notifications to one contact group inside
`storm.window`, the rest of that window is merged into one digest sent at the window's end.

Nothing is dropped: every group change is still a notification row (with `digest_id`), and the
digest names every alert group it stands for, with the latest state of each. This module only
decides (which notification goes now, which waits for which digest, which windows closed);
the caller writes the notifications and their deliveries. Windows are rows of
`storm_windows`, so a digest being collected survives a restart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from monitor_manager.config import StormConfig
from monitor_manager.converge.ids import Ids
from monitor_manager.store import Op, notifications, storm_windows
from monitor_manager.watch.watchdog import failing_channel


@dataclass
class Window:
    started_at: float
    count: int = 0
    digest_id: int | None = None
    failing: set[str] = field(default_factory=set)  # channels the digested pages are about


@dataclass(frozen=True)
class Closed:
    """A window ended with notifications held back: their digest goes out now."""

    contact_group: str
    digest_id: int
    failing: frozenset[str]


class Storm:
    def __init__(self, config: StormConfig, ids: Ids) -> None:
        self.config = config
        self.ids = ids
        self.windows: dict[str, Window] = {}

    def admit(
        self, contact_group: str, now: float, failing: frozenset[str], ops: list[Op]
    ) -> tuple[int | None, list[Closed]]:
        """(None: deliver this notification now, or the digest it belongs to; the windows
        this call closed). The window's row goes into `ops`."""
        closed: list[Closed] = []
        window = self.windows.get(contact_group)
        if window is None or now >= window.started_at + self.config.window:
            if window is not None and window.digest_id is not None:
                closed.append(self._close(contact_group, window))
            window = self.windows[contact_group] = Window(now)
        digest_id = None
        if window.count < self.config.threshold:
            window.count += 1
        else:
            if window.digest_id is None:
                window.digest_id = self.ids.notification()
            digest_id = window.digest_id
            window.failing |= failing
        ops.append(storm_windows.save(contact_group, window.started_at, window.count, digest_id))
        return digest_id, closed

    def close_due(self, now: float, ops: list[Op]) -> list[Closed]:
        """Windows that ended: their digests (where they held anything back)."""
        closed = []
        for contact_group, window in list(self.windows.items()):
            if now >= window.started_at + self.config.window:
                if window.digest_id is not None:
                    closed.append(self._close(contact_group, window))
                del self.windows[contact_group]
                ops.append(storm_windows.delete(contact_group))
        return closed

    def next_due(self) -> float:
        ends = [w.started_at + self.config.window for w in self.windows.values() if w.digest_id]
        return min(ends, default=float("inf"))

    @staticmethod
    def _close(contact_group: str, window: Window) -> Closed:
        assert window.digest_id is not None
        closed = Closed(contact_group, window.digest_id, frozenset(window.failing))
        window.digest_id = None
        window.failing = set()
        return closed

    def load(self, conn: sqlite3.Connection) -> None:
        self.windows.clear()
        for contact_group, started_at, count, digest_id in storm_windows.rows(conn):
            window = Window(started_at, count, digest_id)
            if digest_id is not None:
                for message in notifications.digested(conn, digest_id):
                    for group in message.groups:
                        window.failing.update(
                            c for a in group.alerts if (c := failing_channel(a.labels))
                        )
                self.ids.reserve("notification", digest_id)
            self.windows[contact_group] = window
