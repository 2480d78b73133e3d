"""The real pipeline and store on a temporary database, driven by a manual clock.

Timeline tests push alerts at t and step the clock through the timers, collecting each
notification with the time it was decided: "pushed at t, expected between a and b, and
nothing extra".
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Self

import aiohttp

from builders import T0
from monitor_manager.build import Core, build_core
from monitor_manager.channels.base import Channel
from monitor_manager.clock import ManualClock
from monitor_manager.config import Config
from monitor_manager.converge.convergence import IngestResult
from monitor_manager.deliver.outbox import Outbox
from monitor_manager.ingest.payload import IncomingAlert, Payload
from monitor_manager.metrics import Metrics
from monitor_manager.models import Message
from monitor_manager.pipeline import Pipeline
from monitor_manager.store import Store


@dataclass
class Decided:
    at: float  # seconds since T0
    message: Message
    digest_id: int | None

    @property
    def subject_status(self) -> str:
        return self.message.status

    @property
    def names(self) -> list[str]:
        return sorted(a.labels["alertname"] for g in self.message.groups for a in g.alerts)


class Harness:
    """The core that build_core wires for the service (store, pipeline, storm, outbox,
    channels, watchdog, high availability), on a manual clock, with nothing scheduled: the
    test moves the clock and runs the jobs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = ManualClock(T0)
        self.stdout = io.StringIO()
        self.core: Core | None = None
        self.session: aiohttp.ClientSession | None = None
        self._seen: set[int] = set()
        self.decided: list[Decided] = []

    async def start(self) -> Self:
        self.session = aiohttp.ClientSession()
        self.core = build_core(
            self.config,
            clock=self.clock,
            session=self.session,
            stdout=self.stdout,
            metrics=Metrics(),
            rng=lambda: 1.0,
        )
        await self.core.open()
        return self

    async def stop(self) -> None:
        if self.core is not None:
            await self.core.close()
            self.core = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    @property
    def store(self) -> Store | None:
        return self.core.store if self.core is not None else None

    @property
    def pipeline(self) -> Pipeline | None:
        return self.core.pipeline if self.core is not None else None

    @property
    def outbox(self) -> Outbox:
        assert self.core is not None
        return self.core.outbox

    @property
    def channels(self) -> dict[str, Channel]:
        assert self.core is not None
        return self.core.channels

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def t(self) -> float:
        return self.clock.now - T0

    async def push(self, *alerts: IncomingAlert, source: str = "am1") -> IngestResult:
        assert self.pipeline is not None
        return await self.pipeline.ingest(alerts, source=source)

    async def receive(
        self, *alerts: IncomingAlert, source: str = "http://am1:9093"
    ) -> IngestResult:
        """As the webhook does: heartbeats taken out, the rest ingested."""
        assert self.pipeline is not None
        return await self.pipeline.receive(Payload(list(alerts), source, "mm", "{}"))

    async def run_until(self, t: float, step: float = 1.0) -> list[Decided]:
        """Step the clock to T0 + t, ticking every `step`; return what was decided meanwhile."""
        assert self.pipeline is not None
        new: list[Decided] = []
        while True:
            await self.pipeline.watch()
            await self.pipeline.tick()
            new += await self._collect()
            if self.t >= t:
                return new
            self.clock.now = min(self.clock.now + step, T0 + t)

    async def _collect(self) -> list[Decided]:
        assert self.store is not None
        rows = await self.store.query(
            "SELECT id, message, digest_id, created_at FROM notifications ORDER BY created_at, id"
        )
        out = []
        for row in rows:
            if row["id"] in self._seen:
                continue
            self._seen.add(row["id"])
            message = Message.from_json(json.loads(row["message"]))
            out.append(Decided(row["created_at"] - T0, message, row["digest_id"]))
        self.decided += out
        return out

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        assert self.store is not None
        return [dict(r) for r in await self.store.query(sql, params)]


class OutboxHarness(Harness):
    """Harness with helpers for the outbox: its rows, and a step that delivers."""

    async def deliveries(self) -> list[dict[str, Any]]:
        return await self.rows("SELECT * FROM deliveries ORDER BY id")

    async def step(self, seconds: float) -> list[dict[str, Any]]:
        self.clock.advance(seconds)
        assert self.pipeline is not None
        await self.pipeline.watch()
        await self.pipeline.tick()
        await self.outbox.drain()
        return await self.deliveries()
