"""A fake Feishu / Lark custom bot API on loopback, written from the published guide.

`POST /open-apis/bot/v2/hook/{token}` answers as Feishu does (channels/feishu_robot.py cites
the sources): `{"code": 0, "msg": "success", "data": {}}` on success;
- an unknown token: 19001 "param invalid: incoming webhook access token invalid";
- a body over 20 KB (taken as 20000 bytes) or one that is not JSON: HTTP 400, 9499 "Bad Request";
- a bot with a secret (签名校验): body fields `timestamp` (seconds, within one hour of the fake's
  clock) and `sign` = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")), else 19021;
- a bot with keywords: the message's text must contain one, else 19024 "Key Words Not Found";
- more than 5 requests in a second or 100 in a minute: HTTP 400, 9499 "too many request".

Switches: `fail_next(code, n, msg=..., status=...)`, `http_error_next(status)`.
Records: `accepted` (with the text shown and the open ids mentioned), `rejected`.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from monitor_manager.channels.base import ChannelContext
from monitor_manager.clock import ManualClock
from monitor_manager.deliver.render import Renderer

TOKEN = "0f8e2c4a-6b1d-4e3f-9a7c-5d2b8e1f4a6c"
SECRET = "qEp3x1nT0bWk7ZcR2yLm5V"
PER_SECOND = 5
PER_MINUTE = 100
BODY_LIMIT = 20000
TIMESTAMP_WINDOW = 3600.0

MSG = {
    9499: "Bad Request",
    11232: "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]",
    19001: "param invalid: incoming webhook access token invalid",
    19002: "params error, msg_type need",
    19021: "sign match fail or timestamp is not within one hour from current time",
    19022: "Ip Not Allowed",
    19024: "Key Words Not Found",
}
_TEXT_AT = re.compile(r'<at user_id="([^"]*)">')
_CARD_AT = re.compile(r"<at id=([^>\s]*)></at>")


@dataclass
class Bot:
    secret: str = ""
    keywords: tuple[str, ...] = ()
    sends: collections.deque[float] = field(default_factory=collections.deque)


@dataclass
class Accepted:
    msg_type: str
    text: str  # everything a reader sees: text, post title and elements, card title and text
    mentioned: list[str]  # open ids
    links: list[str]  # hrefs of post link elements
    body_bytes: int
    at: float
    signed: bool
    body: dict[str, Any]


@dataclass
class Rejected:
    code: int
    msg: str
    at: float
    status: int


@dataclass
class _Failure:
    code: int
    remaining: int
    msg: str
    status: int = 200


class FakeFeishu:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or ManualClock()
        self.bots: dict[str, Bot] = {}
        self.accepted: list[Accepted] = []
        self.rejected: list[Rejected] = []
        self._failures: list[_Failure] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.add_bot(TOKEN)

    # --- configuration and switches ----------------------------------------------------

    def add_bot(self, token: str, *, secret: str = "", keywords: tuple[str, ...] = ()) -> Bot:
        self.bots[token] = Bot(secret, keywords)
        return self.bots[token]

    def hook_url(self, token: str = TOKEN) -> str:
        return f"{self.url}/open-apis/bot/v2/hook/{token}"

    def fail_next(self, code: int, n: int = 1, *, msg: str = "", status: int = 200) -> None:
        """The next `n` requests answer `code` with HTTP `status`, before any other check."""
        self._failures.append(_Failure(code, n, msg or MSG.get(code, "error"), status))

    def http_error_next(self, status: int = 502, n: int = 1) -> None:
        """The next `n` requests answer a non-JSON body with HTTP `status`."""
        self._failures.append(_Failure(-1, n, "Bad Gateway", status))

    # --- records ----------------------------------------------------------------------

    def texts(self) -> list[str]:
        return [a.text for a in self.accepted]

    def rejected_codes(self) -> list[int]:
        return [r.code for r in self.rejected]

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakeFeishu:
        app = web.Application()
        app.router.add_post("/open-apis/bot/v2/hook/{token}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)  # no tokens in captured logs
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

    async def __aenter__(self) -> FakeFeishu:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the endpoint -----------------------------------------------------------------

    def _answer(self, code: int, msg: str = "", status: int = 200) -> web.Response:
        msg = msg or MSG.get(code, "error")
        if code:
            self.rejected.append(Rejected(code, msg, self.clock(), status))
            return web.json_response({"code": code, "msg": msg, "data": {}}, status=status)
        return web.json_response(
            {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
        )

    async def _hook(self, request: web.Request) -> web.Response:
        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.pop(0)
            if failure.code == -1:
                self.rejected.append(Rejected(-1, failure.msg, self.clock(), failure.status))
                return web.Response(status=failure.status, text=failure.msg)
            return self._answer(failure.code, failure.msg, failure.status)
        bot = self.bots.get(request.match_info["token"])
        if bot is None:
            return self._answer(19001)
        raw = await request.read()
        if len(raw) > BODY_LIMIT:
            return self._answer(9499, "Bad Request", 400)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(9499, "Bad Request: fail to parse content", 400)
        if not isinstance(body, dict):
            return self._answer(9499, "Bad Request", 400)
        now = self.clock()
        if bot.secret and not self._signed(bot, body, now):
            return self._answer(19021)
        shown = _shown(body)
        if shown is None:
            return self._answer(19002)
        text, mentioned, links = shown
        if bot.keywords and not any(k in text for k in bot.keywords):
            return self._answer(19024)
        while bot.sends and bot.sends[0] <= now - 60:
            bot.sends.popleft()
        if len(bot.sends) >= PER_MINUTE or sum(1 for t in bot.sends if t > now - 1) >= PER_SECOND:
            return self._answer(9499, "too many request", 400)
        bot.sends.append(now)
        self.accepted.append(
            Accepted(
                msg_type=body["msg_type"],
                text=text,
                mentioned=mentioned,
                links=links,
                body_bytes=len(raw),
                at=now,
                signed=bool(bot.secret),
                body=body,
            )
        )
        return self._answer(0)

    @staticmethod
    def _signed(bot: Bot, body: dict[str, Any], now: float) -> bool:
        timestamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
        if not timestamp.isdigit() or abs(int(timestamp) - now) > TIMESTAMP_WINDOW:
            return False
        key = f"{timestamp}\n{bot.secret}".encode()
        expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        return hmac.compare_digest(sign, expected)


def _shown(body: dict[str, Any]) -> tuple[str, list[str], list[str]] | None:
    """What a reader sees of a message, the open ids it mentions and its links; None when the
    body is not a well-formed text, post or interactive message."""
    kind, content = body.get("msg_type"), body.get("content")
    if kind == "text" and isinstance(content, dict) and isinstance(content.get("text"), str):
        text = content["text"]
        return text, _TEXT_AT.findall(text), []
    if kind == "post" and isinstance(content, dict) and isinstance(content.get("post"), dict):
        posts = list(content["post"].values())
        if len(posts) != 1 or not isinstance(posts[0], dict):
            return None
        post = posts[0]
        lines, mentioned, links = [str(post.get("title", ""))], [], []
        for paragraph in post.get("content") or []:
            if not isinstance(paragraph, list):
                return None
            line = ""
            for element in paragraph:
                tag = element.get("tag") if isinstance(element, dict) else None
                if tag == "text":
                    line += str(element.get("text", ""))
                elif tag == "a":
                    line += str(element.get("text", ""))
                    links.append(str(element.get("href", "")))
                elif tag == "at":
                    mentioned.append(str(element.get("user_id", "")))
                else:
                    return None
            lines.append(line)
        return "\n".join(lines), mentioned, links
    card = body.get("card")
    if kind == "interactive" and isinstance(card, dict):
        title = str(((card.get("header") or {}).get("title") or {}).get("content", ""))
        texts = [
            str((e.get("text") or {}).get("content", ""))
            for e in card.get("elements") or []
            if isinstance(e, dict)
        ]
        text = "\n".join([title, *texts])
        return text, _CARD_AT.findall(text), []
    return None


def feishu_sign(timestamp: str, secret: str) -> str:
    """The documented algorithm, written out again for the tests."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


@pytest.fixture(name="fake_feishu")
async def fake_feishu_fixture() -> AsyncIterator[FakeFeishu]:
    """A started FakeFeishu on 127.0.0.1 with a ManualClock as `.clock`."""
    async with FakeFeishu() as fake:
        yield fake


@pytest.fixture(name="feishu_ctx")
def feishu_ctx_fixture(session: aiohttp.ClientSession, fake_feishu: FakeFeishu) -> ChannelContext:
    """A channel context on the fake's clock, with a real HTTP session and English templates."""
    return ChannelContext(
        session=session, renderer=Renderer("en"), clock=fake_feishu.clock, stdout=io.StringIO()
    )
