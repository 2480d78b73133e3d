"""High availability across AZs: a shared notification log, a position-based wait, fail open.

Modelled on Alertmanager's clustering, over our own HTTP API:
- every instance keeps a notification log: for each (contact group, alert group, channel) the
  latest content sent (a hash of the alert states, equal across instances) and when;
- after a delivery it pushes the entry to the reachable peers; at start-up it pulls theirs;
- a new delivery waits `position × ha.peer_wait` (position among the reachable instances,
  ordered by name), then is suppressed if the latest logged entry for its key, by a peer that
  is reachable now, has the same content and is younger than `repeat_interval`;
- a peer that cannot be reached counts for nothing: each side of a partition has its own
  position 0 and sends. A duplicate is acceptable, a missed page is not.

Trust: an entry suppresses a page, so the protocol is closed without `ha.token` (the service
then runs with peering off and says so), takes entries only from configured peer names, each
about a configured contact group and channel, and never dated beyond now plus
`ha.max_clock_skew`.

Protocol (JSON, `Authorization: Bearer <ha.token>`):
- `POST /api/v1/peer/nflog` body `{"version": V, "instance": NAME, "entries": [ENTRY...]}`;
  answer `{"version": V, "accepted": N, "rejected": R}`
- `GET /api/v1/peer/nflog?since=UNIX_SECONDS&version=2` → `{"version": V, "instance": NAME,
  "entries": [...]}`
Version 2 (release 2): ENTRY is `{"contact_group", "group_key", "channel", "content_hash",
"sent_at", "instance", "v1_group_key", "v1_content_hash"}`, keys and hashes in release 2's
unambiguous encoding, plus the release-1 words for the same content. Version 1 (release 1):
the first six fields, in release-1 words. An instance advertises the highest version it speaks
in `/healthz` (`"peer_protocol"`); it pushes version 1 to a peer that does not, and answers a
pull in version 1 unless asked for 2, so release-1 and release-2 instances side by side during
a rolling upgrade still send each page once. Older entries never replace newer ones, so pushes
and pulls may repeat.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import aiohttp

from monitor_manager.clock import Clock
from monitor_manager.config import Config
from monitor_manager.metrics import Metrics
from monitor_manager.store import Op
from monitor_manager.watch.peers import Peers
from monitor_manager.web.bodies import BodyError, read_answer

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_ENTRIES = 10_000  # per push or pull
DIGEST_LOG_KEY = "digest"  # never an alert group's key (16 hex digits)
REPORT_LOG_KEY = "report"  # the daily report (watch/report.py); release 1 never sends one
# Announcements (an acknowledgement told to its group) are told by one instance and compared
# with nothing; peers log them only to count their requests in the platforms' rate limits.
ANNOUNCE_LOG_KEY = "announce"
_LOG_KEY = re.compile(r"[0-9a-f]{16}|digest|report|announce")
_HASH = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Entry:
    contact_group: str
    group_key: str
    channel: str
    content_hash: str
    sent_at: float
    instance: str
    v1_group_key: str = ""  # the same, in release-1 words (empty in an entry that is v1)
    v1_content_hash: str = ""
    # Requests the send made per recipient (its parts): platforms that limit messages per
    # member or robot count every instance's (optional on the wire: 1 when absent).
    calls: int = 1

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.contact_group, self.group_key, self.channel)

    def as_v1(self) -> Entry | None:
        if not self.v1_group_key:
            return None
        return Entry(
            self.contact_group,
            self.v1_group_key,
            self.channel,
            self.v1_content_hash,
            self.sent_at,
            self.instance,
        )

    def wire(self, version: int) -> dict[str, Any]:
        body = asdict(self)
        if version == 1:
            del body["v1_group_key"], body["v1_content_hash"], body["calls"]
        return body


_V1_FIELDS = ("contact_group", "group_key", "channel", "content_hash", "sent_at", "instance")
_V2_FIELDS = tuple(f.name for f in fields(Entry) if f.name != "calls")
MAX_CALLS = 100


class EntryError(ValueError):
    """A peer's message (notification log or shared state) is malformed (answered 400);
    `field` names where."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class PeerMessage:
    version: int
    instance: str
    entries: list[Entry]


def parse_message(body: Any) -> PeerMessage:
    """A peer's push or pull answer, checked for shape; what it may tell is `accept`'s."""
    if not isinstance(body, dict):
        raise EntryError("expected a JSON object", "")
    version = body.get("version")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise EntryError(
            f"unsupported protocol version {str(version)[:20]!r}, this instance "
            f"speaks {', '.join(map(str, SUPPORTED_VERSIONS))}",
            "version",
        )
    instance = body.get("instance")
    if not isinstance(instance, str) or not 0 < len(instance) <= 256:
        raise EntryError("expected the sending instance's name", "instance")
    raw = body.get("entries")
    if not isinstance(raw, list):
        raise EntryError("expected an array", "entries")
    if len(raw) > MAX_ENTRIES:
        raise EntryError(f"at most {MAX_ENTRIES} entries at once", "entries")
    names = _V1_FIELDS if version == 1 else _V2_FIELDS
    return PeerMessage(version, instance, [_entry(item, i, names) for i, item in enumerate(raw)])


def _entry(item: Any, i: int, names: tuple[str, ...]) -> Entry:
    if not isinstance(item, dict):
        raise EntryError("expected an object", f"entries[{i}]")
    values: dict[str, Any] = {}
    for name in names:
        value = item.get(name)
        if name == "sent_at":
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, float) or not math.isfinite(value):
                raise EntryError("expected a finite number", f"entries[{i}].{name}")
        elif (
            not isinstance(value, str)
            or len(value) > 512
            or (not value and not name.startswith("v1_"))
        ):
            raise EntryError("expected a string", f"entries[{i}].{name}")
        values[name] = value
    calls = item.get("calls", 1)
    if not isinstance(calls, int) or isinstance(calls, bool) or not 1 <= calls <= MAX_CALLS:
        raise EntryError(f"expected a whole number from 1 to {MAX_CALLS}", f"entries[{i}].calls")
    return Entry(**values, calls=calls)


NFLOG_PATH = "/api/v1/peer/nflog"
ANSWER_LIMIT = 16 << 20  # MAX_ENTRIES entries of a few hundred bytes, or the shared state


async def peer_post(
    session: aiohttp.ClientSession, config: Config, peers: Peers, name: str, path: str, body: Any
) -> None:
    """POST `body` to a peer with ha.token, its certificate checked; ValueError unless 200."""
    async with session.post(
        peers.states[name].config.url.rstrip("/") + path,
        json=body,
        headers={"Authorization": f"Bearer {config.ha.token}"},
        timeout=aiohttp.ClientTimeout(total=config.watchdog.peer_timeout),
        ssl=peers.ssl,
    ) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")


async def peer_get(
    session: aiohttp.ClientSession,
    config: Config,
    peers: Peers,
    name: str,
    path: str,
    params: dict[str, str],
) -> Any:
    """GET a peer's JSON answer (bounded, strict UTF-8); ValueError or BodyError when bad."""
    async with session.get(
        peers.states[name].config.url.rstrip("/") + path,
        headers={"Authorization": f"Bearer {config.ha.token}"},
        params=params,
        timeout=aiohttp.ClientTimeout(total=config.watchdog.peer_timeout),
        ssl=peers.ssl,
    ) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        return await read_answer(response, ANSWER_LIMIT)


class NotificationLog:
    """The latest entry per (contact group, alert group, channel), persisted: `entries` in
    release 2's words (our own sends and release-2 peers'), `legacy` as release-1 peers told
    them."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.legacy: dict[tuple[str, str, str], Entry] = {}

    def merge(self, entries: list[Entry], *, legacy: bool = False) -> list[Op]:
        log_ = self.legacy if legacy else self.entries
        table = "nflog_v1" if legacy else "nflog"
        ops: list[Op] = []
        for entry in entries:
            current = log_.get(entry.key)
            if current is not None and current.sent_at >= entry.sent_at:
                continue
            log_[entry.key] = entry
            if legacy:
                ops.append(
                    (
                        f"INSERT OR REPLACE INTO {table} (contact_group, group_key, channel, "
                        "content_hash, sent_at, instance) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            entry.contact_group,
                            entry.group_key,
                            entry.channel,
                            entry.content_hash,
                            entry.sent_at,
                            entry.instance,
                        ),
                    )
                )
            else:
                ops.append(
                    (
                        f"INSERT OR REPLACE INTO {table} (contact_group, group_key, channel, "
                        "content_hash, sent_at, instance, v1_group_key, v1_content_hash) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            entry.contact_group,
                            entry.group_key,
                            entry.channel,
                            entry.content_hash,
                            entry.sent_at,
                            entry.instance,
                            entry.v1_group_key,
                            entry.v1_content_hash,
                        ),
                    )
                )
        return ops

    def since(self, at: float, version: int) -> list[Entry]:
        if version != 1:
            return [e for e in self.entries.values() if e.sent_at >= at]
        latest: dict[tuple[str, str, str], Entry] = {}
        for entry in [*self.legacy.values(), *(e.as_v1() for e in self.entries.values())]:
            if (
                entry is not None
                and entry.sent_at >= at
                and (entry.key not in latest or latest[entry.key].sent_at < entry.sent_at)
            ):
                latest[entry.key] = entry
        return list(latest.values())

    def expire(self, before: float) -> list[Op]:
        for log_ in (self.entries, self.legacy):
            for key in [k for k, e in log_.items() if e.sent_at < before]:
                del log_[key]
        return [
            ("DELETE FROM nflog WHERE sent_at < ?", (before,)),
            ("DELETE FROM nflog_v1 WHERE sent_at < ?", (before,)),
        ]

    def load(self, conn: sqlite3.Connection) -> None:
        self.entries.clear()
        self.legacy.clear()
        for row in conn.execute(
            "SELECT contact_group, group_key, channel, content_hash, sent_at, instance, "
            "v1_group_key, v1_content_hash FROM nflog"
        ):
            entry = Entry(*row)
            self.entries[entry.key] = entry
        for row in conn.execute(
            "SELECT contact_group, group_key, channel, content_hash, sent_at, instance "
            "FROM nflog_v1"
        ):
            entry = Entry(*row)
            self.legacy[entry.key] = entry


class HighAvailability:
    def __init__(
        self,
        config: Config,
        peers: Peers,
        session: aiohttp.ClientSession | None,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.instance = config.server.instance
        self.peers = peers
        self.session = session
        self.clock = clock
        self.metrics = metrics
        self.log = NotificationLog()
        self.ssl = peers.ssl
        # Without a token anyone could silence every page: peering stays off, the instance
        # sends alone as in a partition (the watchdog pages PeeringDisabled meanwhile).
        self.enabled = bool(config.peers) and bool(config.ha.token)
        self._contact_groups = {g.name for g in config.contact_groups}
        self._channels = {c.name for c in config.channels}
        # Told of every peer send this instance learns (new entries only): rate limits the
        # platforms count across callers (build.py hands them to the channels).
        self.on_peer_sends: Callable[[list[Entry]], None] = lambda entries: None
        # What each peer has not been told yet (a failed push, or unreachable): newest per key.
        self._owed: dict[str, dict[tuple[str, str, str], Entry]] = {}
        self._push_locks: dict[str, asyncio.Lock] = {}

    # -- deciding -----------------------------------------------------------------------------
    def position(self) -> int:
        """This instance's place among those that can send now: a peer whose store fails
        would hold every send back by its peer_wait, then all the others send at once."""
        members = sorted({self.instance, *self.peers.senders()})
        return members.index(self.instance)

    def publish_position(self) -> None:
        """The position gauge after each round of peer probes, so that it follows the peers
        between sends too (0 while peering is off: this instance sends at once)."""
        self.metrics.ha_position.set(self.position() if self.enabled else 0)

    def send_delay(self) -> float:
        """How long a new delivery waits so that instances before it can send first."""
        if not self.enabled:
            return 0.0
        position = self.position()
        self.metrics.ha_position.set(position)
        return position * self.config.ha.peer_wait

    def sent_by_peer(
        self, entry: Entry, decided_at: float, newer_supersedes: bool = True
    ) -> str | None:
        """The peer that makes this delivery (`entry`, as it would be logged) redundant: it
        sent the same content within repeat_interval, or (`newer_supersedes`, for an alert
        group) it sent anything after this notification was decided (a newer state, such as
        the resolution; ours would arrive stale, after it). A digest is dropped only for the
        same content: another digest may stand for other alert groups. Only peers reachable
        now count: what an unreachable peer logged proves nothing about a send."""
        if not self.enabled:
            return None
        v1 = entry.as_v1()
        candidates = [(self.log.entries.get(entry.key), entry.content_hash)]
        if v1 is not None and self.log.legacy:
            candidates.append((self.log.legacy.get(v1.key), v1.content_hash))
        fresh_after = self.clock() - self.config.convergence.repeat_interval
        reachable = set(self.peers.reachable())
        for logged, content_hash in candidates:
            if logged is None or logged.instance not in reachable:
                continue
            fresh = logged.sent_at > fresh_after
            newer = newer_supersedes and logged.sent_at >= decided_at
            if (fresh and logged.content_hash == content_hash) or newer:
                self.metrics.ha_suppressed.inc()
                return logged.instance
        return None

    def record(self, sent: list[Entry]) -> list[Op]:
        return self.log.merge(sent)

    def accept(self, message: PeerMessage, *, pushed: bool) -> tuple[list[Op], int, int]:
        """What a peer told, as far as it may tell it: (ops, accepted, rejected).

        A push carries the sender's own sends only; a pull answer may relay other peers'.
        Entries about a contact group or channel this instance does not have, in an unknown
        key format, from an instance that is not a configured peer, or dated beyond now plus
        `ha.max_clock_skew` (or older than the log keeps) are dropped and counted."""
        now = self.clock()
        latest = now + self.config.ha.max_clock_skew
        oldest = now - 2 * self.config.convergence.repeat_interval
        peers = set(self.peers.states)
        good = [
            e
            for e in message.entries
            if (e.instance == message.instance if pushed else e.instance in peers)
            and e.instance in peers
            and oldest <= e.sent_at <= latest
            and e.contact_group in self._contact_groups
            and e.channel in self._channels
            and _LOG_KEY.fullmatch(e.group_key)
            and _HASH.fullmatch(e.content_hash)
            and (
                not e.v1_group_key
                or (_LOG_KEY.fullmatch(e.v1_group_key) and _HASH.fullmatch(e.v1_content_hash))
            )
        ]
        rejected = len(message.entries) - len(good)
        if rejected:
            self.metrics.ha_rejected.inc(rejected)
        log_ = self.log.legacy if message.version == 1 else self.log.entries
        new = [e for e in good if e.key not in log_ or log_[e.key].sent_at < e.sent_at]
        ops = self.log.merge(good, legacy=message.version == 1)
        if new:
            self.on_peer_sends(new)
        return ops, len(good), rejected

    # -- talking to peers ----------------------------------------------------------------------

    async def push(self, entries: list[Entry]) -> None:
        """Tell every peer what was just sent: the reachable ones now, the others once they
        answer a probe again (`flush`). A push that fails is kept and sent with the next one:
        a peer that misses an entry would send the same page, and count nothing of it in the
        platforms' rate limits."""
        if not self.enabled or not entries or self.session is None:
            return
        for name in self.peers.states:
            owed = self._owed.setdefault(name, {})
            for entry in entries:
                current = owed.get(entry.key)
                if current is None or current.sent_at <= entry.sent_at:
                    owed[entry.key] = entry
            if len(owed) > MAX_ENTRIES:  # the oldest matter least (and expire first)
                for entry in sorted(owed.values(), key=lambda e: e.sent_at)[:-MAX_ENTRIES]:
                    del owed[entry.key]
        await self.flush()

    async def flush(self) -> None:
        """Push each reachable peer what it is still owed (after a send, after each round of
        probes: a peer that was unreachable learns what it missed)."""
        if not self.enabled or self.session is None:
            return
        await asyncio.gather(
            *(self._flush_one(name) for name in self.peers.reachable() if self._owed.get(name))
        )

    async def _flush_one(self, name: str) -> None:
        lock = self._push_locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            return  # a push to it is under way; it takes what arrived meanwhile too
        async with lock:
            owed = self._owed[name]
            oldest = self.clock() - 2 * self.config.convergence.repeat_interval
            while owed:
                entries = [e for e in owed.values() if e.sent_at >= oldest]
                if not entries or not await self._push_one(name, entries):
                    if not entries:
                        owed.clear()
                    return
                for entry in entries:
                    if owed.get(entry.key) is entry:  # not replaced by a newer one meanwhile
                        del owed[entry.key]

    async def _push_one(self, name: str, entries: list[Entry]) -> bool:
        assert self.session is not None
        # A peer that has not said it speaks version 2 (a release-1 instance) gets version 1.
        version = min(self.peers.states[name].protocol, PROTOCOL_VERSION)
        wire = [e if version != 1 else e.as_v1() for e in entries]
        body = {
            "version": version,
            "instance": self.instance,
            "entries": [e.wire(version) for e in wire if e is not None],
        }
        try:
            await peer_post(self.session, self.config, self.peers, name, NFLOG_PATH, body)
            self.metrics.ha_pushes.labels(name, "ok").inc()
            return True
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.ha_pushes.labels(name, "failed").inc()
            log.info("nflog push to %s failed: %s", name, exc)
            return False

    async def pull(self) -> list[Op]:
        """At start-up: what the peers sent while this instance was away."""
        if not self.enabled or self.session is None:
            return []
        since = self.clock() - self.config.convergence.repeat_interval
        results = await asyncio.gather(*(self._pull_one(name, since) for name in self.peers.states))
        return [op for ops in results for op in ops]

    async def _pull_one(self, name: str, since: float) -> list[Op]:
        assert self.session is not None
        try:
            params = {"since": str(since), "version": str(PROTOCOL_VERSION)}
            answer = await peer_get(self.session, self.config, self.peers, name, NFLOG_PATH, params)
            message = parse_message(answer)
            ops, _, _ = self.accept(message, pushed=False)
            self.metrics.ha_pulls.labels(name, "ok").inc()
            return ops
        except (aiohttp.ClientError, TimeoutError, ValueError, BodyError) as exc:
            self.metrics.ha_pulls.labels(name, "failed").inc()
            log.info("nflog pull from %s failed: %s", name, type(exc).__name__)
            return []
