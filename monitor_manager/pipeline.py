"""The pipeline, stage by stage: ingest → dedup → route → group → (timers) → storm → enqueue.

`receive()` answers a webhook: it applies the payload to the in-memory state and returns only
once the resulting writes are committed (group commit shares that commit with concurrent
requests). `tick()` is the timer job: due groups flush into notifications and outbox rows.
If a commit fails, memory is rebuilt from the store before anything else is decided, so what
was not stored is not remembered either (the sender retries on our 503).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from monitor_manager.clock import Clock
from monitor_manager.config import Config
from monitor_manager.convergence import Convergence, FlushResult, IngestResult
from monitor_manager.metrics import Metrics
from monitor_manager.payload import IncomingAlert, Payload
from monitor_manager.store import Store

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, config: Config, store: Store, clock: Clock, metrics: Metrics,
                 on_enqueued: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.on_enqueued = on_enqueued
        self.convergence = Convergence(config, clock)
        self._stale = True  # nothing loaded yet
        self._reload_lock = asyncio.Lock()
        store.on_failure = self._on_store_failure

    def _on_store_failure(self, exc: BaseException) -> None:
        self.metrics.store_commit_failures.inc()
        self._stale = True

    async def load(self) -> None:
        if not self._stale:
            return
        async with self._reload_lock:
            if self._stale:
                await self.store.run(self.convergence.load)
                self._stale = False
                self.metrics.alert_groups_open.set(len(self.convergence.groups))

    async def receive(self, payload: Payload) -> IngestResult:
        """Raises StoreError (nothing stored, answer 503) when the commit fails."""
        return await self.ingest(payload.alerts, source=payload.external_url)

    async def ingest(self, alerts: Iterable[IncomingAlert], source: str = "",
                     groups: list[str] | None = None, wait: float | None = None) -> IngestResult:
        await self.load()
        alerts = list(alerts)
        result = self.convergence.ingest(alerts, source, groups, wait)
        # Written even when empty: a duplicate must not be answered before the write that made
        # it a duplicate is durable.
        await self.store.write(result.ops)
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

    async def purge(self) -> None:
        await self.load()
        before = self.clock() - self.config.storage.retention
        await self.store.write(self.convergence.purge(before))

    def next_due(self) -> float:
        return min(self.convergence.next_due(), self.convergence.storm.next_due())
