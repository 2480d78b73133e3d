"""Feishu / Lark custom bots (`type = "feishu_robot"`) against the fake Feishu API on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import aiohttp
import pytest

from fake_feishu import SECRET, TOKEN, FakeFeishu, feishu_sign
from fake_wecom import alert, assert_no_secrets, group, long_message, message, send_when_ready
from monitor_manager.channels import REGISTRY
from monitor_manager.channels.base import ChannelContext, ChannelError
from monitor_manager.channels.feishu_robot import (
    FeishuRobotChannel,
    FeishuRobotSettings,
    signature,
)
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Member, Message

OPEN_ID = "ou_7d8a6e6df7621556ce0d21922b676706"
PEOPLE = (
    Member("Zhang San", feishu=OPEN_ID, mobile="13800000000"),
    Member("Li Si", feishu="ou_0123456789abcdef0123456789abcdef"),
    Member("Wang Wu", email="wangwu@example.com"),  # nothing Feishu can mention
    Member("Bad Id", feishu='ou_x" onclick="y'),  # not an open id: never put into markup
)


def bot(
    ctx: ChannelContext,
    fake: FakeFeishu,
    msgtype: str = "interactive",
    *,
    token: str = TOKEN,
    secret: str = "",
    name: str = "fs",
) -> FeishuRobotChannel:
    settings = FeishuRobotSettings(
        webhook_url=fake.hook_url(token),
        secret=secret,
        msgtype=msgtype,  # type: ignore[arg-type]
    )
    return FeishuRobotChannel(name, settings, ctx)


def people_message(*groups: object, **kw: object) -> Message:
    return dataclasses.replace(message(*groups, **kw), recipients=PEOPLE)  # type: ignore[arg-type]


def clock_of(fake: FakeFeishu) -> ManualClock:
    assert isinstance(fake.clock, ManualClock)
    return fake.clock


# --- delivery and mentions ------------------------------------------------------------------


def test_the_kind_is_registered() -> None:
    assert REGISTRY["feishu_robot"] is FeishuRobotChannel
    assert FeishuRobotChannel.mentions == ("feishu",)


async def test_a_card_mentions_members_by_open_id(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    assert await bot(feishu_ctx, fake_feishu).send(people_message()) == ""
    [sent] = fake_feishu.accepted
    assert sent.msg_type == "interactive"
    card = sent.body["card"]
    assert card["header"]["title"]["content"] == "[FIRING:1] HighLatency prod"
    assert card["header"]["template"] == "red"
    assert card["elements"][0]["text"]["tag"] == "lark_md"
    assert sent.mentioned == [OPEN_ID, "ou_0123456789abcdef0123456789abcdef"]
    assert "[Source](http://prometheus.example.com:9090/graph?g0.expr=up&n=1)" in sent.text
    assert "onclick" not in sent.text


async def test_rich_text_mentions_with_at_elements_and_links_with_a_elements(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    await bot(feishu_ctx, fake_feishu, "post").send(people_message())
    [sent] = fake_feishu.accepted
    post = sent.body["content"]["post"]["en_us"]
    assert post["title"] == "[FIRING:1] HighLatency prod"
    assert post["content"][-1] == [
        {"tag": "at", "user_id": OPEN_ID, "user_name": "Zhang San"},
        {"tag": "at", "user_id": "ou_0123456789abcdef0123456789abcdef", "user_name": "Li Si"},
    ]
    assert "http://prometheus.example.com:9090/graph?g0.expr=up&n=1" in sent.links
    assert "http://mm-az1.example.com:9095/api/v1/alert-groups?key=g1" in sent.links


async def test_text_mentions_with_at_tags(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    await bot(feishu_ctx, fake_feishu, "text").send(people_message())
    [sent] = fake_feishu.accepted
    assert sent.text.startswith("[FIRING:1] HighLatency prod\n")
    assert f'<at user_id="{OPEN_ID}">Zhang San</at>' in sent.text
    assert sent.mentioned == [OPEN_ID, "ou_0123456789abcdef0123456789abcdef"]


@pytest.mark.parametrize(("status", "colour"), [("resolved", "green"), ("firing", "red")])
async def test_the_card_colour_follows_the_status(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext, status: str, colour: str
) -> None:
    await bot(feishu_ctx, fake_feishu).send(message(group("g1", alert(1, status))))  # type: ignore[arg-type]
    assert fake_feishu.accepted[0].body["card"]["header"]["template"] == colour


@pytest.mark.parametrize("msgtype", ["interactive", "post", "text"])
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_every_msgtype_renders_tests_digests_and_groups_in_both_languages(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext, msgtype: str, language: str
) -> None:
    feishu_ctx.renderer = Renderer(language)
    ch = bot(feishu_ctx, fake_feishu, msgtype)
    clock = clock_of(fake_feishu)
    groups = [group(f"g{i}", alert(i), alertname=f"Alert{i}") for i in range(6)]
    await send_when_ready(ch, clock, message(*groups, kind="digest", msg_id=1))
    await send_when_ready(ch, clock, dataclasses.replace(message(msg_id=2), kind="test", groups=()))
    await send_when_ready(ch, clock, message(msg_id=3))
    texts = fake_feishu.texts()
    assert all(f"Alert{i} prod" in texts[0] for i in range(6))
    assert "Monitor Manager" in texts[1] and ("测试通知" in texts[1]) is (language == "zh")
    assert "HighLatency" in texts[2]
    assert fake_feishu.rejected == []


async def test_alert_text_cannot_mention_link_or_format(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    evil = '**bold** ~~gone~~ [click](http://evil.example) <at id=all></at> <at user_id="all">'
    evil += "x</at> @all <a href='http://evil.example'>a</a>"
    msg = message(group("g1", alert(1, summary=evil)), recipients=())
    for msgtype in ("interactive", "post", "text"):
        await bot(feishu_ctx, fake_feishu, msgtype, name=msgtype).send(msg)
    for sent in fake_feishu.accepted:
        assert sent.mentioned == [] and "http://evil.example" not in sent.links
        assert "](http://evil" not in sent.text and "<at" not in sent.text
        assert "**bold**" not in sent.text and "~~gone~~" not in sent.text
        assert "@all" not in sent.text and "<a href" not in sent.text
        assert "∗∗bold∗∗" in sent.text  # shown, inert


async def test_a_custom_template_overrides_the_builtin(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext, tmp_path: Path
) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "feishu.md").write_text("card {{ message.groups[0].title }}")
    feishu_ctx.renderer = Renderer("en", directory=tmp_path)
    await bot(feishu_ctx, fake_feishu).send(message())
    assert "card HighLatency prod" in fake_feishu.accepted[0].text


# --- signing --------------------------------------------------------------------------------


def test_the_signature_follows_the_documented_algorithm() -> None:
    assert signature("1599360473", "secret") == feishu_sign("1599360473", "secret")
    # The key is "timestamp\nsecret" and the message empty, unlike DingTalk.
    assert signature("1599360473", "secret") != feishu_sign("1599360474", "secret")


async def test_a_signed_bot_takes_signed_messages_and_refuses_unsigned_ones(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    fake_feishu.add_bot("signed-bot", secret=SECRET)
    await bot(feishu_ctx, fake_feishu, token="signed-bot", secret=SECRET).send(message())
    assert [a.signed for a in fake_feishu.accepted] == [True]
    with pytest.raises(ChannelError) as caught:
        await bot(feishu_ctx, fake_feishu, token="signed-bot", name="b").send(message())
    assert caught.value.permanent and "code 19021" in caught.value.reason


async def test_a_wrong_secret_fails_for_good_with_a_hint(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    fake_feishu.add_bot("signed-bot", secret=SECRET)
    with pytest.raises(ChannelError) as caught:
        await bot(feishu_ctx, fake_feishu, token="signed-bot", secret="wrong-secret-0123").send(
            message()
        )
    assert caught.value.permanent and "签名校验 secret" in caught.value.reason
    assert_no_secrets(caught.value.reason, SECRET, "wrong-secret-0123", "signed-bot")


async def test_a_stale_timestamp_is_refused(
    fake_feishu: FakeFeishu, session: aiohttp.ClientSession
) -> None:
    fake_feishu.add_bot("signed-bot", secret=SECRET)
    early = ManualClock(clock_of(fake_feishu).now - 3601)
    ctx = ChannelContext(session=session, renderer=Renderer("en"), clock=early, stdout=None)  # type: ignore[arg-type]
    with pytest.raises(ChannelError) as caught:
        await bot(ctx, fake_feishu, token="signed-bot", secret=SECRET).send(message())
    assert caught.value.permanent and "clock" in caught.value.reason


# --- errors ---------------------------------------------------------------------------------


async def test_a_keyword_bot_refuses_messages_without_it(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    fake_feishu.add_bot("kw-bot", keywords=("告警",))
    with pytest.raises(ChannelError) as caught:
        await bot(feishu_ctx, fake_feishu, token="kw-bot").send(message())
    assert caught.value.permanent and "code 19024" in caught.value.reason
    assert "keyword" in caught.value.reason


@pytest.mark.parametrize("msgtype", ["interactive", "post", "text"])
async def test_the_keyword_monitor_manager_passes_every_part(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext, msgtype: str
) -> None:
    fake_feishu.add_bot("kw-bot", keywords=("Monitor Manager",))
    feishu_ctx.renderer = Renderer("zh", max_alerts=40)
    ch = bot(feishu_ctx, fake_feishu, msgtype, token="kw-bot")
    await send_when_ready(ch, clock_of(fake_feishu), long_message(alerts=40))
    assert len(fake_feishu.accepted) > 1 and fake_feishu.rejected == []


async def test_a_bad_token_fails_for_good_with_a_hint(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    with pytest.raises(ChannelError) as caught:
        await bot(feishu_ctx, fake_feishu, token="no-such-bot").send(message())
    assert caught.value.permanent and "code 19001" in caught.value.reason
    assert "webhook_url" in caught.value.reason


@pytest.mark.parametrize(
    ("code", "msg", "status", "permanent"),
    [
        (9499, "too many request", 400, False),
        (9499, "too many request", 200, False),
        (11232, "frequency limited psm[lark.oapi.app_platform_runtime]", 200, False),
        (9499, "Bad Request", 400, True),
        (9499, "Bad Request: fail to parse content", 200, True),
        (19001, "param invalid: incoming webhook access token invalid", 200, True),
        (19002, "params error", 200, True),
        (19007, "Bot Not Enabled", 200, True),
        (19021, "sign match fail or timestamp is not within one hour", 200, True),
        (19022, "Ip Not Allowed", 200, True),
        (19024, "Key Words Not Found", 200, True),
        (12345, "something new", 200, True),
    ],
)
async def test_every_code_is_classified(
    fake_feishu: FakeFeishu,
    feishu_ctx: ChannelContext,
    code: int,
    msg: str,
    status: int,
    permanent: bool,
) -> None:
    fake_feishu.fail_next(code, msg=msg, status=status)
    ch = bot(feishu_ctx, fake_feishu)
    with pytest.raises(ChannelError) as caught:
        await ch.send(message(msg_id=1))
    assert caught.value.permanent is permanent
    assert f"code {code}" in caught.value.reason
    if not permanent:  # a frequency refusal: the bot's minute counts as full
        assert caught.value.retry_after == 60
        assert ch.ready_at(message(msg_id=2)) >= clock_of(fake_feishu)() + 60


async def test_an_http_error_without_a_code_is_retried(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    fake_feishu.http_error_next(503)
    with pytest.raises(ChannelError) as caught:
        await bot(feishu_ctx, fake_feishu).send(message())
    assert not caught.value.permanent and "HTTP 503" in caught.value.reason


def test_settings_are_checked_when_the_config_is_read() -> None:
    with pytest.raises(ValueError, match="/hook/TOKEN"):
        FeishuRobotSettings(webhook_url="https://open.feishu.cn/open-apis/bot/v2/")
    with pytest.raises(ValueError, match="http"):
        FeishuRobotSettings(webhook_url="open.feishu.cn/open-apis/bot/v2/hook/x")
    assert FeishuRobotSettings(
        webhook_url=f"https://open.larksuite.com/open-apis/bot/v2/hook/{TOKEN}"
    )


# --- long messages --------------------------------------------------------------------------


@pytest.mark.parametrize("msgtype", ["interactive", "post", "text"])
async def test_a_long_message_is_split_into_requests_within_20_kb(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext, msgtype: str
) -> None:
    feishu_ctx.renderer = Renderer("zh", max_alerts=40)
    ch = bot(feishu_ctx, fake_feishu, msgtype, secret="")
    note = await send_when_ready(
        ch, clock_of(fake_feishu), people_message(*long_message(alerts=40).groups)
    )
    parts = fake_feishu.accepted
    assert 1 < len(parts) <= 5 and note == f"sent in {len(parts)} parts"
    assert all(p.body_bytes <= 20000 for p in parts) and fake_feishu.rejected == []
    assert all(f"Monitor Manager ({i}/{len(parts)})" in p.text for i, p in enumerate(parts, 1))
    assert [p.mentioned for p in parts[:-1]] == [[]] * (len(parts) - 1)
    assert parts[-1].mentioned == [OPEN_ID, "ou_0123456789abcdef0123456789abcdef"]


async def test_the_fake_refuses_bodies_over_20_kb(
    fake_feishu: FakeFeishu, session: aiohttp.ClientSession
) -> None:
    body = {"msg_type": "text", "content": {"text": "告" * 7000}}
    async with session.post(fake_feishu.hook_url(), json=body) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 9499


# --- rate limits ----------------------------------------------------------------------------


async def test_the_fake_refuses_the_6th_request_in_a_second(
    fake_feishu: FakeFeishu, session: aiohttp.ClientSession
) -> None:
    codes = []
    for i in range(6):
        body = {"msg_type": "text", "content": {"text": f"m{i}"}}
        async with session.post(fake_feishu.hook_url(), json=body) as resp:
            codes.append((await resp.json())["code"])
    assert codes == [0] * 5 + [9499]


async def test_a_burst_queues_under_5_a_second_and_100_a_minute(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    clock = clock_of(fake_feishu)
    ch = bot(feishu_ctx, fake_feishu, "text")
    start = clock()
    for i in range(110):
        while ch.ready_at(message(msg_id=i)) > clock():
            clock.advance(0.1)
        await ch.send(message(msg_id=i))
    assert len(fake_feishu.accepted) == 110 and fake_feishu.rejected == []
    times = [a.at for a in fake_feishu.accepted]
    assert all(b - a >= 1 for a, b in zip(times, times[5:], strict=False))
    assert all(b - a >= 60 for a, b in zip(times, times[100:], strict=False))
    assert clock() - start < 70


async def test_concurrent_sends_never_exceed_5_a_second(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext
) -> None:
    ch = bot(feishu_ctx, fake_feishu)
    results = await asyncio.gather(
        *(ch.send(message(msg_id=i)) for i in range(8)), return_exceptions=True
    )
    held = [r for r in results if isinstance(r, ChannelError)]
    assert len(fake_feishu.accepted) == 5 and len(held) == 3 and fake_feishu.rejected == []
    assert all(not e.permanent and 0 < (e.retry_after or 0) <= 1.21 for e in held)


# --- secrets --------------------------------------------------------------------------------


async def test_the_token_and_secret_appear_in_no_error_log_note_or_repr(
    fake_feishu: FakeFeishu, feishu_ctx: ChannelContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_feishu.add_bot("signed-bot-token-0123", secret=SECRET)
    ch = bot(feishu_ctx, fake_feishu, token="signed-bot-token-0123", secret=SECRET)
    seen = [repr(ch.settings), await ch.send(message(msg_id=1))]
    for fail in (
        lambda: fake_feishu.fail_next(19021, msg=f"sign match fail {SECRET}"),
        lambda: fake_feishu.fail_next(9499, msg="too many request /hook/signed-bot-token-0123"),
        lambda: fake_feishu.http_error_next(502),
    ):
        fail()
        clock_of(fake_feishu).advance(120)
        with pytest.raises(ChannelError) as caught:
            await ch.send(message(msg_id=2))
        seen += [caught.value.reason, repr(caught.value)]
    await fake_feishu.close()
    with pytest.raises(ChannelError) as caught:
        await ch.send(message(msg_id=3))
    seen.append(caught.value.reason)
    assert any("code 19021" in s for s in seen)
    assert_no_secrets("\n".join(seen + [caplog.text]), "signed-bot-token-0123", SECRET)
