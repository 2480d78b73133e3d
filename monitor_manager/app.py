"""The application factory: no I/O at import, one cleanup context per resource.

Start-up order: HTTP client session → the core (store, channels, pipeline, outbox: see
build.py) → outbox worker → scheduler. Shutdown runs it backwards after aiohttp has stopped
accepting and let in-flight requests finish: timers stop, in-flight sends finish (pending rows
stay in the outbox for the next start), channels close, the store closes last.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import TextIO

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor_manager import keys
from monitor_manager.build import build_core, build_renderer
from monitor_manager.clock import Clock, system_clock
from monitor_manager.config import Config
from monitor_manager.metrics import Metrics
from monitor_manager.store import StoreError
from monitor_manager.watch.ping import schedule_pings
from monitor_manager.web.api import readiness, setup_routes
from monitor_manager.web.console import setup_console

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2  # how often due alert groups are looked for (an in-memory heap peek)
SEND_GRACE_SECONDS = 10.0  # how long shutdown lets in-flight sends finish


def create_app(
    config: Config,
    *,
    clock: Clock = system_clock,
    stdout: TextIO | None = None,
    metrics: Metrics | None = None,
    scheduler: bool = True,
) -> web.Application:
    """`scheduler=False` leaves timers and the delivery worker to the caller (timeline tests)."""
    app = web.Application(client_max_size=config.server.max_body_bytes + 1024 * 1024)
    app[keys.CONFIG] = config
    app[keys.CLOCK] = clock
    app[keys.METRICS] = metrics or Metrics(channels=[c.name for c in config.channels])
    app[keys.RENDERER] = build_renderer(config)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app[keys.SESSION] = session
        yield
        await session.close()

    async def core_ctx(app: web.Application) -> AsyncIterator[None]:
        core = build_core(
            config,
            clock=clock,
            session=app[keys.SESSION],
            stdout=stdout or sys.stdout,
            metrics=app[keys.METRICS],
        )
        await core.open()
        app[keys.CORE] = core
        app[keys.STORE] = core.store
        app[keys.PARTS] = core.parts
        app[keys.CHANNELS] = core.channels
        app[keys.PIPELINE] = core.pipeline
        app[keys.OUTBOX] = core.outbox
        app[keys.PEERS] = core.peers
        app[keys.HA] = core.ha
        yield
        await core.close()

    async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[keys.OUTBOX].run(), name="outbox")
        yield
        await app[keys.OUTBOX].stop(SEND_GRACE_SECONDS)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        sched = AsyncIOScheduler(timezone="UTC")
        pipeline = app[keys.PIPELINE]
        sched.add_job(
            _quiet(pipeline.tick),
            "interval",
            seconds=TICK_SECONDS,
            id="tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        sched.add_job(
            _quiet(pipeline.purge), "interval", hours=1, id="purge", max_instances=1, coalesce=True
        )
        sched.add_job(
            _quiet(partial(watch, app)),
            "interval",
            seconds=1.0,
            id="watchdog",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        if config.peers:
            sched.add_job(
                _quiet(partial(probe_peers, app)),
                "interval",
                seconds=config.watchdog.peer_interval,
                id="peers",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        ready = partial(readiness, app)  # pings go out while /readyz would answer 200
        schedule_pings(sched, config.watchdog, app[keys.SESSION], app[keys.METRICS], ready)
        sched.start()
        app[keys.SCHEDULER] = sched
        yield
        sched.shutdown(wait=False)

    app.cleanup_ctx.extend([session_ctx, core_ctx])
    if scheduler:
        app.cleanup_ctx.extend([outbox_ctx, scheduler_ctx])
    setup_routes(app)
    setup_console(app)
    return app


async def watch(app: web.Application) -> None:
    """The watchdog job, every second (pipeline.watch); a store refusing writes is its to
    page, not an error of the job."""
    try:
        await app[keys.PIPELINE].watch()
    except StoreError:
        pass


async def probe_peers(app: web.Application) -> None:
    alerts = await app[keys.PEERS].probe_all()
    await app[keys.PIPELINE].raise_internal(alerts)
    await app[keys.HA].flush()  # a peer that answers again learns what it missed


def _quiet(job):  # type: ignore[no-untyped-def]
    """A scheduled job that logs its failure instead of dying with it."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("scheduled job %s failed", getattr(job, "__name__", job))

    run.__name__ = getattr(job, "__name__", "job")
    return run
