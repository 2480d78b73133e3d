"""Convergence: dedup, alert groups and their timers. Nothing else.

This module is the in-memory half of the pipeline; it never does I/O. Each call returns the
statements (`Op`s) that make its decisions durable, and the caller commits them before it
answers or delivers anything; group changes people must hear about are returned as
`GroupChange`s (converge.notify turns them into notifications). `load()` rebuilds the same
state from the store after a restart or a failed commit.

Timers, per alert group (one per contact group and `group_by` label values):
- first notification `group_wait` after the first firing alert arrived;
- afterwards at most every `group_interval`, and only when an alert began firing or resolved;
- while firing and unchanged, again `repeat_interval` after the last notification;
- when every alert resolved, one resolved message (if `send_resolved`) and the group closes.
Deadlines are stored in `alert_groups.next_flush_at`, so a restart loses no timer.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from monitor_manager.clock import Clock
from monitor_manager.config import Config
from monitor_manager.converge.acks import Ack, Acks
from monitor_manager.converge.alerts import (
    Alert,
    Change,
    classify,
    encode_pairs,
    fingerprint,
    identity_labels,
    to_json,
)
from monitor_manager.converge.ids import Ids
from monitor_manager.converge.mute import Muting
from monitor_manager.converge.notify import GroupChange
from monitor_manager.converge.routing import Router
from monitor_manager.ingest.payload import IncomingAlert
from monitor_manager.store import Op
from monitor_manager.store import alerts as alert_rows
from monitor_manager.store import groups as group_rows
from monitor_manager.watch.watchdog import SOURCE_LABEL, failing_channel

INF = float("inf")
SEEN_EVERY = 3600.0  # a duplicate refreshes an alert's stored seen_at at most this often


@dataclass(slots=True)
class Group:
    key: str
    contact_group: str
    group_labels: dict[str, str]
    created_at: float
    # fingerprint -> "firing" once a notification told people it fires, "" before that
    members: dict[str, str] = field(default_factory=dict)
    next_flush_at: float | None = None
    last_notified_at: float | None = None
    last_flush_at: float | None = None
    wait: float | None = None  # group_wait override (internal alerts page at once)
    first_notified_at: float | None = None  # escalation steps count from this
    escalated: int = 0  # escalation steps taken
    unmuted: bool = False  # a silence or window ended over its firing alerts: tell people
    # While acknowledged: when a repeat was last held back, how many escalation steps were
    # (counted in monitor_manager_notifications_suppressed_total; memory only)
    held_at: float | None = None
    held_steps: int = 0
    # `(key,)`, shared by every alert in this group alone (most alerts): one tuple, not one each
    alone: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.alone = (self.key,)


@dataclass(frozen=True)
class Rerouted:
    """An open alert group whose contact group a reload removed: closed without a resolved
    message, its firing alerts routed again by the new config."""

    key: str
    contact_group: str
    firing: int  # its firing alerts, each routed again
    to: tuple[str, ...]  # the contact groups they reached


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    ops: list[Op] = field(default_factory=list)
    firing: int = 0
    resolved: int = 0
    rejected: int = 0  # dropped by screening (a webhook alert claiming an internal identity)


@dataclass
class FlushResult:
    ops: list[Op] = field(default_factory=list)
    changes: list[GroupChange] = field(default_factory=list)
    ack_timeouts: list[Ack] = field(default_factory=list)  # acks that just timed out
    escalated: list[Group] = field(default_factory=list)  # groups that took a step
    held: int = 0  # repeats and escalation steps not sent: the group is acknowledged


class Convergence:
    def __init__(
        self,
        config: Config,
        clock: Clock,
        ids: Ids,
        muting: Muting | None = None,
        acks: Acks | None = None,
    ) -> None:
        self.config = config
        self.conv = config.convergence
        self.clock = clock
        self.router = Router(config)
        self.ignore = frozenset(config.convergence.ignore_labels)
        self.group_all = tuple(config.convergence.group_by) == ("...",)
        self.ids = ids
        self.muting = muting or Muting(config)
        self.acks = acks or Acks(config.ha.max_clock_skew)
        self.instance = config.server.instance
        self.contact_groups = frozenset(g.name for g in config.contact_groups)
        self.escalation = {g.name: g.escalation for g in config.contact_groups}
        self.ack_timeout = {g.name: g.ack_timeout for g in config.contact_groups}
        self.alerts: dict[str, Alert] = {}  # by fingerprint
        # fingerprint -> channel, for internal alerts about a failing channel (few)
        self.failing_channel: dict[str, str] = {}
        self.internal: set[str] = set()  # fingerprints of internal alerts: never stale
        # fingerprint -> labels, for internal alerts about a heartbeat or a peer (few): a
        # reload or restart may remove what they are about (watchdog.unconfigured).
        self.internal_subjects: dict[str, dict[str, str]] = {}
        self.groups: dict[str, Group] = {}
        self._due: list[tuple[float, str]] = []

    def is_firing(self, labels: dict[str, str]) -> bool:
        alert = self.alerts.get(fingerprint(identity_labels(labels, self.ignore)))
        return alert is not None and alert.status == "firing"

    # -- ingest -------------------------------------------------------------------------------
    def ingest(
        self,
        alerts: Iterable[IncomingAlert],
        source: str = "",
        groups: list[str] | None = None,
        wait: float | None = None,
    ) -> IngestResult:
        """Apply incoming alerts to memory; return counts and the ops that make it durable.

        `groups` and `wait` override routing and group_wait (internal alerts use both).
        """
        now = self.clock()
        result = IngestResult()
        touched: set[str] = set()
        inserts: list[Op] = []
        seen: list[Op] = []
        for incoming in alerts:
            labels = identity_labels(incoming.labels, self.ignore)
            fp = fingerprint(labels)
            known = self.alerts.get(fp)
            change = classify(known, incoming)
            if change is Change.DUPLICATE:
                result.duplicates += 1
                if (
                    known is not None
                    and known.status == "firing"
                    and now - known.seen_at >= SEEN_EVERY
                ):
                    known.seen_at = now
                    seen.append(alert_rows.seen(known.id, now))
                continue
            result.accepted += 1
            new = known is None
            if known is None:
                known = Alert(fp, self.ids.alert(), "", incoming.starts_at, None)
                self.alerts[fp] = known
                self._note_internal(fp, labels, source)
            known.seen_at = now
            if incoming.status == "firing":
                self.muting.evaluate(fp, labels, now)
                result.firing += 1
                known.status = "firing"
                known.starts_at = incoming.starts_at
                known.ends_at = None
                if not known.groups:
                    self._assign(known, labels, now, groups, wait)
            else:
                result.resolved += 1
                known.status = "resolved"
                known.ends_at = incoming.ends_at or now
            annotations = to_json(incoming.annotations)
            if new:
                inserts.append(
                    alert_rows.insert(
                        known,
                        to_json(labels),
                        annotations,
                        incoming.generator_url,
                        source,
                        now,
                        self.memberships(known),
                        incoming.extras,
                    )
                )
            else:
                result.ops.append(
                    alert_rows.update(
                        known,
                        annotations,
                        incoming.generator_url,
                        source,
                        now,
                        self.memberships(known),
                        incoming.extras,
                    )
                )
            touched.update(known.groups)
        # Statements of one kind together: the store runs each run as one executemany.
        result.ops[:0] = inserts
        result.ops += seen
        for key in touched:
            group = self.groups.get(key)
            if group is not None:
                self._touch(group, now)
                result.ops.append(group_rows.upsert(group, now))
        return result

    def _note_internal(self, fp: str, labels: dict[str, str], source: str) -> None:
        if source != SOURCE_LABEL[1]:
            return
        self.internal.add(fp)
        if "heartbeat" in labels or "peer" in labels:
            self.internal_subjects[fp] = labels
        channel = failing_channel(labels)
        if channel is not None:
            self.failing_channel[fp] = channel

    def close_stale(self, now: float) -> tuple[int, list[Op]]:
        """Firing alerts no sender re-sent for `stale_after` are closed as stale: their groups
        say "no longer reported" (never RESOLVED: nobody knows they recovered). Internal
        alerts are exempt: this service resolves them itself."""
        if not self.conv.stale_after:
            return 0, []
        before = now - self.conv.stale_after
        ops: list[Op] = []
        touched: set[str] = set()
        for alert in self.alerts.values():
            if (
                alert.status == "firing"
                and alert.seen_at < before
                and alert.fingerprint not in self.internal
            ):
                alert.status = "stale"
                ops.append(alert_rows.stale(alert.id, now))
                touched.update(alert.groups)
        closed = len(ops)
        for key in touched:
            group = self.groups[key]
            self._touch(group, now)
            ops.append(group_rows.upsert(group, now))
        return closed, ops

    def memberships(self, alert: Alert) -> str:
        """The alert's groups and what each was told about it, stored in the alert's row (one
        row per alert on the webhook's path, not one more per membership)."""
        fp = alert.fingerprint
        # Keys are hex digests and states "" or "firing": nothing to escape, so the JSON is
        # written directly (this runs for every alert on the webhook's path).
        return (
            "{"
            + ",".join(f'"{key}":"{self.groups[key].members.get(fp, "")}"' for key in alert.groups)
            + "}"
        )

    def _assign(
        self,
        alert: Alert,
        labels: dict[str, str],
        now: float,
        groups: list[str] | None,
        wait: float | None,
    ) -> None:
        for contact_group in groups if groups is not None else self.router.route(labels):
            group_labels = (
                labels
                if self.group_all
                else {k: labels[k] for k in self.conv.group_by if k in labels}
            )
            key = group_key(contact_group, group_labels)
            if key in alert.groups:
                continue  # routed again (reroute) to a group it is in already
            group = self.groups.get(key)
            if group is None:
                group = Group(key, contact_group, group_labels, now, wait=wait)
                group.next_flush_at = now + (self.conv.group_wait if wait is None else wait)
                self.groups[key] = group
                heapq.heappush(self._due, (group.next_flush_at, key))
            group.members[alert.fingerprint] = ""
            alert.groups = alert.groups + (key,) if alert.groups else group.alone

    def _shared(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        group = self.groups.get(keys[0]) if len(keys) == 1 else None
        return group.alone if group is not None else keys

    def _touch(self, group: Group, now: float) -> None:
        """An alert of the group changed state: schedule the flush the timers allow."""
        if group.last_flush_at is None:
            return  # still inside group_wait: the first flush sees this change
        candidate = max(now, group.last_flush_at + self.conv.group_interval)
        if group.next_flush_at is None or candidate < group.next_flush_at:
            group.next_flush_at = candidate
            heapq.heappush(self._due, (candidate, group.key))

    # -- flush --------------------------------------------------------------------------------
    def next_due(self) -> float:
        while self._due:
            at, key = self._due[0]
            group = self.groups.get(key)
            if group is not None and group.next_flush_at == at:
                return at
            heapq.heappop(self._due)  # stale heap entry
        return INF

    def flush_due(self, now: float) -> FlushResult:
        """Flush every group whose deadline passed: the changes to notify, and the ops."""
        result = FlushResult()
        while self.next_due() <= now:
            _, key = heapq.heappop(self._due)
            self._flush(self.groups[key], now, result)
        return result

    def _flush(self, group: Group, now: float, result: FlushResult) -> None:
        """What the group's people must hear now, from its alerts, acknowledgement, muting
        and escalation steps; then when it is looked at next."""
        group.next_flush_at = None
        group.last_flush_at = now
        members = group.members
        firing = [fp for fp in members if self.alerts[fp].status == "firing"]
        # Muted alerts (silences, maintenance) are kept, never told.
        visible = [fp for fp in firing if not self.muting.is_muted(fp)]
        # Resolved and stale alerts leave the group once this flush is done with them.
        leaving = [fp for fp in members if self.alerts[fp].status != "firing"]
        told = [fp for fp in leaving if members[fp] == "firing"]
        newly_resolved = [fp for fp in told if self.alerts[fp].status == "resolved"]
        newly_stale = [fp for fp in told if self.alerts[fp].status == "stale"]
        new_firing = any(members[fp] != "firing" for fp in visible)
        ack = self.acks.current(group.key, group.created_at)
        timeout = self.ack_timeout.get(group.contact_group, 0.0)
        ack_ended = bool(ack and timeout and visible and now >= ack.at + timeout)
        if ack_ended:
            assert ack is not None  # acknowledged no more: it pages again
            ended = self.acks.withdraw(ack, ack.by, "timeout", now, self.instance)
            result.ops += self.acks.merge(ended)
            result.ack_timeouts.append(ended)
            ack = None
        repeat_due = (
            bool(visible)
            and ack is None
            and group.last_notified_at is not None
            and now >= group.last_notified_at + self.conv.repeat_interval
        )
        # A stale alert that people were told fires is always retracted: they would
        # otherwise go on believing it.
        send = (
            new_firing
            or repeat_due
            or ack_ended
            or bool(newly_stale)
            or (bool(newly_resolved) and self.conv.send_resolved)
        )
        if group.unmuted:
            group.unmuted = False
            send = send or bool(visible)  # a silence ended: the alerts are news again
        closing = not firing
        if send:
            shown = visible + newly_resolved + newly_stale
            result.changes.append(self._change(group, shown, ack))
            if closing and group.escalated:  # everyone escalated to hears the resolution
                for step in self.escalation.get(group.contact_group, ())[: group.escalated]:
                    result.changes += [
                        self._change(group, shown, ack, notify=name) for name in step.groups
                    ]
            group.last_notified_at = now
            if group.first_notified_at is None and visible:
                group.first_notified_at = now
        if visible and ack is not None:
            result.held += self._hold(group, now)
        if visible and ack is None:
            steps = self._escalate(group, visible, now)
            if steps:
                result.changes += steps
                result.escalated.append(group)
        changed: list[Alert] = []
        for fp in visible:
            if members[fp] != "firing" and send:
                members[fp] = "firing"
                changed.append(self.alerts[fp])
        for fp in leaving:  # told about (or never worth telling): they leave the group
            del members[fp]
            alert = self.alerts[fp]
            alert.groups = self._shared(tuple(k for k in alert.groups if k != group.key))
            changed.append(alert)
        if not members:
            del self.groups[group.key]
        result.ops += [alert_rows.memberships(a.id, self.memberships(a)) for a in changed]
        if group.key not in self.groups:
            result.ops.append(group_rows.upsert(group, now, state="closed"))
            return
        group.next_flush_at = self._next_look(group, bool(visible), ack, now)
        if group.next_flush_at is not None:
            heapq.heappush(self._due, (group.next_flush_at, group.key))
        result.ops.append(group_rows.upsert(group, now))

    def _escalate(self, group: Group, visible: list[str], now: float) -> list[GroupChange]:
        """Escalation steps due (nobody acknowledged): the group, marked escalated, to the
        step's contact groups."""
        out = []
        steps = self.escalation.get(group.contact_group, ())
        while (
            group.escalated < len(steps)
            and group.first_notified_at is not None
            and now >= group.first_notified_at + steps[group.escalated].after
        ):
            step = steps[group.escalated]
            group.escalated += 1
            out += [
                self._change(
                    group,
                    visible,
                    None,
                    notify=name,
                    escalation=group.escalated,
                    unacknowledged_for=now - group.first_notified_at,
                )
                for name in step.groups
            ]
        return out

    def _hold(self, group: Group, now: float) -> int:
        """A repeat or escalation step due now that the acknowledgement holds back: counted."""
        held = 0
        last = max(group.last_notified_at or now, group.held_at or 0.0)
        if now >= last + self.conv.repeat_interval:
            group.held_at = now
            held += 1
        steps = self.escalation.get(group.contact_group, ())
        first = group.first_notified_at
        while (
            first is not None
            and max(group.escalated, group.held_steps) < len(steps)
            and now >= first + steps[max(group.escalated, group.held_steps)].after
        ):
            group.held_steps = max(group.escalated, group.held_steps) + 1
            held += 1
        return held

    def _next_look(self, group: Group, visible: bool, ack: Ack | None, now: float) -> float | None:
        """When the group must be looked at again without a change: the repeat (not while
        acknowledged), the next escalation step, or the end of the acknowledgement."""
        if not visible:
            return None  # nothing people are told fires: only a change brings it back
        times = []
        if ack is None:
            times.append((group.last_notified_at or now) + self.conv.repeat_interval)
            steps = self.escalation.get(group.contact_group, ())
            if group.escalated < len(steps) and group.first_notified_at is not None:
                times.append(group.first_notified_at + steps[group.escalated].after)
        else:
            timeout = self.ack_timeout.get(group.contact_group, 0.0)
            if timeout:
                times.append(ack.at + timeout)
            # Looks at what is held back, only to count it (nothing is sent).
            last = max(group.last_notified_at or now, group.held_at or 0.0)
            times.append(last + self.conv.repeat_interval)
            steps = self.escalation.get(group.contact_group, ())
            held = max(group.escalated, group.held_steps)
            if held < len(steps) and group.first_notified_at is not None:
                times.append(group.first_notified_at + steps[held].after)
        return max(min(times), now) if times else None

    def touch(self, keys: Iterable[str], now: float) -> list[Op]:
        """Something decided elsewhere changed for these groups (an acknowledgement, a
        silence): look at them again as soon as the timers allow."""
        ops: list[Op] = []
        for key in set(keys):
            group = self.groups.get(key)
            if group is not None:
                self._touch(group, now)
                ops.append(group_rows.upsert(group, now))
        return ops

    def muting_changed(self, fingerprints: Iterable[str], now: float) -> list[Op]:
        keys: list[str] = []
        for fp in fingerprints:
            alert = self.alerts.get(fp)
            if alert is None:
                continue
            keys += alert.groups
            if alert.status == "firing" and not self.muting.is_muted(fp):
                for key in alert.groups:
                    self.groups[key].unmuted = True
        return self.touch(keys, now)

    # -- what people act on ---------------------------------------------------------------------
    def fires(self, group: Group) -> bool:
        return any(self.alerts[fp].status == "firing" for fp in group.members)

    def announcement(self, group: Group, ack: Ack) -> GroupChange | None:
        """The group as it fires now, with its new acknowledgement (told once)."""
        visible = [
            fp
            for fp, told in group.members.items()
            if self.alerts[fp].status == "firing" and told == "firing"
        ]
        return self._change(group, visible, ack) if visible else None

    def _change(
        self,
        group: Group,
        fingerprints: list[str],
        ack: Ack | None,
        notify: str | None = None,
        escalation: int = 0,
        unacknowledged_for: float = 0.0,
    ) -> GroupChange:
        alerts = sorted(
            (self.alerts[fp] for fp in fingerprints),
            key=lambda a: (a.status != "firing", a.starts_at, a.fingerprint),
        )
        return GroupChange(
            group.key,
            group.contact_group,
            group.group_labels,
            # A stale alert's end, in the message, is when it was last reported.
            tuple(
                (
                    a.id,
                    a.fingerprint,
                    a.status,
                    a.starts_at,  # type: ignore[misc]
                    a.seen_at if a.status == "stale" else a.ends_at,
                )
                for a in alerts
            ),
            frozenset(
                self.failing_channel[fp] for fp in fingerprints if fp in self.failing_channel
            ),
            opened_at=group.created_at,
            ack=ack.view() if ack is not None else None,
            notify=notify or group.contact_group,
            escalation=escalation,
            unacknowledged_for=unacknowledged_for,
        )

    # -- retention ------------------------------------------------------------------------------
    def purge(self, before: float) -> list[Op]:
        """Forget alerts that left every group and ended before `before`, and closed groups."""
        old = [
            fp
            for fp, a in self.alerts.items()
            if a.status != "firing" and not a.groups and (a.ends_at or a.seen_at) < before
        ]
        ops: list[Op] = []
        for fp in old:
            ops.append(alert_rows.delete(self.alerts.pop(fp).id))
            self.failing_channel.pop(fp, None)
            self.internal.discard(fp)
            self.internal_subjects.pop(fp, None)
        ops.append(group_rows.purge_closed(before))
        return ops

    # -- reload -------------------------------------------------------------------------------
    def adopt(self, previous: Convergence) -> None:
        """A reload, after `load`: what memory alone knew of the groups that are still open."""
        for key, group in self.groups.items():
            old = previous.groups.get(key)
            if old is not None:
                group.wait = old.wait
                group.unmuted = old.unmuted
                group.held_at = old.held_at
                group.held_steps = old.held_steps

    def orphans(self) -> list[Group]:
        """Open groups whose contact group the config no longer has."""
        return [g for g in self.groups.values() if g.contact_group not in self.contact_groups]

    def reroute(
        self,
        group: Group,
        labels: dict[int, dict[str, str]],
        watchdog_groups: tuple[str, ...],
        now: float,
    ) -> tuple[list[Op], Rerouted]:
        """Close `group` (an orphan) without telling anyone it resolved, and route its firing
        alerts again, as if they had just arrived: they must still reach someone. `labels`:
        the stored labels of its alerts, by alert id."""
        members = [self.alerts[fp] for fp in group.members]
        del self.groups[group.key]
        for alert in members:
            alert.groups = self._shared(tuple(k for k in alert.groups if k != group.key))
        group.members.clear()
        ops: list[Op] = [group_rows.upsert(group, now, state="closed")]
        firing = [a for a in members if a.status == "firing"]
        touched: set[str] = set()
        for alert in firing:
            internal = alert.fingerprint in self.internal  # to the watchdog groups, at once
            before = set(alert.groups)
            self._assign(
                alert,
                labels.get(alert.id, {}),
                now,
                list(watchdog_groups) if internal else None,
                0.0 if internal else None,
            )
            touched.update(set(alert.groups) - before)
        for key in touched:
            self._touch(self.groups[key], now)
            ops.append(group_rows.upsert(self.groups[key], now))
        ops += [alert_rows.memberships(a.id, self.memberships(a)) for a in members]
        reached = sorted({self.groups[k].contact_group for a in firing for k in a.groups})
        return ops, Rerouted(group.key, group.contact_group, len(firing), tuple(reached))

    # -- restart ------------------------------------------------------------------------------
    def load(self, conn: sqlite3.Connection) -> None:
        """Rebuild memory from the store (runs on the store thread)."""
        self.alerts.clear()
        self.failing_channel.clear()
        self.internal.clear()
        self.internal_subjects.clear()
        self.groups.clear()
        self._due.clear()
        for row in group_rows.open_rows(conn):
            key, contact_group, labels, created, next_flush, notified, flushed, first, steps = row
            loaded = Group(
                key,
                contact_group,
                labels,
                created,
                {},
                next_flush,
                notified,
                flushed,
                first_notified_at=first,
                escalated=steps,
            )
            self.groups[loaded.key] = loaded
        times: dict[float, float] = {}  # one float object per distinct time, as ingest has
        # The alerts of a group share their memberships text: each text is parsed once, to
        # the open groups it names (a million alerts in 10,000 groups: 10,000 parses).
        parsed: dict[str, tuple[tuple[Group, str], ...]] = {}
        alerts = self.alerts
        for fp, row_id, status, starts_at, ends_at, memberships, seen_at in alert_rows.memory_rows(
            conn
        ):
            alert = Alert(
                fp,
                row_id,
                sys.intern(status),
                times.setdefault(starts_at, starts_at),
                ends_at,
                seen_at=times.setdefault(seen_at, seen_at),
            )  # type: ignore[arg-type]
            alerts[fp] = alert  # were there two rows, the newer counts
            if memberships == "{}":
                continue
            into = parsed.get(memberships)
            if into is None:
                into = parsed[memberships] = tuple(
                    (member_of, sys.intern(state))
                    for key, state in json.loads(memberships).items()
                    if (member_of := self.groups.get(key)) is not None
                )
            for member_of, state in into:
                member_of.members[fp] = state
                # The group's own key object: one copy of the string in memory.
                alert.groups = alert.groups + (member_of.key,) if alert.groups else member_of.alone
        for fp, labels in alert_rows.labels_from(conn, SOURCE_LABEL[1]):
            self._note_internal(fp, labels, SOURCE_LABEL[1])
        for group in self.groups.values():
            if group.next_flush_at is not None:
                self._due.append((group.next_flush_at, group.key))
        heapq.heapify(self._due)


@functools.lru_cache(maxsize=65536)
def _group_key(contact_group: str, pairs: tuple[tuple[str, str], ...]) -> str:
    # Length-prefixed, as the fingerprint: two group label sets never share a key.
    text = encode_pairs(((contact_group, ""), *pairs))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def group_key(contact_group: str, group_labels: dict[str, str]) -> str:
    """Stable across instances and restarts: contact group and group label values."""
    return _group_key(contact_group, tuple(sorted(group_labels.items())))
