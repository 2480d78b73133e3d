"""The application factory: no I/O at import, one cleanup context per resource.

Start-up order: HTTP client session → the core (store, channels, pipeline, outbox: see
build.py) → reloads → outbox worker → scheduler. Shutdown runs it backwards after aiohttp has
stopped accepting and let in-flight requests finish: timers stop, in-flight sends finish
(pending rows stay in the outbox for the next start), a reload under way finishes, channels
close, the store closes last.

A reload (reload.py) replaces the core while the app runs: handlers and timer jobs look the
core's parts up in the app each time they run, never keep them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
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
from monitor_manager.config.checks import certificate_expiry
from monitor_manager.ingest.record import Recorder
from monitor_manager.metrics import Metrics
from monitor_manager.reload import Reloader, gate_middleware
from monitor_manager.store import StoreError
from monitor_manager.watch.ping import schedule_pings
from monitor_manager.watch.report import REPORT_JOB, Reporter, trigger_of
from monitor_manager.web.api import readiness, setup_routes
from monitor_manager.web.console import setup_console
from monitor_manager.web.tls import ListenerTLS

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
    config_path: str | None = None,
) -> web.Application:
    """`scheduler=False` leaves timers and the delivery worker to the caller (timeline tests).
    `config_path`: the file `config` came from, read again by a reload."""
    app = web.Application(client_max_size=config.server.max_body_bytes + 1024 * 1024)
    app[keys.CONFIG] = config
    app[keys.CLOCK] = clock
    app[keys.METRICS] = metrics or Metrics(channels=[c.name for c in config.channels])
    app[keys.RENDERER] = build_renderer(config)
    app[keys.RELOADER] = Reloader(app, config_path, on_swapped=partial(reschedule, app))
    app[keys.TLS] = ListenerTLS.from_config(config.server)
    if app[keys.TLS] is not None:
        expiry = certificate_expiry(config.server.tls_cert_file)
        app[keys.METRICS].tls_certificate_expiry.set(expiry or 0)

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
        await app[keys.CORE].close()  # the core now: a reload may have replaced that one

    async def reload_ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.RELOADER].started()
        yield
        await app[keys.RELOADER].close()

    async def record_ctx(app: web.Application) -> AsyncIterator[None]:
        """`[server] record`: accepted payloads are appended off the webhook's path."""
        recorder = Recorder(
            config.server.record, config.server.record_max_bytes, clock, app[keys.METRICS]
        )
        recorder.start()
        app[keys.RECORDER] = recorder
        yield
        await recorder.close()

    async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[keys.OUTBOX].run(), name="outbox")
        yield
        await app[keys.OUTBOX].stop(SEND_GRACE_SECONDS)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        sched = AsyncIOScheduler(timezone="UTC")
        sched.add_job(
            _quiet(_gated(app, tick)),
            "interval",
            seconds=TICK_SECONDS,
            id="tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        sched.add_job(
            _quiet(_gated(app, purge)),
            "interval",
            hours=1,
            id="purge",
            max_instances=1,
            coalesce=True,
        )
        sched.add_job(
            _quiet(_gated(app, watch)),
            "interval",
            seconds=1.0,
            id="watchdog",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        _schedule_peers(app, sched, config)
        _schedule_pings(app, sched, config)
        _schedule_report(app, sched, config)
        sched.start()
        app[keys.SCHEDULER] = sched
        yield
        sched.shutdown(wait=False)

    app.cleanup_ctx.extend([session_ctx, core_ctx, reload_ctx])
    if config.server.record:
        app.cleanup_ctx.append(record_ctx)
    if scheduler:
        app.cleanup_ctx.extend([outbox_ctx, scheduler_ctx])
    setup_routes(app)
    setup_console(app)
    # Outermost: a request waits here while a reload swaps the core, so that it runs wholly
    # on the old core or wholly on the new one.
    app.middlewares.insert(0, gate_middleware)
    return app


def _schedule_peers(app: web.Application, sched: AsyncIOScheduler, config: Config) -> None:
    if config.peers:
        sched.add_job(
            _quiet(_gated(app, probe_peers)),
            "interval",
            seconds=config.watchdog.peer_interval,
            id="peers",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )


def _schedule_pings(app: web.Application, sched: AsyncIOScheduler, config: Config) -> None:
    ready = partial(readiness, app)  # pings go out while /readyz would answer 200
    schedule_pings(sched, config.watchdog, app[keys.SESSION], app[keys.METRICS], ready)


def _schedule_report(app: web.Application, sched: AsyncIOScheduler, config: Config) -> None:
    """The daily report, sent once by the cluster; each run reads the core of the moment."""
    if not config.report.schedule:
        return

    async def send_report(app: web.Application) -> None:
        core = app[keys.CORE]
        await Reporter(core.config, core, core.clock).send()

    sched.add_job(_quiet(_gated(app, send_report)), trigger_of(config), id="report", **REPORT_JOB)


def reschedule(app: web.Application, old: Config, new: Config) -> None:
    """After a reload: the jobs whose pace or existence the config decides, anew."""
    sched = app.get(keys.SCHEDULER)
    if sched is None:
        return
    w_old, w_new = old.watchdog, new.watchdog
    if (bool(old.peers), w_old.peer_interval) != (bool(new.peers), w_new.peer_interval):
        if sched.get_job("peers") is not None:
            sched.remove_job("peers")
        _schedule_peers(app, sched, new)
    if (w_old.ping_url, w_old.ping_interval) != (w_new.ping_url, w_new.ping_interval):
        if sched.get_job("ping") is not None:
            sched.remove_job("ping")
        _schedule_pings(app, sched, new)
    if old.report != new.report or old.templates.time_zone != new.templates.time_zone:
        if sched.get_job("report") is not None:
            sched.remove_job("report")
        _schedule_report(app, sched, new)


def _gated(
    app: web.Application, job: Callable[[web.Application], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    """A timer job that runs on the core of the moment, never beside a reload's swap."""

    async def run() -> None:
        async with app[keys.RELOADER].gate.passage():
            await job(app)

    run.__name__ = job.__name__
    return run


async def tick(app: web.Application) -> None:
    await app[keys.PIPELINE].tick()


async def purge(app: web.Application) -> None:
    await app[keys.PIPELINE].purge()


async def watch(app: web.Application) -> None:
    """The watchdog job, every second (pipeline.watch); a store refusing writes is its to
    page, not an error of the job."""
    try:
        await app[keys.PIPELINE].watch()
    except StoreError:
        pass


async def probe_peers(app: web.Application) -> None:
    alerts = await app[keys.PEERS].probe_all()
    app[keys.CORE].ha.publish_position()
    await app[keys.PIPELINE].raise_internal(alerts)
    await app[keys.HA].flush()  # a peer that answers again learns what it missed
    # What people did on the peers since the last pull: a change a partition kept from
    # this instance arrives when the partition heals (pushes alone would lose it).
    await app[keys.CORE].shared.pull()


def _quiet(job):  # type: ignore[no-untyped-def]
    """A scheduled job that logs its failure instead of dying with it."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("scheduled job %s failed", getattr(job, "__name__", job))

    run.__name__ = getattr(job, "__name__", "job")
    return run
