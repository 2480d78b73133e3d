"""DingTalk custom robots (`type = "dingtalk_robot"`) against the fake DingTalk API on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import urllib.parse

import aiohttp
import pytest
import yarl

from fake_dingtalk import SECRET, TOKEN, FakeDingTalk, dingtalk_sign
from fake_wecom import alert, assert_no_secrets, group, long_message, message, send_when_ready
from monitor_manager.channels import REGISTRY
from monitor_manager.channels.base import ChannelContext, ChannelError
from monitor_manager.channels.dingtalk_robot import (
    DingtalkRobotChannel,
    DingtalkRobotSettings,
    signature,
)
from monitor_manager.channels.text_parts import utf8_len
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Member

PEOPLE = (
    Member("Zhang San", mobile="13800000000", dingtalk="zhangsan01"),
    Member("Li Si", mobile="13900000000"),
    Member("Wang Wu", email="wangwu@example.com"),  # nothing DingTalk can mention
)


def robot(
    ctx: ChannelContext,
    fake: FakeDingTalk,
    msgtype: str = "markdown",
    *,
    token: str = TOKEN,
    secret: str = "",
    name: str = "ding",
) -> DingtalkRobotChannel:
    settings = DingtalkRobotSettings(
        webhook_url=fake.robot_url(token),
        secret=secret,
        msgtype=msgtype,  # type: ignore[arg-type]
    )
    return DingtalkRobotChannel(name, settings, ctx)


def people_message(**kw: object) -> object:
    return dataclasses.replace(message(**kw), recipients=PEOPLE)  # type: ignore[arg-type]


def clock_of(fake: FakeDingTalk) -> ManualClock:
    assert isinstance(fake.clock, ManualClock)
    return fake.clock


# --- delivery and mentions ------------------------------------------------------------------


def test_the_kind_is_registered() -> None:
    assert REGISTRY["dingtalk_robot"] is DingtalkRobotChannel
    assert DingtalkRobotChannel.mentions == ("dingtalk", "mobile")


async def test_markdown_mentions_by_user_id_else_by_mobile_and_shows_them_in_the_text(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    assert await robot(dingtalk_ctx, fake_dingtalk).send(people_message()) == ""  # type: ignore[arg-type]
    [sent] = fake_dingtalk.accepted
    assert sent.msgtype == "markdown"
    assert sent.title == "[FIRING:1] HighLatency prod"
    assert "<font color=#d93026>[FIRING:1] HighLatency prod</font>" in sent.content
    # Zhang San by user id (once, not also by mobile); Li Si has only a mobile.
    assert (sent.at_user_ids, sent.at_mobiles) == (["zhangsan01"], ["13900000000"])
    # Markdown shows a mention only where "@..." stands in the text.
    assert sent.shown == ["zhangsan01", "13900000000"]
    assert sent.content.rstrip().endswith("@zhangsan01 @13900000000")
    assert sent.body["at"]["isAtAll"] is False


async def test_text_mentions_the_same_people(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    await robot(dingtalk_ctx, fake_dingtalk, "text").send(people_message())  # type: ignore[arg-type]
    [sent] = fake_dingtalk.accepted
    assert sent.msgtype == "text" and sent.content.startswith("[FIRING:1] HighLatency prod\n")
    assert (sent.at_user_ids, sent.at_mobiles) == (["zhangsan01"], ["13900000000"])
    assert "<font" not in sent.content


async def test_chinese_templates(fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext) -> None:
    dingtalk_ctx.renderer = Renderer("zh")
    await robot(dingtalk_ctx, fake_dingtalk).send(message(group("g1", alert(1, "resolved"))))
    content = fake_dingtalk.accepted[0].content
    assert "[RESOLVED] HighLatency prod" in content and "恢复时间" in content
    assert "[查看来源](http://prometheus.example.com" in content


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_digest_names_every_group(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext, language: str
) -> None:
    dingtalk_ctx.renderer = Renderer(language)
    groups = [group(f"g{i}", alert(i), alertname=f"Alert{i}") for i in range(8)]
    await robot(dingtalk_ctx, fake_dingtalk).send(message(*groups, kind="digest"))
    content = "\n".join(fake_dingtalk.contents())
    assert "[DIGEST]" in content and all(f"Alert{i} prod" in content for i in range(8))


async def test_alert_text_cannot_mention_link_or_format(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    evil = "**bold** _it_ [click](http://evil.example) ![img](http://evil.example/x.png) @all "
    evil += "@13800000000 <font color=#ff0000>red</font>\n# Heading\n- item"
    bad = alert(1, summary=evil, labels={"team": "[x](http://evil.example)"})
    msg = message(group("g1", bad), recipients=())
    for msgtype in ("markdown", "text"):
        await robot(dingtalk_ctx, fake_dingtalk, msgtype, name=msgtype).send(msg)
    for sent in fake_dingtalk.accepted:
        assert "](http://evil" not in sent.content
        assert "**bold**" not in sent.content and "_it_" not in sent.content
        assert "@all" not in sent.content and "@13800000000" not in sent.content
        assert "<font color=#ff0000>" not in sent.content
        assert "\n# Heading" not in sent.content and "\n> # Heading" not in sent.content
        assert "∗∗bold∗∗" in sent.content and "＠all" in sent.content  # shown, inert
        assert sent.at_mobiles == [] and sent.body["at"]["isAtAll"] is False


async def test_a_custom_template_overrides_the_builtin(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext, tmp_path: object
) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "dingtalk.md").write_text("ding {{ message.groups[0].title }}")
    dingtalk_ctx.renderer = Renderer("en", directory=directory)
    await robot(dingtalk_ctx, fake_dingtalk).send(message())
    assert fake_dingtalk.accepted[0].content.startswith("ding HighLatency prod")


# --- signing --------------------------------------------------------------------------------


def test_the_signature_follows_the_documented_algorithm() -> None:
    # An independent implementation's test vector (docs.rs crate dingding 0.1.1,
    # src/signature.rs): timestamp 1700000000000, secret "secret".
    assert urllib.parse.quote_plus(signature("1700000000000", "secret")) == (
        "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D"
    )
    assert dingtalk_sign("1700000000000", "secret") == urllib.parse.quote_plus(
        signature("1700000000000", "secret")
    )


async def test_a_signed_robot_takes_signed_messages(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    fake_dingtalk.add_robot("signed-robot", secret=SECRET)
    await robot(dingtalk_ctx, fake_dingtalk, token="signed-robot", secret=SECRET).send(message())
    assert [a.signed for a in fake_dingtalk.accepted] == [True]


async def test_a_signed_robot_refuses_unsigned_messages(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    fake_dingtalk.add_robot("signed-robot", secret=SECRET)
    with pytest.raises(ChannelError) as caught:
        await robot(dingtalk_ctx, fake_dingtalk, token="signed-robot").send(message())
    assert caught.value.permanent and "errcode 310000" in caught.value.reason


async def test_a_wrong_secret_fails_for_good_with_a_hint(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    fake_dingtalk.add_robot("signed-robot", secret=SECRET)
    ch = robot(dingtalk_ctx, fake_dingtalk, token="signed-robot", secret="SECwrong-secret-0123")
    with pytest.raises(ChannelError) as caught:
        await ch.send(message())
    assert caught.value.permanent
    assert "errcode 310000" in caught.value.reason and "加签 secret" in caught.value.reason
    assert_no_secrets(caught.value.reason, SECRET, "SECwrong-secret-0123", "signed-robot")


async def test_a_clock_an_hour_off_fails_for_good_saying_so(
    fake_dingtalk: FakeDingTalk, session: aiohttp.ClientSession
) -> None:
    fake_dingtalk.add_robot("signed-robot", secret=SECRET)
    late = ManualClock(clock_of(fake_dingtalk).now + 3601)
    ctx = ChannelContext(session=session, renderer=Renderer("en"), clock=late, stdout=None)  # type: ignore[arg-type]
    with pytest.raises(ChannelError) as caught:
        await robot(ctx, fake_dingtalk, token="signed-robot", secret=SECRET).send(message())
    assert caught.value.permanent and "clock" in caught.value.reason
    late.now -= 2  # within the hour: taken
    await robot(ctx, fake_dingtalk, token="signed-robot", secret=SECRET, name="b").send(message())
    assert len(fake_dingtalk.accepted) == 1


async def test_the_fake_refuses_a_sign_sent_without_url_encoding(
    fake_dingtalk: FakeDingTalk, session: aiohttp.ClientSession
) -> None:
    # The check the signing tests rely on: "+" in a raw sign reads as a space.
    fake_dingtalk.add_robot("signed-robot", secret=SECRET)
    for ts in range(1_800_000_000_000, 1_800_000_000_100):
        raw = signature(str(ts), SECRET)
        if "+" in raw:
            break
    clock_of(fake_dingtalk).now = ts / 1000
    url = f"{fake_dingtalk.robot_url('signed-robot')}&timestamp={ts}&sign={raw}"
    body = {"msgtype": "text", "text": {"content": "x"}}
    async with session.post(yarl.URL(url, encoded=True), json=body) as resp:
        assert (await resp.json())["errmsg"] == "sign not match"
    encoded = dingtalk_sign(str(ts), SECRET)
    url = f"{fake_dingtalk.robot_url('signed-robot')}&timestamp={ts}&sign={encoded}"
    async with session.post(yarl.URL(url, encoded=True), json=body) as resp:
        assert (await resp.json())["errcode"] == 0


# --- keywords, tokens, errcodes -------------------------------------------------------------


async def test_a_keyword_robot_refuses_messages_without_it_with_a_hint(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    fake_dingtalk.add_robot("kw-robot", keywords=("告警",))
    with pytest.raises(ChannelError) as caught:
        await robot(dingtalk_ctx, fake_dingtalk, token="kw-robot").send(message())
    assert caught.value.permanent and "keyword" in caught.value.reason


async def test_the_keyword_monitor_manager_passes_every_part_of_a_split_message(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    fake_dingtalk.add_robot("kw-robot", keywords=("Monitor Manager",))
    dingtalk_ctx.renderer = Renderer("zh", max_alerts=12)
    ch = robot(dingtalk_ctx, fake_dingtalk, token="kw-robot")
    await send_when_ready(ch, clock_of(fake_dingtalk), long_message(alerts=12))
    assert len(fake_dingtalk.accepted) > 1 and fake_dingtalk.rejected == []


async def test_a_bad_token_fails_for_good_with_a_hint(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    with pytest.raises(ChannelError) as caught:
        await robot(dingtalk_ctx, fake_dingtalk, token="no-such-robot").send(message())
    assert caught.value.permanent
    assert "errcode 300001" in caught.value.reason and "webhook_url" in caught.value.reason


@pytest.mark.parametrize(
    ("errcode", "errmsg", "permanent", "hint"),
    [
        (-1, "系统繁忙", False, "busy"),
        (130101, "send too fast", False, "10 minutes"),
        (310000, "keywords not in content", True, "keyword"),
        (310000, "sign not match", True, "secret"),
        (310000, "invalid timestamp", True, "clock"),
        (310000, "ip 203.0.113.9 not in whitelist", True, "allowlist"),
        (310000, "something new", True, "keyword, signature"),
        (300001, "token is not exist", True, "access_token"),
        (300005, "token is not exist", True, "access_token"),
        (460101, "message too long, exceed 20000 bytes", True, "too long"),
        (40035, "缺少参数 access_token", True, "access_token"),
        (88, "鉴权异常", True, ""),
    ],
)
async def test_every_errcode_is_classified(
    fake_dingtalk: FakeDingTalk,
    dingtalk_ctx: ChannelContext,
    errcode: int,
    errmsg: str,
    permanent: bool,
    hint: str,
) -> None:
    fake_dingtalk.fail_next(errcode, errmsg=errmsg)
    with pytest.raises(ChannelError) as caught:
        await robot(dingtalk_ctx, fake_dingtalk).send(message())
    assert caught.value.permanent is permanent
    assert f"errcode {errcode}" in caught.value.reason and hint in caught.value.reason


async def test_an_http_error_is_retried(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    fake_dingtalk.http_error_next(502)
    with pytest.raises(ChannelError) as caught:
        await robot(dingtalk_ctx, fake_dingtalk).send(message())
    assert not caught.value.permanent and "HTTP 502" in caught.value.reason


async def test_send_too_fast_holds_every_channel_of_the_robot_for_ten_minutes(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    clock = clock_of(fake_dingtalk)
    first = robot(dingtalk_ctx, fake_dingtalk)
    other = robot(dingtalk_ctx, fake_dingtalk, "text", name="other")  # same robot
    fake_dingtalk.fail_next(130101)
    with pytest.raises(ChannelError) as caught:
        await first.send(message(msg_id=1))
    assert not caught.value.permanent and caught.value.retry_after == 600
    assert other.ready_at(message(msg_id=2)) >= clock() + 600
    with pytest.raises(ChannelError) as held:  # not even tried
        await other.send(message(msg_id=2))
    assert held.value.retry_after and held.value.retry_after > 590
    assert len(fake_dingtalk.rejected) == 1
    clock.advance(600)
    await other.send(message(msg_id=2))
    assert len(fake_dingtalk.accepted) == 1


def test_settings_are_checked_when_the_config_is_read() -> None:
    with pytest.raises(ValueError, match="access_token"):
        DingtalkRobotSettings(webhook_url="https://oapi.dingtalk.com/robot/send")
    with pytest.raises(ValueError, match="http"):
        DingtalkRobotSettings(webhook_url="oapi.dingtalk.com/robot/send?access_token=x")
    with pytest.raises(ValueError, match="blanks"):
        DingtalkRobotSettings(webhook_url=f"https://x/robot/send?access_token={TOKEN}", secret=" s")


# --- long messages --------------------------------------------------------------------------


@pytest.mark.parametrize("msgtype", ["markdown", "text"])
async def test_a_long_message_arrives_in_at_most_five_parts_within_the_limits(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext, msgtype: str
) -> None:
    dingtalk_ctx.renderer = Renderer("zh", max_alerts=12)
    ch = robot(dingtalk_ctx, fake_dingtalk, msgtype)
    note = await send_when_ready(
        ch, clock_of(fake_dingtalk), dataclasses.replace(long_message(alerts=12), recipients=PEOPLE)
    )
    parts = fake_dingtalk.accepted
    assert 1 < len(parts) <= 5 and note == f"sent in {len(parts)} parts"
    assert all(utf8_len(p.content) <= 5000 and p.body_bytes <= 20000 for p in parts)
    assert all(
        p.content.startswith(f"Monitor Manager ({i}/{len(parts)})") for i, p in enumerate(parts, 1)
    )
    # The mentions come with the last part only.
    assert [p.at_mobiles for p in parts[:-1]] == [[]] * (len(parts) - 1)
    assert parts[-1].shown == ["zhangsan01", "13900000000"]
    assert fake_dingtalk.rejected == []


async def test_a_message_too_long_for_five_parts_says_what_was_left_out(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    dingtalk_ctx.renderer = Renderer("zh", max_alerts=60)
    msg = long_message(alerts=60)
    await send_when_ready(robot(dingtalk_ctx, fake_dingtalk), clock_of(fake_dingtalk), msg)
    parts = fake_dingtalk.contents()
    assert len(parts) == 5 and "(5/5)" in parts[-1] and "字节未显示" in parts[-1]
    assert f"({msg.groups[0].url})" in parts[-1]


async def test_json_escaping_cannot_push_a_request_past_20000_bytes(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    # Quotes, backslashes and control characters take 2 to 6 bytes each once JSON-escaped.
    nasty = ('"\\' * 200) + ("\x01" * 500)
    msg = message(group("g1", *(alert(i, summary=nasty) for i in range(10))))
    dingtalk_ctx.renderer = Renderer("en", max_alerts=10)
    await send_when_ready(robot(dingtalk_ctx, fake_dingtalk, "text"), clock_of(fake_dingtalk), msg)
    assert fake_dingtalk.rejected == [] and len(fake_dingtalk.accepted) <= 5
    assert max(a.body_bytes for a in fake_dingtalk.accepted) <= 20000
    assert max(a.body_bytes for a in fake_dingtalk.accepted) > 10000  # escaping did bite


async def test_the_fake_refuses_bodies_over_20000_bytes(
    fake_dingtalk: FakeDingTalk, session: aiohttp.ClientSession
) -> None:
    body = {"msgtype": "text", "text": {"content": "告" * 7000}}
    async with session.post(fake_dingtalk.robot_url(), json=body) as resp:
        assert (await resp.json())["errcode"] == 460101


# --- the rate limit -------------------------------------------------------------------------


async def test_the_fake_refuses_the_21st_message_and_throttles_ten_minutes(
    fake_dingtalk: FakeDingTalk, session: aiohttp.ClientSession
) -> None:
    clock = clock_of(fake_dingtalk)
    codes = []
    for i in range(21):
        body = {"msgtype": "text", "text": {"content": f"m{i}"}}
        async with session.post(fake_dingtalk.robot_url(), json=body) as resp:
            codes.append((await resp.json())["errcode"])
    assert codes == [0] * 20 + [130101]
    clock.advance(61)
    async with session.post(fake_dingtalk.robot_url(), json=body) as resp:
        assert (await resp.json())["errcode"] == 130101  # still throttled
    clock.advance(600)
    async with session.post(fake_dingtalk.robot_url(), json=body) as resp:
        assert (await resp.json())["errcode"] == 0


async def test_25_messages_in_a_minute_queue_instead_of_being_refused(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    clock = clock_of(fake_dingtalk)
    ch = robot(dingtalk_ctx, fake_dingtalk)
    start = clock()
    for i in range(25):
        await send_when_ready(ch, clock, message(msg_id=i))
    assert len(fake_dingtalk.accepted) == 25 and fake_dingtalk.rejected == []
    assert 60 <= clock() - start <= 62
    times = [a.at for a in fake_dingtalk.accepted]
    assert all(b - a >= 60 for a, b in zip(times, times[20:], strict=False))


async def test_concurrent_sends_never_exceed_the_robot_limit(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext
) -> None:
    ch = robot(dingtalk_ctx, fake_dingtalk)
    results = await asyncio.gather(
        *(ch.send(message(msg_id=i)) for i in range(25)), return_exceptions=True
    )
    held = [r for r in results if isinstance(r, ChannelError)]
    assert len(fake_dingtalk.accepted) == 20 and len(held) == 5
    assert all(not e.permanent and (e.retry_after or 0) > 0 for e in held)
    assert fake_dingtalk.rejected == []


# --- secrets --------------------------------------------------------------------------------


async def test_the_token_and_secret_appear_in_no_error_log_note_or_repr(
    fake_dingtalk: FakeDingTalk, dingtalk_ctx: ChannelContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_dingtalk.add_robot("signed-robot", secret=SECRET)
    ch = robot(dingtalk_ctx, fake_dingtalk, token="signed-robot", secret=SECRET)
    seen = [repr(ch.settings), await ch.send(message(msg_id=1))]
    for fail in (
        lambda: fake_dingtalk.fail_next(310000, errmsg=f"sign not match {SECRET}"),
        lambda: fake_dingtalk.http_error_next(502),
        lambda: fake_dingtalk.fail_next(300001),
    ):
        fail()
        with pytest.raises(ChannelError) as caught:
            await ch.send(message(msg_id=2))
        seen += [caught.value.reason, repr(caught.value)]
    await fake_dingtalk.close()  # connection refused: aiohttp's error names the URL
    with pytest.raises(ChannelError) as caught:
        await ch.send(message(msg_id=3))
    seen.append(caught.value.reason)
    assert any("errcode 310000" in s for s in seen)
    assert_no_secrets("\n".join(seen + [caplog.text]), "signed-robot", SECRET)
    assert json.dumps(seen)  # plain strings
