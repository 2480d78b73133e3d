"""Watched from outside: `[watchdog] ping_url` is pinged while the instance is ready, never
while it is not, one ping at a time, with its token kept out of the logs. Against a real
aiohttp server on loopback that counts the pings."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from builders import make_config
from monitor_manager import keys
from monitor_manager.app import create_app, watch
from monitor_manager.config import ConfigError, WatchdogConfig, parse_config
from monitor_manager.metrics import Metrics
from monitor_manager.watch.ping import Pinger, shown_url, url_secrets
from monitor_manager.web.api import readiness

TOKEN = "9f2c4e1a-7b3d-4c5e-8f60-0a1b2c3d4e5f"  # as in https://hc-ping.com/<uuid>
QUERY_TOKEN = "tingyun-secret-4711"


@dataclass
class PingServer:
    """Counts GETs of /ping/TOKEN; `mode` says how it answers."""

    url: str = ""
    count: int = 0
    mode: str = "ok"  # "ok" | "500" | "hang" (until released) | "loop" (redirects to itself)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def ping_server(aiohttp_server: Callable[..., Any]) -> AsyncIterator[PingServer]:
    state = PingServer()

    async def ping(request: web.Request) -> web.Response:
        state.count += 1
        state.arrived.set()
        if state.mode == "500":
            return web.Response(status=500, text="oops")
        if state.mode == "hang":
            await state.release.wait()
        if state.mode == "loop":
            raise web.HTTPFound(str(request.rel_url))
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get(f"/ping/{TOKEN}", ping)
    server = await aiohttp_server(app)
    state.url = f"http://127.0.0.1:{server.port}/ping/{TOKEN}?key={QUERY_TOKEN}"
    yield state
    state.release.set()  # a handler still waiting finishes, so the server can close


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def healthy() -> list[str]:
    return []


async def store_refuses_writes() -> list[str]:
    return ["store is not writable: the store is read-only"]


def pings(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "monitor_manager_watchdog_pings_total", {"result": result}
    )
    assert value is not None
    return value


async def test_a_ready_instance_pings_each_time_the_scheduler_asks(
    ping_server: PingServer, session: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    pinger = Pinger(ping_server.url, session, metrics, healthy)
    assert [await pinger.ping() for _ in range(3)] == ["ok", "ok", "ok"]
    assert ping_server.count == 3
    assert pings(metrics, "ok") == 3 and pings(metrics, "failed") == 0


async def test_an_instance_that_is_not_ready_withholds_its_pings_so_the_outside_pages(
    ping_server: PingServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    problems = ["store is not writable: the store is read-only"]

    async def health() -> list[str]:
        return problems

    pinger = Pinger(ping_server.url, session, metrics, health)
    with caplog.at_level(logging.WARNING, "monitor_manager.watch.ping"):
        assert [await pinger.ping(), await pinger.ping()] == ["withheld", "withheld"]
        assert ping_server.count == 0 and pings(metrics, "withheld") == 2
        assert caplog.text.count("not pinging http://127.0.0.1") == 1  # said once, not a flood
        assert "read-only" in caplog.text
        problems = []
        assert await pinger.ping() == "ok"
    assert ping_server.count == 1 and "ready again" in caplog.text


async def test_never_more_than_one_ping_in_flight(
    ping_server: PingServer, session: aiohttp.ClientSession
) -> None:
    ping_server.mode = "hang"
    metrics = Metrics()
    pinger = Pinger(ping_server.url, session, metrics, healthy)
    first = asyncio.create_task(pinger.ping())
    await asyncio.wait_for(ping_server.arrived.wait(), 30)
    assert await pinger.ping() == "busy"  # the first is still waiting for its answer
    assert ping_server.count == 1
    ping_server.release.set()
    assert await first == "ok"
    assert pings(metrics, "ok") == 1 and pings(metrics, "failed") == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("500", "HTTP 500"),
        ("hang", "no answer within 0.2s"),
        ("loop", "TooManyRedirects"),  # aiohttp's message quotes the whole URL
        ("refused", "ClientConnectorError"),
    ],
)
async def test_a_failed_ping_is_counted_and_logged_without_its_token(
    ping_server: PingServer,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    says: str,
) -> None:
    ping_server.mode = mode
    url = ping_server.url
    if mode == "refused":
        url = f"http://127.0.0.1:{closed_port()}/ping/{TOKEN}?key={QUERY_TOKEN}"
    metrics = Metrics()
    pinger = Pinger(url, session, metrics, healthy, timeout=0.2)
    with caplog.at_level(logging.WARNING, "monitor_manager.watch.ping"):
        assert await pinger.ping() == "failed"
    assert pings(metrics, "failed") == 1 and pings(metrics, "ok") == 0
    assert "ping to http://127.0.0.1:" in caplog.text and says in caplog.text
    assert TOKEN not in caplog.text and QUERY_TOKEN not in caplog.text
    assert TOKEN[:8] not in caplog.text


def test_what_logs_show_of_a_ping_url_is_its_scheme_and_host() -> None:
    assert shown_url(f"https://hc-ping.com/{TOKEN}") == "https://hc-ping.com/…"
    assert shown_url("https://user:pw@nosnch.in:8443/abc?x=1") == "https://nosnch.in:8443/…"
    secrets = url_secrets(f"https://user:secretpw@hc-ping.com/ping/{TOKEN}?key={QUERY_TOKEN}")
    assert TOKEN in secrets and QUERY_TOKEN in secrets and "secretpw" in secrets
    assert "hc-ping.com" not in secrets


# --- in the service ---------------------------------------------------------------------------


async def test_a_store_refusing_writes_stops_the_pings_until_it_takes_writes_again(
    tmp_path: Any, aiohttp_client: Any, ping_server: PingServer
) -> None:
    app = create_app(make_config(tmp_path), scheduler=False)
    client = await aiohttp_client(app)
    metrics = app[keys.METRICS]
    pinger = Pinger(ping_server.url, app[keys.SESSION], metrics, partial(readiness, app))
    assert await pinger.ping() == "ok" and ping_server.count == 1

    store = app[keys.STORE]
    await store.run(lambda c: c.execute("PRAGMA query_only = ON"))  # writes now fail
    assert await pinger.ping() == "withheld"
    assert (await client.get("/readyz")).status == 503  # the same verdict as /readyz
    assert ping_server.count == 1

    await store.run(lambda c: c.execute("PRAGMA query_only = OFF"))
    await watch(app)  # the once-a-second job commits: the store is known to take writes again
    assert await pinger.ping() == "ok" and ping_server.count == 2
    body = await (await client.get("/metrics")).text()
    assert 'monitor_manager_watchdog_pings_total{result="withheld"} 1.0' in body


async def test_serve_pings_at_start_and_then_every_ping_interval(
    tmp_path: Any, aiohttp_client: Any, ping_server: PingServer
) -> None:
    watchdog = WatchdogConfig(ping_url=ping_server.url, ping_interval=3600.0)
    app = create_app(make_config(tmp_path, watchdog=watchdog))
    await aiohttp_client(app)
    job = app[keys.SCHEDULER].get_job("ping")
    assert job is not None and job.trigger.interval.total_seconds() == 3600
    await asyncio.wait_for(ping_server.arrived.wait(), 30)  # the first ping goes out at start
    assert ping_server.count == 1


async def test_without_ping_url_nothing_is_scheduled(tmp_path: Any, aiohttp_client: Any) -> None:
    app = create_app(make_config(tmp_path))
    await aiohttp_client(app)
    assert app[keys.SCHEDULER].get_job("ping") is None


@pytest.mark.parametrize(
    ("watchdog", "problem"),
    [
        (
            {"ping_url": f"ftp://hc-ping.com/{TOKEN}"},
            "watchdog.ping_url: must be empty or an http:// or https:// URL",
        ),
        ({"ping_url": 42}, "watchdog.ping_url: expected a string, got a number (not shown"),
        ({"ping_interval": "0s"}, "watchdog.ping_interval: must be longer than 0s"),
        ({"ping_interval": "1 minute"}, "watchdog.ping_interval: '1 minute' is not a duration"),
    ],
)
def test_ping_settings_are_checked_and_the_url_never_quoted(
    watchdog: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"watchdog": watchdog}, env={})
    [line] = caught.value.problems
    assert line.startswith(problem)
    assert TOKEN not in line and "42" not in line


def test_ping_is_off_by_default_and_pings_every_minute_once_set() -> None:
    assert parse_config({}, env={}).watchdog.ping_url == ""
    cfg = parse_config({"watchdog": {"ping_url": f"https://hc-ping.com/{TOKEN}"}}, env={})
    assert cfg.watchdog.ping_interval == 60.0
