"""The outbound webhook (`type = "webhook"`) against a real aiohttp receiver on loopback that
verifies the signature the way the README tells receivers to."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fake_wecom import T0, alert, assert_no_secrets, group, message
from monitor_manager.channels import REGISTRY
from monitor_manager.channels.base import ChannelContext, ChannelError
from monitor_manager.channels.webhook import (
    MAX_BODY_BYTES,
    WebhookChannel,
    WebhookSettings,
    parse_retry_after,
)
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Member

SECRET = "whsec-3f9a1c7e5b2d4f6a8c0e"
TOLERANCE = 300  # seconds a receiver accepts between the timestamp and its own clock


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    verified: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A receiver as the README describes one: verifies, then answers what the test queued."""

    clock: ManualClock
    secret: str = SECRET
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    seen_signatures: set[str] = field(default_factory=set)
    url: str = ""
    delay: float = 0.0

    def verify(self, request: web.Request, body: bytes) -> bool:
        timestamp = request.headers.get("X-Monitor-Manager-Timestamp", "")
        signature = request.headers.get("X-Monitor-Manager-Signature", "")
        if not timestamp.isdigit() or abs(int(timestamp) - self.clock()) > TOLERANCE:
            return False
        expected = hmac.new(
            self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(signature, f"sha256={expected}"):
            return False
        if signature in self.seen_signatures:  # a replay inside the window
            return False
        self.seen_signatures.add(signature)
        return True

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified = self.verify(request, body)
        self.received.append(Received(body, dict(request.headers), verified))
        if self.delay:
            await asyncio.sleep(self.delay)
        if not verified:
            return web.json_response({"error": "bad signature"}, status=401)
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        return web.Response(status=status, headers=headers, text="" if status < 300 else "no")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(ManualClock())
    app = web.Application()
    app.router.add_post("/hooks/mm", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/hooks/mm?token=query-token-77"
    yield rec
    await runner.cleanup()


@pytest.fixture
def hook_ctx(session: aiohttp.ClientSession, receiver: Receiver) -> ChannelContext:
    return ChannelContext(
        session=session, renderer=Renderer("en"), clock=receiver.clock, stdout=io.StringIO()
    )


def hook(ctx: ChannelContext, receiver: Receiver, **settings: Any) -> WebhookChannel:
    values: dict[str, Any] = {"url": receiver.url, "secret": SECRET, **settings}
    return WebhookChannel("tickets", WebhookSettings(**values), ctx)


# --- the document ---------------------------------------------------------------------------


def test_the_kind_is_registered() -> None:
    assert REGISTRY["webhook"] is WebhookChannel


async def test_a_notification_arrives_signed_as_a_versioned_document(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    msg = message(
        group("g1", alert(1), alert(2, "resolved")),
        recipients=(Member("Zhang San", email="zs@example.com", feishu="ou_1"),),
    )
    assert await hook(hook_ctx, receiver).send(msg) == ""
    [got] = receiver.received
    assert got.verified
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"
    assert got.headers["User-Agent"].startswith("monitor-manager/")
    doc = got.json
    assert doc["version"] == "1" and doc["id"] == 1 and doc["kind"] == "group"
    assert doc["status"] == "firing" and doc["title"] == "[FIRING:1] HighLatency prod"
    assert doc["contactGroup"] == "sre" and doc["instance"] == "mm-az1"
    assert doc["recipients"] == [{"name": "Zhang San", "email": "zs@example.com", "feishu": "ou_1"}]
    assert doc["createdAt"] == "2027-01-15T08:00:00.000Z"
    assert doc["counts"] == {"alertGroups": 1, "firing": 1, "resolved": 1, "stale": 0}
    assert doc["links"] == {"monitorManager": "http://mm-az1.example.com:9095"}
    assert doc["truncated"] is False and doc["alertGroupsOmitted"] == 0
    assert "HighLatency" in doc["text"]
    [g] = doc["alertGroups"]
    assert g["key"] == "g1" and g["status"] == "firing" and g["title"] == "HighLatency prod"
    assert g["groupLabels"] == {"alertname": "HighLatency", "cluster": "prod"}
    assert g["commonLabels"]["severity"] == "critical" and g["alertsOmitted"] == 0
    assert g["url"].endswith("alert-groups?key=g1")
    assert g["counts"] == {"firing": 1, "resolved": 1, "stale": 0}
    first, second = g["alerts"]
    assert first == {
        "fingerprint": "fp1",
        "status": "firing",
        "labels": {
            "alertname": "HighLatency",
            "cluster": "prod",
            "severity": "critical",
            "instance": "api-1",
        },
        "annotations": {"summary": "p99 latency above 2s on api-1"},
        "startsAt": "2027-01-15T07:50:00.000Z",
        "endsAt": None,
        "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=up&n=1",
        "extras": {},  # what Grafana adds (links, value string): nothing from Alertmanager
    }
    assert second["status"] == "resolved" and second["endsAt"] == "2027-01-15T08:00:00.000Z"


async def test_values_go_out_whole_and_escaped_by_json(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    odd = '"quoted" <b>html</b> [md](http://x) @all \\ \n\t\x01 ' + "é" * 3000
    await hook(hook_ctx, receiver).send(message(group("g1", alert(1, summary=odd))))
    doc = receiver.received[0].json
    assert doc["alertGroups"][0]["alerts"][0]["annotations"]["summary"] == odd
    assert doc["truncated"] is False


async def test_a_huge_notification_is_cut_to_the_documented_bound(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    big = "x" * 200_000
    alerts = [alert(i, summary=big) for i in range(12)]
    await hook(hook_ctx, receiver).send(message(group("g1", *alerts)))
    got = receiver.received[0]
    assert got.verified and len(got.body) <= MAX_BODY_BYTES
    doc = got.json
    assert doc["truncated"] is True
    g = doc["alertGroups"][0]
    assert g["counts"]["firing"] == 12  # counts are of the whole group
    summary = g["alerts"][0]["annotations"]["summary"]
    assert summary.startswith("x" * 1024) and "more characters" in summary
    assert len(g["alerts"]) + g["alertsOmitted"] == 12


async def test_a_digest_of_thousands_of_groups_still_fits(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    groups = [group(f"g{i}", alert(i, summary="s" * 600), alertname=f"A{i}") for i in range(3000)]
    await hook(hook_ctx, receiver).send(message(*groups, kind="digest"))
    got = receiver.received[0]
    assert len(got.body) <= MAX_BODY_BYTES
    doc = got.json
    assert doc["counts"]["alertGroups"] == 3000
    assert len(doc["alertGroups"]) + doc["alertGroupsOmitted"] == 3000


async def test_extra_headers_are_sent(receiver: Receiver, hook_ctx: ChannelContext) -> None:
    await hook(hook_ctx, receiver, headers={"X-Tenant": "ops", "Authorization": "Bearer t0k"}).send(
        message()
    )
    headers = receiver.received[0].headers
    assert headers["X-Tenant"] == "ops" and headers["Authorization"] == "Bearer t0k"


async def test_without_a_secret_the_timestamp_is_sent_and_no_signature(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    receiver.secret = ""
    receiver.verify = lambda request, body: True  # type: ignore[method-assign]
    await hook(hook_ctx, receiver, secret="").send(message())
    headers = receiver.received[0].headers
    assert headers["X-Monitor-Manager-Timestamp"] == str(int(T0))
    assert "X-Monitor-Manager-Signature" not in headers


# --- signing --------------------------------------------------------------------------------


async def test_a_receiver_refuses_a_wrong_secret_and_the_channel_fails_for_good(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver, secret="not-the-secret").send(message())
    assert caught.value.permanent and "HTTP 401" in caught.value.reason
    assert receiver.received[0].verified is False


async def test_a_receiver_refuses_an_old_timestamp(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    ch = hook(hook_ctx, receiver)
    receiver.clock.advance(TOLERANCE + 1)  # the receiver's clock runs ahead of ours
    hook_ctx.clock = ManualClock(T0)
    with pytest.raises(ChannelError):
        await ch.send(message())
    assert receiver.received[0].verified is False


async def test_a_replayed_request_is_refused(
    receiver: Receiver, hook_ctx: ChannelContext, session: aiohttp.ClientSession
) -> None:
    await hook(hook_ctx, receiver).send(message())
    first = receiver.received[0]
    headers = {k: v for k, v in first.headers.items() if k.startswith("X-Monitor-Manager")}
    async with session.post(receiver.url, data=first.body, headers=headers) as resp:
        assert resp.status == 401


# --- outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_delivered(receiver: Receiver, hook_ctx: ChannelContext, status: int) -> None:
    receiver.answers.append((status, {}))
    assert await hook(hook_ctx, receiver).send(message()) == ""


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_408_429_and_5xx_are_retried(
    receiver: Receiver, hook_ctx: ChannelContext, status: int
) -> None:
    receiver.answers.append((status, {}))
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver).send(message())
    assert not caught.value.permanent and f"HTTP {status}" in caught.value.reason
    assert caught.value.retry_after is None


async def test_retry_after_in_seconds_is_honoured(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    receiver.answers.append((429, {"Retry-After": "120"}))
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver).send(message())
    assert not caught.value.permanent and caught.value.retry_after == 120


async def test_retry_after_as_an_http_date_is_honoured(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    when = email.utils.formatdate(T0 + 300, usegmt=True)
    receiver.answers.append((503, {"Retry-After": when}))
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver).send(message())
    assert caught.value.retry_after == 300


def test_retry_after_values() -> None:
    assert parse_retry_after("", T0) is None
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after("0", T0) == 0
    assert parse_retry_after("99999999", T0) == 3600  # capped
    assert parse_retry_after(email.utils.formatdate(T0 - 50, usegmt=True), T0) == 0
    assert parse_retry_after("Thu, 15 Jan 2027 08:01:00 GMT", T0) == 60


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 422])
async def test_other_4xx_are_permanent(
    receiver: Receiver, hook_ctx: ChannelContext, status: int
) -> None:
    receiver.answers.append((status, {}))
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver).send(message())
    assert caught.value.permanent and f"HTTP {status}" in caught.value.reason


async def test_a_redirect_is_not_followed_and_says_where_to(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    receiver.answers.append((308, {"Location": "https://new.example.com/hooks?token=secret-9"}))
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver).send(message())
    assert caught.value.permanent and "https://new.example.com" in caught.value.reason
    assert "secret-9" not in caught.value.reason and len(receiver.received) == 1


async def test_a_slow_receiver_times_out_and_is_retried(
    receiver: Receiver, hook_ctx: ChannelContext
) -> None:
    receiver.delay = 2.0
    with pytest.raises(ChannelError) as caught:
        await hook(hook_ctx, receiver, timeout=0.3).send(message())
    assert not caught.value.permanent and "no answer within 0.3s" in caught.value.reason


async def test_a_refused_connection_is_retried(
    hook_ctx: ChannelContext, receiver: Receiver
) -> None:
    ch = WebhookChannel(
        "t", WebhookSettings(url="http://127.0.0.1:9/hooks?token=tok-123"), hook_ctx
    )
    with pytest.raises(ChannelError) as caught:
        await ch.send(message())
    assert not caught.value.permanent and "tok-123" not in caught.value.reason


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "keep-alive",
        "Transfer-Encoding",
        "Upgrade",
        "TE",
        "Trailer",
        "Host",
        "Content-Length",
        "content-type",
        "Proxy-Authorization",
        "X-Monitor-Manager-Signature",
    ],
)
def test_headers_that_describe_the_connection_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be configured"):
        WebhookSettings(url="https://t.example.com/h", headers={name: "secret-value"})


def test_malformed_headers_and_urls_are_refused_without_showing_values() -> None:
    with pytest.raises(ValueError, match="line break") as caught:
        WebhookSettings(url="https://t.example.com/h", headers={"X-A": "v\r\nX-B: injected"})
    assert "injected" not in str(caught.value)
    with pytest.raises(ValueError, match="not a valid header name"):
        WebhookSettings(url="https://t.example.com/h", headers={"Bad Name": "v"})
    with pytest.raises(ValueError, match="http"):
        WebhookSettings(url="ftp://t.example.com/h")
    with pytest.raises(ValueError, match="timeout"):
        WebhookSettings(url="https://t.example.com/h", timeout=0)


def test_the_config_loader_validates_and_never_prints_secret_values() -> None:
    from monitor_manager.config import ConfigError, parse_config

    data = {
        "channels": {
            "tickets": {
                "type": "webhook",
                "url": "https://t.example.com/h",
                "secret": 12345,
                "headers": {"Authorization": "Bearer zz-top-secret", "Host": "x"},
            }
        },
        "contact_groups": [{"name": "default", "channels": ["tickets"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    text = "\n".join(caught.value.problems)
    assert "channels.tickets" in text and "Host" in text
    assert "zz-top-secret" not in text and "12345" not in text


# --- secrets --------------------------------------------------------------------------------


async def test_secrets_appear_in_no_error_or_log(
    receiver: Receiver, hook_ctx: ChannelContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ch = hook(hook_ctx, receiver, headers={"Authorization": "Bearer hdr-secret-55"})
    seen = [repr(ch.settings)]
    for status in (500, 404):
        receiver.answers.append((status, {}))
        with pytest.raises(ChannelError) as caught:
            await ch.send(message())
        seen += [caught.value.reason, repr(caught.value)]
    assert_no_secrets("\n".join(seen + [caplog.text]), SECRET, "query-token-77", "hdr-secret-55")
