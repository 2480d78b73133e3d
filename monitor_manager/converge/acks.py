"""Acknowledgements: who is on an alert group, since when.

An acknowledged group does not repeat and does not escalate; a change is still sent and says
who acknowledged it and when. The acknowledgement ends when the group resolves (it applies to
the firing episode during which it was made: a group opened later needs a new one), when it is
withdrawn, or after the contact group's `ack_timeout`. Acks are shared with the peers: one per
group key, the newer change wins (ties broken by the instance's name), withdrawals included.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from typing import Any

from monitor_manager.clock import iso
from monitor_manager.store import Op
from monitor_manager.store import acks as ack_rows

VIAS = ("api", "link", "wecom", "console", "timeout", "peer")


@dataclass(frozen=True)
class Ack:
    group_key: str
    by: str
    at: float
    comment: str
    via: str
    withdrawn: bool
    updated_at: float
    origin: str  # the instance where the change was made

    def newer_than(self, other: Ack) -> bool:
        return (self.updated_at, self.origin) > (other.updated_at, other.origin)

    def to_json(self) -> dict[str, Any]:
        """As the alert-group JSON shows it (`"ack": {...}` or null)."""
        return {"by": self.by, "at": iso(self.at), "comment": self.comment, "via": self.via}

    def view(self) -> dict[str, Any]:
        """As a message carries it (times as Unix seconds for the templates' filters)."""
        return {"by": self.by, "at": self.at, "comment": self.comment, "via": self.via}


class Acks:
    def __init__(self, skew: float) -> None:
        self.skew = skew  # peers' clocks may differ this much
        self.entries: dict[str, Ack] = {}

    def current(self, group_key: str, opened_at: float) -> Ack | None:
        """The acknowledgement of this firing episode of the group, if any."""
        ack = self.entries.get(group_key)
        if ack is None or ack.withdrawn or ack.at < opened_at - self.skew:
            return None
        return ack

    def merge(self, ack: Ack) -> list[Op]:
        """Keep `ack` if it is newer than what is known (ours or a peer's); its ops."""
        known = self.entries.get(ack.group_key)
        if known is not None and not ack.newer_than(known):
            return []
        self.entries[ack.group_key] = ack
        return [ack_rows.save(ack)]

    def withdraw(self, ack: Ack, by: str, via: str, now: float, origin: str) -> Ack:
        return dataclasses.replace(
            ack, by=by, via=via, withdrawn=True, updated_at=now, origin=origin
        )

    def purge(self, before: float) -> list[Op]:
        for key in [k for k, a in self.entries.items() if a.updated_at < before]:
            del self.entries[key]
        return [ack_rows.purge(before)]

    def load(self, conn: sqlite3.Connection) -> None:
        self.entries = {row[0]: Ack(*row) for row in ack_rows.rows(conn)}
