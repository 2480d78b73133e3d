"""WeCom application messages (`type = "wechat"`) against the fake WeCom API on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import aiohttp
import pytest

from fake_wecom import (
    AGENT_ID,
    CORP_ID,
    SECRET,
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
from monitor_manager.channels.wechat import WechatChannel, WechatSettings
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Member


def channel(ctx: ChannelContext, fake: FakeWeCom, **settings: object) -> WechatChannel:
    values: dict[str, object] = {
        "corp_id": CORP_ID,
        "agent_id": AGENT_ID,
        "secret": SECRET,
        "api_url": fake.api_url,
        **settings,
    }
    return WechatChannel("wecom", WechatSettings(**values), ctx)  # type: ignore[arg-type]


# --- delivery -------------------------------------------------------------------------------


async def test_a_message_reaches_the_members_as_markdown(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    note = await channel(ctx, fake_wecom).send(message())
    assert note == ""
    [sent] = fake_wecom.accepted
    assert sent.msgtype == "markdown"
    assert sent.touser == ["zhangsan", "lisi"]  # Zhao Liu has no wechat id
    assert sent.agentid == AGENT_ID
    assert '<font color="warning">[FIRING:1] HighLatency prod</font>' in sent.content
    assert "[Source](http://prometheus.example.com:9090/graph?g0.expr=up&n=1)" in sent.content
    assert "alert-groups?key=g1)" in sent.content
    assert "Started 2027-01-15 07:50:00 UTC" in sent.content


async def test_a_resolved_group_shows_green_with_its_end_time(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    await channel(ctx, fake_wecom).send(message(group("g1", alert(1, "resolved"))))
    content = fake_wecom.accepted[0].content
    assert '<font color="info">[RESOLVED] HighLatency prod</font>' in content
    assert "resolved 2027-01-15 08:00:00 UTC" in content


async def test_text_msgtype_sends_plain_text(fake_wecom: FakeWeCom, ctx: ChannelContext) -> None:
    await channel(ctx, fake_wecom, msgtype="text").send(message())
    [sent] = fake_wecom.accepted
    assert sent.msgtype == "text"
    assert sent.content.startswith("[FIRING:1] HighLatency prod\n")
    assert "<font" not in sent.content


async def test_chinese_templates_are_used_when_the_language_is_zh(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ctx.renderer = Renderer("zh")
    await channel(ctx, fake_wecom).send(message())
    assert "开始时间" in fake_wecom.accepted[0].content
    assert "[查看来源](http://prometheus.example.com" in fake_wecom.accepted[0].content


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_digest_names_every_group_it_stands_for(
    fake_wecom: FakeWeCom, ctx: ChannelContext, language: str
) -> None:
    ctx.renderer = Renderer(language)
    groups = [group(f"g{i}", alert(i), alertname=f"Alert{i}") for i in range(6)]
    await channel(ctx, fake_wecom).send(message(*groups, kind="digest"))
    content = "\n".join(fake_wecom.contents())
    assert "[DIGEST]" in content
    for i in range(6):
        assert f"Alert{i} prod" in content
        assert f"alert-groups?key=g{i})" in content


async def test_the_api_url_gets_its_trailing_slash(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ch = channel(ctx, fake_wecom, api_url=fake_wecom.api_url.rstrip("/"))
    assert ch.settings.api_url == fake_wecom.api_url
    await ch.send(message())
    assert len(fake_wecom.accepted) == 1


# --- the access token -----------------------------------------------------------------------


async def test_the_token_is_fetched_once_and_shared_by_channels_of_one_app(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    await channel(ctx, fake_wecom).send(message(msg_id=1))
    await channel(ctx, fake_wecom, msgtype="text").send(message(msg_id=2))
    assert fake_wecom.gettoken_calls == 1
    assert len(fake_wecom.accepted) == 2


async def test_the_token_is_refreshed_a_margin_before_it_expires(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    ch = channel(ctx, fake_wecom)
    await ch.send(message(msg_id=1))
    clock.advance(7200 - 600)
    await ch.send(message(msg_id=2))
    assert fake_wecom.gettoken_calls == 1
    clock.advance(500)  # 100 s before expiry: inside the margin
    await ch.send(message(msg_id=3))
    assert fake_wecom.gettoken_calls == 2
    assert fake_wecom.rejected == []


@pytest.mark.parametrize("errcode", [42001, 40014, 40001])
async def test_a_rejected_token_is_replaced_and_the_send_retried_once(
    fake_wecom: FakeWeCom, ctx: ChannelContext, errcode: int
) -> None:
    ch = channel(ctx, fake_wecom)
    await ch.send(message(msg_id=1))
    fake_wecom.expire_all_tokens(errcode)
    await ch.send(message(msg_id=2))
    assert fake_wecom.gettoken_calls == 2
    assert fake_wecom.rejected_codes() == [errcode]
    assert len(fake_wecom.accepted) == 2


async def test_a_token_refused_twice_fails_instead_of_looping(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    fake_wecom.fail_next(42001, 3, on="send")
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom).send(message())
    assert not caught.value.permanent
    assert fake_wecom.gettoken_calls == 2
    assert fake_wecom.rejected_codes() == [42001, 42001]


async def test_concurrent_sends_fetch_one_token_and_one_refresh(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ch = channel(ctx, fake_wecom)
    await asyncio.gather(*(ch.send(message(msg_id=i)) for i in range(10)))
    assert fake_wecom.gettoken_calls == 1
    fake_wecom.expire_all_tokens()
    await asyncio.gather(*(ch.send(message(msg_id=i)) for i in range(10, 20)))
    assert fake_wecom.gettoken_calls == 2
    assert len(fake_wecom.accepted) == 20


@pytest.mark.parametrize(
    ("settings", "errcode"),
    [({"corp_id": "wwunknown"}, 40013), ({"secret": "wrong-secret"}, 40001)],
)
async def test_wrong_credentials_fail_for_good(
    fake_wecom: FakeWeCom, ctx: ChannelContext, settings: dict[str, object], errcode: int
) -> None:
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom, **settings).send(message())
    assert caught.value.permanent
    assert f"errcode {errcode}" in caught.value.reason
    assert fake_wecom.accepted == []


# --- errcodes -------------------------------------------------------------------------------


@pytest.mark.parametrize("errcode", [-1, 45009, 45033])
async def test_busy_and_frequency_errors_are_transient(
    fake_wecom: FakeWeCom, ctx: ChannelContext, errcode: int
) -> None:
    fake_wecom.fail_next(errcode)
    ch = channel(ctx, fake_wecom)
    with pytest.raises(ChannelError) as caught:
        await ch.send(message())
    assert not caught.value.permanent
    if errcode == 45009:
        assert getattr(caught.value, "retry_after", 0) >= 60
    await ch.send(message())  # the next attempt goes through
    assert len(fake_wecom.accepted) == 1


@pytest.mark.parametrize("errcode", [60020, 40058, 81013, 40003, 40056, 48002, 82001, 45002])
async def test_configuration_and_content_errors_are_permanent(
    fake_wecom: FakeWeCom, ctx: ChannelContext, errcode: int
) -> None:
    fake_wecom.fail_next(errcode)
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom).send(message())
    assert caught.value.permanent
    assert f"errcode {errcode}" in caught.value.reason


async def test_some_invalid_users_are_a_delivery_with_a_note(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    recipients = (
        Member("Zhang San", wechat="zhangsan"),
        Member("Ghost", wechat="Ghost"),
        Member("Gone", wechat="gone"),
    )
    note = await channel(ctx, fake_wecom).send(message(recipients=recipients))
    assert note == "invaliduser: ghost|gone"
    assert fake_wecom.accepted[0].touser == ["zhangsan"]


async def test_more_than_1000_members_are_sent_in_batches_of_1000(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ids = [f"user{i}" for i in range(1500)]
    fake_wecom.add_users(*ids)
    await channel(ctx, fake_wecom).send(message(recipients=tuple(Member(u, wechat=u) for u in ids)))
    assert [len(a.touser) for a in fake_wecom.accepted] == [1000, 500]
    assert [u for a in fake_wecom.accepted for u in a.touser] == ids


async def test_only_invalid_users_fail_for_good(fake_wecom: FakeWeCom, ctx: ChannelContext) -> None:
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom).send(message(recipients=(Member("G", wechat="ghost"),)))
    assert caught.value.permanent
    assert "errcode 81013" in caught.value.reason


async def test_members_without_wechat_ids_fail_without_calling_wecom(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom).send(message(recipients=(Member("M", mobile="1"),)))
    assert caught.value.permanent
    assert fake_wecom.gettoken_calls == 0


@pytest.mark.parametrize("status", [502, 503, 404])
async def test_http_errors_and_bodies_that_are_not_json_are_transient(
    fake_wecom: FakeWeCom, ctx: ChannelContext, status: int
) -> None:
    fake_wecom.http_error_next(status, text="<html>gateway</html>")
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom).send(message())
    assert not caught.value.permanent
    assert f"HTTP {status}" in caught.value.reason


async def test_a_slow_api_times_out_as_a_transient_failure(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    fake_wecom.slow_next(0.5, on="gettoken")
    with pytest.raises(ChannelError) as caught:
        await channel(ctx, fake_wecom, timeout=0.05).send(message())
    assert not caught.value.permanent
    assert "no answer within 0.05s" in caught.value.reason


async def test_an_unreachable_api_is_transient(fake_wecom: FakeWeCom, ctx: ChannelContext) -> None:
    ch = channel(ctx, fake_wecom)
    await fake_wecom.close()
    with pytest.raises(ChannelError) as caught:
        await ch.send(message())
    assert not caught.value.permanent


# --- long messages and markup ---------------------------------------------------------------


@pytest.mark.parametrize("msgtype", ["markdown", "text"])
async def test_a_long_message_arrives_whole_in_numbered_parts_within_2048_bytes(
    fake_wecom: FakeWeCom, ctx: ChannelContext, msgtype: str
) -> None:
    msg = long_message()
    note = await channel(ctx, fake_wecom, msgtype=msgtype).send(msg)
    parts = fake_wecom.contents()
    assert len(parts) > 1
    assert note == f"sent in {len(parts)} parts"
    assert all(utf8_len(p) <= 2048 for p in parts)
    assert fake_wecom.truncated == []
    markers = [re.search(r"\((\d+)/(\d+)\)", p.split("\n")[0]) for p in parts]
    assert [(int(m[1]), int(m[2])) for m in markers if m] == [
        (i, len(parts)) for i in range(1, len(parts) + 1)
    ]
    joined = "\n".join(parts)
    for i in range(10):  # every alert made it
        assert f"api-{i}" in joined
    if msgtype == "markdown":
        for p in parts:
            assert p.count("<font") == p.count("</font>")
            assert not re.search(r"\[[^\]\n]*$|\]\([^)\n]*$", p, re.M)  # no cut link


async def test_a_retry_after_a_failed_part_sends_only_the_missing_parts(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    ch = channel(ctx, fake_wecom)
    fake_wecom.fail_next(-1, after=1)
    with pytest.raises(ChannelError):
        await ch.send(long_message())
    await ch.send(long_message())
    parts = fake_wecom.contents()
    assert len(parts) == len(set(parts)) > 2
    assert parts[0].startswith('<font color="comment">(1/')


async def test_label_values_cannot_break_the_markdown(
    fake_wecom: FakeWeCom, ctx: ChannelContext
) -> None:
    evil = alert(
        1,
        labels={"job": '<font color="info">ok</font>'},
        annotations={"summary": "see [here](http://evil.example.com) `x` <@all>"},
    )
    await channel(ctx, fake_wecom).send(message(group("g1", evil)))
    content = fake_wecom.accepted[0].content
    assert "evil.example.com)" not in content.replace("(http://evil.example.com)", "")
    assert "[here]" not in content and "`x`" not in content and "<@all>" not in content
    assert '<font color="info">ok' not in content
    assert "see ［here］(http://evil.example.com) ˋxˋ ＜@all＞" in content


# --- rate limit -----------------------------------------------------------------------------


async def test_the_fake_drops_the_31st_message_a_minute_to_one_member(
    fake_wecom: FakeWeCom, session: aiohttp.ClientSession
) -> None:
    # The check the channel tests rely on: a client that ignores the limit loses messages.
    async with session.get(
        fake_wecom.api_url + "gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET}
    ) as resp:
        token = (await resp.json())["access_token"]
    for i in range(31):
        body = {
            "touser": "zhangsan",
            "agentid": AGENT_ID,
            "msgtype": "text",
            "text": {"content": f"m{i}"},
        }
        async with session.post(
            fake_wecom.api_url + "message/send",
            params={"access_token": token},
            data=json.dumps(body),
        ) as resp:
            assert (await resp.json())["errcode"] == 0
    assert [(user, a.content) for user, a in fake_wecom.dropped] == [("zhangsan", "m30")]


async def test_35_messages_to_one_member_in_a_minute_wait_instead_of_being_dropped(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    ch = channel(ctx, fake_wecom)
    start = clock()
    for i in range(35):
        await send_when_ready(ch, clock, message(msg_id=i))
    assert len(fake_wecom.accepted) == 35
    assert fake_wecom.dropped == []
    assert clock() - start >= 60


async def test_ready_at_counts_every_part_of_a_split_message(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    ch = channel(ctx, fake_wecom)
    for i in range(28):
        await ch.send(message(msg_id=i))
    assert ch.ready_at(message(msg_id=99)) <= clock()
    big = long_message(msg_id=100)  # three parts: only two slots are left this minute
    assert ch.ready_at(big) > clock()
    await send_when_ready(ch, clock, big)
    assert fake_wecom.dropped == []


async def test_send_holds_back_rather_than_exceed_the_member_limit(
    fake_wecom: FakeWeCom, ctx: ChannelContext, clock: ManualClock
) -> None:
    ch = channel(ctx, fake_wecom)
    for i in range(30):
        await ch.send(message(msg_id=i))
    with pytest.raises(ChannelError) as caught:
        await ch.send(message(msg_id=30))
    assert not caught.value.permanent
    assert 0 < getattr(caught.value, "retry_after", 0) <= 61
    assert len(fake_wecom.accepted) == 30
    assert fake_wecom.dropped == []


# --- secrets --------------------------------------------------------------------------------


async def test_secrets_appear_in_no_error_log_note_or_repr(
    fake_wecom: FakeWeCom, ctx: ChannelContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ch = channel(ctx, fake_wecom)
    seen = [repr(ch.settings), await ch.send(message(msg_id=1))]
    fake_wecom.expire_all_tokens(40014)
    seen.append(await ch.send(message(msg_id=2)))
    # Gateways that echo the request line, token or secret in the query, into the answer:
    failures = [
        lambda: fake_wecom.fail_next(60020, echo=True),
        lambda: fake_wecom.http_error_next(502, echo=True),
        lambda: fake_wecom.fail_next(40001, 2, echo=True),
        lambda: fake_wecom.fail_next(40001, on="gettoken", echo=True),
        lambda: fake_wecom.http_error_next(500, on="gettoken", echo=True),
    ]
    for i, fail in enumerate(failures):
        fake_wecom.expire_all_tokens()  # so that gettoken is called too
        fail()
        with pytest.raises(ChannelError) as caught:
            await ch.send(message(msg_id=10 + i))
        seen += [caught.value.reason, str(caught.value), repr(caught.value)]
    assert "from ip" not in " ".join(seen[3:])  # the noise is cut, the reasons remain
    assert len(fake_wecom.tokens) >= 2 and caplog.records
    assert_no_secrets("\n".join(seen + [caplog.text]), SECRET, *fake_wecom.tokens)
