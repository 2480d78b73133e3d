"""What people did, shared across the instances: acknowledgements, silences, escalation steps
taken, and the keys that sign acknowledge links.

An ack on instance A stops repeats and escalation on B; a silence made on B mutes on A; a link
in A's message works on B. Every object carries `updated_at` and `origin` (the instance that
last changed it): each instance keeps the newer version (ties: the greater origin name), so
after a partition both sides converge on the same state whichever heard what first. Escalation
steps only grow. Newer-wins needs agreeing clocks: peers report theirs on /healthz and a skew
beyond `ha.max_clock_skew` raises ClockSkew (watch.peers).

Protocol version 2 only (release 1 has no such state), over the same authentication as the
notification log (`Authorization: Bearer <ha.token>`):
- `POST /api/v1/peer/state` body `{"version": 2, "instance": NAME, "acks": [ACK...],
  "silences": [SILENCE...], "link_keys": [KEY...], "escalations": [STEP...]}`; answer
  `{"version": 2, "accepted": N, "rejected": R}`
- `GET /api/v1/peer/state?since=UNIX_SECONDS` → the same shape: every ack and silence changed
  since then, every link key, the escalation steps of the open groups.
ACK `{"group_key", "by", "at", "comment", "via", "withdrawn", "updated_at", "origin"}`;
SILENCE `{"id", "matchers": [{"name", "value", "isRegex", "isEqual"}], "startsAt", "endsAt",
"createdBy", "comment", "updatedAt", "origin"}` (times as Unix seconds); KEY `{"kid", "key",
"created_at"}`; STEP `{"group_key", "escalated", "first_notified_at"}`.

Changes are pushed after each commit to the reachable peers that speak version 2, and pulled
from every peer at start-up and after every peer probe (since the last pull that worked, less
the allowed skew), so a change a partition kept from a peer reaches it when the partition heals.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from monitor_manager.act.links import LinkKey, Links
from monitor_manager.clock import Clock
from monitor_manager.cluster.ha import EntryError, peer_get, peer_post
from monitor_manager.config import Config
from monitor_manager.converge.acks import VIAS, Ack
from monitor_manager.converge.convergence import Convergence
from monitor_manager.converge.matchers import Matcher, MatcherError
from monitor_manager.converge.silences import Silence
from monitor_manager.metrics import Metrics
from monitor_manager.store import Op
from monitor_manager.store import groups as group_rows
from monitor_manager.watch.peers import Peers
from monitor_manager.web.bodies import BodyError

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSION = 2
STATE_PATH = "/api/v1/peer/state"
MAX_OBJECTS = 10_000  # of each kind, per push or pull
_GROUP_KEY = re.compile(r"[0-9a-f]{16}")
_MAX_TEXT = 4096


@dataclass
class Shared:
    """Changes to tell the peers."""

    acks: list[Ack] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    escalations: list[tuple[str, int, float]] = field(default_factory=list)
    link_keys: list[LinkKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.acks or self.silences or self.escalations or self.link_keys)

    def wire(self, instance: str) -> dict[str, Any]:
        return {
            "version": VERSION,
            "instance": instance,
            "acks": [ack_wire(a) for a in self.acks],
            "silences": [silence_wire(s) for s in self.silences],
            "link_keys": [Links.key_wire(k) for k in self.link_keys],
            "escalations": [
                {"group_key": k, "escalated": n, "first_notified_at": t}
                for k, n, t in self.escalations
            ],
        }


def ack_wire(ack: Ack) -> dict[str, Any]:
    return {
        "group_key": ack.group_key,
        "by": ack.by,
        "at": ack.at,
        "comment": ack.comment,
        "via": ack.via,
        "withdrawn": ack.withdrawn,
        "updated_at": ack.updated_at,
        "origin": ack.origin,
    }


def silence_wire(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [
            {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
            for m in s.matchers
        ],
        "startsAt": s.starts_at,
        "endsAt": s.ends_at,
        "createdBy": s.created_by,
        "comment": s.comment,
        "updatedAt": s.updated_at,
        "origin": s.origin,
    }


# -- reading a peer's message ------------------------------------------------------------------
def parse_state(body: Any) -> tuple[str, Shared]:
    """(sending instance, its changes), checked for shape; whom to believe is `accept`'s."""
    if not isinstance(body, dict):
        raise EntryError("expected a JSON object", "")
    if body.get("version") != VERSION or isinstance(body.get("version"), bool):
        raise EntryError(
            f"unsupported state protocol version, this instance speaks {VERSION}", "version"
        )
    instance = body.get("instance")
    if not isinstance(instance, str) or not 0 < len(instance) <= 256:
        raise EntryError("expected the sending instance's name", "instance")
    return instance, Shared(
        acks=_items(body, "acks", _ack),
        silences=_items(body, "silences", _silence),
        escalations=_items(body, "escalations", _step),
        link_keys=_items(body, "link_keys", _link_key),
    )


def _items(body: dict[str, Any], name: str, parse: Callable[[dict[str, Any], str], T]) -> list[T]:
    raw = body.get(name, [])
    if not isinstance(raw, list):
        raise EntryError("expected an array", name)
    if len(raw) > MAX_OBJECTS:
        raise EntryError(f"at most {MAX_OBJECTS} at once", name)
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise EntryError("expected an object", f"{name}[{i}]")
        out.append(parse(item, f"{name}[{i}]"))
    return out


def _text(item: dict[str, Any], key: str, path: str, empty: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or len(value) > _MAX_TEXT or (not value and not empty):
        raise EntryError("expected a string", f"{path}.{key}")
    return value


def _time(item: dict[str, Any], key: str, path: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EntryError("expected a finite number", f"{path}.{key}")
    return float(value)


def _group_key(item: dict[str, Any], path: str) -> str:
    key = _text(item, "group_key", path)
    if not _GROUP_KEY.fullmatch(key):
        raise EntryError("expected an alert group key", f"{path}.group_key")
    return key


def _ack(item: dict[str, Any], path: str) -> Ack:
    via = _text(item, "via", path)
    if via not in VIAS:
        raise EntryError(f"expected one of {', '.join(VIAS)}", f"{path}.via")
    withdrawn = item.get("withdrawn")
    if not isinstance(withdrawn, bool):
        raise EntryError("expected true or false", f"{path}.withdrawn")
    return Ack(
        _group_key(item, path),
        _text(item, "by", path)[:256],
        _time(item, "at", path),
        _text(item, "comment", path, empty=True),
        via,
        withdrawn,
        _time(item, "updated_at", path),
        _text(item, "origin", path),
    )


def _silence(item: dict[str, Any], path: str) -> Silence:
    raw = item.get("matchers")
    if not isinstance(raw, list) or not 0 < len(raw) <= 64:
        raise EntryError("expected 1 to 64 matchers", f"{path}.matchers")
    matchers = []
    for i, m in enumerate(raw):
        where = f"{path}.matchers[{i}]"
        if not isinstance(m, dict) or not all(
            isinstance(m.get(k), bool) for k in ("isRegex", "isEqual")
        ):
            raise EntryError("expected a matcher", where)
        try:
            matchers.append(
                Matcher(
                    _text(m, "name", where),
                    _text(m, "value", where, True),
                    m["isRegex"],
                    m["isEqual"],
                )
            )
        except MatcherError as exc:
            raise EntryError(exc.message, where) from None
    starts, ends = _time(item, "startsAt", path), _time(item, "endsAt", path)
    if ends < starts:
        raise EntryError("ends before it starts", f"{path}.endsAt")
    return Silence(
        _text(item, "id", path)[:256],
        tuple(matchers),
        starts,
        ends,
        _text(item, "createdBy", path),
        _text(item, "comment", path, empty=True),
        _time(item, "updatedAt", path),
        _text(item, "origin", path),
    )


def _link_key(item: dict[str, Any], path: str) -> LinkKey:
    key = Links.parse_shared(item)
    if key is None:
        raise EntryError("expected a link key", path)
    return key


def _step(item: dict[str, Any], path: str) -> tuple[str, int, float]:
    steps = item.get("escalated")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 1000:
        raise EntryError("expected a whole number of steps", f"{path}.escalated")
    return _group_key(item, path), steps, _time(item, "first_notified_at", path)


# -- the instance's side -------------------------------------------------------------------------
class SharedState:
    def __init__(
        self,
        config: Config,
        convergence: Convergence,
        links: Links,
        peers: Peers,
        session: aiohttp.ClientSession | None,
        clock: Clock,
        metrics: Metrics,
        load: Callable[[], Awaitable[None]],
        write: Callable[[list[Op]], Awaitable[None]],
    ) -> None:
        self.config = config
        self.instance = config.server.instance
        self.convergence = convergence
        self.links = links
        self.peers = peers
        self.session = session
        self.clock = clock
        self.metrics = metrics
        self.load = load  # memory rebuilt from the store first, if a commit failed
        self.write = write
        self.enabled = bool(config.peers) and bool(config.ha.token)
        self._pulled: dict[str, float] = {}  # peer -> when the last pull that worked began
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what a peer tells ------------------------------------------------------------------
    def accept(self, sender: str, shared: Shared) -> tuple[list[Op], int, int]:
        """Merge what a peer told, as far as it may tell it: (ops, accepted, rejected).
        Objects from unknown origins, dated beyond now plus `ha.max_clock_skew`, or keys in
        this instance's own name are dropped."""
        now = self.clock()
        latest = now + self.config.ha.max_clock_skew
        known = set(self.peers.states) | {self.instance}
        ops: list[Op] = []
        accepted = rejected = 0
        touched: list[str] = []

        def fine(origin: str, at: float) -> bool:
            nonlocal accepted, rejected
            ok = origin in known and at <= latest
            accepted += ok
            rejected += not ok
            return ok

        for ack in shared.acks:
            if fine(ack.origin, ack.updated_at):
                merged = self.convergence.acks.merge(ack)
                ops += merged
                if merged:
                    touched.append(ack.group_key)
        for silence in shared.silences:
            if fine(silence.origin, silence.updated_at):
                ops += self.convergence.muting.merge(silence)
        for key in shared.link_keys:
            owner = key.kid.partition(":")[0]
            if owner == self.instance:
                continue  # ours, relayed back; never a key in our name from elsewhere
            if fine(owner, key.created_at):
                ops += self.links.add(key)
        for group_key, steps, first in shared.escalations:
            group = self.convergence.groups.get(group_key)
            accepted += 1
            if group is not None and steps > group.escalated:
                group.escalated = steps  # a step a peer took is not taken again here
                if group.first_notified_at is None or first < group.first_notified_at:
                    group.first_notified_at = first
                ops.append(group_rows.upsert(group, now))
        # An acknowledgement withdrawn (or ended) elsewhere: repeats and escalation resume.
        ops += self.convergence.touch(touched, now)
        if rejected:
            self.metrics.ha_rejected.inc(rejected)
        return ops, accepted, rejected

    def since(self, at: float) -> Shared:
        """What a peer pulling asks for: changes since `at`, every key, the open groups'
        escalation steps."""
        return Shared(
            acks=[a for a in self.convergence.acks.entries.values() if a.updated_at >= at],
            silences=[s for s in self.convergence.muting.silences.values() if s.updated_at >= at],
            escalations=[
                (g.key, g.escalated, g.first_notified_at or 0.0)
                for g in self.convergence.groups.values()
                if g.escalated
            ],
            link_keys=list(self.links.keys.values()),
        )

    # -- telling the peers ------------------------------------------------------------------
    def _speakers(self, names: list[str]) -> list[str]:
        return [n for n in names if self.peers.states[n].protocol >= VERSION]

    def push(self, shared: Shared) -> None:
        """After a commit: tell the reachable peers, in the background (the caller's answer
        does not wait for another AZ)."""
        if not self.enabled or not shared or self.session is None:
            return
        task = asyncio.create_task(self._push(shared))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, shared: Shared) -> None:
        body = shared.wire(self.instance)
        await asyncio.gather(
            *(self._push_one(n, body) for n in self._speakers(self.peers.reachable()))
        )

    async def _push_one(self, name: str, body: dict[str, Any]) -> None:
        assert self.session is not None
        try:
            await peer_post(self.session, self.config, self.peers, name, STATE_PATH, body)
            self.metrics.ha_pushes.labels(name, "ok").inc()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.ha_pushes.labels(name, "failed").inc()
            log.info("state push to %s failed: %s", name, exc)

    async def pull(self) -> None:
        """From every peer that speaks version 2: what changed since the last pull that
        worked (everything, the first time). Merged and committed here."""
        if not self.enabled or self.session is None:
            return
        names = self._speakers(list(self.peers.states))
        started = self.clock()
        answers = await asyncio.gather(*(self._pull_one(n) for n in names))
        await self.load()
        ops: list[Op] = []
        for name, shared in zip(names, answers, strict=True):
            if shared is not None:
                ops += self.accept(name, shared)[0]
        if ops:
            await self.write(ops)  # StoreError: nothing is marked pulled, all comes again
        # Marked only once committed: a pull whose commit failed (a read-only store) had
        # lost a silence made meanwhile for good, and its alerts were paged until it ended.
        for name, shared in zip(names, answers, strict=True):
            if shared is not None:
                self._pulled[name] = started

    async def _pull_one(self, name: str) -> Shared | None:
        assert self.session is not None
        since = self._pulled.get(name, 0.0) - 2 * self.config.ha.max_clock_skew
        try:
            params = {"since": repr(max(since, 0.0))}
            answer = await peer_get(self.session, self.config, self.peers, name, STATE_PATH, params)
            sender, shared = parse_state(answer)
            if sender != name:
                raise ValueError(f"answered as {sender[:60]!r}")
        except (aiohttp.ClientError, TimeoutError, ValueError, BodyError) as exc:
            self.metrics.ha_pulls.labels(name, "failed").inc()
            log.info("state pull from %s failed: %s", name, exc)
            return None
        self.metrics.ha_pulls.labels(name, "ok").inc()
        return shared

    async def drain(self) -> None:
        """Shutdown: let pushes in flight finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
