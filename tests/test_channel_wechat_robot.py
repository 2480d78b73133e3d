"""WeCom group robots (`type = "wechat_robot"`) against the fake WeCom API on loopback."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp
import pytest

from fake_wecom import (
    ROBOT_KEY,
    FakeWeCom,
    alert,
    assert_no_secrets,
    group,
    long_message,
    message,
    send_when_ready,
)
from monitor_manager.channels.base import ChannelContext, ChannelError
from monitor_manager.channels.text_parts import utf8_len
from monitor_manager.channels.wechat_robot import WechatRobotChannel, WechatRobotSettings
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Member


def robot(
    ctx: ChannelContext,
    fake: FakeWeCom,
    msgtype: str = "markdown",
    key: str = ROBOT_KEY,
    name: str = "dba-robot",
) -> WechatRobotChannel:
    settings = WechatRobotSettings(webhook_url=fake.robot_url(key), msgtype=msgtype)  # type: ignore[arg-type]
    return WechatRobotChannel(name, settings, ctx)


# --- delivery and mentions ------------------------------------------------------------------


async def test_markdown_posts_to_the_group_and_mentions_members_by_userid(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    assert await robot(ctx, fake_wecom).send(message()) == ""
    [sent] = fake_wecom.accepted
    assert (sent.endpoint, sent.msgtype, sent.robot_key) == ("robot", "markdown", ROBOT_KEY)
    assert '<font color="warning">[FIRING:1] HighLatency prod</font>' in sent.content
    assert sent.content.rstrip().endswith("<@zhangsan> <@lisi>")
    assert sent.mentioned_list == [] and sent.mentioned_mobile_list == []


async def test_text_mentions_members_by_userid_and_by_mobile(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    await robot(ctx, fake_wecom, "text").send(message())
    [sent] = fake_wecom.accepted
    assert sent.msgtype == "text"
    assert sent.content.startswith("[FIRING:1] HighLatency prod")
    assert sent.mentioned_list == ["zhangsan", "lisi"]
    # Zhao Liu has only a mobile; Zhang San is mentioned once, by user id.
    assert sent.mentioned_mobile_list == ["13900000000"]


async def test_a_group_without_members_posts_without_mentions(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    await robot(ctx, fake_wecom).send(message(recipients=()))
    assert "<@" not in fake_wecom.accepted[0].content


async def test_mentions_come_only_with_the_last_part(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    await robot(ctx, fake_wecom, "text").send(long_message(alerts=10))
    mentions = [a.mentioned_list for a in fake_wecom.accepted]
    assert len(mentions) > 1
    assert mentions[:-1] == [[]] * (len(mentions) - 1) and mentions[-1] == ["zhangsan", "lisi"]


async def test_a_robot_template_overrides_the_application_template(
    fake_wecom: FakeWeCom, ctx: ChannelContext, tmp_path: Path
) -> None:
    (tmp_path / "robot.md").write_text("robot says {{ message.groups[0].title }}")
    ctx.renderer = Renderer("en", directory=tmp_path)
    await robot(ctx, fake_wecom).send(message())
    assert fake_wecom.accepted[0].content.startswith("robot says HighLatency prod")


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_merged_digest_carries_every_group(
    fake_wecom: FakeWeCom, ctx: ChannelContext, language: str
) -> None:
    ctx.renderer = Renderer(language)
    groups = [group(f"g{i}", alert(i), alertname=f"Alert{i}") for i in range(8)]
    await robot(ctx, fake_wecom).send(message(*groups, kind="digest"))
    content = "\n".join(fake_wecom.contents())
    assert "[DIGEST]" in content
    for i in range(8):
        assert f"Alert{i} prod" in content


# --- errors ---------------------------------------------------------------------------------


async def test_an_unknown_robot_key_fails_for_good(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    with pytest.raises(ChannelError) as caught:
        await robot(ctx, fake_wecom, key="no-such-robot").send(message())
    assert caught.value.permanent
    assert "errcode 93000" in caught.value.reason


@pytest.mark.parametrize(
    ("errcode", "permanent"), [(-1, False), (45033, False), (40058, True), (93004, True)]
)
async def test_robot_errcodes_are_classified(
    fake_wecom: FakeWeCom, ctx: ChannelContext, errcode: int, permanent: bool
) -> None:
    fake_wecom.fail_next(errcode, on="robot")
    with pytest.raises(ChannelError) as caught:
        await robot(ctx, fake_wecom).send(message())
    assert caught.value.permanent is permanent


async def test_a_45009_backs_off_a_minute_and_holds_the_robot_queue(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    # Someone else's messages filled this robot's minute.
    ch = robot(ctx, fake_wecom)
    fake_wecom.fail_next(45009, on="robot")
    with pytest.raises(ChannelError) as caught:
        await ch.send(message(msg_id=1))
    assert not caught.value.permanent
    assert getattr(caught.value, "retry_after", 0) >= 60
    assert ch.ready_at(message(msg_id=2)) >= clock() + 60


def test_a_webhook_url_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="key"):
        WechatRobotSettings(webhook_url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send")
    with pytest.raises(ValueError, match="http"):
        WechatRobotSettings(webhook_url="qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k")


# --- long messages --------------------------------------------------------------------------


@pytest.mark.parametrize(("msgtype", "limit"), [("markdown", 4096), ("text", 2048)])
async def test_a_long_message_arrives_in_numbered_parts_within_the_robot_limit(
    fake_wecom: FakeWeCom, ctx: ChannelContext, msgtype: str, limit: int
) -> None:
    ctx.renderer = Renderer("zh", max_alerts=12)
    note = await robot(ctx, fake_wecom, msgtype).send(long_message(alerts=12))
    parts = fake_wecom.contents()
    assert 1 < len(parts) <= 5 and note == f"sent in {len(parts)} parts"
    assert all(utf8_len(p) <= limit for p in parts)
    assert max(utf8_len(p) for p in parts) > limit * 3 // 4  # parts use the room they have
    assert fake_wecom.truncated == [] and fake_wecom.rejected == []
    firsts = [p.split("\n")[0] for p in parts]
    assert all(f"({i}/{len(parts)})" in line for i, line in enumerate(firsts, 1))
    joined = "\n".join(parts)
    assert all(f"api-{i}\n" in joined or f"api-{i}<" in joined for i in range(12))


async def test_a_message_too_long_for_five_parts_ends_with_what_was_left_out_and_a_link(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ctx.renderer = Renderer("zh", max_alerts=60)
    message = long_message(alerts=60)
    await robot(ctx, fake_wecom, "markdown").send(message)
    parts = fake_wecom.contents()
    assert len(parts) == 5 and all(utf8_len(p) <= 4096 for p in parts)
    assert "(5/5)" in parts[-1] and "字节未显示" in parts[-1]
    assert f"({message.groups[0].url})" in parts[-1]  # a markdown link to the group
    assert "api-0" in parts[0] and "api-59" not in "\n".join(parts)


async def test_the_fake_refuses_markdown_over_4096_bytes(
    fake_wecom: FakeWeCom, session: aiohttp.ClientSession
) -> None:
    body = {"msgtype": "markdown", "markdown": {"content": "告" * 1366}}  # 4098 bytes
    async with session.post(fake_wecom.robot_url(), json=body) as resp:
        answer = await resp.json()
    assert answer["errcode"] == 40058
    assert "exceed max length 4096" in answer["errmsg"]


# --- rate limit -----------------------------------------------------------------------------


async def test_the_fake_refuses_the_21st_message_in_a_minute(
    fake_wecom: FakeWeCom, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    # The check the limiter tests rely on: a client that ignores the limit gets 45009.
    codes = []
    for i in range(21):
        body = {"msgtype": "text", "text": {"content": f"m{i}"}}
        async with session.post(fake_wecom.robot_url(), json=body) as resp:
            codes.append((await resp.json())["errcode"])
    assert codes == [0] * 20 + [45009]
    clock.advance(60)
    async with session.post(
        fake_wecom.robot_url(), json={"msgtype": "text", "text": {"content": "later"}}
    ) as resp:
        assert (await resp.json())["errcode"] == 0


async def test_25_messages_in_a_minute_wait_for_the_robot_instead_of_hitting_45009(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    ch = robot(ctx, fake_wecom)
    start = clock()
    for i in range(25):
        await send_when_ready(ch, clock, message(msg_id=i))
    assert len(fake_wecom.accepted) == 25
    assert fake_wecom.rejected == []
    assert 60 <= clock() - start <= 62


async def test_robot_channels_sharing_a_key_share_its_limit(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    first, second = robot(ctx, fake_wecom, name="a"), robot(ctx, fake_wecom, "text", name="b")
    for i in range(20):
        await send_when_ready(first, clock, message(msg_id=i))
    assert second.ready_at(message(msg_id=99)) > clock()
    await send_when_ready(second, clock, message(msg_id=99))
    assert fake_wecom.rejected == []


async def test_concurrent_sends_never_exceed_the_robot_limit(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ch = robot(ctx, fake_wecom)
    results = await asyncio.gather(
        *(ch.send(message(msg_id=i)) for i in range(25)), return_exceptions=True
    )
    held = [r for r in results if isinstance(r, ChannelError)]
    assert len(fake_wecom.accepted) == 20 and len(held) == 5
    assert all(not e.permanent and getattr(e, "retry_after", 0) > 0 for e in held)
    assert fake_wecom.rejected == []


async def test_a_backlog_merged_into_one_digest_goes_out_as_one_message(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    # The outbox's side of the contract: merges_backlog means queued messages become a digest.
    ch = robot(ctx, fake_wecom)
    assert ch.merges_backlog
    for i in range(20):
        await ch.send(message(group(f"g{i}", alert(i), alertname=f"Early{i}"), msg_id=i))
    queued = [group(f"q{i}", alert(i), alertname=f"Queued{i}") for i in range(12)]
    digest = message(*queued, kind="digest", msg_id=100)
    assert ch.ready_at(digest) > clock()
    note = await send_when_ready(ch, clock, digest)
    assert fake_wecom.rejected == []
    sent = "\n".join(a.content for a in fake_wecom.accepted[20:])
    assert all(f"Queued{i} prod" in sent for i in range(12))
    parts = len(fake_wecom.accepted) - 20
    assert note == ("" if parts == 1 else f"sent in {parts} parts")


# --- secrets --------------------------------------------------------------------------------


async def test_the_robot_key_appears_in_no_error_log_note_or_repr(
    fake_wecom: FakeWeCom, ctx: ChannelContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ch = robot(ctx, fake_wecom)
    seen = [repr(ch.settings), repr(ch.settings.__dict__.keys()), await ch.send(message(msg_id=1))]
    for fail in (
        lambda: fake_wecom.fail_next(40058, on="robot", echo=True),
        lambda: fake_wecom.http_error_next(502, on="robot", echo=True),
        lambda: fake_wecom.fail_next(45009, on="robot", echo=True),
    ):
        fail()
        with pytest.raises(ChannelError) as caught:
            await ch.send(message(msg_id=2))
        seen += [caught.value.reason, repr(caught.value)]
    with pytest.raises(ChannelError) as caught:
        await robot(ctx, fake_wecom, key="unknown-key-123").send(message(msg_id=3))
    seen.append(caught.value.reason)
    assert any(re.search(r"errcode 40058", s) for s in seen)
    assert_no_secrets("\n".join(seen + [caplog.text]), ROBOT_KEY, "unknown-key-123")


async def test_members_are_taken_from_the_message_recipients(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    recipients = (Member("A", wechat="a1"), Member("A again", wechat="a1"), Member("B"))
    await robot(ctx, fake_wecom, "text").send(message(recipients=recipients))
    assert fake_wecom.accepted[0].mentioned_list == ["a1"]
