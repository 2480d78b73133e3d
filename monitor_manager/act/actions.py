"""What people do to a page: acknowledge it, withdraw the acknowledgement, silence alerts.

Every way in (the API, a signed link, a WeCom reply, the console, amtool) ends here, so the
rules are the same whichever way a person comes: validate first and change nothing on bad
input; change memory and write the change with its audit row in one commit; announce an
acknowledgement once to its contact group; tell the peers (cluster.shared).
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitor_manager.cluster.shared import Shared
from monitor_manager.converge.acks import Ack
from monitor_manager.converge.convergence import Group
from monitor_manager.converge.notify import Written
from monitor_manager.converge.silences import (
    Silence,
    SilenceNotFound,
    apply_update,
    expire,
    mutes_internal,
    parse_postable,
)
from monitor_manager.pipeline import Pipeline
from monitor_manager.store import Op, audit

MAX_BY = 256
MAX_COMMENT = 4096


class ActionError(ValueError):
    """A change refused: `status` is the HTTP answer (400 bad input, 404 no such group, 409 it
    resolved), `field` what was wrong; str() says it for a person."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Actor:
    """Who made a change, and through what (api, link, wecom, console, amtool)."""

    name: str
    via: str


def person(value: Any, field: str = "by") -> str:
    """A person's name as given in a form or a body: a short line of printable text."""
    if not isinstance(value, str) or not value.strip():
        raise ActionError(400, "say who you are", field)
    value = value.strip()
    if len(value) > MAX_BY:
        raise ActionError(400, f"at most {MAX_BY} characters", field)
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ActionError(400, "must not contain control characters", field)
    return value


def comment_text(value: Any, field: str = "comment") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ActionError(400, "expected a string", field)
    if len(value) > MAX_COMMENT:
        raise ActionError(400, f"at most {MAX_COMMENT} characters", field)
    if any(unicodedata.category(c) == "Cs" for c in value):
        raise ActionError(400, "not valid UTF-8", field)
    # Line breaks and tabs are kept; other control characters never reach a message.
    return "".join(c for c in value if c in "\n\t" or unicodedata.category(c) != "Cc").strip()


class Actions:
    def __init__(
        self,
        pipeline: Pipeline,
        on_shared: Callable[[Shared], None] = lambda shared: None,
    ) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self.convergence = pipeline.convergence
        self.instance = pipeline.config.server.instance
        self.on_shared = on_shared  # the peers hear of it after the commit

    # -- acknowledgements ------------------------------------------------------------------
    def firing_group(self, key: str, opened_at: float | None = None) -> Group:
        """The open, firing alert group `key` (of the episode opened at `opened_at`)."""
        group = self.convergence.groups.get(key)
        if group is None or (opened_at is not None and abs(group.created_at - opened_at) > 1e-3):
            raise ActionError(404, "this alert group is not open: it has resolved", "key")
        if not self.convergence.fires(group):
            raise ActionError(409, "this alert group has resolved", "key")
        return group

    def current_ack(self, group: Group) -> Ack | None:
        return self.convergence.acks.current(group.key, group.created_at)

    async def acknowledge(
        self, key: str, actor: Actor, comment: str = "", opened_at: float | None = None
    ) -> tuple[Ack, bool]:
        """Acknowledge the firing group: (the acknowledgement, whether it is new). A group
        already acknowledged stays as it was (a second click, a second reply)."""
        await self.pipeline.load()
        group = self.firing_group(key, opened_at)
        known = self.current_ack(group)
        if known is not None:
            return known, False
        now = self.pipeline.clock()
        stamp = self._stamp(self.convergence.acks.entries.get(key), now)
        ack = Ack(key, actor.name, now, comment, actor.via, False, stamp, self.instance)
        written = Written(ops=self.convergence.acks.merge(ack))
        written.ops += self.convergence.touch([key], now)  # its timers: see ack_timeout
        written.ops.append(self._audit(now, actor, "ack", key, comment))
        # Announced once, to the contact group, so the others know someone is on it.
        change = self.convergence.announcement(group, ack)
        if change is not None:
            self.pipeline.notifier.group_changed(change, now, written, announce="ack")
        await self._commit(written)
        self.pipeline.metrics.acks.labels(actor.via).inc()
        self.on_shared(Shared(acks=[ack]))
        return ack, True

    async def unacknowledge(self, key: str, actor: Actor) -> Ack:
        """Withdraw the acknowledgement of the group: it repeats and escalates again."""
        await self.pipeline.load()
        group = self.firing_group(key)
        known = self.current_ack(group)
        if known is None:
            raise ActionError(409, "this alert group is not acknowledged", "key")
        now = self.pipeline.clock()
        withdrawn = self.convergence.acks.withdraw(
            known, actor.name, actor.via, self._stamp(known, now), self.instance
        )
        ops = self.convergence.acks.merge(withdrawn)
        ops += self.convergence.touch([key], now)  # repeats and escalation are due again
        ops.append(self._audit(now, actor, "unack", key, f"acknowledged by {known.by}"))
        await self._commit(Written(ops=ops))
        self.on_shared(Shared(acks=[withdrawn]))
        return withdrawn

    # -- silences ----------------------------------------------------------------------------
    async def save_silence(self, body: Any, actor: Actor) -> Silence:
        """POST /api/v2/silences: create, or update by id (SilenceError, SilenceNotFound)."""
        await self.pipeline.load()
        now = self.pipeline.clock()
        postable = parse_postable(body, now, self.config.silences.max_duration)
        muting = self.convergence.muting
        existing = None
        if postable.id is not None:
            existing = muting.silences.get(postable.id)
            if existing is None:
                raise SilenceNotFound(postable.id)
        stored = [
            dataclasses.replace(
                s, origin=self.instance, updated_at=self._stamp(muting.silences.get(s.id), now)
            )
            for s in apply_update(existing, postable, now)
        ]
        ops: list[Op] = []
        for silence in stored:
            ops += muting.merge(silence)
        saved = stored[-1]
        action = "silence.update" if existing is not None and saved.id == existing.id else "silence"
        detail = describe_silence(saved)
        ops.append(self._audit(now, actor, action, saved.id, detail))
        await self._commit(Written(ops=ops))
        self.on_shared(Shared(silences=stored))
        return saved

    async def expire_silence(self, silence_id: str, actor: Actor) -> Silence:
        await self.pipeline.load()
        muting = self.convergence.muting
        known = muting.silences.get(silence_id)
        if known is None:
            raise SilenceNotFound(silence_id)
        now = self.pipeline.clock()
        ended = expire(known, now)
        if ended is known:
            return known  # expired already: nothing changes, nothing to record
        ended = dataclasses.replace(ended, origin=self.instance, updated_at=self._stamp(known, now))
        ops = muting.merge(ended)
        ops.append(self._audit(now, actor, "silence.expire", silence_id, describe_silence(known)))
        await self._commit(Written(ops=ops))
        self.on_shared(Shared(silences=[ended]))
        return ended

    # -- shared ------------------------------------------------------------------------------
    @staticmethod
    def _stamp(known: Ack | Silence | None, now: float) -> float:
        """A change's `updated_at`: now, and later than the version it replaces (two changes
        within one clock tick: the second one wins, here and at every peer)."""
        return now if known is None else max(now, known.updated_at + 0.001)

    def _audit(self, now: float, actor: Actor, action: str, target: str, detail: str) -> Op:
        return audit.record(now, actor.name, actor.via, action, target, detail, self.instance)

    async def _commit(self, written: Written) -> None:
        """One commit for the change, its audit row and any announcement; StoreError when it
        fails (memory is then rebuilt from the store: the change did not happen)."""
        await self.pipeline.store.write(written.ops)
        if written.deliveries:
            self.pipeline.on_enqueued()


def describe_silence(silence: Silence) -> str:
    """One line for the audit: the matchers, and a warning when internal alerts are muted."""
    text = "{" + ", ".join(str(m) for m in silence.matchers) + "}"
    if mutes_internal(silence):
        text += " (mutes internal alerts)"
    return text
