"""Acknowledging by replying to the WeCom app: `/callback/wecom/{channel}` on the real service,
driven by tests/wecom_callback_client.py (WeCom's side, written independently of the service's
crypto), and the config keys that turn it on."""

from __future__ import annotations

import asyncio
import base64
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from builders import T0, incoming, make_config
from monitor_manager import keys
from monitor_manager.act.links import short_code
from monitor_manager.act.wecom_crypto import MAX_BODY_BYTES
from monitor_manager.act.wecom_reply import RecentMessages, parse_command
from monitor_manager.app import create_app
from monitor_manager.channels.console import ConsoleSettings
from monitor_manager.channels.wechat import WechatSettings
from monitor_manager.clock import ManualClock
from monitor_manager.config import (
    ChannelConfig,
    ConfigError,
    ContactGroupConfig,
    MemberConfig,
    parse_config,
)
from monitor_manager.config.schema import EscalationStep
from test_wecom_crypto import AES_KEY as DOC_AES_KEY
from test_wecom_crypto import CORP_ID as DOC_CORP_ID
from test_wecom_crypto import ECHOSTR as DOC_ECHOSTR
from test_wecom_crypto import POST_BODY as DOC_POST_BODY
from test_wecom_crypto import POST_SIGNATURE as DOC_POST_SIGNATURE
from test_wecom_crypto import TOKEN as DOC_TOKEN
from wecom_callback_client import CallbackRequest, WecomCallbackClient

TOKEN = "mmCallbackToken42"
AES_KEY = base64.b64encode(bytes(range(1, 33))).decode().rstrip("=")
CORP_ID = "wwcallback0123456789"
AGENT_ID = 1000002
NOWHERE = "http://127.0.0.1:9/cgi-bin/"  # the send API: never reached (no outbox worker)


def wecom_settings(**extra: Any) -> WechatSettings:
    values: dict[str, Any] = {
        "corp_id": CORP_ID,
        "agent_id": AGENT_ID,
        "secret": "corp-secret",
        "api_url": NOWHERE,
        "callback_token": TOKEN,
        "callback_aes_key": AES_KEY,
        **extra,
    }
    return WechatSettings(**values)


def channels() -> tuple[ChannelConfig, ...]:
    return (
        ChannelConfig("wecom", "wechat", wecom_settings()),
        # The same corp's app without callback settings: it takes no replies.
        ChannelConfig(
            "wecom-plain",
            "wechat",
            WechatSettings(CORP_ID, 1000003, "other-secret", api_url=NOWHERE),
        ),
        ChannelConfig("console", "console", ConsoleSettings()),
    )


def contact_groups(
    escalation: tuple[EscalationStep, ...] = (),
) -> tuple[ContactGroupConfig, ...]:
    return (
        # The id in the config differs in case from what WeCom sends: ids are case-insensitive.
        ContactGroupConfig(
            "sre",
            ("wecom", "console"),
            (MemberConfig("Zhang San", wechat="ZhangSan"), MemberConfig("Li Si", "li@example.com")),
            escalation=escalation,
        ),
        ContactGroupConfig("dba", ("wecom",), (MemberConfig("Wang Wu", wechat="wangwu"),)),
        # Reached only through the console: this app does not page Zhao Liu.
        ContactGroupConfig("ops", ("console",), (MemberConfig("Zhao Liu", wechat="zhaoliu"),)),
    )


class Svc:
    def __init__(self, client: Any, clock: ManualClock) -> None:
        self.client = client
        self.clock = clock
        self.app = client.app
        self.wecom = WecomCallbackClient(TOKEN, AES_KEY, CORP_ID, str(AGENT_ID))

    def message(self, user: str, content: str, **kwargs: Any) -> CallbackRequest:
        kwargs.setdefault("timestamp", str(int(self.clock.now)))
        return self.wecom.message(user, content, **kwargs)

    async def send(
        self, request: CallbackRequest, channel: str = "wecom", method: str = "POST"
    ) -> tuple[int, bytes]:
        path = f"/callback/wecom/{channel}?{request.query_string()}"
        response = await self.client.request(method, path, data=request.body or None)
        return response.status, await response.read()

    async def reply(self, user: str, content: str, **kwargs: Any) -> str:
        """Send a text message as `user`; the decrypted reply's content."""
        return await self.answer(self.message(user, content, **kwargs), to=user)

    async def answer(self, request: CallbackRequest, to: str) -> str:
        status, body = await self.send(request)
        assert status == 200, body
        fields = self.wecom.read_reply(body)
        assert fields["ToUserName"] == to and fields["FromUserName"] == CORP_ID
        assert fields["MsgType"] == "text"
        return fields["Content"]

    async def firing_group(self, name: str = "Disk", cluster: str = "prod") -> str:
        pipeline = self.app[keys.PIPELINE]
        before = set(pipeline.convergence.groups)
        await pipeline.ingest([incoming(name, cluster=cluster)])
        self.clock.advance(31)
        await pipeline.tick()
        (key,) = set(pipeline.convergence.groups) - before
        return key

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.app[keys.STORE].query(sql)]

    async def nothing_changed(self) -> None:
        assert await self.rows("SELECT * FROM acks") == []
        assert await self.rows("SELECT * FROM audit") == []


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Any:
    async def run(now: float = T0, **sections: Any) -> Svc:
        sections.setdefault("channels", channels())
        sections.setdefault("contact_groups", contact_groups())
        sections.setdefault("routing", {"default_groups": ("sre",)})
        sections["server"] = {"instance": "mm-a", **sections.get("server", {})}
        clock = ManualClock(now)
        app = create_app(make_config(tmp_path, **sections), clock=clock, scheduler=False)
        return Svc(await aiohttp_client(app), clock)

    return run


# -- URL verification ---------------------------------------------------------------------------
async def test_url_verification_answers_the_decrypted_echostr_as_is(start: Any) -> None:
    svc = await start()
    request = svc.wecom.url_verification(timestamp=str(int(svc.clock.now)))
    response = await svc.client.get(f"/callback/wecom/wecom?{request.query_string()}")
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.read() == request.echo.encode()  # no quotes, no newline


async def test_url_verification_with_a_bad_signature_is_refused(start: Any) -> None:
    svc = await start()
    good = svc.wecom.url_verification(timestamp=str(int(svc.clock.now)))
    forged = CallbackRequest({**good.params, "msg_signature": "0" * 40})
    assert await svc.send(forged, method="GET") == (403, b"bad signature")
    other_token = WecomCallbackClient("another-token", AES_KEY, CORP_ID)
    status, _ = await svc.send(
        other_token.url_verification(timestamp=str(int(svc.clock.now))), method="GET"
    )
    assert status == 403
    missing = CallbackRequest({k: v for k, v in good.params.items() if k != "echostr"})
    assert await svc.send(missing, method="GET") == (400, b"missing query parameter echostr")


async def test_documented_example_through_the_endpoint(start: Any) -> None:
    """WeCom's own example (document 90930 and the WXBizMsgCrypt samples), on a clock set to
    its day: the URL verification, then its POSTed "hello", answered with how to acknowledge."""
    doc_app = WechatSettings(
        DOC_CORP_ID,
        218,
        "secret",
        api_url=NOWHERE,
        callback_token=DOC_TOKEN,
        callback_aes_key=DOC_AES_KEY,
    )
    svc = await start(now=1409659700.0, channels=(ChannelConfig("wecom", "wechat", doc_app),))
    verification = CallbackRequest(
        {
            "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
            "timestamp": "1409659589",
            "nonce": "263014780",
            "echostr": DOC_ECHOSTR,
        }
    )
    assert await svc.send(verification, method="GET") == (200, b"1616140317555161061")

    message = CallbackRequest(
        {"msg_signature": DOC_POST_SIGNATURE, "timestamp": "1409659813", "nonce": "1372623149"},
        DOC_POST_BODY,
    )
    status, body = await svc.send(message)
    assert status == 200
    fields = WecomCallbackClient(DOC_TOKEN, DOC_AES_KEY, DOC_CORP_ID).read_reply(body)
    assert fields["ToUserName"] == "mycreate"
    assert fields["Content"].startswith("To acknowledge an alert, reply: ack CODE")
    await svc.nothing_changed()


# -- acknowledging --------------------------------------------------------------------------------
async def test_a_member_acknowledges_with_ack_code(start: Any) -> None:
    svc = await start()
    key = await svc.firing_group()
    code = short_code(key)

    text = await svc.reply("zhangsan", f"ack {code.lower()}  on it, disk cleanup")

    assert text.startswith(f"Acknowledged {code} as Zhang San: Disk (cluster=prod), 1 firing")
    assert "contact group sre" in text
    acks = await svc.rows("SELECT group_key, by, via, comment FROM acks")
    assert acks == [
        {"group_key": key, "by": "Zhang San", "via": "wecom", "comment": "on it, disk cleanup"}
    ]
    audit = await svc.rows("SELECT who, via, action, target FROM audit")
    assert audit == [{"who": "Zhang San", "via": "wecom", "action": "ack", "target": key}]
    group = await (await svc.client.get(f"/api/v1/alert-groups/{key}")).json()
    assert (group["ack"]["by"], group["ack"]["via"]) == ("Zhang San", "wecom")


async def test_the_chinese_form_with_full_width_spaces_answers_in_chinese(start: Any) -> None:
    svc = await start(templates={"language": "zh"})
    key = await svc.firing_group()
    code = short_code(key)

    text = await svc.reply("ZHANGSAN", f"\u3000确认\u3000{code}\u3000已处理")

    assert text.startswith(f"已确认 {code}（Zhang San）：Disk (cluster=prod)，1 条告警中")
    assert "联系组 sre" in text
    assert await svc.rows("SELECT by, via, comment FROM acks") == [
        {"by": "Zhang San", "via": "wecom", "comment": "已处理"}
    ]


async def test_a_second_ack_says_who_acknowledged_first(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    await svc.reply("zhangsan", f"ack {code}")
    svc.clock.advance(60)

    text = await svc.reply("zhangsan", f"ACK {code}")

    assert text.startswith(f"{code} (Disk (cluster=prod)) was already acknowledged by Zhang San")
    assert len(await svc.rows("SELECT * FROM audit")) == 1


async def test_a_retried_message_acts_once_and_gets_the_same_answer(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    request = svc.message("zhangsan", f"ack {code}", msg_id="6912345678901234567")

    first = await svc.answer(request, to="zhangsan")
    svc.clock.advance(5)  # WeCom retries after 5 s without an answer; or someone replays it
    again = await svc.answer(request, to="zhangsan")

    assert first == again and first.startswith(f"Acknowledged {code}")
    assert len(await svc.rows("SELECT * FROM audit")) == 1


async def test_a_retry_while_the_first_is_still_acting_waits_for_its_answer(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    actions = svc.app[keys.CORE].actions
    real = actions.acknowledge
    release = asyncio.Event()
    calls = 0

    async def slow(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        return await real(*args, **kwargs)

    actions.acknowledge = slow
    request = svc.message("zhangsan", f"ack {code}")
    first = asyncio.create_task(svc.answer(request, to="zhangsan"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(svc.answer(request, to="zhangsan"))
    await asyncio.sleep(0.05)
    release.set()

    assert await first == await second
    assert calls == 1 and len(await svc.rows("SELECT * FROM acks")) == 1


async def test_escalated_to_members_may_acknowledge(start: Any) -> None:
    step = EscalationStep(after=60.0, groups=("dba",))
    svc = await start(contact_groups=contact_groups(escalation=(step,)))
    code = short_code(await svc.firing_group())
    assert "not one of its members" in await svc.reply("wangwu", f"ack {code}")

    svc.clock.advance(61)
    await svc.app[keys.PIPELINE].tick()  # the group escalates to dba

    assert (await svc.reply("wangwu", f"ack {code}")).startswith(f"Acknowledged {code} as Wang Wu")


# -- refusals that answer and change nothing ----------------------------------------------------
@pytest.mark.parametrize(
    ("user", "content", "expected"),
    [
        ("zhangsan", "ack ABCDE", "No open alert group has the code ABCDE"),
        ("wangwu", "ack {code}", "belongs to contact group sre, and you are not one of its"),
        ("zhaoliu", "ack {code}", "Your WeCom account (zhaoliu) is not a member"),
        ("ghost", "ack {code}", "Your WeCom account (ghost) is not a member"),
        ("zhangsan", "hello", "To acknowledge an alert, reply: ack CODE [comment]"),
        ("zhangsan", "ack", "That is not an alert code"),
        ("zhangsan", "确认收到", "That is not an alert code"),
    ],
)
async def test_replies_that_change_nothing(
    start: Any, user: str, content: str, expected: str
) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())

    text = await svc.reply(user, content.format(code=code))

    assert expected in text, text
    await svc.nothing_changed()


async def test_a_resolved_group_is_not_acknowledged(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    pipeline = svc.app[keys.PIPELINE]
    await pipeline.ingest([incoming("Disk", "resolved", ends=T0 + 40, cluster="prod")])

    assert "has resolved" in await svc.reply("zhangsan", f"ack {code}")
    await pipeline.tick()
    svc.clock.advance(400)
    await pipeline.tick()  # closed: its code names nothing any more
    assert "No open alert group has the code" in await svc.reply("zhangsan", f"ack {code}")
    await svc.nothing_changed()


async def test_other_message_types_and_events(start: Any) -> None:
    svc = await start()

    def inner(msg_type: str, extra: str) -> str:
        return (
            f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            "<FromUserName><![CDATA[zhangsan]]></FromUserName>"
            f"<CreateTime>{int(svc.clock.now)}</CreateTime>"
            f"<MsgType><![CDATA[{msg_type}]]></MsgType>{extra}"
            f"<AgentID>{AGENT_ID}</AgentID></xml>"
        )

    image = inner("image", "<PicUrl><![CDATA[http://127.0.0.1/x.png]]></PicUrl><MsgId>7</MsgId>")
    assert (await svc.answer(signed(svc, image), to="zhangsan")).startswith(
        "Only text replies are understood"
    )
    entered = inner("event", "<Event><![CDATA[enter_agent]]></Event>")
    assert (await svc.answer(signed(svc, entered), to="zhangsan")).startswith("To acknowledge")
    # Reported every few seconds where enabled: answering each would flood the member.
    location = inner("event", "<Event><![CDATA[LOCATION]]></Event><Latitude>1</Latitude>")
    assert await svc.send(signed(svc, location)) == (200, b"")
    await svc.nothing_changed()


def signed(svc: Svc, inner: str) -> CallbackRequest:
    """An arbitrary inner message, encrypted and signed as WeCom would."""
    timestamp, nonce = str(int(svc.clock.now)), "424242"
    encrypted = svc.wecom.encrypt(inner)
    body = f"<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>{encrypted}</Encrypt></xml>"
    params = {
        "msg_signature": svc.wecom.sign(timestamp, nonce, encrypted),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    return CallbackRequest(params, body.encode())


async def test_alert_text_cannot_link_or_mention_in_the_answer(start: Any) -> None:
    svc = await start()
    key = await svc.firing_group("Disk", cluster='<a href="http://evil">x</a>\n<@all>')
    text = await svc.reply("zhangsan", f"ack {short_code(key)}")
    assert text.startswith("Acknowledged") and "<" not in text and ">" not in text
    assert "\n" not in text


async def test_a_store_that_cannot_commit_gets_a_try_again_and_the_retry_acts(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    store = svc.app[keys.STORE]
    await store.run(
        lambda conn: conn.execute(
            "CREATE TEMP TRIGGER full BEFORE INSERT ON audit "
            "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
    )
    request = svc.message("zhangsan", f"ack {code}")

    assert "could not be saved just now" in await svc.answer(request, to="zhangsan")
    await svc.nothing_changed()

    await store.run(lambda conn: conn.execute("DROP TRIGGER temp.full"))
    assert (await svc.answer(request, to="zhangsan")).startswith(f"Acknowledged {code}")
    assert len(await svc.rows("SELECT * FROM acks")) == 1


# -- refusals: 4xx, nothing changes ---------------------------------------------------------------
async def test_a_message_for_another_corp_id_is_refused(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    other_corp = WecomCallbackClient(TOKEN, AES_KEY, "wwsomeoneelse000000", str(AGENT_ID))
    request = other_corp.message("zhangsan", f"ack {code}", timestamp=str(int(svc.clock.now)))
    assert await svc.send(request) == (403, b"wrong receive id")
    await svc.nothing_changed()


async def test_a_message_for_another_agent_is_refused(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    other_app = WecomCallbackClient(TOKEN, AES_KEY, CORP_ID, "1000099")
    request = other_app.message("zhangsan", f"ack {code}", timestamp=str(int(svc.clock.now)))
    assert await svc.send(request) == (403, b"wrong agent")
    await svc.nothing_changed()


async def test_tampered_ciphertext_is_refused(start: Any) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    request = svc.message("zhangsan", f"ack {code}")
    root = ET.fromstring(request.body)
    data = bytearray(base64.b64decode(root.findtext("Encrypt") or ""))
    data[-1] ^= 0x01  # the padding
    tampered = base64.b64encode(bytes(data)).decode()
    body = f"<xml><Encrypt>{tampered}</Encrypt></xml>".encode()

    # As sent: the signature no longer matches.
    assert await svc.send(CallbackRequest(request.params, body)) == (403, b"bad signature")
    # Signed again (by someone holding the token but not the key): it does not decrypt.
    timestamp, nonce = request.params["timestamp"], request.params["nonce"]
    resigned = {**request.params, "msg_signature": svc.wecom.sign(timestamp, nonce, tampered)}
    status, _ = await svc.send(CallbackRequest(resigned, body))
    assert status == 400
    assert await svc.send(CallbackRequest(request.params, b"<xml><Encrypt>")) == (
        400,
        b"malformed XML",
    )
    await svc.nothing_changed()


@pytest.mark.parametrize("offset", [-301, 301])
async def test_stale_or_future_timestamps_are_refused(start: Any, offset: int) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    request = svc.message("zhangsan", f"ack {code}", timestamp=str(int(svc.clock.now) + offset))
    assert await svc.send(request) == (403, b"stale timestamp")
    verification = svc.wecom.url_verification(timestamp=str(int(svc.clock.now) + offset))
    assert await svc.send(verification, method="GET") == (403, b"stale timestamp")
    await svc.nothing_changed()


@pytest.mark.parametrize("channel", ["wecom-plain", "console", "nosuch", "%E4%BC%81"])
async def test_channels_that_take_no_replies_are_not_found(start: Any, channel: str) -> None:
    svc = await start()
    code = short_code(await svc.firing_group())
    assert (await svc.send(svc.message("zhangsan", f"ack {code}"), channel=channel))[0] == 404
    verification = svc.wecom.url_verification(timestamp=str(int(svc.clock.now)))
    assert (await svc.send(verification, channel=channel, method="GET"))[0] == 404
    await svc.nothing_changed()


async def test_an_oversize_body_is_refused(start: Any) -> None:
    svc = await start()
    request = svc.message("zhangsan", "ack ABCDE")
    body = request.body.replace(b"</xml>", b" " * MAX_BODY_BYTES + b"</xml>")
    status, text = await svc.send(CallbackRequest(request.params, body))
    assert status == 413, text
    assert len(svc.app[keys.WECOM_CALLBACKS].recent) == 0
    await svc.nothing_changed()


async def test_rejected_requests_leave_no_trace_in_memory(start: Any) -> None:
    svc = await start()
    for i in range(20):
        forged = svc.message("zhangsan", "ack ABCDE", msg_id=str(i))
        forged = CallbackRequest({**forged.params, "msg_signature": "f" * 40}, forged.body)
        assert (await svc.send(forged))[0] == 403
    assert len(svc.app[keys.WECOM_CALLBACKS].recent) == 0


# -- pieces ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "code", "comment"),
    [
        ("ack 7KQ2M", "7KQ2M", ""),
        ("ACK 7kq2m done", "7KQ2M", "done"),
        ("Ack, 7KQ2M: on it", "7KQ2M", "on it"),
        ("ack7KQ2M", "7KQ2M", ""),
        ("确认 7KQ2M 已处理", "7KQ2M", "已处理"),
        ("确认：7KQ2M已处理", "7KQ2M", "已处理"),
        ("\u3000确认\u30007KQ2M\u3000好的", "7KQ2M", "好的"),
        ("ａｃｋ\u3000７ｋｑ２ｍ", "7KQ2M", ""),  # full-width, as phones type it
        ("ack\n7KQ2M\nline two", "7KQ2M", "line two"),
        ("ack", "", ""),
        ("ack 7KQ2", "", ""),
        ("ack 7KQ2MX", "", ""),
        ("确认收到", "", ""),
    ],
)
def test_parse_command(text: str, code: str, comment: str) -> None:
    command = parse_command(text)
    assert command is not None
    assert (command.code, command.comment) == (code, comment)


@pytest.mark.parametrize("text", ["hello", "acknowledged", "acme 7KQ2M", "", "请确认 7KQ2M"])
def test_parse_command_ignores_other_text(text: str) -> None:
    assert parse_command(text) is None


async def test_recent_messages_are_bounded_in_number_and_time() -> None:
    clock = ManualClock(T0)
    recent = RecentMessages(clock, limit=3, keep=600.0)
    first = recent.start("a")
    for key in "bcd":
        recent.start(key)
    assert len(recent) == 3 and recent.get("a") is None
    assert first.done() and first.result() is None  # dropped: nobody is left waiting
    clock.advance(601)
    assert recent.get("d") is None and len(recent) == 0


# -- config ---------------------------------------------------------------------------------------
def wecom_toml(extra: str) -> dict[str, Any]:
    return tomllib.loads(
        f"""
        [channels.wecom]
        type = "wechat"
        corp_id = "{CORP_ID}"
        agent_id = {AGENT_ID}
        secret = "s"
        {extra}

        [[contact_groups]]
        name = "default"
        channels = ["wecom"]
        members = [{{ name = "Zhang San", wechat = "zhangsan" }}]
        """.replace("\n        ", "\n")
    )


def test_config_takes_both_callback_keys() -> None:
    cfg = parse_config(
        wecom_toml('callback_token = "${T}"\ncallback_aes_key = "${K}"'),
        env={"T": TOKEN, "K": AES_KEY},
    )
    settings = cfg.channel("wecom").settings
    assert (settings.callback_token, settings.callback_aes_key) == (TOKEN, AES_KEY)
    assert settings.takes_replies
    assert TOKEN not in repr(settings) and AES_KEY not in repr(settings)
    assert not parse_config(wecom_toml("")).channel("wecom").settings.takes_replies


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ('callback_token = "tok3n"', "callback_aes_key"),
        (f'callback_aes_key = "{AES_KEY}"', "callback_token"),
        (f'callback_token = "tok3n"\ncallback_aes_key = "{AES_KEY[:-1]}"', "callback_aes_key"),
        (f'callback_token = "tok3n"\ncallback_aes_key = "{AES_KEY[:-1]}!"', "callback_aes_key"),
        ('callback_token = "tok3n"\ncallback_aes_key = 43', "callback_aes_key"),
    ],
)
def test_config_problems_name_the_key_and_never_the_secret(extra: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(wecom_toml(extra))
    for problem in caught.value.problems:
        assert problem.startswith("channels.wecom") and named in problem, problem
        for secret in ("tok3n", AES_KEY[:-1]):
            assert secret not in problem
