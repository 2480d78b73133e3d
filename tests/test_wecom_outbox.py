"""WeCom channels driven through the real pipeline and outbox against the fake WeCom API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from prometheus_client import generate_latest

from builders import incoming, make_config
from fake_wecom import (
    AGENT_ID,
    CORP_ID,
    ROBOT_KEY,
    SECRET,
    Endpoint,
    FakeWeCom,
    assert_no_secrets,
)
from harness import OutboxHarness
from monitor_manager.channels.wechat import WechatSettings
from monitor_manager.channels.wechat_robot import WechatRobotSettings
from monitor_manager.clock import ManualClock
from monitor_manager.config import ChannelConfig, ContactGroupConfig, MemberConfig


def wecom_config(tmp_path: Any, fake: FakeWeCom, **sections: Any) -> Any:
    channels = (
        ChannelConfig(
            "wecom",
            "wechat",
            WechatSettings(corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, api_url=fake.api_url),
        ),
        ChannelConfig(
            "robot", "wechat_robot", WechatRobotSettings(webhook_url=fake.robot_url(ROBOT_KEY))
        ),
    )
    members = (
        MemberConfig("Zhang San", wechat="zhangsan", mobile="13800000000"),
        MemberConfig("Ghost", wechat="ghost"),
    )
    sections.setdefault("convergence", {"group_wait": 1.0, "group_by": ("alertname",)})
    return make_config(
        tmp_path,
        channels=channels,
        contact_groups=(ContactGroupConfig("default", ("wecom", "robot"), members),),
        storm={"threshold": 1000, "window": 60.0},
        delivery={"retry_initial": 5.0, "retry_max": 300.0, "give_up_after": 86400.0},
        **sections,
    )


@pytest.fixture
async def wecom(tmp_path: Any) -> AsyncIterator[tuple[OutboxHarness, FakeWeCom]]:
    async with FakeWeCom() as fake:
        box = await OutboxHarness(wecom_config(tmp_path, fake)).start()
        fake.clock = box.clock
        yield box, fake
        await box.stop()


def by_channel(rows: list[dict[str, Any]], channel: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["channel"] == channel]


async def test_app_and_robot_deliver_and_invalid_users_are_recorded(
    wecom: tuple[OutboxHarness, FakeWeCom],
) -> None:
    box, fake = wecom
    await box.push(incoming("DiskFull", severity="critical"))
    rows = await box.step(1)
    assert {r["channel"]: r["state"] for r in rows} == {"wecom": "delivered", "robot": "delivered"}
    assert "invaliduser: ghost" in by_channel(rows, "wecom")[0]["note"]
    assert any("DiskFull" in c for c in fake.contents("app"))
    assert any("<@zhangsan>" in c for c in fake.contents("robot"))


async def test_a_robot_storm_is_merged_under_the_20_a_minute_limit_and_nothing_is_lost(
    wecom: tuple[OutboxHarness, FakeWeCom],
) -> None:
    box, fake = wecom
    names = [f"Storm{i:02d}" for i in range(45)]
    await box.push(*(incoming(n) for n in names))
    rows = await box.step(1)
    for _ in range(200):
        if all(r["state"] == "delivered" for r in by_channel(rows, "robot")):
            break
        rows = await box.step(1)
    assert all(r["state"] == "delivered" for r in rows)
    assert 45009 not in fake.rejected_codes()  # kept under the limit, never refused
    robot = [a for a in fake.accepted if a.endpoint == "robot"]
    assert len(robot) < 45  # merged, not one message per group
    times = sorted(a.at for a in robot)
    assert all(b - a >= 60 for a, b in zip(times, times[20:], strict=False))
    text = "\n".join(a.content for a in robot)
    assert all(n in text for n in names)  # every group appears in a delivered message
    assert fake.dropped == [] and fake.truncated == []


async def test_a_45009_frequency_block_backs_off_at_least_a_minute(
    wecom: tuple[OutboxHarness, FakeWeCom],
) -> None:
    box, fake = wecom
    fake.fail_next(45009, on="send")
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    app = by_channel(rows, "wecom")[0]
    assert app["state"] == "retrying" and app["next_attempt_at"] - box.clock.now >= 60
    rows = await box.step(61)
    assert by_channel(rows, "wecom")[0]["state"] == "delivered"


@pytest.mark.parametrize(("channel", "endpoint"), [("wecom", "send"), ("robot", "robot")])
async def test_after_a_restart_a_message_sent_in_parts_resumes_after_the_parts_sent(
    wecom: tuple[OutboxHarness, FakeWeCom], channel: str, endpoint: Endpoint
) -> None:
    box, fake = wecom
    fake.fail_next(-1, on=endpoint, after=1)  # the second part fails: a system busy error
    # Several long summaries (one is cut at 1024 characters in messages): several parts.
    await box.push(
        *(
            incoming("DiskFull", summary=f"disk {i} full " + "x" * 900, instance=f"db{i}")
            for i in range(6)
        )
    )
    rows = await box.step(1)
    assert by_channel(rows, channel)[0]["state"] == "retrying"
    kind: Literal["app", "robot"] = "app" if channel == "wecom" else "robot"
    sent_before = fake.contents(kind)
    assert len(sent_before) == 1
    await box.restart()  # what went out is stored, not remembered
    rows = await box.step(by_channel(rows, channel)[0]["next_attempt_at"] - box.clock.now)
    assert by_channel(rows, channel)[0]["state"] == "delivered"
    parts = fake.contents(kind)
    assert len(parts) == len(set(parts)) >= 2  # every part once: the first is not repeated
    assert parts[0] == sent_before[0] and "(1/" in parts[0] and "(2/" in parts[1]
    [log] = await box.rows(
        "SELECT done FROM channel_parts WHERE key LIKE ?", (f"{channel}:%",)
    )  # kept until the retention
    assert log["done"] == len(parts)


async def test_expired_tokens_are_refreshed_inside_one_delivery(
    wecom: tuple[OutboxHarness, FakeWeCom],
) -> None:
    box, fake = wecom
    await box.push(incoming("First"))
    await box.step(1)
    fake.expire_all_tokens(42001)
    await box.push(incoming("Second"))
    rows = await box.step(1)
    assert all(r["state"] == "delivered" and r["attempts"] == 1 for r in rows)
    assert fake.gettoken_calls == 2


async def test_a_permanent_wecom_error_fails_the_delivery_without_leaking_secrets(
    wecom: tuple[OutboxHarness, FakeWeCom], caplog: pytest.LogCaptureFixture
) -> None:
    box, fake = wecom
    caplog.set_level(logging.DEBUG)
    fake.fail_next(60020, on="send", echo=True)
    fake.fail_next(93000, on="robot", echo=True)
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    assert {r["channel"]: r["state"] for r in rows[:2]} == {"wecom": "failed", "robot": "failed"}
    assert "60020" in by_channel(rows, "wecom")[0]["last_error"]
    token = next(iter(fake.tokens))
    everything = "\n".join(
        [
            str(rows),
            caplog.text,
            box.stdout.getvalue(),
            generate_latest(box.pipeline.metrics.registry).decode(),  # type: ignore[union-attr]
        ]
    )
    assert_no_secrets(everything, SECRET, token, ROBOT_KEY)


class TickingClock(ManualClock):
    """A clock that moves on every reading, as a real one does between two reads."""

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


async def test_with_a_clock_that_moves_between_reads_messages_are_not_held_back(
    tmp_path: Any,
) -> None:
    async with FakeWeCom() as fake:
        box = OutboxHarness(wecom_config(tmp_path, fake))
        box.clock = TickingClock(box.clock.now)
        await box.start()
        fake.clock = box.clock
        await box.push(incoming("DiskFull"))
        rows = await box.step(1)
        assert {r["channel"]: r["state"] for r in rows} == {
            "wecom": "delivered",
            "robot": "delivered",
        }
        await box.stop()
