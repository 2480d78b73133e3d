"""Acknowledgements, escalation and silences as timelines on the injected clock: the real
pipeline, store and actions (build_core), alerts pushed at t, what was decided and when."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from builders import T0, incoming, make_config, routes
from harness import Harness
from monitor_manager.act.actions import ActionError, Actor
from monitor_manager.clock import iso
from monitor_manager.config.schema import ContactGroupConfig, EscalationStep, MemberConfig
from monitor_manager.converge.silences import SilenceNotFound

API = Actor("alice", "api")
HOUR = 3600.0


def contact(name: str, **extra: Any) -> ContactGroupConfig:
    member = MemberConfig(f"{name}-oncall", f"{name}@example.com")
    return ContactGroupConfig(name, ("console",), (member,), **extra)


def config(tmp_path: Any, **sre: Any) -> Any:
    return make_config(
        tmp_path,
        convergence={
            "group_wait": 30.0,
            "group_interval": 300.0,
            "repeat_interval": HOUR,
            "group_by": ("alertname",),
        },
        contact_groups=(contact("sre", **sre), contact("lead"), contact("managers")),
        routing=dataclasses.replace(make_config().routing, default_groups=("sre",)),
        routes=routes(),
    )


@pytest.fixture
async def start(tmp_path):  # type: ignore[no-untyped-def]
    started: list[Harness] = []

    async def run(**sre: Any) -> Harness:
        h = await Harness(config(tmp_path, **sre)).start()
        started.append(h)
        return h

    yield run
    for h in started:
        await h.stop()


def key_of(h: Harness) -> str:
    assert h.pipeline is not None
    (key,) = h.pipeline.convergence.groups
    return key


def told(decided: list[Any]) -> list[tuple[int, str, str, str]]:
    """(second, contact group told, status, what it is) per notification."""
    out = []
    for d in decided:
        extra = d.message.extra
        what = (
            f"escalation {extra['escalation']['step']}"
            if "escalation" in extra
            else extra.get("announce", "")
        )
        out.append((round(d.at), d.message.contact_group, d.message.status, what))
    return out


# -- acknowledgements -------------------------------------------------------------------------
async def test_an_ack_stops_repeats_is_announced_and_changes_still_say_who(start: Any) -> None:
    h = await start()
    await h.push(incoming("Disk", instance="a"))
    await h.run_until(100)
    ack, new = await h.core.actions.acknowledge(key_of(h), API, "on it")
    assert new and (ack.by, ack.comment, ack.at) == ("alice", "on it", T0 + 100)
    await h.run_until(3 * HOUR, step=10)
    assert told(h.decided) == [(30, "sre", "firing", ""), (100, "sre", "firing", "ack")]
    announcement = h.decided[1].message.groups[0]
    assert announcement.ack == {"by": "alice", "at": T0 + 100, "comment": "on it", "via": "api"}
    # A change still goes out, and says who acknowledged it.
    await h.push(incoming("Disk", instance="b"))
    await h.run_until(3 * HOUR + 400, step=10)
    change = h.decided[-1]
    assert told([change]) == [(3 * HOUR, "sre", "firing", "")]
    assert len(change.message.groups[0].firing) == 2
    assert change.message.groups[0].ack["by"] == "alice"
    # Repeats held back are counted (at 3630 and 7230; the change at 10800 went out).
    assert h.core.metrics.suppressed._value.get() == 2


async def test_a_second_ack_changes_nothing_and_is_not_announced_again(start: Any) -> None:
    h = await start()
    await h.push(incoming("Disk"))
    await h.run_until(40)
    first, new = await h.core.actions.acknowledge(key_of(h), API, "mine")
    again, new_again = await h.core.actions.acknowledge(key_of(h), Actor("bob", "link"), "no")
    assert new and not new_again and again == first
    await h.run_until(60)
    assert [t[3] for t in told(h.decided)] == ["", "ack"]
    audit = await h.rows("SELECT who, via, action FROM audit")
    assert audit == [{"who": "alice", "via": "api", "action": "ack"}]


async def test_the_resolution_ends_the_ack_and_a_new_episode_pages_again(start: Any) -> None:
    h = await start()
    await h.push(incoming("Disk"))
    await h.run_until(40)
    await h.core.actions.acknowledge(key_of(h), API)
    await h.push(incoming("Disk", "resolved", ends=T0 + 50))
    await h.run_until(400)
    assert told(h.decided)[-1] == (330, "sre", "resolved", "")
    assert h.decided[-1].message.groups[0].ack["by"] == "alice"  # the resolution says who
    h.clock.advance(100)
    await h.push(incoming("Disk", starts=T0 + 500))
    await h.run_until(500 + 30 + HOUR + 10, step=10)
    # A new episode: not acknowledged, so it repeats.
    assert [t[0] for t in told(h.decided)][-2:] == [530, 530 + HOUR]
    assert h.decided[-1].message.groups[0].ack is None


async def test_withdrawing_the_ack_brings_the_repeats_back(start: Any) -> None:
    h = await start()
    await h.push(incoming("Disk"))
    await h.run_until(40)
    await h.core.actions.acknowledge(key_of(h), API)
    await h.run_until(2 * HOUR, step=10)
    withdrawn = await h.core.actions.unacknowledge(key_of(h), Actor("bob", "api"))
    assert withdrawn.withdrawn and withdrawn.by == "bob"
    await h.run_until(2 * HOUR + 400, step=10)
    assert told(h.decided)[-1] == (2 * HOUR, "sre", "firing", "")  # the repeat held back
    with pytest.raises(ActionError) as exc:
        await h.core.actions.unacknowledge(key_of(h), API)
    assert exc.value.status == 409


async def test_ack_timeout_pages_again_after_that_long(start: Any) -> None:
    h = await start(ack_timeout=1800.0)
    await h.push(incoming("Disk"))
    await h.run_until(40)
    await h.core.actions.acknowledge(key_of(h), API)
    await h.run_until(40 + 1800 + 100, step=10)
    assert told(h.decided) == [
        (30, "sre", "firing", ""),
        (40, "sre", "firing", "ack"),
        (1840, "sre", "firing", ""),
    ]
    assert h.decided[-1].message.groups[0].ack is None
    acks = await h.rows("SELECT via, withdrawn FROM acks")
    assert acks == [{"via": "timeout", "withdrawn": 1}]


async def test_acks_on_what_is_not_firing_are_refused(start: Any) -> None:
    h = await start()
    with pytest.raises(ActionError) as exc:
        await h.core.actions.acknowledge("0123456789abcdef", API)
    assert exc.value.status == 404
    await h.push(incoming("Disk"))
    await h.run_until(40)
    key = key_of(h)
    await h.push(incoming("Disk", "resolved", ends=T0 + 40))
    with pytest.raises(ActionError) as exc:
        await h.core.actions.acknowledge(key, API)
    assert exc.value.status == 409
    assert await h.rows("SELECT * FROM acks") == []


async def test_an_ack_survives_a_restart(start: Any) -> None:
    h = await start()
    await h.push(incoming("Disk"))
    await h.run_until(40)
    await h.core.actions.acknowledge(key_of(h), API, "kept")
    await h.restart()
    await h.run_until(3 * HOUR, step=30)
    assert [t[3] for t in told(h.decided)] == ["", "ack"]


# -- escalation --------------------------------------------------------------------------------
STEPS = (EscalationStep(900.0, ("lead",)), EscalationStep(2700.0, ("managers",)))


async def test_nobody_acknowledges_so_each_step_tells_the_next_group(start: Any) -> None:
    h = await start(escalation=STEPS)
    await h.push(incoming("Disk"))
    await h.run_until(3000, step=10)
    assert told(h.decided) == [
        (30, "sre", "firing", ""),
        (930, "lead", "firing", "escalation 1"),
        (2730, "managers", "firing", "escalation 2"),
    ]
    step = h.decided[2].message.extra["escalation"]
    assert step == {"step": 2, "from": "sre", "unacknowledged_for": 2700.0}
    assert h.core.metrics.escalations._value.get() == 2
    # Everyone escalated to also hears the resolution.
    await h.push(incoming("Disk", "resolved", ends=T0 + 3000))
    await h.run_until(3400, step=10)
    assert sorted(t[1] for t in told(h.decided) if t[2] == "resolved") == [
        "lead",
        "managers",
        "sre",
    ]


async def test_an_ack_stops_the_remaining_steps(start: Any) -> None:
    h = await start(escalation=STEPS)
    await h.push(incoming("Disk"))
    await h.run_until(1000, step=10)
    await h.core.actions.acknowledge(key_of(h), Actor("lead-oncall", "link"))
    await h.run_until(2 * HOUR, step=10)
    assert told(h.decided) == [
        (30, "sre", "firing", ""),
        (930, "lead", "firing", "escalation 1"),
        (1000, "sre", "firing", "ack"),
    ]
    # The second step and a repeat were held back.
    assert h.core.metrics.suppressed._value.get() == 2


async def test_escalation_steps_taken_survive_a_restart(start: Any) -> None:
    h = await start(escalation=STEPS)
    await h.push(incoming("Disk"))
    await h.run_until(1000, step=10)
    await h.restart()
    await h.run_until(2000, step=10)
    assert [t[3] for t in told(h.decided)] == ["", "escalation 1"]


# -- silences ------------------------------------------------------------------------------------
def silence_body(name: str, starts: float, ends: float, **extra: Any) -> dict[str, Any]:
    return {
        "matchers": [{"name": "alertname", "value": name, "isRegex": False, "isEqual": True}],
        "startsAt": iso(starts),
        "endsAt": iso(ends),
        "createdBy": "alice",
        "comment": "maintenance",
        **extra,
    }


async def test_a_silenced_alert_is_stored_never_told_and_told_when_the_silence_ends(
    start: Any,
) -> None:
    h = await start()
    silence = await h.core.actions.save_silence(silence_body("Disk", T0, T0 + HOUR), API)
    await h.push(incoming("Disk"))
    await h.run_until(HOUR - 10, step=10)
    assert h.decided == []
    stored = await h.rows("SELECT status FROM alerts")
    assert stored == [{"status": "firing"}]
    await h.run_until(HOUR + 400, step=10)
    # The silence ended over a firing alert: its group is told as a change.
    assert told(h.decided) == [(HOUR, "sre", "firing", "")]
    assert silence.id in {r["target"] for r in await h.rows("SELECT target FROM audit")}


async def test_expiring_a_silence_tells_what_it_muted(start: Any) -> None:
    h = await start()
    await h.push(incoming("Disk"))
    await h.run_until(40)  # told at 30
    silence = await h.core.actions.save_silence(silence_body("Disk", T0 + 40, T0 + 5 * HOUR), API)
    await h.run_until(2 * HOUR, step=10)
    assert [t[0] for t in told(h.decided)] == [30]  # the repeat at 3630 is muted
    await h.core.actions.expire_silence(silence.id, API)
    await h.run_until(2 * HOUR + 400, step=10)
    assert [t[0] for t in told(h.decided)] == [30, 2 * HOUR]
    with pytest.raises(SilenceNotFound):
        await h.core.actions.expire_silence("no-such-id", API)


async def test_a_resolution_is_sent_when_its_firing_was_sent_even_under_a_silence(
    start: Any,
) -> None:
    h = await start()
    await h.push(incoming("Disk"))
    await h.run_until(40)
    await h.core.actions.save_silence(silence_body("Disk", T0 + 40, T0 + 5 * HOUR), API)
    await h.run_until(100)
    await h.push(incoming("Disk", "resolved", ends=T0 + 100))
    await h.run_until(400)
    assert [(t[0], t[2]) for t in told(h.decided)] == [(30, "firing"), (330, "resolved")]


async def test_internal_alerts_can_be_silenced(start: Any) -> None:
    h = await start()
    body = silence_body("PeerDown", T0, T0 + HOUR)
    body["matchers"].append({"name": "peer", "value": "mm-az2", "isRegex": False, "isEqual": True})
    await h.core.actions.save_silence(body, API)
    from monitor_manager.watch.watchdog import internal_alert

    await h.pipeline.raise_internal(
        [internal_alert("PeerDown", "firing", {"peer": "mm-az2"}, "down", "", starts_at=T0)]
    )
    await h.run_until(600, step=10)
    assert h.decided == []
    (row,) = await h.rows("SELECT detail FROM audit")
    assert "mutes internal alerts" in row["detail"]


# -- maintenance windows -------------------------------------------------------------------------
async def test_a_maintenance_window_mutes_in_its_time_zone_and_tells_when_it_ends(
    tmp_path: Any,
) -> None:
    from monitor_manager.config.schema import MaintenanceConfig

    # T0 is 08:00 UTC, 16:00 in Shanghai: the window opens at T0 there, 8 hours later in UTC.
    window = MaintenanceConfig(
        "batch", "0 16 * * *", 1800.0, match={"cluster": "batch"}, time_zone="Asia/Shanghai"
    )
    utc = dataclasses.replace(window, name="batch-utc", time_zone="UTC", match={"cluster": "x"})
    h = await Harness(dataclasses.replace(config(tmp_path), maintenance=(window, utc))).start()
    try:
        await h.push(incoming("Batch", cluster="batch"), incoming("Other", cluster="x"))
        await h.run_until(1790, step=10)
        # Only the alert outside the window (the UTC one opens at 16:00 UTC) was told.
        assert [d.names for d in h.decided] == [["Other"]]
        await h.run_until(1800 + 400, step=10)
        assert [(round(d.at), d.names) for d in h.decided][1:] == [(1800, ["Batch"])]
    finally:
        await h.stop()
