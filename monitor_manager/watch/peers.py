"""Peer probes: every instance probes the others' /healthz; a peer silent for `peer_failures`
probes in a row raises PeerDown{peer=NAME}, the next good probe resolves it.

A peer counts as reachable until a probe fails: high availability orders the reachable
instances by name and waits its position before sending.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from monitor_manager.clock import Clock, iso
from monitor_manager.config import Config, PeerConfig, peer_ssl_context
from monitor_manager.durations import format_duration
from monitor_manager.ingest.payload import IncomingAlert
from monitor_manager.metrics import Metrics
from monitor_manager.watch.watchdog import TEXTS, internal_alert, internal_labels
from monitor_manager.web.bodies import BodyError, read_answer


@dataclass
class PeerState:
    config: PeerConfig
    failures: int = 0
    last_probe_at: float | None = None
    last_ok_at: float | None = None
    latency: float | None = None
    last_error: str = ""
    instance: str = ""  # the name the peer reports on /healthz
    protocol: int = 1  # the highest peer protocol version it advertises there (1: release 1)
    offset: float | None = None  # its clock minus ours, from the last good probe
    commits: bool = True  # its store takes commits (release 1 does not say: it does)

    @property
    def reachable(self) -> bool:
        return self.failures == 0

    def as_json(self, down_after: int) -> dict[str, object]:
        return {
            "name": self.config.name,
            "url": self.config.url,
            "last_probe": iso(self.last_probe_at),
            "last_ok": iso(self.last_ok_at),
            "latency_seconds": self.latency,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "state": "down" if self.failures >= down_after else "up",
            "clock_offset_seconds": self.offset,
        }


class Peers:
    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession | None,
        clock: Clock,
        metrics: Metrics,
        is_firing: Callable[[dict[str, str]], bool],
    ) -> None:
        self.config = config
        self.session = session
        self.clock = clock
        self.metrics = metrics
        self.is_firing = is_firing
        self.texts = TEXTS[config.templates.language]
        self.states = {p.name: PeerState(p) for p in config.peers}
        # Peers' HTTPS certificates are checked (against ha.ca_file where one is given).
        self.ssl: ssl.SSLContext | bool = peer_ssl_context(config.ha) or True
        for name in self.states:
            metrics.peer_up.labels(name).set(1)

    def adopt(self, previous: Peers) -> None:
        """A reload: a peer configured as before keeps what its probes found (a peer that is
        down stays down, and is not counted as reachable until a probe says so); a removed
        peer's series go."""
        for name, state in previous.states.items():
            if name in self.states and self.states[name].config == state.config:
                self.states[name] = dataclasses.replace(state)
                up = state.failures < self.config.watchdog.peer_failures
                self.metrics.peer_up.labels(name).set(1 if up else 0)
            elif name not in self.states:
                for gauge in (self.metrics.peer_up, self.metrics.peer_probe_duration):
                    try:
                        gauge.remove(name)
                    except KeyError:
                        pass

    def reachable(self) -> list[str]:
        return sorted(name for name, s in self.states.items() if s.reachable)

    def senders(self) -> list[str]:
        """Reachable peers that can send: a peer whose store fails cannot claim a row."""
        return sorted(name for name, s in self.states.items() if s.reachable and s.commits)

    async def probe_all(self) -> list[IncomingAlert]:
        """Probe every peer at once; return the PeerDown alerts whose state changed."""
        await asyncio.gather(*(self._probe(s) for s in self.states.values()))
        return self.transitions()

    async def _probe(self, state: PeerState) -> None:
        assert self.session is not None
        watchdog = self.config.watchdog
        started = time.monotonic()
        state.last_probe_at = self.clock()
        offset = None
        try:
            async with self.session.get(
                f"{state.config.url.rstrip('/')}/healthz",
                timeout=aiohttp.ClientTimeout(total=watchdog.peer_timeout),
                ssl=self.ssl,
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await read_answer(response, 64 * 1024)
            body = body if isinstance(body, dict) else {}
            state.instance = str(body.get("instance", ""))[:256]
            if state.instance and state.instance != state.config.name:
                # A URL that reaches another instance (or this one) would put the wrong name
                # in the send order: a page could be held for an instance nobody runs. Down,
                # so that PeerDown says what to fix.
                raise ValueError(
                    f"{state.config.url} answers as instance {state.instance!r}, not "
                    f"{state.config.name!r}: check [[peers]] url and that instance's "
                    "server.instance"
                )
            protocol = body.get("peer_protocol")
            state.protocol = protocol if protocol in (1, 2) and protocol is not True else 1
            state.commits = body.get("commits") is not False
            # Its clock against ours at the middle of the round trip (release 1 sends none).
            told = body.get("time")
            if isinstance(told, int | float) and not isinstance(told, bool) and math.isfinite(told):
                offset = told - (state.last_probe_at + (time.monotonic() - started) / 2)
        except (aiohttp.ClientError, TimeoutError, ValueError, BodyError) as exc:
            state.failures += 1
            state.last_error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            state.failures = 0
            state.last_ok_at = state.last_probe_at
            state.last_error = ""
            state.offset = offset
        state.latency = time.monotonic() - started
        self.metrics.peer_probe_duration.labels(state.config.name).set(state.latency)
        self.metrics.peer_up.labels(state.config.name).set(
            0 if state.failures >= watchdog.peer_failures else 1
        )

    def transitions(self) -> list[IncomingAlert]:
        out = []
        limit = self.config.watchdog.peer_failures
        now = self.clock()
        for name, state in self.states.items():
            labels = {"peer": name}
            firing = self.is_firing(internal_labels("PeerDown", labels))
            summary = self.texts["peer_summary"].format(peer=name)
            if state.failures >= limit and not firing:
                out.append(
                    internal_alert(
                        "PeerDown",
                        "firing",
                        labels,
                        summary,
                        self.texts["peer_description"].format(
                            failures=state.failures, url=state.config.url, error=state.last_error
                        ),
                        starts_at=now,
                    )
                )
            elif state.failures == 0 and state.last_ok_at is not None and firing:
                out.append(
                    internal_alert(
                        "PeerDown", "resolved", labels, summary, "", starts_at=now, ends_at=now
                    )
                )
            out += self._skew(name, state, now)
        return out

    def _skew(self, name: str, state: PeerState, now: float) -> list[IncomingAlert]:
        """ClockSkew{peer=NAME}: its clock is further from ours than ha.max_clock_skew."""
        if state.offset is None or state.failures:
            return []  # no reading: the state stays as it was
        labels = {"peer": name}
        firing = self.is_firing(internal_labels("ClockSkew", labels))
        limit = self.config.ha.max_clock_skew
        off = format_duration(round(abs(state.offset)))
        summary = self.texts["skew_summary"].format(peer=name, offset=off)
        if abs(state.offset) > limit and not firing:
            direction = self.texts["skew_ahead" if state.offset > 0 else "skew_behind"]
            text = self.texts["skew_description"].format(
                peer=name, offset=off, direction=direction, limit=format_duration(limit)
            )
            return [internal_alert("ClockSkew", "firing", labels, summary, text, starts_at=now)]
        if abs(state.offset) <= limit and firing:
            return [
                internal_alert(
                    "ClockSkew", "resolved", labels, summary, "", starts_at=now, ends_at=now
                )
            ]
        return []
