"""High availability across AZs: a shared notification log, a position-based wait, fail open.

Modelled on Alertmanager's clustering, over our own HTTP API:
- every instance keeps a notification log: for each (contact group, alert group, channel) the
  latest content sent (a hash of the alert states, equal across instances) and when;
- after a delivery it pushes the entry to the reachable peers; at start-up it pulls theirs;
- a new delivery waits `position × ha.peer_wait` (position among the reachable instances,
  ordered by name), then is suppressed if the latest logged entry for its key, by whichever
  instance, has the same content and is younger than `repeat_interval`;
- a peer that cannot be reached counts for nothing: each side of a partition has its own
  position 0 and sends. A duplicate is acceptable, a missed page is not.

Protocol (JSON, `Authorization: Bearer <ha.token>`), version 1:
- `POST /api/v1/peer/nflog` body `{"version": 1, "instance": NAME, "entries": [ENTRY...]}`
- `GET /api/v1/peer/nflog?since=UNIX_SECONDS` → `{"version": 1, "instance": NAME, "entries": [...]}`
where ENTRY is `{"contact_group", "group_key", "channel", "content_hash", "sent_at",
"instance"}`. Older entries never replace newer ones, so pushes and pulls may repeat.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from monitor_manager.clock import Clock
from monitor_manager.config import Config
from monitor_manager.metrics import Metrics
from monitor_manager.peers import Peers
from monitor_manager.store import Op

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
ENTRY_FIELDS = {"contact_group": str, "group_key": str, "channel": str, "content_hash": str,
                "sent_at": float, "instance": str}
MAX_ENTRIES = 10_000  # per push or pull


@dataclass(frozen=True)
class Entry:
    contact_group: str
    group_key: str
    channel: str
    content_hash: str
    sent_at: float
    instance: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.contact_group, self.group_key, self.channel)


class EntryError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse_entries(body: Any) -> list[Entry]:
    """Validate a peer's message; EntryError names the offending field."""
    if not isinstance(body, dict):
        raise EntryError("expected a JSON object", "")
    if body.get("version") != PROTOCOL_VERSION:
        raise EntryError(f"unsupported protocol version {body.get('version')!r}, "
                         f"this instance speaks {PROTOCOL_VERSION}", "version")
    raw = body.get("entries")
    if not isinstance(raw, list):
        raise EntryError("expected an array", "entries")
    if len(raw) > MAX_ENTRIES:
        raise EntryError(f"at most {MAX_ENTRIES} entries at once", "entries")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise EntryError("expected an object", f"entries[{i}]")
        values: dict[str, Any] = {}
        for name, kind in ENTRY_FIELDS.items():
            value = item.get(name)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(value, str) and kind is str and 0 < len(value) <= 512:
                values[name] = value
            elif isinstance(value, float) and kind is float and math.isfinite(value):
                values[name] = value
            else:
                raise EntryError(f"expected a {'string' if kind is str else 'finite number'}",
                                 f"entries[{i}].{name}")
        entries.append(Entry(**values))
    return entries


class NotificationLog:
    """The latest entry per (contact group, alert group, channel), persisted."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], Entry] = {}

    def merge(self, entries: list[Entry]) -> list[Op]:
        ops: list[Op] = []
        for entry in entries:
            current = self.entries.get(entry.key)
            if current is not None and current.sent_at >= entry.sent_at:
                continue
            self.entries[entry.key] = entry
            ops.append((
                "INSERT OR REPLACE INTO nflog (contact_group, group_key, channel, content_hash, "
                "sent_at, instance) VALUES (?, ?, ?, ?, ?, ?)",
                (entry.contact_group, entry.group_key, entry.channel, entry.content_hash,
                 entry.sent_at, entry.instance)))
        return ops

    def since(self, at: float) -> list[Entry]:
        return [e for e in self.entries.values() if e.sent_at >= at]

    def expire(self, before: float) -> list[Op]:
        for key in [k for k, e in self.entries.items() if e.sent_at < before]:
            del self.entries[key]
        return [("DELETE FROM nflog WHERE sent_at < ?", (before,))]

    def load(self, conn: sqlite3.Connection) -> None:
        self.entries.clear()
        for row in conn.execute(
            "SELECT contact_group, group_key, channel, content_hash, sent_at, instance FROM nflog"
        ):
            entry = Entry(*row)
            self.entries[entry.key] = entry


class HighAvailability:
    def __init__(self, config: Config, peers: Peers, session: aiohttp.ClientSession | None,
                 clock: Clock, metrics: Metrics) -> None:
        self.config = config
        self.instance = config.server.instance
        self.peers = peers
        self.session = session
        self.clock = clock
        self.metrics = metrics
        self.log = NotificationLog()
        self.enabled = bool(config.peers)

    # -- deciding -----------------------------------------------------------------------------
    def position(self) -> int:
        members = sorted({self.instance, *self.peers.reachable()})
        return members.index(self.instance)

    def send_delay(self) -> float:
        """How long a new delivery waits so that instances before it can send first."""
        if not self.enabled:
            return 0.0
        position = self.position()
        self.metrics.ha_position.set(position)
        return position * self.config.ha.peer_wait

    def sent_by_peer(self, contact_group: str, group_key: str | None, channel: str,
                     content_hash: str, decided_at: float,
                     newer_supersedes: bool = True) -> str | None:
        """The peer that makes this delivery redundant, if any: it sent the same content
        within repeat_interval, or (`newer_supersedes`, for an alert group) it sent anything
        after this notification was decided (a newer state, such as the resolution; ours
        would arrive stale, after it). A digest is dropped only for the same content: another
        digest may stand for other alert groups."""
        if not self.enabled or group_key is None:
            return None
        entry = self.log.entries.get((contact_group, group_key, channel))
        if entry is None or entry.instance == self.instance:
            return None
        fresh = entry.sent_at > self.clock() - self.config.convergence.repeat_interval
        newer = newer_supersedes and entry.sent_at >= decided_at
        if (fresh and entry.content_hash == content_hash) or newer:
            self.metrics.ha_suppressed.inc()
            return entry.instance
        return None

    def record(self, sent: list[Entry]) -> list[Op]:
        return self.log.merge(sent)

    # -- talking to peers ----------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        token = self.config.ha.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _url(self, name: str) -> str:
        return self.peers.states[name].config.url.rstrip("/") + "/api/v1/peer/nflog"

    async def push(self, entries: list[Entry]) -> None:
        if not self.enabled or not entries or self.session is None:
            return
        body = {"version": PROTOCOL_VERSION, "instance": self.instance,
                "entries": [asdict(e) for e in entries]}
        await asyncio.gather(*(self._push_one(name, body) for name in self.peers.reachable()))

    async def _push_one(self, name: str, body: dict[str, Any]) -> None:
        assert self.session is not None
        try:
            async with self.session.post(
                    self._url(name), json=body, headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=self.config.watchdog.peer_timeout)
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
            self.metrics.ha_pushes.labels(name, "ok").inc()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.ha_pushes.labels(name, "failed").inc()
            log.info("nflog push to %s failed: %s", name, exc)

    async def pull(self) -> list[Op]:
        """At start-up: what the peers sent while this instance was away."""
        if not self.enabled or self.session is None:
            return []
        since = self.clock() - self.config.convergence.repeat_interval
        results = await asyncio.gather(*(self._pull_one(name, since)
                                         for name in self.peers.states))
        return self.log.merge([e for entries in results for e in entries])

    async def _pull_one(self, name: str, since: float) -> list[Entry]:
        assert self.session is not None
        try:
            async with self.session.get(
                    self._url(name), params={"since": str(since)}, headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=self.config.watchdog.peer_timeout)
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                entries = parse_entries(await response.json())
            self.metrics.ha_pulls.labels(name, "ok").inc()
            return entries
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.ha_pulls.labels(name, "failed").inc()
            log.info("nflog pull from %s failed: %s", name, exc)
            return []
