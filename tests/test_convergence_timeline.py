"""Convergence timers as timelines: pushed at t, expected between a and b, nothing extra."""

from __future__ import annotations

import asyncio
import re

import pytest

from builders import T0, groups, incoming, make_config, routes
from harness import Harness


@pytest.fixture
async def harness(tmp_path):  # type: ignore[no-untyped-def]
    h = await Harness(
        make_config(
            tmp_path,
            convergence={
                "group_wait": 30.0,
                "group_interval": 300.0,
                "repeat_interval": 3600.0,
                "group_by": ("alertname",),
            },
        )
    ).start()
    yield h
    await h.stop()


async def test_first_notification_waits_group_wait_and_gathers_the_group(harness: Harness) -> None:
    await harness.push(incoming("HighLatency", instance="a"))
    harness.clock.advance(10)
    await harness.push(incoming("HighLatency", instance="b"))
    decided = await harness.run_until(100)
    assert [round(d.at) for d in decided] == [30]
    assert decided[0].message.groups[0].group_labels == {"alertname": "HighLatency"}
    assert len(decided[0].message.groups[0].firing) == 2


async def test_duplicates_change_nothing_and_send_nothing(harness: Harness) -> None:
    first = await harness.push(incoming("A", instance="a"))
    assert (first.accepted, first.duplicates) == (1, 0)
    assert len(await harness.run_until(40)) == 1
    for _ in range(5):
        harness.clock.advance(20)
        again = await harness.push(incoming("A", instance="a", starts=T0 + 0.003))
        assert (again.accepted, again.duplicates) == (0, 1)
    assert await harness.run_until(3000) == []


async def test_a_change_after_the_first_message_waits_for_group_interval(harness: Harness) -> None:
    await harness.push(incoming("A", instance="a"))
    await harness.run_until(60)
    await harness.push(incoming("A", instance="b"))
    await harness.run_until(400)
    decided = harness.decided
    assert [round(d.at) for d in decided] == [30, 330]
    assert len(decided[1].message.groups[0].firing) == 2


async def test_unchanged_firing_group_repeats_every_repeat_interval(harness: Harness) -> None:
    await harness.push(incoming("A"))
    decided = await harness.run_until(30 + 2 * 3600 + 10, step=10)
    assert [round(d.at) for d in decided] == [30, 30 + 3600, 30 + 7200]


async def test_all_resolved_sends_one_resolved_message_and_closes(harness: Harness) -> None:
    await harness.push(incoming("A", instance="a"), incoming("A", instance="b"))
    await harness.run_until(100)
    await harness.push(incoming("A", "resolved", ends=T0 + 100, instance="a"))
    harness.clock.advance(50)
    await harness.push(incoming("A", "resolved", ends=T0 + 150, instance="b"))
    decided = await harness.run_until(5000, step=5)
    assert [(round(d.at), d.message.status) for d in decided] == [(330, "resolved")]
    assert len(decided[0].message.groups[0].resolved) == 2
    assert not harness.pipeline.convergence.groups  # type: ignore[union-attr]
    rows = await harness.rows("SELECT state FROM alert_groups")
    assert rows == [{"state": "closed"}]


async def test_send_resolved_false_stays_quiet_on_resolution(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = await Harness(
        make_config(
            tmp_path,
            convergence={"group_wait": 30.0, "group_interval": 300.0, "send_resolved": False},
        )
    ).start()
    await h.push(incoming("A"))
    await h.run_until(100)
    await h.push(incoming("A", "resolved", ends=T0 + 100))
    decided = await h.run_until(1000, step=10)
    assert decided == []
    await h.stop()


async def test_alert_resolved_within_group_wait_is_never_notified(harness: Harness) -> None:
    await harness.push(incoming("A"))
    harness.clock.advance(5)
    await harness.push(incoming("A", "resolved", ends=T0 + 5))
    assert await harness.run_until(1000, step=10) == []


async def test_stale_firing_from_a_lagging_sender_changes_nothing(harness: Harness) -> None:
    await harness.push(incoming("A", starts=T0))
    await harness.run_until(100)
    await harness.push(incoming("A", "resolved", starts=T0, ends=T0 + 100))
    await harness.run_until(400)
    stale = await harness.push(incoming("A", starts=T0))  # the old episode, re-sent late
    assert (stale.accepted, stale.duplicates) == (0, 1)
    fresh = await harness.push(incoming("A", starts=T0 + 390))
    assert (fresh.accepted, fresh.duplicates) == (1, 0)
    await harness.run_until(1000)
    assert [(round(d.at), d.message.status) for d in harness.decided] == [
        (30, "firing"),
        (330, "resolved"),
        (430, "firing"),
    ]


async def test_replicas_differing_only_in_ignored_labels_are_one_alert(harness: Harness) -> None:
    r = await harness.push(
        incoming("A", replica="0"),
        incoming("A", replica="1"),
        incoming("A", prometheus_replica="x"),
    )
    assert (r.accepted, r.duplicates) == (1, 2)
    decided = await harness.run_until(100)
    assert len(decided) == 1
    assert "replica" not in decided[0].message.groups[0].alerts[0].labels


async def test_flapping_inside_group_interval_is_not_notified(harness: Harness) -> None:
    await harness.push(incoming("A", instance="a"), incoming("A", instance="b"))
    await harness.run_until(60)
    await harness.push(incoming("A", "resolved", ends=T0 + 60, instance="a"))
    harness.clock.advance(10)
    await harness.push(incoming("A", starts=T0 + 70, instance="a"))
    await harness.run_until(1000, step=10)
    assert [round(d.at) for d in harness.decided] == [30]


async def test_timers_and_group_state_survive_a_restart(harness: Harness) -> None:
    await harness.push(incoming("A", instance="a"))
    harness.clock.advance(20)
    await harness.restart()
    decided = await harness.run_until(100)
    assert [round(d.at) for d in decided] == [30]
    await harness.push(incoming("A", instance="b"))
    await harness.restart()
    decided = await harness.run_until(400)
    assert [round(d.at) for d in decided] == [330]
    await harness.restart()
    dup = await harness.push(incoming("A", instance="b"))
    assert dup.duplicates == 1
    assert await harness.run_until(3000, step=10) == []


async def test_routing_first_match_wins_unless_continue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(
        tmp_path,
        contact_groups=groups("default", "dba", "sre", "night"),
        routes=routes(
            {"match": {"team": "db"}, "groups": ("dba",), "continue_": True},
            {"match_re": {"severity": "critical|page"}, "groups": ("sre",)},
            {"match_re": {"severity": "crit"}, "groups": ("night",)},  # anchored: no "critical"
        ),
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
    )
    h = await Harness(cfg).start()
    await h.push(
        incoming("DbDown", team="db", severity="critical"),
        incoming("DbSlow", team="db", severity="warning"),
        incoming("Disk", severity="critical"),
        incoming("Other", severity="info"),
    )
    decided = await h.run_until(5)
    by_group = sorted((d.message.contact_group, d.names[0]) for d in decided)
    assert by_group == [
        ("dba", "DbDown"),
        ("dba", "DbSlow"),
        ("default", "Other"),
        ("sre", "DbDown"),
        ("sre", "Disk"),
    ]
    await h.stop()


async def test_storm_sends_threshold_then_one_digest_naming_every_group(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(
        tmp_path,
        storm={"threshold": 3, "window": 60.0},
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
    )
    h = await Harness(cfg).start()
    await h.push(*(incoming(f"Alert{i}") for i in range(10)))
    decided = await h.run_until(120)
    direct = [d for d in decided if d.digest_id is None and d.message.kind == "group"]
    digests = [d for d in decided if d.message.kind == "digest"]
    assert len(direct) == 3
    assert len(digests) == 1 and 60 <= digests[0].at <= 62
    named = {g.group_labels["alertname"] for g in digests[0].message.groups}
    assert named == {f"Alert{i}" for i in range(10)} - set(d.names[0] for d in direct)
    deliveries = await h.rows("SELECT notification_id FROM deliveries")
    assert sorted(r["notification_id"] for r in deliveries) == sorted(
        [d.message.id for d in direct] + [digests[0].message.id]
    )
    await h.stop()


async def test_storm_digest_being_collected_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(
        tmp_path,
        storm={"threshold": 1, "window": 60.0},
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
    )
    h = await Harness(cfg).start()
    await h.push(*(incoming(f"Alert{i}") for i in range(4)))
    await h.run_until(10)
    await h.restart()
    decided = await h.run_until(120)
    digests = [d for d in decided if d.message.kind == "digest"]
    assert len(digests) == 1 and len(digests[0].message.groups) == 3
    await h.stop()


async def test_a_message_shows_its_alerts_as_they_stood_when_it_was_decided(
    harness: Harness,
) -> None:
    """Labels and annotations are read from the store when the message is written; a change
    queued behind the decision must not leak into it, and the next message shows it."""
    assert harness.pipeline is not None
    await harness.push(incoming("A", summary="first", instance="a"))
    harness.clock.advance(30)
    await asyncio.gather(
        harness.pipeline.tick(),  # decides the first message, then the resolution arrives
        harness.pipeline.ingest(
            [incoming("A", "resolved", ends=T0 + 30, summary="second", instance="a")]
        ),
    )
    await harness.restart()  # the next message is built from the stored row alone
    first, resolved = await harness.run_until(400)
    assert (first.at, resolved.at) == (30, 330)
    alert = first.message.groups[0].alerts[0]
    assert (alert.status, alert.annotations, alert.labels) == (
        "firing",
        {"summary": "first"},
        {"alertname": "A", "instance": "a"},
    )
    assert alert.generator_url == "http://prometheus.example/graph"
    alert = resolved.message.groups[0].alerts[0]
    assert (alert.status, alert.annotations["summary"]) == ("resolved", "second")
    assert alert.labels == {"alertname": "A", "instance": "a"}


async def test_a_digest_names_the_services_own_alerts_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Found by the fault campaign: a storm's digest of 983 groups named PeerDown's resolution
    last, in the part a WeCom message cut at five parts left out; nobody learnt the peer was
    back. The service's own alerts now come first."""
    cfg = make_config(
        tmp_path,
        storm={"threshold": 3, "window": 60.0},
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
    )
    h = await Harness(cfg).start()
    await h.push(*(incoming(f"Alert{i}") for i in range(10)))
    await h.run_until(5)
    await h.push(incoming("PeerDown", source="monitor-manager", peer="mm-b"))
    decided = await h.run_until(120)
    (digest,) = [d for d in decided if d.message.kind == "digest"]
    names = [g.group_labels["alertname"] for g in digest.message.groups]
    assert names[0] == "PeerDown" and len(names) == 8
    await h.stop()


async def test_the_rebuild_after_a_restart_parses_each_memberships_text_once(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Recovery with a million stored alerts (bench/campaign.py --recovery): the rebuild parsed
    the memberships JSON of every alert, and the collector walked the growing heap; the alerts
    of a group share one text, parsed once now, and the collector runs once, after. Memory is
    rebuilt the same."""
    import gc
    import json as json_module

    from monitor_manager.converge import convergence as convergence_module

    cfg = make_config(
        tmp_path,
        contact_groups=groups("default", "sre", "dba"),
        routes=routes(
            {"match": {"team": "db"}, "groups": ("dba", "sre")},
            {"match": {"team": "web"}, "groups": ("sre",)},
        ),
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
    )
    h = await Harness(cfg).start()
    await h.push(*(incoming("DbDown", team="db", instance=f"db{i}") for i in range(30)))
    await h.push(*(incoming("WebDown", team="web", instance=f"web{i}") for i in range(20)))
    await h.run_until(5)

    def memory() -> tuple[object, ...]:
        assert h.pipeline is not None
        conv = h.pipeline.convergence
        return (
            {fp: (a.id, a.status, a.starts_at, a.groups) for fp, a in conv.alerts.items()},
            {k: dict(g.members) for k, g in conv.groups.items()},
        )

    before = memory()
    parses: list[str] = []
    real_loads = json_module.loads

    def counting_loads(text: str, **kwargs: object) -> object:
        parses.append(text)
        return real_loads(text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(convergence_module.json, "loads", counting_loads)
    await h.restart()
    assert memory() == before
    memberships = [p for p in parses if re.match(r'\{"[0-9a-f]{16}":', p)]
    assert len(before[0]) == 50 and len(memberships) == 2  # type: ignore[arg-type]  # two texts among 50 alerts
    assert gc.isenabled()
    await h.stop()
