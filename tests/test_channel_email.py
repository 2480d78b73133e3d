"""The email channel against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import pytest

from monitor_manager.channels import REGISTRY
from monitor_manager.channels.base import ChannelContext, ChannelError, PartlySent
from monitor_manager.channels.email import EmailChannel, EmailSettings
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import AlertView, GroupView, Member, Message, MessageKind
from smtp_server import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]

T0 = 1_700_000_000.0
MEMBERS = (
    Member("Zhang San", email="zhangsan@example.com", wechat="zhangsan"),
    Member("Li Si", email="lisi@example.com"),
    Member("Wang Wu", wechat="wangwu"),  # no email: not addressed
)


def alert(i: int, status: str = "firing", alertname: str = "HighLatency") -> AlertView:
    return AlertView(
        fingerprint=f"{alertname}-{i}",
        status=status,  # type: ignore[arg-type]
        labels={
            "alertname": alertname,
            "cluster": "prod",
            "instance": f"web-{i}",
            "severity": "critical",
        },
        annotations={"summary": f"{alertname} on web-{i}", "description": "p99 above 2s"},
        starts_at=T0 + i,
        ends_at=T0 + 600 if status == "resolved" else None,
        generator_url=f"http://prometheus:9090/graph?g0.expr=up{i}",
    )


def group(
    key: str = "sre/high-latency",
    firing: int = 2,
    resolved: int = 0,
    alertname: str = "HighLatency",
) -> GroupView:
    alerts = [alert(i, "firing", alertname) for i in range(firing)]
    alerts += [alert(firing + i, "resolved", alertname) for i in range(resolved)]
    return GroupView(
        key=key,
        contact_group="sre",
        group_labels={"alertname": alertname, "cluster": "prod"},
        alerts=tuple(alerts),
        url=f"http://mm.example.com:9095/groups/{key}",
    )


def message(
    *groups: GroupView,
    kind: MessageKind = "group",
    id: int = 1,
    recipients: tuple[Member, ...] = MEMBERS,
) -> Message:
    return Message(
        id=id,
        kind=kind,
        contact_group="sre",
        recipients=recipients,
        groups=groups or (group(),),
        created_at=T0 + 900,
        instance="mm-az1",
        external_url="http://mm.example.com:9095",
    )


def make_channel(
    server: SMTPTestServer | int, language: str = "en", max_alerts: int = 10, **settings: Any
) -> EmailChannel:
    """A channel for the server (or a bare port on 127.0.0.1), plain SMTP unless told."""
    port = server if isinstance(server, int) else server.port
    options: dict[str, Any] = {"tls": "none", "timeout": 5.0}
    options.update(settings)
    ctx = ChannelContext(
        session=None,
        renderer=Renderer(language, max_alerts=max_alerts),
        clock=time.time,
        stdout=sys.stdout,
    )
    config = EmailSettings(
        host="127.0.0.1", port=port, from_="Monitor Manager <alerts@example.com>", **options
    )
    return EmailChannel("mail", config, ctx)


@pytest.fixture
async def channel(smtp_server: SMTPTestServer) -> AsyncIterator[EmailChannel]:
    ch = make_channel(smtp_server)
    yield ch
    await ch.close()


@pytest.fixture
async def channels() -> AsyncIterator[list[EmailChannel]]:
    """Channels a test makes itself, closed afterwards."""
    made: list[EmailChannel] = []
    yield made
    for ch in made:
        await ch.close()


def parts(mail: EmailMessage) -> tuple[str, str]:
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return text.get_content(), html.get_content()


def test_the_channel_registers_as_email() -> None:
    assert REGISTRY["email"] is EmailChannel


def test_settings_report_every_bad_value_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        EmailSettings(
            host="smtp.example.com",
            from_="Monitor Manager",
            connections=0,
            timeout=0.0,
            ca_file="/nonexistent/ca.pem",
        )

    for key in ("from:", "connections:", "timeout:", "ca_file:"):
        assert key in str(caught.value)


def test_settings_keep_the_password_out_of_their_repr() -> None:
    settings = EmailSettings(
        host="smtp.example.com", from_="alerts@example.com", username="alerts", password="s3cret-pw"
    )

    assert "s3cret-pw" not in repr(settings)


async def test_accepted_mail_is_one_multipart_message_to_every_member_with_an_address(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    note = await channel.send(message())

    assert note == ""
    [mail] = await smtp_server.wait_for(1)
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    assert {a.addr_spec for a in mail["To"].addresses} == {
        "zhangsan@example.com",
        "lisi@example.com",
    }
    assert set(smtp_server.envelopes[0].rcpt_tos) == {"zhangsan@example.com", "lisi@example.com"}
    assert smtp_server.envelopes[0].mail_from == "alerts@example.com"
    assert mail["Subject"].startswith("[FIRING:2] HighLatency prod")
    assert mail["Date"] and mail["Message-ID"].endswith("@example.com>")
    assert mail["X-Monitor-Manager-Group"] == "sre/high-latency"
    assert mail["X-Monitor-Manager-Notification"] == "1"
    assert mail["Auto-Submitted"] == "auto-generated"
    text, html = parts(mail)
    assert "HighLatency on web-1" in text and "HighLatency on web-1" in html
    assert 'href="http://mm.example.com:9095/groups/sre/high-latency"' in html


async def test_mails_about_one_alert_group_thread_together_and_other_groups_do_not(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    await channel.send(message(group(firing=2), id=1))
    await channel.send(message(group(firing=0, resolved=2), id=2))
    await channel.send(message(group(key="sre/disk-full", alertname="DiskFull"), id=3))

    first, again, other = await smtp_server.wait_for(3)
    root = "<group-sre/high-latency@monitor-manager>"
    assert first["In-Reply-To"] == again["In-Reply-To"] == root
    assert first["References"] == again["References"] == first["In-Reply-To"]
    assert other["In-Reply-To"] != first["In-Reply-To"]
    assert other["References"] == other["In-Reply-To"]
    assert len({m["Message-ID"] for m in (first, again, other)}) == 3


async def test_a_group_key_that_is_no_valid_message_id_is_hashed_into_the_thread_root(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    key = 'sre/{alertname="High Latency", cluster="prod"}'
    await channel.send(message(group(key=key), id=1))
    await channel.send(message(group(key=key), id=2))

    first, again = await smtp_server.wait_for(2)
    root = first["In-Reply-To"]
    assert root == again["In-Reply-To"]
    assert root.startswith("<group-") and root.endswith("@monitor-manager>")
    assert " " not in root and '"' not in root
    assert first["X-Monitor-Manager-Group"] == key


@pytest.mark.parametrize(
    ("setup", "permanent", "expected"),
    [
        ({"mode": "451"}, False, "451 4.3.0 Temporary failure"),
        ({"mode": "550"}, True, "550 5.1.1 No such user"),
        (
            {
                "reject_rcpt": {
                    "zhangsan@example.com": "451 4.2.1 Mailbox busy",
                    "lisi@example.com": "550 5.1.1 No such user",
                }
            },
            False,
            "zhangsan@example.com 451 4.2.1 Mailbox busy; lisi@example.com 550",
        ),
        ({"data_reply": "451 4.3.0 try later"}, False, "DATA refused: 451 4.3.0 try later"),
        ({"data_reply": "554 5.7.1 Message rejected"}, True, "DATA refused: 554"),
    ],
)
async def test_refusals_are_transient_for_4xx_and_permanent_for_5xx(
    channel: EmailChannel,
    smtp_server: SMTPTestServer,
    setup: dict[str, Any],
    permanent: bool,
    expected: str,
) -> None:
    for name, value in setup.items():
        setattr(smtp_server, name, value)

    with pytest.raises(ChannelError) as caught:
        await channel.send(message())

    assert caught.value.permanent is permanent
    assert expected in caught.value.reason
    assert smtp_server.messages == []


async def test_after_a_refusal_the_same_connection_sends_the_next_mail(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    smtp_server.mode = "550"
    with pytest.raises(ChannelError):
        await channel.send(message())
    smtp_server.mode = "accept"

    await channel.send(message())

    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 1


async def test_partial_refusal_is_a_success_whose_note_names_the_refused_address(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reject_rcpt = {"lisi@example.com": "550 5.1.1 No such user"}

    note = await channel.send(message())

    assert note == "refused: lisi@example.com 550 5.1.1 No such user"
    assert smtp_server.envelopes[0].rcpt_tos == ("zhangsan@example.com",)


async def test_a_recipient_deferred_with_4xx_is_to_be_retried_while_the_others_have_it(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reject_rcpt = {"lisi@example.com": "451 4.7.1 Greylisted, try again later"}

    with pytest.raises(PartlySent) as caught:
        await channel.send(message())

    assert caught.value.retry == ("lisi@example.com",)
    assert caught.value.note == "sent to 1 of 2"
    assert "lisi@example.com 451 4.7.1 Greylisted" in caught.value.reason
    assert not caught.value.permanent
    assert smtp_server.envelopes[0].rcpt_tos == ("zhangsan@example.com",)


async def test_a_group_without_email_addresses_is_a_permanent_failure_without_connecting(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    with pytest.raises(ChannelError) as caught:
        await channel.send(message(recipients=(Member("Wang Wu", wechat="wangwu"),)))

    assert caught.value.permanent
    assert caught.value.reason == "contact group sre has no member with an email address"
    assert smtp_server.connections == 0


async def test_an_invalid_address_is_skipped_and_named_in_the_note(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    members = (Member("Zhang San", "zhangsan@example.com"), Member("Typo", "typo.example.com"))

    note = await channel.send(message(recipients=members))

    assert note == "skipped invalid addresses: typo.example.com"
    assert smtp_server.envelopes[0].rcpt_tos == ("zhangsan@example.com",)


async def test_a_stopped_server_is_a_transient_failure_and_sending_resumes_after_restart(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    await channel.send(message(id=1))  # leaves a warm connection in the pool
    smtp_server.stop()

    with pytest.raises(ChannelError) as caught:
        await channel.send(message(id=2))
    assert not caught.value.permanent
    assert "connection failed" in caught.value.reason

    smtp_server.start()
    assert await channel.send(message(id=3)) == ""
    assert [m["X-Monitor-Manager-Notification"] for m in smtp_server.messages] == ["1", "3"]


@pytest.mark.parametrize("goodbye", [None, "421 4.4.2 Idle timeout, closing connection"])
async def test_a_connection_the_server_closed_while_idle_is_replaced_within_the_same_send(
    channel: EmailChannel, smtp_server: SMTPTestServer, goodbye: str | None
) -> None:
    await channel.send(message(id=1))
    # The event loop does not run between the drop and the send, so the pool still believes
    # the connection is open: the send itself meets the closed connection.
    smtp_server.drop_connections(goodbye)

    assert await channel.send(message(id=2)) == ""

    assert [m["X-Monitor-Manager-Notification"] for m in smtp_server.messages] == ["1", "2"]
    assert smtp_server.connections == 2


async def test_sequential_sends_reuse_one_connection(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    for i in range(20):
        await channel.send(message(id=i))

    assert len(smtp_server.messages) == 20
    assert smtp_server.connections == 1


async def test_concurrent_sends_share_at_most_the_configured_connections(
    smtp_server: SMTPTestServer, channels: list[EmailChannel]
) -> None:
    channel = make_channel(smtp_server, connections=2)
    channels.append(channel)

    notes = await asyncio.gather(*(channel.send(message(id=i)) for i in range(20)))

    assert notes == [""] * 20
    assert len(smtp_server.messages) == 20
    assert smtp_server.connections == 2


async def test_close_quits_the_open_connections(smtp_server: SMTPTestServer) -> None:
    channel = make_channel(smtp_server)
    await channel.send(message())
    assert smtp_server.open_connections == 1

    await channel.close()

    deadline = time.monotonic() + 2
    while smtp_server.open_connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert smtp_server.open_connections == 0


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_tls_with_the_servers_ca_delivers_encrypted(
    smtp_server_factory: ServerFactory, channels: list[EmailChannel], tls: str
) -> None:
    server = smtp_server_factory(tls=tls)
    channel = make_channel(server, tls=tls, ca_file=server.ca_file)
    channels.append(channel)

    assert await channel.send(message()) == ""

    assert server.envelopes[0].tls


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_a_permanent_failure(
    smtp_server_factory: ServerFactory, channels: list[EmailChannel], tls: str
) -> None:
    server = smtp_server_factory(tls=tls)
    channel = make_channel(server, tls=tls)  # no ca_file: the self-signed cert is unknown
    channels.append(channel)

    with pytest.raises(ChannelError) as caught:
        await channel.send(message())

    assert caught.value.permanent
    assert "certificate verification failed" in caught.value.reason
    assert server.messages == []


async def test_validate_certs_false_accepts_a_self_signed_certificate(
    smtp_server_factory: ServerFactory, channels: list[EmailChannel]
) -> None:
    server = smtp_server_factory(tls="starttls")
    channel = make_channel(server, tls="starttls", validate_certs=False)
    channels.append(channel)

    assert await channel.send(message()) == ""


async def test_starttls_required_but_not_offered_is_a_permanent_failure(
    smtp_server: SMTPTestServer, channels: list[EmailChannel]
) -> None:
    channel = make_channel(smtp_server, tls="starttls")
    channels.append(channel)

    with pytest.raises(ChannelError) as caught:
        await channel.send(message())

    assert caught.value.permanent
    assert "STARTTLS" in caught.value.reason


async def test_login_with_the_right_password_delivers(
    smtp_server_factory: ServerFactory, channels: list[EmailChannel]
) -> None:
    server = smtp_server_factory(auth={"alerts": "s3cret-pw"})
    channel = make_channel(server, username="alerts", password="s3cret-pw")
    channels.append(channel)

    assert await channel.send(message()) == ""

    assert server.envelopes[0].login == "alerts"


async def test_a_wrong_password_is_permanent_and_never_appears_in_the_reason(
    smtp_server_factory: ServerFactory, channels: list[EmailChannel]
) -> None:
    server = smtp_server_factory(auth={"alerts": "s3cret-pw"})
    channel = make_channel(server, username="alerts", password="wr0ng-pw")
    channels.append(channel)

    with pytest.raises(ChannelError) as caught:
        await channel.send(message())

    assert caught.value.permanent
    assert "535" in caught.value.reason
    assert "wr0ng-pw" not in str(caught.value) and "wr0ng-pw" not in repr(caught.value.args)
    assert server.failed_logins >= 1


async def test_a_server_that_never_greets_is_a_transient_timeout(
    channels: list[EmailChannel],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # say nothing until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = make_channel(port, timeout=0.2)
    channels.append(channel)
    try:
        with pytest.raises(ChannelError) as caught:
            await channel.send(message())
    finally:
        server.close()
        await server.wait_closed()

    assert not caught.value.permanent
    assert "timed out" in caught.value.reason.lower()


async def test_the_chinese_templates_render_into_valid_utf8_mail(
    smtp_server: SMTPTestServer, channels: list[EmailChannel]
) -> None:
    channel = make_channel(smtp_server, language="zh")
    channels.append(channel)
    members = (Member("张三", email="zhangsan@example.com"),)
    chinese = AlertView(
        fingerprint="cn",
        status="firing",
        labels={"alertname": "磁盘已满", "cluster": "生产"},
        annotations={"summary": "数据盘使用率超过 95%"},
        starts_at=T0,
    )
    g = GroupView(
        key="sre/disk",
        contact_group="sre",
        group_labels={"alertname": "磁盘已满", "cluster": "生产"},
        alerts=(chinese,),
    )

    await channel.send(message(g, recipients=members))

    [mail] = await smtp_server.wait_for(1)
    assert mail["Subject"] == "[FIRING:1] 磁盘已满 生产"
    assert mail["To"].addresses[0].display_name == "张三"
    text, html = parts(mail)
    assert "摘要：数据盘使用率超过 95%" in text
    assert "数据盘使用率超过 95%" in html and "告警中" in html
    for part in mail.iter_parts():
        assert part.get_content_charset() == "utf-8"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        payload.decode("utf-8")  # strict: raises on broken bytes


async def test_a_big_group_lists_max_alerts_in_full_and_counts_the_rest(
    smtp_server: SMTPTestServer, channels: list[EmailChannel]
) -> None:
    channel = make_channel(smtp_server, max_alerts=10)
    channels.append(channel)

    await channel.send(message(group(firing=50)))

    [mail] = await smtp_server.wait_for(1)
    assert mail["Subject"].startswith("[FIRING:50]")
    text, html = parts(mail)
    listed = [i for i in range(50) if f"HighLatency on web-{i}<" in html]
    assert listed == list(range(10))
    assert "and 40 more firing alerts" in html
    assert "... and 40 more firing alerts" in text


async def test_a_resolved_group_is_green_and_shows_when_each_alert_ended(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    await channel.send(message(group(firing=0, resolved=1)))

    [mail] = await smtp_server.wait_for(1)
    assert mail["Subject"].startswith("[RESOLVED] HighLatency prod")
    _, html = parts(mail)
    assert "#1f845a" in html and "#c9372c" not in html
    assert "resolved 2023-11-14 22:23:20 UTC (lasted 10m)" in html


async def test_a_digest_renders_every_group_it_stands_for(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    groups = (
        group("sre/a", alertname="HighLatency"),
        group("sre/b", alertname="DiskFull"),
        group("sre/c", firing=0, resolved=1, alertname="NodeDown"),
    )

    await channel.send(message(*groups, kind="digest"))

    [mail] = await smtp_server.wait_for(1)
    assert mail["Subject"].startswith("[DIGEST] 3 alert groups for sre")
    assert mail["X-Monitor-Manager-Group"] == "digest-sre"
    text, html = parts(mail)
    for title in (
        "[FIRING:2] HighLatency prod",
        "[FIRING:2] DiskFull prod",
        "[RESOLVED] NodeDown prod",
    ):
        assert title in html and title in text


async def test_a_test_message_is_delivered(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    await channel.send(
        Message(
            id=9, kind="test", contact_group="sre", recipients=MEMBERS, groups=(), created_at=T0
        )
    )

    [mail] = await smtp_server.wait_for(1)
    assert mail["Subject"].startswith("[TEST]")
    assert "the email channel works" in parts(mail)[1]


async def test_label_values_are_escaped_in_the_html_part(
    channel: EmailChannel, smtp_server: SMTPTestServer
) -> None:
    evil = AlertView(
        fingerprint="x",
        status="firing",
        labels={"alertname": "<script>x</script>"},
        annotations={"summary": "<img src=x onerror=alert(1)>"},
        starts_at=T0,
        generator_url="javascript:alert(1)",
    )
    g = GroupView(key="sre/x", contact_group="sre", group_labels={}, alerts=(evil,))

    await channel.send(message(g))

    [mail] = await smtp_server.wait_for(1)
    _, html = parts(mail)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert 'href="javascript:' not in html
