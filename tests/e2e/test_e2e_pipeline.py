"""End to end: real Prometheus and Alertmanager processes in front of two Monitor Managers.

Each scenario is a timeline: at t the test does something, and each page (an email or a WeCom
message, per contact group) must arrive inside a window computed from the configured timers;
a page nobody expected fails the scenario. The timers are explained in e2e_configs.py.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from typing import Any

import pytest
from e2e_configs import (
    AM_PEER_TIMEOUT,
    ENDS_AT_AHEAD,
    HEARTBEAT_CADENCE,
    HEARTBEAT_TIMEOUT,
    MM_GROUP_WAIT,
    MM_PEER_WAIT,
    MM_RETRY_MAX,
    TEST_ALERT,
)
from e2e_stack import AZS, INSTANCES, Stack, get_json, wait_until
from e2e_timeline import EVERY_CHANNEL, SRE_CHANNELS, Timeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The earliest a page can follow a change at the source: our group_wait. (Alertmanager's
# group_wait is not a floor: Prometheus keeps re-sending a resolved alert for 15 minutes, so
# Alertmanager may still hold the group and flush the new alert at its next 1 s tick.)
FIRST_PAGE_AT_LEAST = MM_GROUP_WAIT - 0.1
# The latest: next scrape and evaluation (1 s each), Alertmanager's group_wait or interval
# (1 s) and position wait (1 s), our group_wait (1 s), the send, with slack for a loaded
# 2-core machine.
PAGE_WITHIN = 12.0
# Long enough for the instance at position 1 to have sent a duplicate, were it to send one.
DUPLICATE_QUIET = MM_PEER_WAIT + 2.0
HOP_PROMETHEUS = "Prometheus side is broken"  # watchdog.py's words for "Prometheus went silent"
WECOM = [c for c in EVERY_CHANNEL if c[0] == "wecom"]
EMAIL = [c for c in EVERY_CHANNEL if c[0] == "email"]


def _metric(stack: Stack, name: str, metric: str) -> dict[str, float]:
    """Samples of `metric` on instance `name`, keyed by their label text."""
    with urllib.request.urlopen(f"{stack.mm_url(name)}/metrics", timeout=2) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith((metric + "{", metric + " ")):
            key, _, value = line.rpartition(" ")
            samples[key[len(metric) :]] = float(value)
    return samples


def _decided(stack: Stack, name: str, since: float, status: str) -> dict[tuple[str, str], float]:
    """When instance `name` delivered or dropped its `status` notification, per (contact
    group, channel), for notifications made since `since`."""
    out = {}
    for n in stack.notifications(name):
        if n["status"] != status or _epoch(n["created_at"]) < since:
            continue
        for d in n["deliveries"]:
            if d["state"] == "delivered":
                out[(n["contact_group"], d["channel"])] = _epoch(d["delivered_at"])
    return out


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


# ----------------------------------------------------------------------------- 1. steady state


def test_in_steady_state_heartbeats_flow_through_both_alertmanagers_and_nobody_is_paged(
    stack: Stack, timeline: Timeline
) -> None:
    assert stack.startup_pages == [], "start-up paged someone"
    # Every Prometheus sends its DeadMansSwitch to every Alertmanager ...
    for az in AZS:
        sources = {
            a["labels"].get("az")
            for a in stack.am_alerts(az)
            if a["labels"]["alertname"] == "DeadMansSwitch" and a["status"]["state"] == "active"
        }
        assert sources == set(AZS), f"alertmanager-{az} holds heartbeats of {sources}"
    # ... the two Alertmanagers form one cluster, so one of them sends each webhook ...
    assert sorted(stack.am_position(az) for az in AZS) == [0, 1]
    assert all(stack.am_cluster_size(az) == 2 for az in AZS)
    # ... and both instances see both heartbeats again and again, well inside the timeout.
    seen: dict[tuple[str, str], list[str]] = {}
    deadline = time.monotonic() + 3 * HEARTBEAT_CADENCE + 1
    while time.monotonic() < deadline:
        for name in INSTANCES:
            for beat, state in stack.heartbeats(name).items():
                assert state["state"] == "ok", (name, state)
                assert state["via"] in {stack.am_url(az) for az in AZS}, state
                stamps = seen.setdefault((name, beat), [])
                if not stamps or stamps[-1] != state["last_seen"]:
                    stamps.append(state["last_seen"])
        time.sleep(0.2)
    assert all(len(stamps) >= 3 for stamps in seen.values()), seen
    # Heartbeats are never alerts of their own, and every webhook passed the token check.
    for name in INSTANCES:
        alerts = get_json(f"{stack.mm_url(name)}/api/v1/alerts")["alerts"]
        assert not [a for a in alerts if a["labels"]["alertname"] == "DeadMansSwitch"]
        codes = _metric(stack, name, "monitor_manager_webhook_requests_total")
        ok = '{code="200",source="alertmanager"}'
        assert codes.get(ok, 0) > 0, codes
        assert all(value == 0 for key, value in codes.items() if key != ok), codes
    timeline.expect_nothing_else()


# --------------------------------------------------------------- 2. an alert fires and resolves


def test_a_firing_rule_pages_each_contact_group_once_per_channel_and_once_when_it_resolves(
    stack: Stack, timeline: Timeline
) -> None:
    t = timeline.act(f"{TEST_ALERT}: condition set")
    stack.set_condition(1)
    fired = timeline.expect(
        TEST_ALERT,
        "firing",
        EVERY_CHANNEL,
        after=t,
        firing=1,
        between=(FIRST_PAGE_AT_LEAST, PAGE_WITHIN),
    )
    for page in fired.values():
        assert "The end-to-end test condition is set" in page.text, page.text
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET)

    t = timeline.act(f"{TEST_ALERT}: condition cleared")
    stack.set_condition(0)
    timeline.expect(TEST_ALERT, "resolved", EVERY_CHANNEL, after=t, between=(0, PAGE_WITHIN))
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET)

    # Not luck: mm-az2 got every webhook too, and left each page to mm-az1.
    notes = [d["note"] for d in stack.deliveries("mm-az2", timeline.origin)]
    assert len(notes) == 2 * len(EVERY_CHANNEL), notes
    assert all("peer mm-az1 already sent it" in note for note in notes), notes


def test_an_alert_resolved_within_the_peer_wait_is_not_paged_again_by_the_second_instance(
    stack: Stack, timeline: Timeline
) -> None:
    t = timeline.act(f"{TEST_ALERT}: condition set")
    stack.set_condition(1)
    timeline.expect(
        TEST_ALERT,
        "firing",
        EVERY_CHANNEL,
        after=t,
        firing=1,
        between=(FIRST_PAGE_AT_LEAST, PAGE_WITHIN),
    )
    # Cleared at once: mm-az1 pages the resolution while mm-az2 still waits its position
    # (ha.peer_wait) before deciding on the firing message, which is stale by then.
    t = timeline.act(f"{TEST_ALERT}: condition cleared")
    stack.set_condition(0)
    timeline.expect(TEST_ALERT, "resolved", EVERY_CHANNEL, after=t, between=(0, PAGE_WITHIN))
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET + 1)
    # The race happened: mm-az2 decided on (and dropped) its firing message only after mm-az1
    # had delivered the resolution. Otherwise this scenario proved nothing.
    resolved_by_az1 = _decided(stack, "mm-az1", timeline.origin, "resolved")
    firing_at_az2 = _decided(stack, "mm-az2", timeline.origin, "firing")
    raced = [key for key, at in firing_at_az2.items() if at > resolved_by_az1.get(key, at)]
    assert raced, f"no race: mm-az1 resolved {resolved_by_az1}, mm-az2 fired {firing_at_az2}"


# ------------------------------------------------------------------- 3. a Prometheus goes silent


def test_a_killed_prometheus_is_paged_as_a_missing_heartbeat_naming_the_hop_and_resolved(
    stack: Stack, timeline: Timeline
) -> None:
    t = timeline.act("kill -9 prometheus-az1")
    stack.prometheus["az1"].kill()
    # Alertmanager keeps the last alert until its endsAt (4 s ahead), re-sending it on the
    # heartbeat cadence; the page comes a timeout after the last one that arrived.
    earliest = HEARTBEAT_TIMEOUT - HEARTBEAT_CADENCE
    latest = ENDS_AT_AHEAD + HEARTBEAT_TIMEOUT + 5
    page = timeline.expect(
        "HeartbeatMissing", "firing", SRE_CHANNELS, after=t, between=(earliest, latest)
    )
    mail = page[("email", "sre")].text
    assert "prometheus-az1" in mail
    # az2's heartbeats still come through that Alertmanager: Prometheus is the silent hop.
    assert HOP_PROMETHEUS in mail, mail
    assert any(stack.am_url(az) in mail for az in AZS), mail
    wecom = page[("wecom", "sre")].text
    for name in INSTANCES:
        beats = stack.heartbeats(name)
        assert beats["prometheus-az1"]["state"] == "missing"
        assert beats["prometheus-az2"]["state"] == "ok"

    t = timeline.act("restart prometheus-az1")
    stack.prometheus["az1"].start(30)
    timeline.expect("HeartbeatMissing", "resolved", SRE_CHANNELS, after=t, between=(0, 15))
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET)
    assert HOP_PROMETHEUS in wecom, wecom  # WeCom shows the summary: the hop is in it too


# ---------------------------------------------------------------- 4. an Alertmanager goes away


def test_a_killed_alertmanager_loses_nothing_and_causes_no_storm(
    stack: Stack, timeline: Timeline
) -> None:
    # The one at position 0 sends first; without it the other must send on its own.
    victim = next(az for az in AZS if stack.am_position(az) == 0)
    t_kill = timeline.act(f"kill -9 alertmanager-{victim}")
    stack.am[victim].kill()

    t = timeline.act(f"{TEST_ALERT}: condition set")
    stack.set_condition(1)
    timeline.expect(
        TEST_ALERT,
        "firing",
        EVERY_CHANNEL,
        after=t,
        firing=1,
        between=(FIRST_PAGE_AT_LEAST, PAGE_WITHIN + AM_PEER_TIMEOUT),
    )
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET)
    t = timeline.act(f"{TEST_ALERT}: condition cleared")
    stack.set_condition(0)
    timeline.expect(
        TEST_ALERT, "resolved", EVERY_CHANNEL, after=t, between=(0, PAGE_WITHIN + AM_PEER_TIMEOUT)
    )
    # Stay down for longer than the heartbeat timeout: the other Alertmanager carries them.
    time.sleep(max(t_kill + HEARTBEAT_TIMEOUT + 2 - timeline.now(), 0))
    for name in INSTANCES:
        assert all(b["state"] == "ok" for b in stack.heartbeats(name).values())
    timeline.expect_nothing_else()

    # Back again, it learns the notification log from its peer and re-sends nothing.
    timeline.act(f"restart alertmanager-{victim}")
    stack.am[victim].start(30)
    wait_until(
        "the cluster has two members again",
        lambda: all(stack.am_cluster_size(az) == 2 for az in AZS),
        15,
    )
    timeline.expect_nothing_else(quiet=4)


# -------------------------------------------------------------- 5. a Monitor Manager goes away


def test_a_killed_instance_is_paged_by_the_other_which_then_delivers_alone(
    stack: Stack, timeline: Timeline
) -> None:
    t = timeline.act("kill -9 mm-az1")
    stack.mm["mm-az1"].kill()
    # 4 failed probes 0.5 s apart, then no group_wait for internal alerts.
    timeline.expect("PeerDown", "firing", SRE_CHANNELS, after=t, between=(1.0, 8))

    t = timeline.act(f"{TEST_ALERT}: condition set")
    stack.set_condition(1)
    timeline.expect(
        TEST_ALERT,
        "firing",
        EVERY_CHANNEL,
        after=t,
        firing=1,
        between=(FIRST_PAGE_AT_LEAST, PAGE_WITHIN),
    )
    t = timeline.act(f"{TEST_ALERT}: condition cleared")
    stack.set_condition(0)
    # Alertmanager retries the dead instance until its 10 s flush deadline, and the group's
    # next flush (carrying the resolution) waits for that.
    timeline.expect(TEST_ALERT, "resolved", EVERY_CHANNEL, after=t, between=(0, PAGE_WITHIN + 10))

    def mails_recorded() -> list[dict[str, Any]]:
        # The sink has the mails; their rows are recorded a moment after the SMTP answer.
        mails = [d for d in stack.deliveries("mm-az2", timeline.origin) if d["channel"] == "mail"]
        return mails if mails and all(d["state"] != "sending" for d in mails) else []

    mails = wait_until("mm-az2 records its mails", mails_recorded, 10)
    assert all(d["state"] == "delivered" and not d["note"] for d in mails), mails
    # The slower heartbeat while Alertmanager retries the dead instance is no false alarm.
    assert all(b["state"] == "ok" for b in stack.heartbeats("mm-az2").values())
    timeline.expect_nothing_else()

    t = timeline.act("restart mm-az1")
    stack.mm["mm-az1"].start(20)
    timeline.expect("PeerDown", "resolved", SRE_CHANNELS, after=t, between=(0, 8))
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET + 2)


# ------------------------------------------------------------------------ 6. SMTP goes away


def test_mail_that_could_not_be_sent_while_smtp_was_down_is_delivered_once_it_is_back(
    stack: Stack, timeline: Timeline
) -> None:
    timeline.act("SMTP server stopped")
    stack.smtp.stop()
    t = timeline.act(f"{TEST_ALERT}: condition set")
    stack.set_condition(1)
    timeline.expect(
        TEST_ALERT, "firing", WECOM, after=t, firing=1, between=(FIRST_PAGE_AT_LEAST, PAGE_WITHIN)
    )

    def mail_retrying(name: str) -> bool:
        mails = [d for d in stack.deliveries(name, timeline.origin) if d["channel"] == "mail"]
        return len(mails) == 2 and all(
            d["state"] == "retrying" and d["attempts"] >= 2 for d in mails
        )

    # Down long enough for both instances to try: mm-az2 found nothing sent by mm-az1 after
    # its position wait, so it tries too.
    wait_until(
        "both instances retry both mails",
        lambda: all(mail_retrying(name) for name in INSTANCES),
        20,
    )
    timeline.expect_nothing_else()

    t = timeline.act("SMTP server started again")
    stack.smtp.start()
    timeline.expect(TEST_ALERT, "firing", EMAIL, after=t, firing=1, between=(0, MM_RETRY_MAX + 3))
    time.sleep(DUPLICATE_QUIET)
    # Both instances were retrying; when the first one's retry succeeds, its nflog push
    # reaches the other within milliseconds, and the other drops its own next retry. Only
    # retries that start within those milliseconds of each other both go out (at least once
    # delivery, as in Alertmanager #4108): one copy per instance at most, nothing else.
    duplicates = timeline.tolerate(TEST_ALERT, "firing", EMAIL)
    timeline.act(f"{len(duplicates)} duplicate mail(s) from the retry race")
    timeline.expect_nothing_else()

    t = timeline.act(f"{TEST_ALERT}: condition cleared")
    stack.set_condition(0)
    timeline.expect(TEST_ALERT, "resolved", EVERY_CHANNEL, after=t, between=(0, PAGE_WITHIN))
    timeline.expect_nothing_else(quiet=DUPLICATE_QUIET)
