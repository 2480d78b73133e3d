"""Watched from outside: while this instance is healthy it GETs `watchdog.ping_url` every
`watchdog.ping_interval`, so that an outside service (healthchecks.io, Dead Man's Snitch, a
Tingyun monitor) pages when the pings stop: when Monitor Manager dies, hangs, loses its
network, or cannot write its store. Its own pages could not say any of that.

Healthy means what /readyz means (`web.api.readiness`): the store takes a write and the
scheduler runs. While it is not, no ping goes out: the outside service's silence is the page.
At most one ping is in flight; each has a timeout. Every round is counted in
`monitor_manager_watchdog_pings_total{result}` (ok, failed, withheld).

Ping URLs carry their token in the path (`https://hc-ping.com/<uuid>`,
`https://nosnch.in/<token>`) or the query: logs name only the scheme and host, and errors are
scrubbed of the rest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import yarl
from apscheduler.schedulers.base import BaseScheduler

from monitor_manager.channels.base import redact
from monitor_manager.config import WatchdogConfig
from monitor_manager.metrics import Metrics

log = logging.getLogger(__name__)

PING_TIMEOUT = 10.0  # seconds a ping (and the health check before it) may take at most

Result = Literal["ok", "failed", "withheld", "busy"]


def shown_url(url: str) -> str:
    """What logs may show of a ping URL: its scheme and host, never the token in the rest."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


def url_secrets(url: str) -> list[str]:
    """The parts of a ping URL that may be its token, as an error text could quote them:
    the URL itself, its path and query (as written and as aiohttp normalises them), each
    longer path segment and query value, and a password."""
    parts = urlsplit(url)
    found = [url, parts.path, parts.query]
    try:
        normal = yarl.URL(url)
        found += [str(normal), normal.path_qs, normal.raw_path_qs]
    except ValueError:
        pass  # aiohttp cannot use it either: its error quotes what was given
    found += [s for s in parts.path.split("/") if len(s) >= 6]
    found += [v for _, v in parse_qsl(parts.query) if len(v) >= 6]
    found.append(parts.password or "")
    # Longest first, so that a part is not left half-replaced by a shorter one inside it.
    return sorted({s for s in found if len(s) > 1}, key=len, reverse=True)


class Pinger:
    """Pings `url` when asked (the app's scheduler asks every ping_interval), if `health()`
    finds nothing wrong. `health` returns the problems, [] when healthy."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        health: Callable[[], Awaitable[list[str]]],
        timeout: float = PING_TIMEOUT,
    ) -> None:
        self.url = url
        self.session = session
        self.metrics = metrics
        self.health = health
        self.timeout = timeout
        self.shown = shown_url(url)
        self._secrets = url_secrets(url)
        self._in_flight = False
        self._withholding = False

    async def ping(self) -> Result:
        """One round: check health, then GET the URL. The result, counted in the metric:
        "ok" (a 2xx answer), "failed" (logged), "withheld" (not healthy: nothing sent); or
        "busy", not counted, when the previous round has not finished (nothing sent)."""
        if self._in_flight:
            return "busy"
        self._in_flight = True
        try:
            result = await self._round()
        finally:
            self._in_flight = False
        self.metrics.watchdog_pings.labels(result).inc()
        return result

    async def _round(self) -> Literal["ok", "failed", "withheld"]:
        problems = await self._problems()
        if problems:
            if not self._withholding:
                log.warning(
                    "not pinging %s while not ready (%s): the outside monitor will page",
                    self.shown,
                    "; ".join(problems),
                )
            self._withholding = True
            return "withheld"
        if self._withholding:
            log.warning("ready again: pinging %s again", self.shown)
            self._withholding = False
        error = await self._get()
        if error is None:
            return "ok"
        log.warning("ping to %s failed: %s", self.shown, error)
        return "failed"

    async def _problems(self) -> list[str]:
        try:
            return await asyncio.wait_for(self.health(), self.timeout)
        except TimeoutError:
            return [f"the health check did not finish within {self.timeout:g}s"]
        except Exception:  # not knowing is not healthy
            log.exception("the health check before a ping failed")
            return ["the health check failed"]

    async def _get(self) -> str | None:
        """None when the GET was answered 2xx, else what went wrong, scrubbed of the token."""
        try:
            async with self.session.get(
                self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                status = response.status
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as exc:  # a ping must never end the job, nor log the token
            # aiohttp's errors may quote the URL, token and all.
            return redact(f"{type(exc).__name__}: {exc}", *self._secrets)
        return None if 200 <= status < 300 else f"HTTP {status}"


def schedule_pings(
    scheduler: BaseScheduler,
    watchdog: WatchdogConfig,
    session: aiohttp.ClientSession,
    metrics: Metrics,
    health: Callable[[], Awaitable[list[str]]],
) -> Pinger | None:
    """When `watchdog.ping_url` is set, the job that pings it every `ping_interval`, the first
    time at once; never two rounds at a time. None when it is not set."""
    if not watchdog.ping_url:
        return None
    timeout = min(PING_TIMEOUT, watchdog.ping_interval)
    pinger = Pinger(watchdog.ping_url, session, metrics, health, timeout)
    scheduler.add_job(
        pinger.ping,
        "interval",
        seconds=watchdog.ping_interval,
        id="ping",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=dt.datetime.now(dt.UTC),
    )
    return pinger
