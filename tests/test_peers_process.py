"""Two real `serve` processes probing each other: one killed with SIGKILL, then restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from processes import ServeProcess, free_port, http

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "%(me)s"
[storage]
path = "%(me)s.db"
[convergence]
group_by = ["alertname"]
group_interval = "1s"
[watchdog]
peer_interval = "500ms"
peer_timeout = "500ms"
peer_failures = 3
[[peers]]
name = "%(peer)s"
url = "http://127.0.0.1:%(peer_port)s"
"""


def pages(proc: ServeProcess, kind: str) -> int:
    return proc.stdout.read_text().count(f"{kind} PeerDown")


@pytest.mark.slow
def test_a_killed_peer_is_paged_once_and_resolved_when_it_returns(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    a = ServeProcess(
        tmp_path,
        CONFIG % {"me": "mm-az1", "peer": "mm-az2", "peer_port": port_b},
        name="a",
        port=port_a,
    )
    b = ServeProcess(
        tmp_path,
        CONFIG % {"me": "mm-az2", "peer": "mm-az1", "peer_port": port_a},
        name="b",
        port=port_b,
    )
    try:
        a.launch()
        b.launch()
        a.wait_healthy()
        b.wait_healthy()

        def peer_state(proc: ServeProcess) -> str:
            status, body = http("GET", f"{proc.url}/api/v1/watchdog")
            assert status == 200
            return str(body["peers"][0]["state"])

        a.wait_for(
            lambda: peer_state(a) == "up" and peer_state(b) == "up",
            timeout=10,
            what="both peers up",
        )
        before = pages(a, "[FIRING:1]"), pages(a, "[RESOLVED]")  # a slow start may page too
        b.kill()
        a.wait_for(
            lambda: pages(a, "[FIRING:1]") == before[0] + 1, timeout=15, what="PeerDown page"
        )
        assert peer_state(a) == "down"
        status, body = http("GET", f"{a.url}/api/v1/watchdog")
        assert body["peers"][0]["consecutive_failures"] >= 3
        b.start()
        a.wait_for(
            lambda: pages(a, "[RESOLVED]") == before[1] + 1, timeout=15, what="PeerDown resolved"
        )
        assert pages(a, "[FIRING:1]") == before[0] + 1  # once, not once per failed probe
        assert pages(b, "[FIRING:1]") == 0  # b never saw a down peer
    finally:
        a.stop()
        b.stop()
