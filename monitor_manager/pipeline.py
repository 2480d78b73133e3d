"""The pipeline, stage by stage: ingest → dedup → route → group → (timers) → storm → enqueue.

`receive()` answers a webhook: it applies the payload to the in-memory state and returns only
once the resulting writes are committed (group commit shares that commit with concurrent
requests). `tick()` is the timer job: due groups flush into notifications and outbox rows.
If a commit fails, memory is rebuilt from the store before anything else is decided, so what
was not stored is not remembered either (the sender retries on our 503).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
from collections.abc import Callable, Iterable

from monitor_manager.clock import Clock
from monitor_manager.cluster.ha import NotificationLog
from monitor_manager.config import Config
from monitor_manager.converge.alerts import fingerprint, identity_labels
from monitor_manager.converge.convergence import Convergence, FlushResult, IngestResult
from monitor_manager.deliver.parts_log import StoredPartsLog
from monitor_manager.ingest.payload import IncomingAlert, Payload, screen
from monitor_manager.metrics import Metrics
from monitor_manager.models import AlertView, GroupView, Message
from monitor_manager.store import Op, Store, StoreError, failure_reason, probe_op
from monitor_manager.store.records import insert_notification
from monitor_manager.watch.watchdog import SOURCE_LABEL, Watchdog

log = logging.getLogger(__name__)

STORE_FAILING = "StoreFailing"
STALE_CHECK_SECONDS = 60.0


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.on_enqueued = on_enqueued
        self.convergence = Convergence(config, clock)
        self.watchdog = Watchdog(config, clock, self.is_firing)
        self.nflog: NotificationLog | None = None  # set when high availability is on
        self.parts: StoredPartsLog | None = None  # set by the app: the channels' parts log
        self._reload_needed = True  # nothing loaded yet
        self._next_stale_check = 0.0
        self._reload_lock = asyncio.Lock()
        store.on_failure = self._on_store_failure

    def _on_store_failure(self, exc: BaseException) -> None:
        self.metrics.store_commit_failures.inc()
        self.watchdog.store_failed(failure_reason(exc), self.clock())
        self._reload_needed = True

    def is_firing(self, labels: dict[str, str]) -> bool:
        fp = fingerprint(identity_labels(labels, self.convergence.ignore))
        alert = self.convergence.alerts.get(fp)
        return alert is not None and alert.status == "firing"

    def _load(self, conn: sqlite3.Connection) -> None:
        self.convergence.load(conn)
        self.watchdog.load(conn)
        if self.nflog is not None:
            self.nflog.load(conn)

    async def load(self) -> None:
        if not self._reload_needed:
            return
        async with self._reload_lock:
            if self._reload_needed:
                await self.store.run(self._load)
                self._reload_needed = False
                # What was just loaded lives long: keep the collector from walking it again
                # and again (a full pass over 200,000 alerts took 0.2 s, in every p99).
                gc.collect()
                gc.freeze()
                self.metrics.alert_groups_open.set(len(self.convergence.groups))

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

    async def tick(self) -> FlushResult:
        await self.load()
        result = self.convergence.flush_due()
        if result.ops:
            await self.store.write(result.ops)
            self.metrics.notifications_decided.inc(result.notifications)
            self.metrics.alert_groups_open.set(len(self.convergence.groups))
            if result.deliveries:
                self.on_enqueued()
        return result

    async def raise_internal(self, alerts: list[IncomingAlert]) -> None:
        """Internal alerts: to the watchdog groups, without group_wait, otherwise as any alert."""
        if alerts:
            await self.ingest(
                alerts, source=SOURCE_LABEL[1], groups=list(self.config.watchdog_groups), wait=0.0
            )

    def store_failing_messages(self, alert: IncomingAlert) -> list[Message]:
        """StoreFailing, one message per watchdog group, outside any alert group: its page
        cannot be stored, so it never joins one (the caller sends it)."""
        view = AlertView(
            "store",
            alert.status,  # type: ignore[arg-type]
            alert.labels,
            alert.annotations,
            alert.starts_at,
            alert.ends_at,
        )
        now = self.clock()
        return [
            self.convergence.new_message(
                "group",
                name,
                (GroupView(STORE_FAILING, name, {"alertname": STORE_FAILING}, (view,)),),
                now,
            )
            for name in self.config.watchdog_groups
        ]

    async def enqueue_store_failing(self, alert: IncomingAlert) -> None:
        """StoreFailing's resolution, through the outbox: the store takes writes again."""
        await self.load()  # ids come from memory: after a failed commit, from the store
        result = FlushResult()
        for message in self.store_failing_messages(alert):
            result.ops.append(insert_notification(message, None, None))
            result.notifications += 1
            self.convergence.enqueue(
                message.id, message.contact_group, set(), message.created_at, result
            )
        await self.store.write(result.ops)
        self.on_enqueued()

    async def watch(self) -> None:
        """The watchdog job: deadlines, channel health, the store; raise what changed."""
        await self.load()
        now = self.clock()
        if not self.store.healthy:
            try:  # a real commit through the shared path: it alone makes the store healthy
                await self.store.write([probe_op(now)])
            except StoreError:
                return  # still failing: StoreFailing is the caller's to page
        self.watchdog.store_ok(now)
        alerts = self.watchdog.check(now)
        await self.raise_internal(alerts)
        ops = self.watchdog.ops()
        if now >= self._next_stale_check:  # a walk over every alert: once a minute is enough
            self._next_stale_check = now + STALE_CHECK_SECONDS
            closed, stale_ops = self.convergence.close_stale(now)
            self.metrics.alerts_stale.inc(closed)
            ops += stale_ops
        if ops:
            await self.store.write(ops)

    async def purge(self) -> None:
        await self.load()
        now = self.clock()
        ops = self.convergence.purge(now - self.config.storage.retention)
        if self.nflog is not None:
            ops += self.nflog.expire(now - 2 * self.config.convergence.repeat_interval)
        if self.parts is not None:
            ops += self.parts.expire(now - self.config.storage.retention)
        await self.store.write(ops)

    def next_due(self) -> float:
        return min(self.convergence.next_due(), self.convergence.storm.next_due())
