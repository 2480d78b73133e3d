"""Storm control: past `storm.threshold` notifications to one contact group inside
`storm.window`, the rest of that window is merged into one digest sent at the window's end.

Nothing is dropped: every group change is still a notification row (with `digest_id`), and the
digest names every alert group it stands for, with the latest state of each. Windows live in
`storm_windows`, so a digest being collected survives a restart.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitor_manager.config import StormConfig
from monitor_manager.models import Message
from monitor_manager.store.records import write_digest
from monitor_manager.watch.watchdog import failing_channel

if TYPE_CHECKING:
    from monitor_manager.converge.convergence import Convergence, FlushResult


@dataclass
class Window:
    started_at: float
    count: int = 0
    digest_id: int | None = None
    failing: set[str] = field(default_factory=set)  # channels the digested pages are about


class StormControl:
    def __init__(self, config: StormConfig, convergence: Convergence) -> None:
        self.config = config
        self.convergence = convergence
        self.windows: dict[str, Window] = {}

    def admit(
        self,
        contact_group: str,
        now: float,
        result: FlushResult,
        failing: set[str] | frozenset[str] = frozenset(),
    ) -> int | None:
        """None: deliver this notification now. An id: it belongs to that digest."""
        window = self.windows.get(contact_group)
        if window is None or now >= window.started_at + self.config.window:
            if window is not None and window.digest_id is not None:
                self._close(contact_group, window, now, result)
            window = self.windows[contact_group] = Window(now)
        if window.count < self.config.threshold:
            window.count += 1
            digest_id = None
        else:
            if window.digest_id is None:
                window.digest_id = self.convergence.next_notification_id
                self.convergence.next_notification_id += 1
            digest_id = window.digest_id
            window.failing |= failing
        result.ops.append(
            (
                "INSERT OR REPLACE INTO storm_windows "
                "(contact_group, started_at, count, digest_id) VALUES (?, ?, ?, ?)",
                (contact_group, window.started_at, window.count, digest_id),
            )
        )
        return digest_id

    def close_due(self, now: float, result: FlushResult) -> None:
        for contact_group, window in list(self.windows.items()):
            if now >= window.started_at + self.config.window:
                if window.digest_id is not None:
                    self._close(contact_group, window, now, result)
                del self.windows[contact_group]
                result.ops.append(
                    ("DELETE FROM storm_windows WHERE contact_group = ?", (contact_group,))
                )

    def next_due(self) -> float:
        ends = [w.started_at + self.config.window for w in self.windows.values() if w.digest_id]
        return min(ends, default=float("inf"))

    def _close(self, contact_group: str, window: Window, now: float, result: FlushResult) -> None:
        conv = self.convergence
        assert window.digest_id is not None
        header = Message(
            id=window.digest_id,
            kind="digest",
            contact_group=contact_group,
            recipients=conv._members.get(contact_group, ()),
            groups=(),
            created_at=now,
            instance=conv.config.server.instance,
            external_url=conv.external_url,
        )
        result.ops.append(write_digest(header))
        result.notifications += 1
        conv.enqueue(header.id, contact_group, window.failing, now, result)
        window.digest_id = None
        window.failing = set()

    def load(self, conn: sqlite3.Connection) -> None:
        self.windows.clear()
        rows = conn.execute(
            "SELECT contact_group, started_at, count, digest_id FROM storm_windows"
        ).fetchall()
        for contact_group, started_at, count, digest_id in rows:
            window = Window(started_at, count, digest_id)
            if digest_id is not None:
                for (text,) in conn.execute(
                    "SELECT message FROM notifications WHERE digest_id = ?", (digest_id,)
                ):
                    for group in Message.from_json(json.loads(text)).groups:
                        window.failing.update(
                            c for a in group.alerts if (c := failing_channel(a.labels))
                        )
                self.convergence.next_notification_id = max(
                    self.convergence.next_notification_id, digest_id + 1
                )
            self.windows[contact_group] = window
