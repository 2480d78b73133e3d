"""WeCom (企业微信) application messages: `type = "wechat"`.

A message goes to the contact group's members by their `wechat` user ids through
`message/send` of one self-built application (corp_id, agent_id, secret). The access token is
cached per application and shared by every channel of the service; only one refresh runs at a
time, and a token WeCom rejects (40001, 40014, 42001) is replaced and the call re-sent once.

WeCom silently drops application messages beyond 30 a minute (and 1000 an hour) to one member,
so the channel counts its calls per member and tells the outbox, through `ready_at`, when the
next message fits; the outbox merges what queues up meanwhile into one digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from monitor_manager.act.wecom_crypto import WecomCrypto
from monitor_manager.channels.base import (
    Channel,
    ChannelContext,
    ChannelError,
    SlidingWindowLimiter,
    parts_key,
    redact,
)
from monitor_manager.channels.chat_text import overflow_note, render_chat
from monitor_manager.channels.text_parts import MAX_PARTS, split_content
from monitor_manager.channels.wecom_api import (
    APP_LIMIT,
    TOKEN_ERRORS,
    call_api,
    error_for,
    markdown_marker,
)
from monitor_manager.durations import Duration
from monitor_manager.models import Member, Message

log = logging.getLogger(__name__)

# WeCom's per-member limits for one application; the window carries a second of slack so
# that network delay cannot put two of our calls inside one of WeCom's windows.
MEMBER_PER_MINUTE = 30
MEMBER_PER_HOUR = 1000
WINDOW_SLACK = 1.0
MAX_TOUSER = 1000  # member ids per call (developer.work.weixin.qq.com/document/path/90236)
# Refresh a token this long before WeCom says it expires (at most half its lifetime).
TOKEN_MARGIN = 300.0


@dataclass(frozen=True)
class WechatSettings:
    corp_id: str
    agent_id: int
    secret: str = field(repr=False)
    api_url: str = "https://qyapi.weixin.qq.com/cgi-bin/"
    msgtype: Literal["markdown", "text"] = "markdown"
    timeout: Duration = 10.0
    # The app's 接收消息 (receive messages) Token and EncodingAESKey: with both set, members
    # acknowledge by replying to the app (web/wecom_callback.py). Both secrets.
    callback_token: str = field(default="", repr=False)
    callback_aes_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        # Endpoints are joined onto api_url, which therefore must end with a slash.
        if not self.api_url.endswith("/"):
            object.__setattr__(self, "api_url", self.api_url + "/")
        # Checked at load, so a mistyped key is a config error and not a callback that WeCom
        # refuses to save. The values are secrets: the messages never quote them.
        if bool(self.callback_token) != bool(self.callback_aes_key):
            missing = "callback_aes_key" if self.callback_token else "callback_token"
            raise ValueError(
                f"{missing}: callback_token and callback_aes_key go together (set both to "
                "take members' replies, or neither)"
            )
        if self.callback_aes_key:
            try:
                WecomCrypto(self.callback_token, self.callback_aes_key, self.corp_id or "-")
            except ValueError:
                raise ValueError(
                    "callback_aes_key: must be the app's EncodingAESKey, 43 characters of "
                    "base64 (value not shown: a secret)"
                ) from None

    @property
    def takes_replies(self) -> bool:
        """Whether members' replies to the app are taken (/callback/wecom/{channel})."""
        return bool(self.callback_token and self.callback_aes_key)


@dataclass
class _Token:
    value: str
    expires_at: float
    lifetime: float


class TokenCache:
    """Access tokens per application, shared through `ChannelContext.extra`.

    Keys are hashes of (api_url, corp_id, secret), so the secret is not kept as a key.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def key(api_url: str, corp_id: str, secret: str) -> str:
        return hashlib.sha256(f"{api_url}\0{corp_id}\0{secret}".encode()).hexdigest()

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def valid(self, key: str, now: float, rejected: str | None = None) -> str | None:
        """The cached token unless it is near expiry or is the one WeCom just rejected."""
        token = self._tokens.get(key)
        if token is None or token.value == rejected:
            return None
        margin = min(TOKEN_MARGIN, token.lifetime / 2)
        return token.value if now < token.expires_at - margin else None

    def store(self, key: str, value: str, now: float, lifetime: float) -> None:
        self._tokens[key] = _Token(value, now + lifetime, lifetime)

    def secrets(self, key: str) -> tuple[str, ...]:
        token = self._tokens.get(key)
        return (token.value,) if token else ()


class WechatChannel(Channel):
    Settings: ClassVar[type] = WechatSettings  # before `type`, which would shadow the builtin
    type: ClassVar[str] = "wechat"
    member_address: ClassVar[str | None] = "wechat"
    merges_backlog: ClassVar[bool] = True

    settings: WechatSettings

    def __init__(self, name: str, settings: WechatSettings, ctx: ChannelContext) -> None:
        super().__init__(name, settings, ctx)
        self._tokens: TokenCache = ctx.shared("wecom.tokens", TokenCache)
        self._token_key = TokenCache.key(settings.api_url, settings.corp_id, settings.secret)
        # Per member of this application, shared by channels that name the same application.
        app = f"wecom.app.{settings.corp_id}.{settings.agent_id}"
        self._per_minute: SlidingWindowLimiter = ctx.shared(
            app + ".minute",
            lambda: SlidingWindowLimiter(MEMBER_PER_MINUTE, 60.0 + WINDOW_SLACK, ctx.clock),
        )
        self._per_hour: SlidingWindowLimiter = ctx.shared(
            app + ".hour",
            lambda: SlidingWindowLimiter(MEMBER_PER_HOUR, 3600.0 + WINDOW_SLACK, ctx.clock),
        )
        self._parts = ctx.parts
        self._rendered: tuple[Message, list[str]] | None = None

    # --- what to send -----------------------------------------------------------------

    def _users(self, message: Message) -> list[str]:
        users = list(dict.fromkeys(m.wechat for m in message.recipients if m.wechat))
        if not users:
            raise ChannelError(
                f"no member of contact group {message.contact_group!r} has a wechat id",
                permanent=True,
            )
        return users

    def _contents(self, message: Message) -> list[str]:
        """The message rendered and split into the contents of its API calls (cached)."""
        if self._rendered and self._rendered[0] is message:
            return self._rendered[1]
        markdown = self.settings.msgtype == "markdown"
        text = render_chat(
            self.ctx.renderer,
            ("wechat.md",) if markdown else ("wechat.txt",),
            message,
            # a reply "ack CODE" reaches us only where the application calls back
            reply=bool(self.settings.callback_token),
        )
        contents = split_content(
            text,
            APP_LIMIT,
            markdown=markdown,
            marker=markdown_marker if markdown else None,
            overflow=overflow_note(message, self.ctx.renderer.language, markdown=markdown),
        )
        self._rendered = (message, contents)
        return contents

    def _calls(self, message: Message) -> list[tuple[str, list[str]]]:
        users = self._users(message)
        batches = [users[i : i + MAX_TOUSER] for i in range(0, len(users), MAX_TOUSER)]
        return [(content, batch) for content in self._contents(message) for batch in batches]

    # --- rate limit -------------------------------------------------------------------

    def ready_at(self, message: Message) -> float:
        try:
            users = self._users(message)
            contents = self._contents(message)
        except ChannelError:
            return 0.0  # send() reports the problem
        done = self._parts.get(parts_key(self.name, message, contents))
        batches = -(-len(users) // MAX_TOUSER)
        # Every member gets each remaining part once.
        needed = max(1, len(contents) - done // batches)
        # A message starts only with room left for one whole message of each peer that may be
        # sending to the same members right now: their sends are counted here once they went
        # out, and two instances starting together went past WeCom's limit (fault campaign).
        reserve = min(self.peer_senders() * MAX_PARTS, MEMBER_PER_MINUTE // 2)
        return max(
            [self._per_minute.ready_at(u, min(needed + reserve, MEMBER_PER_MINUTE)) for u in users]
            + [self._per_hour.ready_at(u, min(needed, MEMBER_PER_HOUR)) for u in users]
        )

    def calls(self, message: Message) -> int:
        try:
            return len(self._contents(message))
        except ChannelError:
            return 1

    def peer_sent(self, recipients: tuple[Member, ...], at: float, calls: int) -> None:
        # WeCom counts per member and application, whichever instance calls.
        for user in dict.fromkeys(m.wechat for m in recipients if m.wechat):
            self._per_minute.record_at(user, at, calls)
            self._per_hour.record_at(user, at, calls)

    def _take_slots(self, users: list[str]) -> None:
        # Checked and recorded with no await in between, so concurrent sends cannot both pass.
        now = self.ctx.clock()
        ready = max(max(self._per_minute.ready_at(u), self._per_hour.ready_at(u)) for u in users)
        if ready > now:
            raise ChannelError(
                f"holding back: WeCom drops more than {MEMBER_PER_MINUTE} messages a minute "
                f"or {MEMBER_PER_HOUR} an hour to one member",
                retry_after=ready - now,
                held=True,
            )
        for user in users:
            self._per_minute.record(user)
            self._per_hour.record(user)

    # --- sending ----------------------------------------------------------------------

    async def send(self, message: Message) -> str:
        calls = self._calls(message)
        contents = self._contents(message)
        key = parts_key(self.name, message, contents)
        invalid: dict[str, list[str]] = {"invaliduser": [], "unlicenseduser": []}
        for index in range(self._parts.get(key), len(calls)):
            content, users = calls[index]
            self._take_slots(users)
            body = await self._send_call(content, users)
            for name, found in invalid.items():
                found += [u for u in str(body.get(name) or "").split("|") if u]
            if len(calls) > 1:
                # Kept when complete too: should the outbox not get to record the delivery
                # (a crash), the retry finds every part sent. Expired with the retention.
                await self._parts.set(key, index + 1)
        notes = [
            f"{name}: {'|'.join(dict.fromkeys(found))}" for name, found in invalid.items() if found
        ]
        if notes:
            log.warning("channel %s: WeCom did not deliver to %s", self.name, "; ".join(notes))
        if len(contents) > 1:
            notes.append(f"sent in {len(contents)} parts")
        return "; ".join(notes)

    async def _send_call(self, content: str, users: list[str]) -> dict[str, Any]:
        s = self.settings
        payload: dict[str, Any] = {
            "touser": "|".join(users),
            "msgtype": s.msgtype,
            "agentid": s.agent_id,
            s.msgtype: {"content": content},
            "safe": 0,
        }
        token = await self._token()
        body = await self._post_send(token, payload)
        if body["errcode"] in TOKEN_ERRORS:
            log.info(
                "channel %s: WeCom rejected the access token (errcode %s); refreshing",
                self.name,
                body["errcode"],
            )
            token = await self._token(rejected=token)
            body = await self._post_send(token, payload)
        if body["errcode"] != 0:
            error = error_for(
                body["errcode"], str(body.get("errmsg", "")), "message/send", *self._secrets(token)
            )
            if body["errcode"] in TOKEN_ERRORS:
                # Even a fresh token was refused: a WeCom hiccup rather than a config error
                # (that would have failed at gettoken); the next attempt refreshes again.
                error.permanent = False
            raise error
        return body

    async def _post_send(self, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await call_api(
            self.ctx.session,
            "POST",
            self.settings.api_url + "message/send",
            what="message/send",
            timeout=self.settings.timeout,
            secrets=self._secrets(token),
            params={"access_token": token},
            payload=payload,
        )

    def _secrets(self, *extra: str) -> tuple[str, ...]:
        return (self.settings.secret, *extra, *self._tokens.secrets(self._token_key))

    # --- access token -----------------------------------------------------------------

    async def _token(self, rejected: str | None = None) -> str:
        """A valid access token: the cached one, or a new one fetched by a single caller."""
        key = self._token_key
        token = self._tokens.valid(key, self.ctx.clock(), rejected)
        if token:
            return token
        async with self._tokens.lock(key):
            # Another caller may have refreshed it while this one waited for the lock.
            token = self._tokens.valid(key, self.ctx.clock(), rejected)
            if token:
                return token
            token, lifetime = await self._fetch_token()
            self._tokens.store(key, token, self.ctx.clock(), lifetime)
            return token

    async def _fetch_token(self) -> tuple[str, float]:
        s = self.settings
        body = await call_api(
            self.ctx.session,
            "GET",
            s.api_url + "gettoken",
            what="gettoken",
            timeout=s.timeout,
            secrets=self._secrets(),
            params={"corpid": s.corp_id, "corpsecret": s.secret},
        )
        if body["errcode"] != 0:
            error = error_for(
                body["errcode"], str(body.get("errmsg", "")), "gettoken", *self._secrets()
            )
            if body["errcode"] in TOKEN_ERRORS:
                # At gettoken these mean a wrong corp_id/secret pair, not an expired token.
                error.permanent = True
            raise error
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ChannelError(
                redact("WeCom gettoken: answer without access_token", *self._secrets())
            )
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 7200.0
        log.debug(
            "channel %s: fetched a WeCom access token for corp %s, valid %gs",
            self.name,
            s.corp_id,
            lifetime,
        )
        return token, lifetime
