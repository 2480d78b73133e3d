"""Heartbeats and self-alerts as timelines with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from builders import T0, groups, incoming, make_config
from harness import Harness
from monitor_manager.config import HeartbeatConfig, WatchdogConfig

DMS = {"alertname": "DeadMansSwitch", "az": "az1"}


def heartbeat(status: str = "firing", at: float = T0) -> Any:
    return incoming(
        "DeadMansSwitch", status, starts=T0, ends=at if status == "resolved" else None, az="az1"
    )


@pytest.fixture
async def watch(tmp_path: Any) -> Any:
    cfg = make_config(
        tmp_path,
        contact_groups=groups("default", "sre"),
        watchdog=WatchdogConfig(
            groups=("sre",), heartbeats=(HeartbeatConfig("prometheus-az1", DMS, timeout=300.0),)
        ),
        convergence={"group_wait": 30.0, "group_by": ("alertname",)},
    )
    h = await Harness(cfg).start()
    yield h
    await h.stop()


def pages(h: Harness, name: str = "HeartbeatMissing") -> list[tuple[int, str]]:
    return [
        (round(d.at), d.message.status)
        for d in h.decided
        if d.message.groups[0].alerts[0].labels["alertname"] == name
    ]


async def test_heartbeat_is_recorded_and_never_notified_itself(watch: Harness) -> None:
    for t in range(0, 600, 60):
        watch.clock.now = T0 + t
        result = await watch.receive(heartbeat())
        assert (result.accepted, result.duplicates) == (1, 0)
        await watch.run_until(t + 59, step=5)
    assert watch.decided == []
    beat = watch.pipeline.watchdog.heartbeats[0]  # type: ignore[union-attr]
    assert beat.state == "ok" and beat.via == "http://am1:9093"


async def test_missing_heartbeat_pages_the_watchdog_groups_without_group_wait(
    watch: Harness,
) -> None:
    await watch.receive(heartbeat())
    await watch.run_until(299, step=1)
    assert pages(watch) == []
    await watch.run_until(305, step=1)
    assert pages(watch) == [(300, "firing")]
    page = watch.decided[0].message
    assert page.contact_group == "sre"
    alert = page.groups[0].alerts[0]
    assert alert.labels["heartbeat"] == "prometheus-az1"
    assert "http://am1:9093" in alert.annotations["description"]
    await watch.run_until(2000, step=10)
    assert len(pages(watch)) == 1  # not again while still missing (repeat_interval is 4h)


async def test_the_next_heartbeat_resolves_the_page(watch: Harness) -> None:
    await watch.receive(heartbeat())
    await watch.run_until(400, step=5)
    await watch.receive(heartbeat())  # at 400: due again at 700
    await watch.run_until(690, step=5)
    assert [s for _, s in pages(watch)] == ["firing", "resolved"]
    await watch.run_until(705, step=5)
    assert [s for _, s in pages(watch)] == ["firing", "resolved", "firing"]


async def test_a_resolved_heartbeat_does_not_count_as_seen(watch: Harness) -> None:
    await watch.receive(heartbeat())
    watch.clock.advance(200)
    await watch.receive(heartbeat("resolved", at=T0 + 200))
    await watch.run_until(305, step=5)
    assert pages(watch) == [(300, "firing")]


async def test_a_heartbeat_never_seen_is_counted_from_start_up(watch: Harness) -> None:
    await watch.run_until(310, step=5)
    assert pages(watch) == [(300, "firing")]
    assert (
        "since Monitor Manager started"
        in (watch.decided[0].message.groups[0].alerts[0].annotations["description"])
    )


async def test_page_tells_prometheus_side_from_alertmanager_side(watch: Harness) -> None:
    await watch.receive(heartbeat())
    watch.clock.advance(250)
    await watch.receive(incoming("Other"))  # the same Alertmanager still delivers
    await watch.run_until(305, step=5)
    description = [d for d in watch.decided if d.message.contact_group == "sre"][0]
    annotations = description.message.groups[0].alerts[0].annotations
    assert "Prometheus side is broken" in annotations["description"]
    assert "Prometheus side is broken" in annotations["summary"]  # short channels show only it


async def test_page_blames_alertmanager_when_it_delivers_nothing(watch: Harness) -> None:
    await watch.receive(heartbeat())
    await watch.run_until(305, step=5)
    text = watch.decided[0].message.groups[0].alerts[0].annotations["description"]
    assert "Alertmanager itself or the network" in text


async def test_restart_neither_forgets_a_missing_heartbeat_nor_pages_falsely(
    watch: Harness,
) -> None:
    await watch.receive(heartbeat())
    watch.clock.advance(280)
    await watch.receive(heartbeat())  # due at 580
    await watch.restart()  # at 280: restart just after a heartbeat
    await watch.run_until(579, step=5)
    assert pages(watch) == []
    await watch.run_until(579, step=1)
    await watch.run_until(600, step=1)
    assert pages(watch) == [(580, "firing")]
    await watch.restart()  # while missing: still missing, not paged again
    await watch.run_until(1500, step=10)
    assert pages(watch) == [(580, "firing")]
    assert watch.pipeline.watchdog.heartbeats[0].state == "missing"  # type: ignore[union-attr]
    await watch.receive(heartbeat())
    await watch.run_until(1600, step=5)
    assert [s for _, s in pages(watch)] == ["firing", "resolved"]


async def test_an_instance_that_did_not_run_for_a_while_gives_heartbeats_a_whole_timeout(
    watch: Harness,
) -> None:
    """Found by the fault campaign: an instance stopped (SIGSTOP) for longer than the heartbeat
    timeout paged HeartbeatMissing the moment it ran again, blaming a pipeline that worked (its
    peers, which kept receiving the heartbeat, paged PeerDown for it instead)."""
    watch.pipeline.watchdog.running = watch.clock  # type: ignore[union-attr]  # as if real
    await watch.receive(heartbeat())
    await watch.run_until(100, step=1)
    watch.clock.advance(400)  # not running: no heartbeat could arrive, no check ran
    await watch.run_until(799, step=1)
    assert pages(watch) == []  # 300 s from when it ran again
    await watch.run_until(820, step=1)
    assert pages(watch) == [(800, "firing")]  # still none then: a real page
    # A gap while already missing changes nothing: it stays missing, paged once.
    watch.clock.advance(400)
    await watch.run_until(1300, step=1)
    assert pages(watch) == [(800, "firing")]


async def test_a_clock_that_jumps_while_the_instance_runs_is_not_a_gap(watch: Harness) -> None:
    """A replay or a test's clock jumps ahead while the process runs: the heartbeat is missing
    at its deadline, not given a new timeout (the gap is measured in real, monotonic time)."""
    await watch.receive(heartbeat())
    watch.clock.advance(400)
    await watch.run_until(401, step=1)
    assert pages(watch) == [(400, "firing")]
