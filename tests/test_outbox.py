"""The outbox through the real pipeline, the real email channel and a real SMTP server."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from builders import groups, incoming, make_config
from harness import OutboxHarness
from monitor_manager.channels.email import EmailSettings
from monitor_manager.config import ChannelConfig
from monitor_manager.deliver.outbox import Outbox
from smtp_server import SMTPTestServer


def mail_config(tmp_path: Any, server: SMTPTestServer, **sections: Any) -> Any:
    mail = ChannelConfig(
        "mail",
        "email",
        EmailSettings(
            host=server.host, port=server.port, tls="none", from_="MM <mm@example.com>", timeout=5.0
        ),
    )
    from builders import console_channels

    return make_config(
        tmp_path,
        channels=(mail, *console_channels()),
        contact_groups=groups("default", channels=("mail",)),
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
        delivery={"retry_initial": 10.0, "retry_max": 40.0, "give_up_after": 200.0},
        **sections,
    )


@pytest.fixture
async def box(tmp_path: Any, smtp_server: SMTPTestServer) -> AsyncIterator[OutboxHarness]:
    h = await OutboxHarness(mail_config(tmp_path, smtp_server)).start()
    yield h
    await h.stop()


async def test_delivered_mail_is_recorded_with_its_latency(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    await box.push(incoming("DiskFull", instance="a"))
    rows = await box.step(1)
    assert [(r["channel"], r["state"], r["attempts"]) for r in rows] == [("mail", "delivered", 1)]
    mails = await smtp_server.wait_for(1)
    assert mails[0]["Subject"].startswith("[FIRING:1] DiskFull")
    samples = box.pipeline.metrics.registry.get_sample_value(  # type: ignore[union-attr]
        "monitor_manager_notifications_total", {"channel": "mail", "result": "delivered"}
    )
    assert samples == 1


async def test_transient_failure_backs_off_exponentially_then_delivers(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    smtp_server.mode = "451"
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    assert rows[0]["state"] == "retrying" and "451" in rows[0]["last_error"]
    waits = []
    for _ in range(3):
        due = rows[0]["next_attempt_at"] - box.clock.now
        waits.append(round(due))
        assert (await box.step(due - 0.5))[0]["attempts"] == rows[0]["attempts"]  # not before
        rows = await box.step(0.5)
    assert waits == [10, 20, 40]  # retry_initial doubling (jitter pinned to its top)
    smtp_server.mode = "accept"
    rows = await box.step(rows[0]["next_attempt_at"] - box.clock.now)
    assert (rows[0]["state"], rows[0]["attempts"]) == ("delivered", 5)
    assert len(smtp_server.messages) == 1


async def test_backoff_is_capped_at_retry_max_and_gives_up_after_give_up_after(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    smtp_server.stop()
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    while rows[0]["state"] == "retrying":
        assert rows[0]["next_attempt_at"] - box.clock.now <= 40.0 + 1e-6
        rows = await box.step(rows[0]["next_attempt_at"] - box.clock.now)
    assert rows[0]["state"] == "failed"
    assert rows[0]["last_error"].startswith("gave up after")
    assert box.clock.now - rows[0]["created_at"] <= 200.0


async def test_permanent_failure_stops_at_once(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    smtp_server.mode = "550"
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    assert (rows[0]["state"], rows[0]["attempts"]) == ("failed", 1)
    assert "550" in rows[0]["last_error"]
    rows = await box.step(3600)
    assert rows[0]["attempts"] == 1
    # The DeliveryFailed page had no other channel to take, so it failed through mail too.
    assert [r["state"] for r in rows] == ["failed", "failed"]
    failed = box.pipeline.metrics.registry.get_sample_value(  # type: ignore[union-attr]
        "monitor_manager_notifications_total", {"channel": "mail", "result": "failed"}
    )
    assert failed == 2


async def test_stopped_server_is_retried_until_it_is_back(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    smtp_server.stop()
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    assert rows[0]["state"] == "retrying"
    smtp_server.start()
    rows = await box.step(rows[0]["next_attempt_at"] - box.clock.now)
    assert rows[0]["state"] == "delivered"


async def test_partial_recipient_refusal_is_a_delivery_with_a_note(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    from monitor_manager.config import ContactGroupConfig, MemberConfig

    cfg = mail_config(tmp_path, smtp_server)
    import dataclasses

    cfg = dataclasses.replace(
        cfg,
        contact_groups=(
            ContactGroupConfig(
                "default",
                ("mail",),
                (MemberConfig("ok", "ok@example.com"), MemberConfig("gone", "gone@example.com")),
            ),
        ),
    )
    smtp_server.reject_rcpt = {"gone@example.com": "550 5.1.1 No such user"}
    h = await OutboxHarness(cfg).start()
    await h.push(incoming("DiskFull"))
    rows = await h.step(1)
    assert rows[0]["state"] == "delivered"
    assert "gone@example.com" in rows[0]["note"] and "550" in rows[0]["note"]
    await h.stop()


async def test_a_recipient_deferred_with_4xx_gets_the_mail_alone_on_the_retry(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    import dataclasses

    from monitor_manager.config import ContactGroupConfig, MemberConfig

    cfg = dataclasses.replace(
        mail_config(tmp_path, smtp_server),
        contact_groups=(
            ContactGroupConfig(
                "default",
                ("mail",),
                (
                    MemberConfig("ok", "ok@example.com"),
                    MemberConfig("grey", "grey@example.com"),
                    MemberConfig("gone", "gone@example.com"),
                ),
            ),
        ),
    )
    smtp_server.reject_rcpt = {
        "grey@example.com": "451 4.7.1 Greylisted",
        "gone@example.com": "550 5.1.1 No such user",
    }
    h = await OutboxHarness(cfg).start()
    await h.push(incoming("DiskFull"))
    [row] = await h.step(1)
    assert h.pipeline is not None  # one deferred recipient is not a failing channel:
    assert h.pipeline.watchdog.channels["mail"].failing_since is None
    assert (row["state"], json.loads(row["only_to"])) == ("retrying", ["grey@example.com"])
    assert row["note"] == "sent to 1 of 3; refused: gone@example.com 550 5.1.1 No such user"
    assert "grey@example.com 451" in row["last_error"]
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [("ok@example.com",)]
    smtp_server.reject_rcpt = {}
    await h.restart()  # who is still owed the mail is stored, not remembered
    [row] = await h.step(row["next_attempt_at"] - h.clock.now)
    assert row["state"] == "delivered" and row["attempts"] == 2
    assert row["note"].startswith("sent to 1 of 3; refused: gone@example.com")
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [
        ("ok@example.com",),
        ("grey@example.com",),
    ]
    await h.stop()


def greylisting_config(tmp_path: Any, server: SMTPTestServer, **delivery: float) -> Any:
    from builders import console_channels
    from monitor_manager.config import ContactGroupConfig, MemberConfig

    mail = ChannelConfig(
        "mail",
        "email",
        EmailSettings(
            host=server.host, port=server.port, tls="none", from_="MM <mm@example.com>", timeout=5.0
        ),
    )
    # grey's address as configured has spaces around it: retries name members as configured
    members = (MemberConfig("ok", "ok@example.com"), MemberConfig("grey", " grey@example.com "))
    return make_config(
        tmp_path,
        channels=(mail, *console_channels()),
        contact_groups=(ContactGroupConfig("default", ("mail",), members),),
        convergence={"group_wait": 1.0, "group_interval": 60.0, "group_by": ("alertname",)},
        delivery={"retry_initial": 10.0, "retry_max": 40.0, "give_up_after": 200.0, **delivery},
    )


def mails_to(server: SMTPTestServer, address: str) -> list[str]:
    return [
        str(m["Subject"]).split(" ")[0]
        for m, e in zip(server.messages, server.envelopes, strict=True)
        if address in e.rcpt_tos
    ]


async def test_a_newer_state_supersedes_an_older_message_still_owed_to_a_recipient(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reject_rcpt = {"grey@example.com": "451 4.7.1 Greylisted"}
    h = await OutboxHarness(
        greylisting_config(
            tmp_path, smtp_server, retry_initial=600.0, retry_max=600.0, give_up_after=3600.0
        )
    ).start()
    await h.push(incoming("DiskFull"))
    [firing] = await h.step(1)
    assert json.loads(firing["only_to"]) == [" grey@example.com "]
    await h.push(incoming("DiskFull", "resolved", ends=h.clock.now))
    rows = await h.step(60)  # the resolution goes out, grey still greylisted
    assert [r["state"] for r in rows] == ["delivered", "retrying"]
    assert rows[0]["note"] == (
        f"sent to 1 of 2; then not sent: notification {rows[1]['notification_id']} with a "
        "newer state of the alert group went out first"
    )
    smtp_server.reject_rcpt = {}
    # A retry of it in flight when the resolution went out is caught before it is sent.
    await h.rows(
        "UPDATE deliveries SET state = 'retrying', note = '', next_attempt_at = ? WHERE id = ?",
        (h.clock.now, firing["id"]),
    )
    rows = await h.step(600)
    assert [r["state"] for r in rows] == ["delivered", "delivered"]
    assert rows[0]["note"].startswith("not sent: notification 2 with a newer state")
    assert mails_to(smtp_server, "ok@example.com") == ["[FIRING:1]", "[RESOLVED]"]
    assert mails_to(smtp_server, "grey@example.com") == ["[RESOLVED]"]  # never the stale one
    await h.stop()


async def test_an_older_message_with_news_the_newer_lacks_is_still_sent(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    h = await OutboxHarness(
        greylisting_config(
            tmp_path, smtp_server, retry_initial=600.0, retry_max=600.0, give_up_after=3600.0
        )
    ).start()
    await h.push(incoming("DiskFull", instance="host1"), incoming("DiskFull", instance="host2"))
    await h.step(1)
    smtp_server.reject_rcpt = {"grey@example.com": "451 4.7.1 Greylisted"}
    await h.push(incoming("DiskFull", "resolved", ends=h.clock.now, instance="host1"))
    rows = await h.step(60)  # host1's resolution: grey deferred
    assert rows[-1]["state"] == "retrying"
    smtp_server.reject_rcpt = {}
    await h.push(incoming("DiskFull", instance="host3"))
    rows = await h.step(60)  # host2 and host3 firing reach everyone; host1 left the group
    assert [r["state"] for r in rows] == ["delivered", "retrying", "delivered"]
    rows = await h.step(600)
    assert rows[1]["state"] == "delivered" and "not sent" not in rows[1]["note"]
    grey = [
        m
        for m, e in zip(smtp_server.messages, smtp_server.envelopes, strict=True)
        if e.rcpt_tos == ("grey@example.com",)
    ]
    body = grey[0].get_body(("plain",)) if len(grey) == 1 else None
    assert body is not None and "host1" in body.get_content()
    await h.stop()


async def test_a_channel_error_on_the_retry_of_deferred_recipients_is_a_failure(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reject_rcpt = {"grey@example.com": "451 4.7.1 Greylisted"}
    h = await OutboxHarness(greylisting_config(tmp_path, smtp_server)).start()
    await h.push(incoming("DiskFull"))
    [row] = await h.step(1)
    smtp_server.reject_rcpt = {}
    smtp_server.data_reply = "554 5.7.1 Message rejected"  # the server, not a recipient
    [row] = await h.step(row["next_attempt_at"] - h.clock.now)
    assert row["state"] == "failed" and "554" in row["last_error"]
    assert row["note"].endswith("never reached  grey@example.com ")
    assert h.pipeline is not None
    assert "554" in h.pipeline.watchdog.channels["mail"].failed_for_good
    await h.stop()


async def test_giving_up_on_a_deferred_recipient_is_a_note_not_a_failing_channel(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reject_rcpt = {"grey@example.com": "451 4.7.1 Greylisted"}
    h = await OutboxHarness(greylisting_config(tmp_path, smtp_server)).start()
    await h.push(incoming("DiskFull"))
    rows = await h.step(1)
    while rows[0]["state"] == "retrying":
        rows = await h.step(rows[0]["next_attempt_at"] - h.clock.now)
    [row] = rows
    assert row["state"] == "delivered" and "451" in row["last_error"]
    assert row["note"].endswith(f"never reached  grey@example.com  ({row['attempts']} attempts)")
    assert h.pipeline is not None
    assert h.pipeline.watchdog.channels["mail"].failed_for_good == ""
    assert await h.rows("SELECT id FROM alerts WHERE labels LIKE '%DeliveryFailed%'") == []
    assert mails_to(smtp_server, "ok@example.com") == ["[FIRING:1]"]
    await h.stop()


async def test_two_workers_never_send_the_same_row(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    await box.push(*(incoming(f"Alert{i}") for i in range(12)))
    box.clock.advance(1)
    await box.pipeline.tick()  # type: ignore[union-attr]
    assert box.store is not None and box.pipeline is not None
    other = Outbox(box.store, box.channels, box.config.delivery, box.clock, box.pipeline.metrics)
    import asyncio

    await asyncio.gather(box.outbox.drain(), other.drain(), box.outbox.drain())
    rows = await box.deliveries()
    assert all(r["state"] == "delivered" and r["attempts"] == 1 for r in rows)
    assert len(smtp_server.messages) == len(rows) == 12


async def test_a_send_interrupted_by_a_crash_is_sent_again_after_restart(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    await box.push(incoming("DiskFull"))
    box.clock.advance(1)
    await box.pipeline.tick()  # type: ignore[union-attr]

    def claim(conn: sqlite3.Connection) -> None:  # what a crash right after claiming leaves
        conn.execute("UPDATE deliveries SET state = 'sending'")

    await box.store.run(claim)  # type: ignore[union-attr]
    await box.restart()  # start() runs the outbox's recover()
    rows = await box.deliveries()
    assert rows[0]["state"] == "retrying" and "interrupted" in rows[0]["last_error"]
    rows = await box.step(0)
    assert rows[0]["state"] == "delivered" and len(smtp_server.messages) == 1


async def test_a_channel_removed_from_the_config_fails_visibly(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    await box.push(incoming("DiskFull"))
    box.channels.pop("mail")
    rows = await box.step(1)
    assert rows[0]["state"] == "failed" and "not configured" in rows[0]["last_error"]


async def test_after_an_outage_an_alert_group_gets_its_newest_state_not_every_old_one(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    """Found by the fault campaign: when the SMTP server came back after a minute down, every
    retry of a group was due at once; sent side by side they arrived in any order, the last
    one often an older state. A group's rows now go through a channel one at a time, and those
    the newest covers are written off when it went out."""
    config = mail_config(tmp_path, smtp_server)
    config = dataclasses.replace(
        config, convergence=dataclasses.replace(config.convergence, group_interval=5.0)
    )
    h = await OutboxHarness(config).start()
    smtp_server.stop()
    await h.push(incoming("DiskFull", instance="host1"))
    await h.step(1)  # [FIRING:1] host1
    await h.push(incoming("DiskFull", instance="host2"))
    await h.step(5)  # [FIRING:2] host1, host2
    await h.push(incoming("DiskFull", "resolved", ends=h.clock.now, instance="host1"))
    rows = await h.step(5)  # [FIRING:1] host2, host1 resolved: it names every alert of both
    assert [r["state"] for r in rows] == ["retrying"] * 3
    smtp_server.start()
    rows = await h.step(100)  # every retry due at once
    assert [r["state"] for r in rows] == ["delivered"] * 3
    newest = rows[2]["notification_id"]
    assert [r["superseded_by"] for r in rows] == [newest, newest, None]
    (mail,) = smtp_server.messages
    body = mail.get_body(("plain",))
    assert body is not None and "Resolved (1)" in body.get_content()
    await h.stop()


async def test_a_send_handed_back_unrecorded_is_not_sent_after_a_newer_state_went_out(
    box: OutboxHarness, smtp_server: SMTPTestServer
) -> None:
    """Found by the fault campaign (a store refusing writes for a while): a send whose outcome
    could not be recorded stays `sending` with no attempt counted; handed back later, it went
    out after newer states of its group had, the older state shown last."""
    await box.push(incoming("DiskFull"))
    [first] = await box.step(1)
    await box.push(incoming("DiskFull", "resolved", ends=box.clock.now))
    rows = await box.step(300)  # group_interval
    assert [r["state"] for r in rows] == ["delivered", "delivered"]
    # The first send's outcome was never recorded: handed back with no attempt counted.
    await box.rows(
        "UPDATE deliveries SET state = 'retrying', attempts = 0, next_attempt_at = ?, "
        "delivered_at = NULL WHERE id = ?",
        (box.clock.now, first["id"]),
    )
    smtp_server.clear()
    rows = await box.step(1)
    assert rows[0]["superseded_by"] == rows[1]["notification_id"]
    assert smtp_server.messages == []
