"""A fake DingTalk custom robot API on loopback, written from the published documentation.

`POST /robot/send?access_token=T[&timestamp=MS&sign=S]` answers HTTP 200 with a JSON `errcode`
for every outcome, as DingTalk does (channels/dingtalk_robot.py cites the sources):
- an unknown or missing access_token: 300001;
- a robot with a secret (加签): `timestamp` in milliseconds within one hour of the fake's clock
  and `sign` = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))), the
  query decoded once (a sign sent without URL encoding fails, as it does at DingTalk), else
  310000 "invalid timestamp" / "sign not match";
- a robot with keywords: the text (or markdown title and text) must contain one, else 310000
  "keywords not in content";
- a body over 20000 bytes: 460101 "message too long, exceed 20000 bytes";
- more than 20 messages in a rolling minute: 130101 "send too fast", and the robot then refuses
  everything for 10 minutes.

Switches: `fail_next(errcode, n, errmsg=...)`, `http_error_next(status)`.
Records: `accepted` (with the mentions asked for and whether markdown showed them), `rejected`.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import io
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from monitor_manager.channels.base import ChannelContext
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer

TOKEN = "7f3c1e9b2a4d6f8e0c1b3a5d7e9f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f"
SECRET = "SEC" + "5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88fd612bda89d7f3a9dc"
PER_MINUTE = 20
THROTTLE = 600.0
BODY_LIMIT = 20000
TIMESTAMP_WINDOW = 3600.0

ERRMSG = {
    -1: "系统繁忙",
    130101: "send too fast, exceed 20 times per minute",
    300001: "token is not exist",
    460101: "message too long, exceed 20000 bytes",
    40035: "缺少参数 access_token",
    43004: "无效的HTTP HEADER Content-Type",
}


@dataclass
class Robot:
    secret: str = ""
    keywords: tuple[str, ...] = ()
    sends: collections.deque[float] = field(default_factory=collections.deque)
    throttled_until: float = 0.0


@dataclass
class Accepted:
    msgtype: str
    content: str  # text.content, or markdown.text
    title: str
    at_mobiles: list[str]
    at_user_ids: list[str]
    shown: list[str]  # mentioned ids/mobiles that markdown shows (appear as "@..." in the text)
    body_bytes: int
    at: float
    token: str
    signed: bool
    body: dict[str, Any]


@dataclass
class Rejected:
    errcode: int
    errmsg: str
    at: float


@dataclass
class _Failure:
    errcode: int
    remaining: int
    errmsg: str = ""
    status: int = 200


class FakeDingTalk:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or ManualClock()
        self.robots: dict[str, Robot] = {}
        self.accepted: list[Accepted] = []
        self.rejected: list[Rejected] = []
        self._failures: list[_Failure] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.add_robot(TOKEN)

    # --- configuration and switches ----------------------------------------------------

    def add_robot(self, token: str, *, secret: str = "", keywords: tuple[str, ...] = ()) -> Robot:
        self.robots[token] = Robot(secret, keywords)
        return self.robots[token]

    def robot_url(self, token: str = TOKEN) -> str:
        return f"{self.url}/robot/send?access_token={urllib.parse.quote(token)}"

    def fail_next(self, errcode: int, n: int = 1, *, errmsg: str = "") -> None:
        """The next `n` requests answer `errcode` (HTTP 200), before any other check."""
        self._failures.append(_Failure(errcode, n, errmsg or ERRMSG.get(errcode, "error")))

    def http_error_next(self, status: int = 502, n: int = 1) -> None:
        self._failures.append(_Failure(0, n, "Bad Gateway", status))

    # --- records ----------------------------------------------------------------------

    def contents(self) -> list[str]:
        return [a.content for a in self.accepted]

    def rejected_codes(self) -> list[int]:
        return [r.errcode for r in self.rejected]

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakeDingTalk:
        app = web.Application()
        app.router.add_post("/robot/send", self._send)
        # No access log: it would print request lines with tokens into captured logs.
        self._runner = web.AppRunner(app, access_log=None)
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

    async def __aenter__(self) -> FakeDingTalk:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the endpoint -----------------------------------------------------------------

    def _answer(self, errcode: int, errmsg: str = "") -> web.Response:
        errmsg = errmsg or ERRMSG.get(errcode, "error")
        if errcode:
            self.rejected.append(Rejected(errcode, errmsg, self.clock()))
        return web.json_response({"errcode": errcode, "errmsg": errmsg if errcode else "ok"})

    async def _send(self, request: web.Request) -> web.Response:
        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.pop(0)
            if failure.status != 200:
                self.rejected.append(Rejected(-failure.status, failure.errmsg, self.clock()))
                return web.Response(status=failure.status, text=failure.errmsg)
            return self._answer(failure.errcode, failure.errmsg)
        token = request.query.get("access_token", "")
        if not token:
            return self._answer(40035)
        robot = self.robots.get(token)
        if robot is None:
            return self._answer(300001)
        now = self.clock()
        if now < robot.throttled_until:
            return self._answer(130101)
        if robot.secret:
            refused = self._check_signature(robot, request.query, now)
            if refused:
                return self._answer(310000, refused)
        raw = await request.read()
        if len(raw) > BODY_LIMIT:
            return self._answer(460101)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(43004, "json parse error")
        if not isinstance(body, dict):
            return self._answer(43004, "json parse error")
        msgtype = body.get("msgtype")
        part = body.get(msgtype) if isinstance(msgtype, str) else None
        if msgtype not in ("text", "markdown") or not isinstance(part, dict):
            return self._answer(40035, "不合法的msgtype")
        content = part.get("content" if msgtype == "text" else "text")
        title = str(part.get("title", "")) if msgtype == "markdown" else ""
        if not isinstance(content, str) or not content:
            return self._answer(40035, "缺少参数 content")
        if msgtype == "markdown" and not title:
            return self._answer(40035, "缺少参数 title")
        if robot.keywords and not any(k in content or k in title for k in robot.keywords):
            return self._answer(310000, "keywords not in content")
        while robot.sends and robot.sends[0] <= now - 60:
            robot.sends.popleft()
        if len(robot.sends) >= PER_MINUTE:
            robot.throttled_until = now + THROTTLE
            return self._answer(130101)
        robot.sends.append(now)
        at = body.get("at") if isinstance(body.get("at"), dict) else {}
        assert isinstance(at, dict)
        mobiles = [str(m) for m in at.get("atMobiles") or []]
        user_ids = [str(u) for u in at.get("atUserIds") or []]
        self.accepted.append(
            Accepted(
                msgtype=msgtype,
                content=content,
                title=title,
                at_mobiles=mobiles,
                at_user_ids=user_ids,
                shown=[v for v in user_ids + mobiles if f"@{v}" in content],
                body_bytes=len(raw),
                at=now,
                token=token,
                signed=bool(robot.secret),
                body=body,
            )
        )
        return self._answer(0)

    @staticmethod
    def _check_signature(robot: Robot, query: Any, now: float) -> str:
        timestamp, sign = query.get("timestamp", ""), query.get("sign", "")
        if not timestamp.isdigit() or abs(int(timestamp) / 1000 - now) > TIMESTAMP_WINDOW:
            return "invalid timestamp"
        expected = base64.b64encode(
            hmac.new(
                robot.secret.encode(), f"{timestamp}\n{robot.secret}".encode(), hashlib.sha256
            ).digest()
        ).decode()
        if not hmac.compare_digest(sign, expected):
            return "sign not match"
        return ""


def dingtalk_sign(timestamp_ms: str, secret: str) -> str:
    """The documented algorithm, written out again for the tests (URL-encoded, as sent)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return urllib.parse.quote_plus(base64.b64encode(digest.digest()))


@pytest.fixture(name="fake_dingtalk")
async def fake_dingtalk_fixture() -> AsyncIterator[FakeDingTalk]:
    """A started FakeDingTalk on 127.0.0.1 with a ManualClock as `.clock`."""
    async with FakeDingTalk() as fake:
        yield fake


@pytest.fixture(name="dingtalk_ctx")
def dingtalk_ctx_fixture(
    session: aiohttp.ClientSession, fake_dingtalk: FakeDingTalk
) -> ChannelContext:
    """A channel context on the fake's clock, with a real HTTP session and English templates."""
    return ChannelContext(
        session=session, renderer=Renderer("en"), clock=fake_dingtalk.clock, stdout=io.StringIO()
    )


def random_token() -> str:
    return secrets.token_hex(32)
