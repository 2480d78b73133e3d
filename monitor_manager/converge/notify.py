"""Group changes become notifications, and notifications outbox rows.

Convergence decides *that* an alert group changed in a way people must hear about; this module
decides *what* is written for it: the notification (through storm control, which may hold it
back for a digest) and one delivery row per channel of its contact group, all in the same
transaction as the decision. A page about a failing channel goes through the contact group's
other channels where it has any. With high availability, new rows wait `send_delay()` so that
instances before this one can send first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor_manager.act.links import Links, short_code
from monitor_manager.config import Config
from monitor_manager.converge.directory import Directory
from monitor_manager.converge.ids import Ids
from monitor_manager.converge.storm import Closed, Storm
from monitor_manager.models import AlertStatus, GroupView, Message, MessageKind
from monitor_manager.store import Op, deliveries, notifications
from monitor_manager.store.notifications import Draft


@dataclass(frozen=True)
class GroupChange:
    """An alert group people must hear about now, with the alerts its message shows."""

    key: str
    contact_group: str
    group_labels: dict[str, str]
    # row id, fingerprint, status, starts_at, ends_at (a stale alert: when last reported)
    alerts: tuple[tuple[int, str, AlertStatus, float, float | None], ...]
    failing: frozenset[str] = frozenset()  # channels the change's internal alerts are about
    opened_at: float = 0.0  # when the group's firing episode began (acknowledge links)
    ack: dict[str, Any] | None = None  # who acknowledged it, when, with what comment
    notify: str = ""  # the contact group told (another one for an escalation step)
    escalation: int = 0  # the escalation step this change is (0: none)
    unacknowledged_for: float = 0.0


@dataclass
class Written:
    ops: list[Op] = field(default_factory=list)
    notifications: int = 0
    deliveries: int = 0


class Notifier:
    def __init__(
        self,
        config: Config,
        ids: Ids,
        directory: Directory,
        storm: Storm,
        send_delay: Callable[[], float] = lambda: 0.0,
        group_path: Callable[[str], str] = lambda key: f"/groups/{key}",
        links: Links | None = None,
    ) -> None:
        self.instance = config.server.instance
        self.external_url = config.server.base_url
        self.ids = ids
        self.directory = directory
        self.storm = storm
        self.send_delay = send_delay  # high availability: wait for the instances before us
        self.group_path = group_path
        self.links = links  # acknowledge links: none where no key is loaded (replay)

    def message(
        self, kind: MessageKind, contact_group: str, groups: tuple[GroupView, ...], now: float
    ) -> Message:
        return Message(
            id=self.ids.notification(),
            kind=kind,
            contact_group=contact_group,
            recipients=self.directory.members(contact_group),
            groups=groups,
            created_at=now,
            instance=self.instance,
            external_url=self.external_url,
        )

    def group_changed(
        self, change: GroupChange, now: float, out: Written, announce: str = ""
    ) -> None:
        """The change's notification to the contact group it tells (another one for an
        escalation step); delivered now, or held back for a storm digest. `announce` marks
        a message that tells people what someone did ("ack"): sent now, never digested."""
        told = change.notify or change.contact_group
        header = self.message("group", told, (), now)
        if change.escalation:
            header = dataclasses.replace(
                header,
                extra={
                    "escalation": {
                        "step": change.escalation,
                        "from": change.contact_group,
                        "unacknowledged_for": change.unacknowledged_for,
                    }
                },
            )
        elif announce:
            header = dataclasses.replace(header, extra={"announce": announce})
        firing = any(a[2] == "firing" for a in change.alerts)
        ack_url = ""
        if self.links is not None and self.links.own is not None and firing:
            ack_url = f"{self.external_url}/ack/{self.links.sign(change.key, change.opened_at)}"
        draft = Draft(
            header=header,
            group_key=change.key,
            group_labels=change.group_labels,
            url=self.external_url + self.group_path(change.key),
            alerts=change.alerts,
            ack=change.ack,
            ack_url=ack_url,
            code=short_code(change.key) if firing else "",
            contact_group=change.contact_group,
        )
        digest_id = None
        if not announce:
            digest_id, closed = self.storm.admit(told, now, change.failing, out.ops)
            self._digests(closed, now, out)
        out.ops.append(notifications.write_group(draft, digest_id))
        out.notifications += 1
        if digest_id is None:
            self.deliver(draft.header.id, told, change.failing, now, out)

    def windows_closed(self, now: float, out: Written) -> None:
        """Storm windows that ended send their digests."""
        self._digests(self.storm.close_due(now, out.ops), now, out)

    def _digests(self, closed: list[Closed], now: float, out: Written) -> None:
        for window in closed:
            header = Message(
                id=window.digest_id,
                kind="digest",
                contact_group=window.contact_group,
                recipients=self.directory.members(window.contact_group),
                groups=(),
                created_at=now,
                instance=self.instance,
                external_url=self.external_url,
            )
            out.ops.append(notifications.write_digest(header))
            out.notifications += 1
            self.deliver(header.id, window.contact_group, window.failing, now, out)

    def deliver(
        self,
        notification_id: int,
        contact_group: str,
        failing: frozenset[str],
        now: float,
        out: Written,
    ) -> None:
        """One outbox row per channel of the contact group, written with the notification."""
        due = now + self.send_delay()
        channels = self.directory.channels(contact_group)
        for channel in tuple(c for c in channels if c not in failing) or channels:
            out.ops.append(
                deliveries.insert(self.ids.delivery(), notification_id, channel, due, now)
            )
            out.deliveries += 1
