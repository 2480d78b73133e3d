"""The pipeline: what happens to a webhook, and on every timer tick, in order.

`receive()` answers a webhook: screen the payload (ingest.payload), take heartbeats out
(watch.watchdog), dedup and group (converge.convergence), then commit, and only then answer
(group commit shares the commit with concurrent requests). `tick()` is the timer job: due
alert groups flush (convergence), their changes become notifications and outbox rows
(converge.notify, through storm control), committed in one transaction, and the outbox is
woken. `watch()` is the watchdog's once-a-second job. If a commit fails, memory is rebuilt
from the store before anything else is decided, so what was not stored is not remembered
either (the sender retries on our 503).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable

from monitor_manager.act.links import Links
from monitor_manager.clock import Clock
from monitor_manager.cluster.ha import NotificationLog
from monitor_manager.cluster.shared import Shared
from monitor_manager.config import Config
from monitor_manager.converge.convergence import Convergence, IngestResult, Rerouted
from monitor_manager.converge.ids import Ids
from monitor_manager.converge.notify import Notifier, Written
from monitor_manager.deliver.parts_log import StoredPartsLog
from monitor_manager.ingest.payload import IncomingAlert, Payload, screen
from monitor_manager.metrics import Metrics
from monitor_manager.models import AlertStatus, AlertView, GroupView, Message
from monitor_manager.store import (
    Op,
    Store,
    StoreError,
    audit,
    deliveries,
    failure_reason,
    notifications,
    probe_op,
)
from monitor_manager.store import alerts as alert_rows
from monitor_manager.watch.store_health import STORE_FAILING, StoreHealth
from monitor_manager.watch.watchdog import SOURCE_LABEL, Watchdog

log = logging.getLogger(__name__)

STALE_CHECK_SECONDS = 60.0
PageDirectly = Callable[[list[Message]], Awaitable[None]]


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        ids: Ids,
        convergence: Convergence,
        notifier: Notifier,
        watchdog: Watchdog,
        store_health: StoreHealth,
        nflog: NotificationLog,
        parts: StoredPartsLog,
        links: Links,
        page_directly: PageDirectly,
        on_enqueued: Callable[[], None] = lambda: None,
        on_shared: Callable[[Shared], None] = lambda shared: None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.ids = ids
        self.convergence = convergence
        self.notifier = notifier
        self.watchdog = watchdog
        self.store_health = store_health
        self.nflog = nflog
        self.parts = parts
        self.links = links
        self.page_directly = page_directly
        self.on_enqueued = on_enqueued
        self.on_shared = on_shared  # escalation steps taken and acks that timed out: to peers
        self._reload_needed = True  # nothing loaded yet
        self._next_stale_check = 0.0
        self._reload_lock = asyncio.Lock()

    # -- memory and the store ------------------------------------------------------------------
    def store_failed(self, exc: BaseException) -> None:
        """A commit failed (the store calls this): memory may hold what is not stored."""
        self.metrics.store_commit_failures.inc()
        self.store_health.failed(failure_reason(exc), self.clock())
        self._reload_needed = True

    def _load(self, conn: sqlite3.Connection) -> None:
        self.ids.load(conn)
        self.convergence.acks.load(conn)
        self.convergence.muting.load(conn)
        self.convergence.load(conn)
        self.links.load(conn, self.clock(), self.config.server.instance)
        self.notifier.storm.load(conn)
        self.watchdog.load(conn)
        self.nflog.load(conn)

    async def load(self) -> None:
        if not self._reload_needed:
            return
        async with self._reload_lock:
            if self._reload_needed:
                # Building a million objects, the collector would walk the growing heap again
                # and again (a third of the rebuild); it runs once, below, instead.
                collecting = gc.isenabled()
                gc.disable()
                try:
                    await self.store.run(self._load)
                finally:
                    if collecting:
                        gc.enable()
                self._reload_needed = False
                # What was just loaded lives long: keep the collector from walking it again
                # and again (a full pass over 200,000 alerts took 0.2 s, in every p99).
                gc.collect()
                gc.freeze()
                self.metrics.alert_groups_open.set(len(self.convergence.groups))

    async def reroute_orphans(self) -> list[Rerouted]:
        """After a reload: open groups whose contact group is gone are closed (no resolved
        message: nothing resolved), and their firing alerts routed again by this config."""
        await self.load()
        orphans = self.convergence.orphans()
        if not orphans:
            return []
        alerts = self.convergence.alerts
        ids = [alerts[fp].id for g in orphans for fp in g.members if alerts[fp].status == "firing"]
        texts = await self.store.run(lambda conn: alert_rows.texts(conn, ids))
        labels = {alert_id: json.loads(text[0]) for alert_id, text in texts.items()}
        now = self.clock()
        ops: list[Op] = []
        done: list[Rerouted] = []
        for group in orphans:
            group_ops, rerouted = self.convergence.reroute(
                group, labels, self.config.watchdog_groups, now
            )
            ops += group_ops
            done.append(rerouted)
        try:
            await self.store.write(ops)
        except BaseException:
            self._reload_needed = True  # memory holds what the store refused
            raise
        self.metrics.alert_groups_open.set(len(self.convergence.groups))
        return done

    # -- the webhook -----------------------------------------------------------------------------
    async def receive(self, payload: Payload) -> IngestResult:
        """Raises StoreError (nothing stored, answer 503) when the commit fails."""
        await self.load()
        now = self.clock()
        screened = screen(payload.alerts, now)
        # Heartbeats are taken out next: they record "seen" and are never notified.
        alerts, heartbeats = self.watchdog.observe(payload.external_url, screened.alerts, now)
        result = await self.ingest(
            alerts, source=payload.external_url, extra_ops=self.watchdog.heartbeat_ops()
        )
        result.accepted += heartbeats
        result.rejected = screened.rejected
        if screened.rejected:
            self.metrics.alerts_rejected.labels("internal_identity").inc(screened.rejected)
        if screened.clamped:
            self.metrics.alerts_rejected.labels("future_time").inc(screened.clamped)
        return result

    async def ingest(
        self,
        alerts: Iterable[IncomingAlert],
        source: str = "",
        groups: list[str] | None = None,
        wait: float | None = None,
        extra_ops: list[Op] | None = None,
    ) -> IngestResult:
        await self.load()
        alerts = list(alerts)
        try:
            result = self.convergence.ingest(alerts, source, groups, wait)
        except BaseException:
            # Memory may hold half of this request: take it back from the store before the
            # next decision (input is validated before this point; this is a bug's safety net).
            self._reload_needed = True
            raise
        # Written even when empty: a duplicate must not be answered before the write that made
        # it a duplicate is durable.
        await self.store.write((extra_ops or []) + result.ops)
        firing = sum(1 for a in alerts if a.status == "firing")
        self.metrics.alerts_received.labels("firing").inc(firing)
        self.metrics.alerts_received.labels("resolved").inc(len(alerts) - firing)
        self.metrics.alerts_duplicate.inc(result.duplicates)
        return result

    async def raise_internal(self, alerts: list[IncomingAlert]) -> None:
        """Internal alerts: to the watchdog groups, without group_wait, otherwise as any alert."""
        if alerts:
            await self.ingest(
                alerts, source=SOURCE_LABEL[1], groups=list(self.config.watchdog_groups), wait=0.0
            )

    # -- timers ----------------------------------------------------------------------------------
    async def tick(self) -> Written:
        """Due alert groups flush; their changes and ended storm windows become notifications
        and outbox rows, committed with the flush."""
        await self.load()
        now = self.clock()
        flushed = self.convergence.flush_due(now)
        written = Written(ops=flushed.ops)
        for change in flushed.changes:
            self.notifier.group_changed(change, now, written)
        self.notifier.windows_closed(now, written)
        if written.ops:
            await self.store.write(written.ops)
            self.metrics.notifications_decided.inc(written.notifications)
            self.metrics.alert_groups_open.set(len(self.convergence.groups))
            if written.deliveries:
                self.on_enqueued()
        self.metrics.escalations.inc(sum(1 for c in flushed.changes if c.escalation))
        self.metrics.suppressed.inc(flushed.held)
        shared = Shared(
            acks=flushed.ack_timeouts,
            escalations=[
                (g.key, g.escalated, g.first_notified_at or now) for g in flushed.escalated
            ],
        )
        if shared:
            self.on_shared(shared)
        return written

    def next_due(self) -> float:
        return min(self.convergence.next_due(), self.notifier.storm.next_due())

    async def watch(self) -> None:
        """The watchdog job, every second: the store's health, heartbeat deadlines, channel
        health, stale alerts; raise what changed."""
        await self.load()
        now = self.clock()
        if not await self._store_takes_writes(now):
            return
        await self.raise_internal(self.watchdog.check(now))
        subjects = self.convergence.internal_subjects.values()
        await self.raise_internal(self.watchdog.unconfigured(list(subjects), now))
        ops = self.watchdog.ops()
        ops += await self._rescan_muting(now)
        if now >= self._next_stale_check:  # a walk over every alert: once a minute is enough
            self._next_stale_check = now + STALE_CHECK_SECONDS
            closed, stale_ops = self.convergence.close_stale(now)
            self.metrics.alerts_stale.inc(closed)
            ops += stale_ops
        if ops:
            await self.store.write(ops)

    async def _rescan_muting(self, now: float) -> list[Op]:
        """When silences changed, or one (or a maintenance window) started or ended, decide
        again which firing alerts are muted, and look again at the groups that changed."""
        muting = self.convergence.muting
        if not muting.due(now):
            return []
        firing = await self.store.read(alert_rows.firing_labels)
        changed = muting.rescan(firing, now)
        self.metrics.silences_active.set(muting.active(now))
        return self.convergence.muting_changed(changed, now)

    async def _store_takes_writes(self, now: float) -> bool:
        """StoreFailing: paged straight to the channels once, after store_failing_after of
        refused writes; resolved through the outbox once a real commit succeeds."""
        if not self.store.healthy:
            try:  # a real commit through the shared path: it alone makes the store healthy
                await self.store.write([probe_op(now)])
            except StoreError:
                page = self.store_health.page(now)
                if page is not None:
                    await self.page_directly(self._store_failing_messages(page, now))
                return False
        resolved = self.store_health.recovered(now)
        if resolved is not None:
            messages = self._store_failing_messages(resolved, now)
            try:
                await self._enqueue(messages, now)
            except StoreError:  # failing again already: the direct way, as the page went
                await self.page_directly(messages)
                return False
        return True

    def _store_failing_messages(self, alert: IncomingAlert, now: float) -> list[Message]:
        """StoreFailing, one message per watchdog group, outside any alert group: its page
        cannot be stored, so it never joins one."""
        status: AlertStatus = "firing" if alert.status == "firing" else "resolved"
        view = AlertView(
            "store", status, alert.labels, alert.annotations, alert.starts_at, alert.ends_at
        )
        return [
            self.notifier.message(
                "group",
                name,
                (GroupView(STORE_FAILING, name, {"alertname": STORE_FAILING}, (view,)),),
                now,
            )
            for name in self.config.watchdog_groups
        ]

    async def _enqueue(self, messages: list[Message], now: float) -> None:
        """Messages decided outside an alert group, through the outbox."""
        written = Written()
        for message in messages:
            written.ops.append(notifications.insert(message, None, None))
            written.notifications += 1
            self.notifier.deliver(message.id, message.contact_group, frozenset(), now, written)
        await self.store.write(written.ops)
        self.on_enqueued()

    async def purge(self) -> None:
        """Forget what is older than the retention (and the notification log's horizon)."""
        await self.load()
        now = self.clock()
        before = now - self.config.storage.retention
        ops = self.convergence.purge(before)
        ops += [deliveries.purge(before), notifications.purge(before)]
        ops += self.nflog.expire(now - 2 * self.config.convergence.repeat_interval)
        ops += self.convergence.acks.purge(before) + self.convergence.muting.purge(before)
        ops.append(audit.purge(before))
        ops += self.parts.expire(before)
        await self.store.write(ops)
