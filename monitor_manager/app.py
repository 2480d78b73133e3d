"""The application factory: no I/O at import, one cleanup context per resource.

Start-up order: store → HTTP client session → channels → pipeline → outbox worker →
scheduler. Shutdown runs it backwards after aiohttp has stopped accepting and let in-flight
requests finish: timers stop, in-flight sends finish (pending rows stay in the outbox for the
next start), channels close, the store closes last.
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
from monitor_manager.channels import REGISTRY, Channel, ChannelContext, ChannelError
from monitor_manager.clock import Clock, system_clock
from monitor_manager.cluster.ha import HighAvailability
from monitor_manager.config import Config
from monitor_manager.deliver.outbox import Outbox
from monitor_manager.deliver.parts_log import StoredPartsLog
from monitor_manager.deliver.render import Renderer
from monitor_manager.ingest.payload import IncomingAlert
from monitor_manager.metrics import Metrics
from monitor_manager.pipeline import Pipeline
from monitor_manager.store import Store, StoreError
from monitor_manager.watch.peers import Peers
from monitor_manager.web.api import setup_routes
from monitor_manager.web.console import setup_console

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2  # how often due alert groups are looked for (an in-memory heap peek)
SEND_GRACE_SECONDS = 10.0  # how long shutdown lets in-flight sends finish


def build_channels(config: Config, ctx: ChannelContext) -> dict[str, Channel]:
    return {c.name: REGISTRY[c.type](c.name, c.settings, ctx) for c in config.channels}


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
    app[keys.RENDERER] = Renderer(
        config.templates.language, config.templates.dir or None, config.templates.max_alerts
    )
    out = stdout or sys.stdout

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = Store(config.storage.path)
        await store.open()
        app[keys.STORE] = store
        yield
        await store.close()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app[keys.SESSION] = session
        yield
        await session.close()

    async def channels_ctx(app: web.Application) -> AsyncIterator[None]:
        parts = StoredPartsLog(app[keys.STORE], clock)
        await parts.load()
        app[keys.PARTS] = parts
        ctx = ChannelContext(
            session=app[keys.SESSION],
            renderer=app[keys.RENDERER],
            clock=clock,
            stdout=out,
            instance=config.server.instance,
            parts=parts,
        )
        channels = build_channels(config, ctx)
        app[keys.CHANNELS] = channels
        yield
        for channel in channels.values():
            try:
                await channel.close()
            except Exception:  # closing is best effort
                log.exception("closing channel %s", channel.name)

    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        outbox = Outbox(
            app[keys.STORE], app[keys.CHANNELS], config.delivery, clock, app[keys.METRICS]
        )
        pipeline = Pipeline(
            config, app[keys.STORE], clock, app[keys.METRICS], on_enqueued=outbox.wake
        )
        outbox.observer = pipeline.watchdog
        peers = Peers(config, app[keys.SESSION], clock, app[keys.METRICS], pipeline.is_firing)
        ha = HighAvailability(config, peers, app[keys.SESSION], clock, app[keys.METRICS])
        pipeline.nflog = ha.log
        pipeline.parts = app[keys.PARTS]
        pipeline.convergence.send_delay = ha.send_delay
        outbox.ha = ha
        await pipeline.load()
        await app[keys.STORE].write(await ha.pull())  # what peers sent while we were away
        recovered = await outbox.recover()
        if recovered:
            log.warning(
                "%d deliveries were interrupted by a restart; sending them again", recovered
            )
        app[keys.PIPELINE] = pipeline
        app[keys.OUTBOX] = outbox
        app[keys.PEERS] = peers
        app[keys.HA] = ha
        yield

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
        sched.start()
        app[keys.SCHEDULER] = sched
        yield
        sched.shutdown(wait=False)

    app.cleanup_ctx.extend([store_ctx, session_ctx, channels_ctx, pipeline_ctx])
    if scheduler:
        app.cleanup_ctx.extend([outbox_ctx, scheduler_ctx])
    setup_routes(app)
    setup_console(app)
    return app


async def watch(app: web.Application) -> None:
    """The watchdog job: heartbeat deadlines, channel health, the store; every second."""
    pipeline = app[keys.PIPELINE]
    try:
        await pipeline.watch()
    except StoreError:
        pass  # the store refuses writes; the page below goes around it
    now = app[keys.CLOCK]()
    metrics = app[keys.METRICS]
    for beat in pipeline.watchdog.heartbeats:
        metrics.heartbeat_last_seen.labels(beat.config.name).set(beat.last_seen or 0)
        metrics.heartbeat_missing.labels(beat.config.name).set(beat.state == "missing")
    alert = pipeline.watchdog.store_alert(now)
    if alert is None:
        return
    if alert.status == "resolved":  # the store takes writes again: through the outbox
        try:
            await pipeline.enqueue_store_failing(alert)
            return
        except StoreError:
            pass  # failing again already: the direct way, as the page went
    await page_directly(app, alert)


async def page_directly(app: web.Application, alert: IncomingAlert) -> None:
    """The one side path: with the store refusing writes nothing can enter the outbox, so a
    StoreFailing page goes straight to the watchdog groups' channels, once, best effort. Its
    resolution goes through the outbox, the store taking writes again."""
    config = app[keys.CONFIG]
    for message in app[keys.PIPELINE].store_failing_messages(alert):
        for channel_name in config.contact_group(message.contact_group).channels:
            try:
                await app[keys.CHANNELS][channel_name].send(message)
            except ChannelError as exc:
                log.error("StoreFailing page via %s failed: %s", channel_name, exc)


async def probe_peers(app: web.Application) -> None:
    alerts = await app[keys.PEERS].probe_all()
    await app[keys.PIPELINE].raise_internal(alerts)


def _quiet(job):  # type: ignore[no-untyped-def]
    """A scheduled job that logs its failure instead of dying with it."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("scheduled job %s failed", getattr(job, "__name__", job))

    run.__name__ = getattr(job, "__name__", "job")
    return run
