"""monitor_manager_ha_position follows the peers' probes, not only the sends: an instance that
has sent nothing yet still shows where it stands among the reachable instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from builders import T0, make_config
from monitor_manager.app import create_app, probe_peers
from monitor_manager.clock import ManualClock
from monitor_manager.config import PeerConfig


async def position(client: Any) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "monitor_manager_ha_position":
                return float(sample.value)
    raise AssertionError("monitor_manager_ha_position is not exported")


async def test_the_position_follows_the_probes(
    tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    up = {"answer": True}

    async def healthz(request: web.Request) -> web.Response:
        if not up["answer"]:
            return web.json_response({"status": "down"}, status=503)
        return web.json_response({"status": "ok", "instance": "mm-a", "peer_protocol": 2})

    peer = web.Application()
    peer.router.add_get("/healthz", healthz)
    server = await aiohttp_server(peer, host="127.0.0.1")
    config = make_config(
        tmp_path,
        server={"instance": "mm-b"},  # after mm-a in the send order
        peers=(PeerConfig("mm-a", f"http://127.0.0.1:{server.port}"),),
        watchdog={"peer_failures": 1, "peer_interval": 3600.0},
        ha={"token": "t"},
    )
    app = create_app(config, clock=ManualClock(T0))
    client = await aiohttp_client(app)
    await probe_peers(app)
    assert await position(client) == 1  # mm-a is reachable and sends first
    up["answer"] = False
    await probe_peers(app)
    assert await position(client) == 0  # mm-a is down: this instance sends first
