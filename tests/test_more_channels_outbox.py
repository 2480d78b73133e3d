"""DingTalk robots, Feishu bots and the outbound webhook driven through the real pipeline and
outbox (as test_wecom_outbox.py does for WeCom): a group change becomes a delivered row, storms
queue and merge under the platforms' limits instead of being refused, failures are classified."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from builders import incoming, make_config
from fake_dingtalk import SECRET as DING_SECRET
from fake_dingtalk import FakeDingTalk
from fake_feishu import SECRET as FEISHU_SECRET
from fake_feishu import FakeFeishu
from fake_wecom import assert_no_secrets
from harness import OutboxHarness
from monitor_manager.channels.dingtalk_robot import DingtalkRobotSettings
from monitor_manager.channels.feishu_robot import FeishuRobotSettings
from monitor_manager.channels.webhook import WebhookSettings
from monitor_manager.clock import ManualClock
from monitor_manager.config import ChannelConfig, ContactGroupConfig, MemberConfig

HOOK_SECRET = "whsec-outbox-1c9e"
DING_TOKEN = "ding-outbox-robot-4f2a"
FEISHU_TOKEN = "feishu-outbox-bot-7b3d"


@dataclass
class Receiver:
    """A webhook receiver that verifies the signature and answers what the test queued."""

    clock: Any
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-Monitor-Manager-Timestamp", "0")
        expected = hmac.new(
            HOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        signature = request.headers.get("X-Monitor-Manager-Signature", "")
        if signature != f"sha256={expected}" or abs(int(timestamp) - self.clock()) > 300:
            self.refused += 1
            return web.Response(status=401)
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        if status < 300:
            self.documents.append(json.loads(body))
        return web.Response(status=status, headers=headers)


@dataclass
class Stack:
    box: OutboxHarness
    ding: FakeDingTalk
    feishu: FakeFeishu
    hook: Receiver


def config(tmp_path: Any, ding: FakeDingTalk, feishu: FakeFeishu, hook_url: str) -> Any:
    channels = (
        ChannelConfig(
            "ding",
            "dingtalk_robot",
            DingtalkRobotSettings(webhook_url=ding.robot_url(DING_TOKEN), secret=DING_SECRET),
        ),
        ChannelConfig(
            "feishu",
            "feishu_robot",
            FeishuRobotSettings(webhook_url=feishu.hook_url(FEISHU_TOKEN), secret=FEISHU_SECRET),
        ),
        ChannelConfig("hook", "webhook", WebhookSettings(url=hook_url, secret=HOOK_SECRET)),
    )
    members = (
        MemberConfig("Zhang San", mobile="13800000000", dingtalk="zhangsan01", feishu="ou_zs"),
        MemberConfig("Li Si", mobile="13900000000"),
    )
    return make_config(
        tmp_path,
        channels=channels,
        contact_groups=(ContactGroupConfig("default", ("ding", "feishu", "hook"), members),),
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
        storm={"threshold": 1000, "window": 60.0},
        delivery={"retry_initial": 5.0, "retry_max": 300.0, "give_up_after": 86400.0},
    )


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    clock = ManualClock()
    hook = Receiver(clock)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with FakeDingTalk() as ding, FakeFeishu() as feishu:
        ding.add_robot(DING_TOKEN, secret=DING_SECRET, keywords=("Monitor Manager",))
        feishu.add_bot(FEISHU_TOKEN, secret=FEISHU_SECRET, keywords=("Monitor Manager",))
        box = OutboxHarness(config(tmp_path, ding, feishu, f"http://{host}:{port}/hook"))
        box.clock = clock
        await box.start()
        ding.clock = feishu.clock = hook.clock = box.clock
        yield Stack(box, ding, feishu, hook)
        await box.stop()
    await runner.cleanup()


def by_channel(rows: list[dict[str, Any]], channel: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["channel"] == channel]


async def test_a_group_change_is_delivered_through_each_kind(stack: Stack) -> None:
    await stack.box.push(incoming("DiskFull", severity="critical"))
    rows = await stack.box.step(1)
    assert {r["channel"]: r["state"] for r in rows} == {
        "ding": "delivered",
        "feishu": "delivered",
        "hook": "delivered",
    }
    [ding] = stack.ding.accepted
    assert ding.signed and "DiskFull" in ding.content
    assert (ding.at_user_ids, ding.at_mobiles) == (["zhangsan01"], ["13900000000"])
    [feishu] = stack.feishu.accepted
    assert feishu.signed and "DiskFull" in feishu.text and feishu.mentioned == ["ou_zs"]
    [doc] = stack.hook.documents
    assert doc["version"] == "1" and doc["status"] == "firing" and stack.hook.refused == 0
    assert doc["alertGroups"][0]["alerts"][0]["labels"]["alertname"] == "DiskFull"


async def test_a_storm_queues_and_merges_under_every_limit_and_nothing_is_lost(
    stack: Stack,
) -> None:
    box = stack.box
    names = [f"Storm{i:02d}" for i in range(45)]
    await box.push(*(incoming(n) for n in names))
    rows = await box.step(1)
    for _ in range(300):
        if all(r["state"] == "delivered" for r in rows):
            break
        rows = await box.step(1)
    assert all(r["state"] == "delivered" for r in rows)
    assert 130101 not in stack.ding.rejected_codes() and stack.ding.rejected == []
    assert stack.feishu.rejected == []  # never refused for frequency (9499/11232)
    ding_times = sorted(a.at for a in stack.ding.accepted)
    assert len(ding_times) < 45  # merged, not one post per group
    assert all(b - a >= 60 for a, b in zip(ding_times, ding_times[20:], strict=False))
    feishu_times = sorted(a.at for a in stack.feishu.accepted)
    assert all(b - a >= 1 for a, b in zip(feishu_times, feishu_times[5:], strict=False))
    for text in ("\n".join(stack.ding.contents()), "\n".join(stack.feishu.texts())):
        assert all(n in text for n in names)  # every group reached every chat
    hooked = {
        a["labels"]["alertname"]
        for d in stack.hook.documents
        for g in d["alertGroups"]
        for a in g["alerts"]
    }
    assert hooked == set(names)


async def test_dingtalk_send_too_fast_waits_out_the_throttle_then_delivers(stack: Stack) -> None:
    box = stack.box
    stack.ding.fail_next(130101)
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    ding = by_channel(rows, "ding")[0]
    assert ding["state"] == "retrying" and ding["next_attempt_at"] - box.clock.now >= 600
    rows = await box.step(601)
    assert by_channel(rows, "ding")[0]["state"] == "delivered"


async def test_the_webhook_honours_retry_after(stack: Stack) -> None:
    box = stack.box
    stack.hook.answers.append((503, {"Retry-After": "120"}))
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    hook = by_channel(rows, "hook")[0]
    assert hook["state"] == "retrying" and hook["next_attempt_at"] - box.clock.now >= 120
    assert "HTTP 503" in hook["last_error"]
    rows = await box.step(121)
    assert by_channel(rows, "hook")[0]["state"] == "delivered"


async def test_permanent_refusals_fail_at_once_without_leaking_secrets(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    box = stack.box
    caplog.set_level(logging.DEBUG)
    stack.ding.fail_next(310000, errmsg="sign not match")
    stack.feishu.fail_next(19021)
    stack.hook.answers.append((404, {}))
    await box.push(incoming("DiskFull"))
    rows = await box.step(1)
    assert {r["channel"]: r["state"] for r in rows[:3]} == {
        "ding": "failed",
        "feishu": "failed",
        "hook": "failed",
    }
    assert "加签 secret" in by_channel(rows, "ding")[0]["last_error"]
    assert "签名校验 secret" in by_channel(rows, "feishu")[0]["last_error"]
    everything = "\n".join(
        [
            str(await box.rows("SELECT * FROM deliveries")),
            caplog.text,
            box.stdout.getvalue(),
            generate_latest(box.pipeline.metrics.registry).decode(),  # type: ignore[union-attr]
        ]
    )
    assert_no_secrets(everything, DING_SECRET, FEISHU_SECRET, HOOK_SECRET, DING_TOKEN, FEISHU_TOKEN)


async def test_send_test_reaches_every_kind(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from monitor_manager.cli import send_test

    hook = Receiver(time.time)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with FakeDingTalk(time.time) as ding, FakeFeishu(time.time) as feishu:
            ding.add_robot(DING_TOKEN, secret=DING_SECRET, keywords=("Monitor Manager",))
            feishu.add_bot(FEISHU_TOKEN, secret=FEISHU_SECRET, keywords=("Monitor Manager",))
            cfg = config(tmp_path, ding, feishu, f"http://{host}:{port}/hook")
            assert await send_test(cfg, "default") == 0
            assert "[TEST]" in ding.accepted[0].title and ding.accepted[0].shown
            assert "Monitor Manager" in feishu.accepted[0].text
            assert hook.documents[0]["kind"] == "test" and hook.documents[0]["alertGroups"] == []
            feishu.fail_next(19024)
            assert await send_test(cfg, "default") == 1
    finally:
        await runner.cleanup()
    out = capsys.readouterr().out
    assert "ding: ok" in out and "hook: ok" in out
    assert "feishu: FAILED (permanent)" in out and "keyword" in out
    assert_no_secrets(out, DING_SECRET, FEISHU_SECRET, HOOK_SECRET, DING_TOKEN, FEISHU_TOKEN)
