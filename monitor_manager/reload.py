"""Reload: the config file read again, checked, and swapped in without a restart.

Triggers: SIGHUP (`systemctl reload`), `POST /-/reload`, `monitor-manager reload` (which posts
there). One reload at a time (a lock). The file is read and checked as check-config does; a
config with problems changes nothing: the answer and the log list every problem by its key
path, and `monitor_manager_config_last_reload_successful` goes to 0.

A valid config becomes a new core (build.py) on the same open store. The swap happens between
requests: the gate closes (requests and timer jobs arriving meanwhile wait, they are not
refused), those already inside finish on the old core, memory is rebuilt from the store for
the new one, open alert groups whose contact group is gone are closed and their firing alerts
routed again, and the new core takes the old one's place in the app. The outbox keeps running
with its queue; what it claims from then on goes through the new channels. The old channels
close once the sends in flight on them are done.

Settings the running process cannot change (the listen address, TLS files, the store's path,
the body limit, the instance's name) keep their running values and are reported as needing a
restart; everything else is applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from monitor_manager import keys
from monitor_manager.act.wecom_reply import CallbackState
from monitor_manager.build import Core, build_core
from monitor_manager.config import Config, ConfigError, load_config, serve_anyway_problems
from monitor_manager.converge.convergence import Rerouted
from monitor_manager.store import StoreError, audit

log = logging.getLogger(__name__)

RELOAD_PATH = "/-/reload"
CLI_AGENT = "monitor-manager-reload"  # the User-Agent of `monitor-manager reload`
QUIESCE_SECONDS = 30.0  # how long a reload waits for requests and jobs inside to finish
RETIRE_SECONDS = 10.0  # how long the old channels stay open for sends in flight on them
# Paths that never touch the core's memory: they pass while the gate is closed (the reload
# itself must, or it would wait for itself).
UNGATED = frozenset({RELOAD_PATH, "/healthz", "/readyz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What the running process cannot change: (key path, its value in a config).
RESTART_SETTINGS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("server.listen", lambda c: c.server.listen),
    ("server.tls_cert_file", lambda c: c.server.tls_cert_file),
    ("server.tls_key_file", lambda c: c.server.tls_key_file),
    ("server.max_body_bytes", lambda c: c.server.max_body_bytes),  # the server's body limit
    # Peers, stored link keys and the notification log know this instance by its name.
    ("server.instance", lambda c: c.server.instance),
    ("storage.path", lambda c: c.storage.path),
)
_NAMED = ("channels", "contact_groups", "peers", "maintenance")  # changes shown per item


def keep_running_values(running: Config, new: Config) -> tuple[Config, list[str]]:
    """`new` with the settings that need a restart at their running values, and a note for
    each one the file changes."""
    notes = [
        f"{path}: {json.dumps(value(new))} needs a restart; running with "
        f"{json.dumps(value(running))} until then"
        for path, value in RESTART_SETTINGS
        if value(new) != value(running)
    ]
    server = dataclasses.replace(
        new.server,
        listen=running.server.listen,
        tls_cert_file=running.server.tls_cert_file,
        tls_key_file=running.server.tls_key_file,
        max_body_bytes=running.server.max_body_bytes,
        instance=running.server.instance,
    )
    storage = dataclasses.replace(new.storage, path=running.storage.path)
    return dataclasses.replace(new, server=server, storage=storage), notes


def config_changes(old: Config, new: Config) -> list[str]:
    """What a reload changes: sections by name, channels, contact groups, peers and
    maintenance windows one by one ("contact_groups.dba", "channels.mail (new)")."""
    out: list[str] = []
    for f in dataclasses.fields(Config):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name == "source" or before == after:
            continue
        if f.name not in _NAMED:
            out.append(f.name)
            continue
        was = {item.name: item for item in before}
        now = {item.name: item for item in after}
        items = [
            f"{f.name}.{name} (new)" if name not in was else f"{f.name}.{name}"
            for name in now
            if was.get(name) != now[name]
        ]
        items += [f"{f.name}.{name} (removed)" for name in was if name not in now]
        out += items or [f"{f.name} (order)"]
    return out


class Busy(Exception):
    def __init__(self, inside: int) -> None:
        super().__init__(f"{inside} requests or jobs still running")
        self.inside = inside


class Gate:
    """Requests and timer jobs pass while it is open. A reload closes it, waits until those
    inside have left, swaps the core and opens it again; those arriving meanwhile wait for
    the new core (a webhook is delayed, never refused)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._inside = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self.waited = 0  # passages that waited for a swap (since the start)

    @asynccontextmanager
    async def passage(self) -> AsyncIterator[None]:
        # Checked again after every wake-up: the gate may have closed again before this
        # waiter ran; counted in the same step, so a closing reload cannot miss it.
        if not self._open.is_set():
            self.waited += 1
        while not self._open.is_set():
            await self._open.wait()
        self._inside += 1
        self._empty.clear()
        try:
            yield
        finally:
            self._inside -= 1
            if not self._inside:
                self._empty.set()

    @asynccontextmanager
    async def closed(self, timeout: float) -> AsyncIterator[None]:
        self._open.clear()
        try:
            try:
                await asyncio.wait_for(self._empty.wait(), timeout)
            except TimeoutError:
                raise Busy(self._inside) from None
            yield
        finally:
            self._open.set()


@web.middleware
async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNGATED:
        return await handler(request)
    async with request.app[keys.RELOADER].gate.passage():
        return await handler(request)


@dataclass
class Outcome:
    """A reload's answer: 200 applied, 400 the config has problems (or there is no file),
    503 the store or the requests in flight kept it from happening; 500 a bug."""

    status: int
    config: str
    error: str = ""
    problems: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    rerouted: list[Rerouted] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def json(self) -> dict[str, Any]:
        if not self.ok:
            return {"error": self.error, "problems": self.problems, "config": self.config}
        return {
            "status": "ok",
            "config": self.config,
            "changed": self.changed,
            "needs_restart": self.needs_restart,
            "rerouted": [
                {"group": r.key, "contact_group": r.contact_group, "alerts": r.firing, "to": r.to}
                for r in self.rerouted
            ],
        }

    def detail(self) -> str:
        """One line for the audit."""
        if not self.ok:
            return "; ".join([f"refused: {self.error}", *self.problems])
        parts = [f"changed: {', '.join(self.changed) or 'nothing'}"]
        if self.needs_restart:
            parts.append(f"needs a restart: {'; '.join(self.needs_restart)}")
        parts += [
            f"group {r.key} of removed contact group {r.contact_group} closed; "
            f"{r.firing} firing alerts routed to {', '.join(r.to) or 'nobody'}"
            for r in self.rerouted
        ]
        return "; ".join(parts)


class Reloader:
    """app[keys.RELOADER]: the lock, the gate, and the reloads and retirements under way.
    `on_swapped(old, new)` is told after each swap (the app reschedules its timer jobs)."""

    def __init__(
        self,
        app: web.Application,
        path: str | None,
        on_swapped: Callable[[Config, Config], None] = lambda old, new: None,
    ) -> None:
        self.app = app
        self.path = path
        self.on_swapped = on_swapped
        self.gate = Gate()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def started(self) -> None:
        """The config loaded at start-up counts as the first successful load."""
        metrics = self.app[keys.METRICS]
        metrics.config_reload_ok.set(1)
        metrics.config_reload_at.set(self.app[keys.CLOCK]())

    def spawn(self, via: str, who: str) -> None:
        """A reload in the background (SIGHUP): its outcome goes to the log and the audit."""
        if self._closing:
            log.warning("config reload (%s) ignored: shutting down", who)
            return
        self._track(self.reload(via, who))

    async def close(self) -> None:
        """At shutdown, before the core closes: reloads and retirements under way finish."""
        self._closing = True
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    def _track(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, via: str, who: str) -> Outcome:
        """Read the config file again and apply it, or change nothing and say why."""
        async with self._lock:
            try:
                outcome = await self._reload()
            except Exception:  # a bug: nothing was swapped (the swap is the last step)
                log.exception("config reload failed")
                outcome = Outcome(500, self.path or "", "internal error; nothing changed")
            self._report(outcome)
            await self._audit(outcome, via, who)
        return outcome

    async def _reload(self) -> Outcome:
        path = self.path
        if path is None:
            return Outcome(
                400, "", "serve was started without --config: there is no config file to read"
            )
        try:  # off the event loop: it reads files (the config, TLS certificates)
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            return self._refused(path, exc.problems)
        problems = serve_anyway_problems(config)  # check-config's errors refuse a reload too
        if problems:
            return self._refused(path, problems)
        old = self.app[keys.CORE]
        config, restart = keep_running_values(old.config, config)
        changed = config_changes(old.config, config)
        ctx = old.channel_context
        new = build_core(
            config,
            clock=old.clock,
            session=ctx.session,
            stdout=ctx.stdout,
            metrics=old.metrics,
            previous=old,
        )
        try:
            async with self.gate.closed(QUIESCE_SECONDS):
                await old.store.flush()  # what the old core wrote is in the store
                new.pipeline.watchdog.adopt(old.pipeline.watchdog)
                new.pipeline.store_health.adopt(old.pipeline.store_health)
                new.peers.adopt(old.peers)
                await new.pipeline.load()
                new.pipeline.convergence.adopt(old.pipeline.convergence)
                rerouted = await new.pipeline.reroute_orphans()
                sends = self._publish(new)
        except Busy as exc:
            return Outcome(
                503,
                path,
                f"{exc.inside} requests or timer jobs did not finish within "
                f"{QUIESCE_SECONDS:g}s; nothing changed, try again",
            )
        except StoreError as exc:
            return Outcome(
                503, path, f"the store cannot be read or written ({exc.reason}); nothing changed"
            )
        try:
            self.on_swapped(old.config, new.config)
        except Exception:  # the new config is in place; a timer job may run at its old pace
            log.exception("rescheduling the timer jobs after a reload failed")
        self._track(_retire(old, sends))
        return Outcome(200, path, changed=changed, needs_restart=restart, rerouted=rerouted)

    def _refused(self, path: str, problems: list[str]) -> Outcome:
        return Outcome(
            400,
            path,
            f"{path}: {len(problems)} problem(s); nothing changed, the service keeps running "
            "on its previous config",
            problems,
        )

    def _publish(self, new: Core) -> set[asyncio.Task[None]]:
        """The swap: no await in here, so no request or job sees half of it. Returns the
        sends in flight on the old channels."""
        sends = new.outbox.sends_in_flight()
        new.outbox.reconfigure(new.channels, new.config.delivery, new.pipeline.watchdog, new.ha)
        new.store.on_failure = new.pipeline.store_failed
        new.metrics.add_channels(c.name for c in new.config.channels)
        state: dict[web.AppKey[Any], Any] = {
            keys.CONFIG: new.config,
            keys.RENDERER: new.renderer,
            keys.CHANNELS: new.channels,
            keys.PIPELINE: new.pipeline,
            keys.PEERS: new.peers,
            keys.HA: new.ha,
            keys.CORE: new,
        }
        # aiohttp warns when a started app's state changes (a DeprecationWarning, no lock):
        # this is the one place that does so, on purpose, between requests.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for key, value in state.items():
                self.app[key] = value
        callbacks = self.app.get(keys.WECOM_CALLBACKS)
        if callbacks is not None:  # the apps that take replies anew; the replay memory stays
            callbacks.apps = CallbackState.from_config(new.config, new.clock).apps
        return sends

    def _report(self, outcome: Outcome) -> None:
        metrics = self.app[keys.METRICS]
        if not outcome.ok:
            metrics.config_reload_ok.set(0)
            log.error("config reload refused: %s", outcome.error)
            for problem in outcome.problems:
                log.error("%s: %s", outcome.config, problem)
            return
        metrics.config_reload_ok.set(1)
        metrics.config_reload_at.set(self.app[keys.CLOCK]())
        log.info(
            "config reloaded from %s; changed: %s",
            outcome.config,
            ", ".join(outcome.changed) or "nothing",
        )
        for note in outcome.needs_restart:
            log.warning("config reload: %s", note)
        for r in outcome.rerouted:
            log.warning(
                "alert group %s closed without a resolved message: its contact group %r is "
                "no longer configured; its %d firing alerts were routed again, to %s",
                r.key,
                r.contact_group,
                r.firing,
                ", ".join(r.to) or "nobody",
            )

    async def _audit(self, outcome: Outcome, via: str, who: str) -> None:
        core = self.app[keys.CORE]
        op = audit.record(
            core.clock(),
            who,
            via,
            "reload" if outcome.ok else "reload refused",
            outcome.config or "(no config file)",
            outcome.detail(),
            core.config.server.instance,
        )
        try:
            await core.store.write([op])
        except StoreError as exc:
            log.error("could not record the reload in the audit: %s", exc)


async def _retire(old: Core, sends: Iterable[asyncio.Task[None]]) -> None:
    """The replaced core, once the sends in flight on its channels are done: its pushes to
    peers finish, its channels close."""
    pending = set(sends)
    if pending:
        await asyncio.wait(pending, timeout=RETIRE_SECONDS)
    await old.retire()
    del old
    # pipeline.load froze what it loaded out of the collector's sight; the replaced core's
    # memory (cycles and all) can only be freed once it is back in sight.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
