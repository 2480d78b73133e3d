"""A peer URL must reach the instance it names: one that answers as another instance (a URL
copied from the wrong host, or pointing back at this one) is down, and PeerDown says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from builders import make_config
from monitor_manager.clock import ManualClock
from monitor_manager.config import PeerConfig
from monitor_manager.metrics import Metrics
from monitor_manager.watch.peers import Peers


async def test_a_peer_that_answers_as_another_instance_is_down_and_paged_with_the_reason(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    answers = {"instance": "mm-a"}  # this instance's own name: the URL points back here

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "peer_protocol": 2, **answers})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app, host="127.0.0.1")
    config = make_config(
        tmp_path,
        server={"instance": "mm-a"},
        peers=(PeerConfig("mm-b", f"http://127.0.0.1:{server.port}"),),
        watchdog={"peer_failures": 2},
        ha={"token": "t"},
    )
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        peers = Peers(config, session, ManualClock(1_800_000_000.0), metrics, lambda _: False)
        await peers.probe_all()
        raised = await peers.probe_all()
        state = peers.states["mm-b"]
        assert not state.reachable and peers.reachable() == []
        assert "answers as instance 'mm-a', not 'mm-b'" in state.last_error
        [page] = [a for a in raised if a.labels["alertname"] == "PeerDown"]
        assert page.status == "firing" and "answers as instance 'mm-a'" in str(page.annotations)
        assert metrics.peer_up.labels("mm-b")._value.get() == 0
        # Fixed (the right instance answers): up again at the next probe.
        answers["instance"] = "mm-b"
        await peers.probe_all()
        assert state.reachable and state.last_error == ""
        # A peer that names no instance (an older or foreign build) is taken at its word.
        answers.pop("instance")
        await peers.probe_all()
        assert state.reachable
