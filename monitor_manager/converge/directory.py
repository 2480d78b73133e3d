"""Who is in each contact group and through which channels it is reached."""

from __future__ import annotations

from monitor_manager.config import Config
from monitor_manager.models import Member


class Directory:
    def __init__(self, config: Config) -> None:
        self._members = {g.name: g.members for g in config.contact_groups}
        self._channels = {g.name: g.channels for g in config.contact_groups}

    def members(self, contact_group: str) -> tuple[Member, ...]:
        return self._members.get(contact_group, ())

    def channels(self, contact_group: str) -> tuple[str, ...]:
        return self._channels.get(contact_group, ())
