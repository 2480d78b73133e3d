"""build_core: the one place that wires the service together, through constructors only.

The app (app.py), the command line and the tests all build the same core from a config:

    store ─ parts log ─ channels
    ids ─ convergence ─ storm ─ notifier ─ pipeline ─ outbox
    watchdog, store health, peers, high availability

`build_core` does no I/O; `Core.open()` opens the store and rebuilds memory from it (and asks
the peers what they sent meanwhile, and hands back deliveries a crash left `sending`);
`Core.close()` closes the channels and the store.

A reload (reload.py) builds a core from the new config with `previous=` the running one: it
shares what outlives a config (the open store, the parts log, the running outbox, the
channels' rate limiters and token caches) and gets the rest anew.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import aiohttp

from monitor_manager.act.actions import Actions
from monitor_manager.act.links import Links
from monitor_manager.channels import REGISTRY, Channel, ChannelContext, ChannelError
from monitor_manager.clock import Clock, system_clock
from monitor_manager.cluster.ha import Entry, HighAvailability
from monitor_manager.cluster.shared import SharedState
from monitor_manager.config import Config
from monitor_manager.converge.convergence import Convergence
from monitor_manager.converge.directory import Directory
from monitor_manager.converge.ids import Ids
from monitor_manager.converge.notify import Notifier
from monitor_manager.converge.storm import Storm
from monitor_manager.deliver.outbox import Outbox
from monitor_manager.deliver.parts_log import StoredPartsLog
from monitor_manager.deliver.render import Renderer
from monitor_manager.links import group_path
from monitor_manager.metrics import Metrics
from monitor_manager.models import Message
from monitor_manager.pipeline import Pipeline
from monitor_manager.store import Store
from monitor_manager.watch.peers import Peers
from monitor_manager.watch.store_health import StoreHealth
from monitor_manager.watch.watchdog import Watchdog

log = logging.getLogger(__name__)


def build_channels(config: Config, ctx: ChannelContext) -> dict[str, Channel]:
    return {c.name: REGISTRY[c.type](c.name, c.settings, ctx) for c in config.channels}


def build_renderer(config: Config) -> Renderer:
    t = config.templates
    return Renderer(t.language, t.dir or None, t.max_alerts, t.zone)


@dataclass
class Core:
    config: Config
    clock: Clock
    metrics: Metrics
    store: Store
    renderer: Renderer
    parts: StoredPartsLog
    channels: dict[str, Channel]
    pipeline: Pipeline
    outbox: Outbox
    peers: Peers
    ha: HighAvailability
    shared: SharedState
    actions: Actions
    channel_context: ChannelContext

    async def open(self) -> None:
        await self.store.open()
        await self.parts.load()
        await self.pipeline.load()
        await self.store.write(await self.ha.pull())  # what peers sent while we were away
        await self.shared.pull()  # and what people did there: acks, silences, link keys
        recovered = await self.outbox.recover()
        if recovered:
            log.warning(
                "%d deliveries were interrupted by a restart; sending them again", recovered
            )

    async def close(self) -> None:
        await self.retire()
        await self.store.close()

    async def retire(self) -> None:
        """What this core alone holds: pushes to peers under way, the channels' connections.
        The store stays open (a reload hands it on)."""
        await self.shared.drain()
        for channel in self.channels.values():
            try:
                await channel.close()
            except Exception:  # closing is best effort
                log.exception("closing channel %s", channel.name)


def build_core(
    config: Config,
    *,
    clock: Clock = system_clock,
    session: aiohttp.ClientSession | None = None,
    stdout: TextIO | None = None,
    metrics: Metrics | None = None,
    rng: Callable[[], float] = random.random,
    previous: Core | None = None,
) -> Core:
    """`previous`: the running core a reload replaces (see the module's text); its store's
    failures go to the new pipeline, and its outbox takes the new channels, once the reload
    swaps the new core in (reload.py), not before."""
    metrics = metrics or Metrics(channels=[c.name for c in config.channels])
    pipeline: Pipeline | None = None

    def store_failed(exc: BaseException) -> None:
        if pipeline is not None:
            pipeline.store_failed(exc)

    store = previous.store if previous else Store(config.storage.path, on_failure=store_failed)
    renderer = build_renderer(config)
    parts = previous.parts if previous else StoredPartsLog(store, clock)
    ctx = ChannelContext(
        session=session,
        renderer=renderer,
        clock=clock,
        stdout=stdout or io.StringIO(),
        instance=config.server.instance,
        # A robot's rate limits and a WeCom token outlive a reload: a reload must not let a
        # burst past the platform's limit, nor fetch a token it already has.
        extra=previous.channel_context.extra if previous else {},
        parts=parts,
    )
    channels = build_channels(config, ctx)
    ids = Ids()
    links = Links()  # the keys that sign acknowledge links: loaded with the store
    convergence = Convergence(config, clock, ids)
    watchdog = Watchdog(config, clock, convergence.is_firing, metrics)
    peers = Peers(config, session, clock, metrics, convergence.is_firing)
    ha = HighAvailability(config, peers, session, clock, metrics)
    directory = Directory(config)

    def peer_sends(entries: list[Entry]) -> None:
        """What peers sent counts in the platforms' limits here too (they count per member or
        robot, whoever calls). Rows of one merged send share a send time: counted once."""
        seen: set[tuple[str, str, str, float]] = set()
        for e in entries:
            key = (e.instance, e.channel, e.contact_group, e.sent_at)
            channel = channels.get(e.channel)
            if key in seen or channel is None:
                continue
            seen.add(key)
            channel.peer_sent(directory.members(e.contact_group), e.sent_at, e.calls)

    ha.on_peer_sends = peer_sends
    for channel in channels.values():
        channel.peer_senders = lambda: len(peers.senders()) if ha.enabled else 0
    notifier = Notifier(
        config,
        ids,
        directory,
        Storm(config.storm, ids),
        send_delay=ha.send_delay,
        group_path=group_path,  # the console's page of the group: every message links there
        links=links,
    )
    outbox = (
        previous.outbox
        if previous
        else Outbox(store, channels, config.delivery, clock, metrics, rng, observer=watchdog, ha=ha)
    )

    async def page_directly(messages: list[Message]) -> None:
        """The one side path (StoreFailing): straight to the channels, best effort."""
        for message in messages:
            for name in config.contact_group(message.contact_group).channels:
                try:
                    await channels[name].send(message)
                except ChannelError as exc:
                    log.error("StoreFailing page via %s failed: %s", name, exc)

    pipeline = Pipeline(
        config,
        store,
        clock,
        metrics,
        ids=ids,
        convergence=convergence,
        notifier=notifier,
        watchdog=watchdog,
        store_health=StoreHealth(config),
        nflog=ha.log,
        parts=parts,
        page_directly=page_directly,
        on_enqueued=outbox.wake,
        links=links,
    )
    shared = SharedState(
        config, convergence, links, peers, session, clock, metrics, pipeline.load, store.write
    )
    pipeline.on_shared = shared.push
    return Core(
        config,
        clock,
        metrics,
        store,
        renderer,
        parts,
        channels,
        pipeline,
        outbox,
        peers,
        ha,
        shared,
        Actions(pipeline, on_shared=shared.push),
        ctx,
    )
