"""A fake WeCom (企业微信) API on loopback, written from the published API.

It serves `GET /cgi-bin/gettoken`, `POST /cgi-bin/message/send` and `POST /cgi-bin/webhook/send`
the way WeCom documents them (developer.work.weixin.qq.com/document/path/90236, 90313,
90454, 91770): HTTP 200 with a JSON
`errcode` for every outcome, tokens that expire after `expires_in`, byte limits on content
(application text longer than 2048 bytes is truncated silently, as the real API does, and
recorded as `truncated`), 20 messages per robot per rolling minute (45009), and application
messages beyond 30 a minute (or 1000 an hour) to one member accepted but silently dropped
(recorded in `dropped`).

Switches for tests: `expire_all_tokens()`, `fail_next(errcode, n)`, `http_error_next()`,
`slow_next()`, `clear_failures()`.
Records: `accepted`, `rejected`, `dropped`, `truncated`, `gettoken_calls`.

Use the `fake_wecom` fixture (import `fake_wecom_fixture` into the test module), or
`async with FakeWeCom(clock=...) as fake:` anywhere else.
"""

from __future__ import annotations

import asyncio
import collections
import io
import itertools
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web

from monitor_manager.channels.base import Channel, ChannelContext
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import (
    AlertStatus,
    AlertView,
    GroupView,
    Member,
    Message,
    MessageKind,
)

Endpoint = Literal["gettoken", "send", "robot"]
Target = Literal["gettoken", "send", "robot", "messages", "any"]

CORP_ID = "wwfake0123456789ab"
SECRET = "fake-corp-secret-7f3a9c1d5e"
AGENT_ID = 1000002
USERS = ("zhangsan", "lisi", "wangwu")
ROBOT_KEY = "5f1c2e9a-8b47-4d3e-a1f0-6c2b9e7d4a13"

TEXT_LIMIT = 2048  # application and robot text: longer is truncated
TEXT_HARD_LIMIT = 5120  # observed: beyond this text is refused with 40058
APP_MARKDOWN_LIMIT = 2048
ROBOT_MARKDOWN_LIMIT = 4096
ROBOT_PER_MINUTE = 20
MEMBER_PER_MINUTE = 30
MEMBER_PER_HOUR = 1000
MAX_TOUSER = 1000

ERRMSG = {
    -1: "system busy",
    40001: "invalid credential",
    40003: "invalid userid",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40056: "invalid agentid",
    41001: "access_token missing",
    42001: "access_token expired",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error. Warning: wrong json format.",
    48002: "api forbidden",
    60020: "not allow to access from your ip",
    81013: "user & party & tag all invalid",
    82001: "All touser & toparty & totag invalid",
    93000: "invalid webhook url",
    301002: "access_token and agentid mismatch",
}


def errmsg(code: int, text: str = "") -> str:
    """The shape real errmsgs have: text, hint, caller IP, help link."""
    text = text or ERRMSG.get(code, "error")
    return (
        f"{text}, hint: [{secrets.token_hex(8)}], from ip: 127.0.0.1, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={code}"
    )


@dataclass
class Token:
    corp_id: str
    agent_id: int
    expires_at: float
    revoked_with: int | None = None  # errcode answered once expire_all_tokens() ran


@dataclass
class Accepted:
    """One message the fake accepted (errcode 0)."""

    endpoint: Literal["app", "robot"]
    msgtype: str
    content: str  # as delivered: truncated when `truncated`
    sent_bytes: int  # UTF-8 bytes of the content the client sent
    truncated: bool
    at: float
    touser: list[str] = field(default_factory=list)  # delivered members (application)
    invaliduser: list[str] = field(default_factory=list)
    dropped_for: list[str] = field(default_factory=list)  # members WeCom silently skipped
    agentid: int | None = None
    robot_key: str = ""
    mentioned_list: list[str] = field(default_factory=list)
    mentioned_mobile_list: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rejected:
    endpoint: Endpoint
    errcode: int
    at: float
    body: Any = None


@dataclass
class _Failure:
    errcode: int
    remaining: int
    target: Target
    echo: bool
    status: int = 200
    text: str = ""
    after: int = 0  # matching requests let through before the failures start
    delay: float = 0.0  # answer normally, but this many seconds late


class FakeWeCom:
    """The fake API. Configure apps, members and robots, start it, point channels at it."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or ManualClock()
        self.apps: dict[tuple[str, str], int] = {}  # (corp_id, secret) -> agent_id
        self.users: set[str] = set()
        self.robot_keys: set[str] = set()
        self.tokens: dict[str, Token] = {}
        self.accepted: list[Accepted] = []
        self.rejected: list[Rejected] = []
        self.gettoken_requests: list[dict[str, str]] = []
        self._failures: list[_Failure] = []
        self._robot_sends: dict[str, collections.deque[float]] = {}
        self._member_minute: dict[tuple[int, str], collections.deque[float]] = {}
        self._member_hour: dict[tuple[int, str], collections.deque[float]] = {}
        self._msgids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.add_app(CORP_ID, SECRET, AGENT_ID)
        self.add_users(*USERS)
        self.add_robot(ROBOT_KEY)

    # --- configuration ----------------------------------------------------------------

    def add_app(self, corp_id: str, secret: str, agent_id: int) -> None:
        self.apps[(corp_id, secret)] = agent_id

    def add_users(self, *user_ids: str) -> None:
        self.users.update(u.lower() for u in user_ids)

    def add_robot(self, key: str) -> None:
        self.robot_keys.add(key)

    @property
    def api_url(self) -> str:
        return f"{self.url}/cgi-bin/"

    def robot_url(self, key: str = ROBOT_KEY) -> str:
        return f"{self.url}/cgi-bin/webhook/send?key={urllib.parse.quote(key)}"

    # --- switches ---------------------------------------------------------------------

    def expire_all_tokens(self, errcode: int = 42001) -> None:
        """Every token issued so far is refused from now on with `errcode`.

        42001 is "expired"; 40014 is what WeCom answered in practice for a token kept too long;
        40001 is the credential error other WeChat APIs give for a bad token.
        """
        for token in self.tokens.values():
            token.revoked_with = errcode

    def fail_next(
        self,
        errcode: int,
        n: int = 1,
        *,
        on: Target = "messages",
        after: int = 0,
        echo: bool = False,
    ) -> None:
        """The next `n` requests to `on` answer `errcode` (HTTP 200), before any other check.

        `on`: "send", "robot", "gettoken", "messages" (send or robot) or "any". `after`
        requests are let through first. With `echo` the errmsg repeats the request line,
        query string included, as some gateways do.
        """
        self._failures.append(_Failure(errcode, n, on, echo, after=after))

    def http_error_next(
        self,
        status: int = 502,
        n: int = 1,
        *,
        on: Target = "messages",
        text: str = "Bad Gateway",
        after: int = 0,
        echo: bool = False,
    ) -> None:
        """The next `n` requests to `on` answer a non-JSON body with HTTP `status`."""
        self._failures.append(_Failure(0, n, on, echo, status=status, text=text, after=after))

    def slow_next(self, seconds: float, n: int = 1, *, on: Target = "messages") -> None:
        """The next `n` requests to `on` are answered normally, `seconds` late."""
        self._failures.append(_Failure(0, n, on, False, delay=seconds))

    def clear_failures(self) -> None:
        """Forget every failure still pending from the switches above (a fault window ends)."""
        self._failures.clear()

    # --- records ----------------------------------------------------------------------

    @property
    def gettoken_calls(self) -> int:
        return len(self.gettoken_requests)

    @property
    def truncated(self) -> list[Accepted]:
        return [a for a in self.accepted if a.truncated]

    @property
    def dropped(self) -> list[tuple[str, Accepted]]:
        """(member, message) for every application message WeCom would not have delivered."""
        return [(user, a) for a in self.accepted for user in a.dropped_for]

    def contents(self, endpoint: Literal["app", "robot"] | None = None) -> list[str]:
        return [a.content for a in self.accepted if endpoint in (None, a.endpoint)]

    def rejected_codes(self) -> list[int]:
        return [r.errcode for r in self.rejected]

    # --- lifecycle --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/message/send", self._message_send)
        app.router.add_post("/cgi-bin/webhook/send", self._webhook_send)
        return app

    async def start(self) -> FakeWeCom:
        # No access log: it would print request lines with tokens and keys into captured logs.
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeCom:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- helpers ----------------------------------------------------------------------

    def _answer(
        self, endpoint: Endpoint, code: int, body: Any = None, text: str = "", **extra: Any
    ) -> web.Response:
        if code != 0:
            self.rejected.append(Rejected(endpoint, code, self.clock(), body))
        return web.json_response(
            {"errcode": code, "errmsg": errmsg(code, text) if code else "ok", **extra}
        )

    async def _forced(self, endpoint: Endpoint, request: web.Request) -> web.Response | None:
        for failure in self._failures:
            if failure.target in (endpoint, "any") or (
                failure.target == "messages" and endpoint in ("send", "robot")
            ):
                break
        else:
            return None
        if failure.after > 0:
            failure.after -= 1
            return None
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failures.remove(failure)
        if failure.delay:
            await asyncio.sleep(failure.delay)
            return None
        echoed = f" ({request.method} {request.path_qs})" if failure.echo else ""
        if failure.status != 200:
            self.rejected.append(Rejected(endpoint, -failure.status, self.clock()))
            return web.Response(status=failure.status, text=failure.text + echoed)
        return self._answer(
            endpoint, failure.errcode, text=ERRMSG.get(failure.errcode, "error") + echoed
        )

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _content(self, body: dict[str, Any], msgtype: str) -> str | None:
        part = body.get(msgtype)
        content = part.get("content") if isinstance(part, dict) else None
        return content if isinstance(content, str) else None

    @staticmethod
    def _truncate(content: str, limit: int) -> str:
        return content.encode()[:limit].decode("utf-8", "ignore")

    @staticmethod
    def _within(window: collections.deque[float], now: float, seconds: float) -> int:
        while window and window[0] <= now - seconds:
            window.popleft()
        return len(window)

    # --- endpoints --------------------------------------------------------------------

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.gettoken_requests.append(dict(request.query))
        forced = await self._forced("gettoken", request)
        if forced is not None:
            return forced
        corp_id = request.query.get("corpid", "")
        secret = request.query.get("corpsecret", "")
        if not corp_id or corp_id not in {c for c, _ in self.apps}:
            return self._answer("gettoken", 40013)
        agent_id = self.apps.get((corp_id, secret))
        if agent_id is None:
            return self._answer("gettoken", 40001)
        token = secrets.token_urlsafe(64)
        self.tokens[token] = Token(corp_id, agent_id, self.clock() + 7200)
        return self._answer("gettoken", 0, access_token=token, expires_in=7200)

    async def _message_send(self, request: web.Request) -> web.Response:
        forced = await self._forced("send", request)
        if forced is not None:
            return forced
        value = request.query.get("access_token", "")
        if not value:
            return self._answer("send", 41001)
        token = self.tokens.get(value)
        if token is None:
            return self._answer("send", 40014)
        if token.revoked_with is not None:
            return self._answer("send", token.revoked_with)
        if self.clock() >= token.expires_at:
            return self._answer("send", 42001)
        body = await self._json(request)
        if body is None:
            return self._answer("send", 47001)
        return self._deliver_app(token, body)

    def _deliver_app(self, token: Token, body: dict[str, Any]) -> web.Response:
        try:
            agentid = int(body.get("agentid", ""))  # Alertmanager sends it as a string
        except (TypeError, ValueError):
            return self._answer("send", 40056, body)
        if agentid != token.agent_id:
            return self._answer("send", 301002, body)
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown"):
            return self._answer("send", 40008, body)
        content = self._content(body, msgtype)
        if not content:
            return self._answer("send", 44004, body)
        size = len(content.encode())
        if msgtype == "markdown" and size > APP_MARKDOWN_LIMIT:
            return self._answer(
                "send", 40058, body, f"markdown.content exceed max length {APP_MARKDOWN_LIMIT}"
            )
        if msgtype == "text" and size > TEXT_HARD_LIMIT:
            return self._answer(
                "send", 40058, body, f"text.content exceed max length {TEXT_HARD_LIMIT}"
            )
        users = [u for u in str(body.get("touser") or "").split("|") if u]
        if not users and not body.get("toparty") and not body.get("totag"):
            return self._answer("send", 82001, body)
        if len(users) > MAX_TOUSER:
            return self._answer("send", 40058, body, "touser exceed max size")
        valid = [u for u in users if u.lower() in self.users]
        invalid = [u.lower() for u in users if u.lower() not in self.users]
        if not valid:
            return self._answer("send", 81013, body)
        truncated = msgtype == "text" and size > TEXT_LIMIT
        accepted = Accepted(
            endpoint="app",
            msgtype=msgtype,
            sent_bytes=size,
            truncated=truncated,
            content=self._truncate(content, TEXT_LIMIT) if truncated else content,
            at=self.clock(),
            touser=valid,
            invaliduser=invalid,
            agentid=agentid,
            body=body,
            dropped_for=self._over_member_limit(agentid, valid),
        )
        self.accepted.append(accepted)
        return self._answer(
            "send",
            0,
            invaliduser="|".join(invalid),
            invalidparty="",
            invalidtag="",
            unlicenseduser="",
            msgid=f"msg{next(self._msgids)}",
        )

    def _over_member_limit(self, agentid: int, users: list[str]) -> list[str]:
        # WeCom discards messages beyond 30/min and 1000/h per member without an error.
        now = self.clock()
        dropped = []
        for user in users:
            minute = self._member_minute.setdefault((agentid, user), collections.deque())
            hour = self._member_hour.setdefault((agentid, user), collections.deque())
            if (
                self._within(minute, now, 60) >= MEMBER_PER_MINUTE
                or self._within(hour, now, 3600) >= MEMBER_PER_HOUR
            ):
                dropped.append(user)
                continue
            minute.append(now)
            hour.append(now)
        return dropped

    async def _webhook_send(self, request: web.Request) -> web.Response:
        forced = await self._forced("robot", request)
        if forced is not None:
            return forced
        key = request.query.get("key", "")
        if key not in self.robot_keys:
            return self._answer("robot", 93000)
        body = await self._json(request)
        if body is None:
            return self._answer("robot", 47001)
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown", "markdown_v2"):
            return self._answer("robot", 40008, body)
        content = self._content(body, msgtype)
        if not content:
            return self._answer("robot", 44004, body)
        size = len(content.encode())
        if msgtype != "text" and size > ROBOT_MARKDOWN_LIMIT:
            return self._answer(
                "robot", 40058, body, f"{msgtype}.content exceed max length {ROBOT_MARKDOWN_LIMIT}"
            )
        if msgtype == "text" and size > TEXT_HARD_LIMIT:
            return self._answer(
                "robot", 40058, body, f"text.content exceed max length {TEXT_HARD_LIMIT}"
            )
        window = self._robot_sends.setdefault(key, collections.deque())
        now = self.clock()
        if self._within(window, now, 60) >= ROBOT_PER_MINUTE:
            return self._answer("robot", 45009, body)
        window.append(now)
        part = body[msgtype]
        truncated = msgtype == "text" and size > TEXT_LIMIT
        self.accepted.append(
            Accepted(
                endpoint="robot",
                msgtype=msgtype,
                sent_bytes=size,
                truncated=truncated,
                content=self._truncate(content, TEXT_LIMIT) if truncated else content,
                at=now,
                robot_key=key,
                body=body,
                mentioned_list=list(part.get("mentioned_list") or []),
                mentioned_mobile_list=list(part.get("mentioned_mobile_list") or []),
            )
        )
        return self._answer("robot", 0)


@pytest.fixture(name="fake_wecom")
async def fake_wecom_fixture() -> AsyncIterator[FakeWeCom]:
    """A started FakeWeCom on 127.0.0.1 with a ManualClock as `.clock`."""
    async with FakeWeCom() as fake:
        yield fake


@pytest.fixture(name="session")
async def wecom_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(name="clock")
def wecom_clock(fake_wecom: FakeWeCom) -> ManualClock:
    assert isinstance(fake_wecom.clock, ManualClock)
    return fake_wecom.clock


@pytest.fixture(name="ctx")
def wecom_ctx(session: aiohttp.ClientSession, clock: ManualClock) -> ChannelContext:
    """A channel context on the fake's clock, with a real HTTP session and English templates."""
    return ChannelContext(
        session=session, renderer=Renderer("en"), clock=clock, stdout=io.StringIO()
    )


def assert_no_secrets(text: str, *secret_values: str) -> None:
    """Fail when any secret, plain or URL-encoded, occurs in `text`."""
    for secret in secret_values:
        if not secret:
            continue
        for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}:
            assert form not in text, f"a secret ({secret[:4]}…) leaked into: {text!r}"


# --- messages for WeCom tests ---------------------------------------------------------------

T0 = 1_800_000_000.0  # ManualClock's default start

MEMBERS = (
    Member("Zhang San", email="zhangsan@example.com", wechat="zhangsan", mobile="13800000000"),
    Member("Li Si", email="lisi@example.com", wechat="lisi"),
    Member("Zhao Liu", mobile="13900000000"),
)


def alert(
    n: int = 1,
    status: AlertStatus = "firing",
    *,
    summary: str = "",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> AlertView:
    return AlertView(
        fingerprint=f"fp{n}",
        status=status,
        labels={
            "alertname": "HighLatency",
            "cluster": "prod",
            "severity": "critical",
            "instance": f"api-{n}",
            **(labels or {}),
        },
        annotations={
            "summary": summary or f"p99 latency above 2s on api-{n}",
            **(annotations or {}),
        },
        starts_at=T0 - 600,
        ends_at=T0 if status == "resolved" else None,
        generator_url=f"http://prometheus.example.com:9090/graph?g0.expr=up&n={n}",
    )


def group(key: str = "g1", *alerts: AlertView, alertname: str = "HighLatency") -> GroupView:
    alerts = alerts or (alert(1),)
    return GroupView(
        key=key,
        contact_group="sre",
        group_labels={"alertname": alertname, "cluster": "prod"},
        alerts=alerts,
        url=f"http://mm-az1.example.com:9095/api/v1/alert-groups?key={key}",
    )


def message(
    *groups: GroupView,
    kind: MessageKind = "group",
    msg_id: int = 1,
    recipients: tuple[Member, ...] = MEMBERS,
) -> Message:
    return Message(
        id=msg_id,
        kind=kind,
        contact_group="sre",
        recipients=recipients,
        groups=groups or (group(),),
        created_at=T0,
        instance="mm-az1",
        external_url="http://mm-az1.example.com:9095",
    )


LONG_SUMMARY = "数据库主库连接池耗尽，应用请求排队超过三十秒，请立即检查慢查询与复制延迟。" * 3


def long_message(alerts: int = 10, msg_id: int = 1) -> Message:
    """Long enough to be split into several parts, in CJK (3 UTF-8 bytes a character)."""
    return message(
        group("g1", *(alert(i, summary=LONG_SUMMARY) for i in range(alerts))), msg_id=msg_id
    )


async def send_when_ready(ch: Channel, clock: ManualClock, msg: Message) -> str:
    """What the outbox does: wait until the channel says the message fits, then send."""
    while ch.ready_at(msg) > clock():
        clock.advance(1)
    return await ch.send(msg)
