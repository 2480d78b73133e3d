"""DingTalk custom robot (自定义机器人): `type = "dingtalk_robot"`.

Posts to one group chat through the robot's webhook URL, whose `access_token` is its only
credential, and mentions the contact group's members: by DingTalk user id (`dingtalk`) where a
member has one, else by mobile (`mobile`), through the body's `at.atUserIds`/`at.atMobiles`;
the mentioned ids and mobiles also appear in the text as `@...`, which markdown requires
(DingTalk shows a mention only where its `@` stands in the text).

Facts, from DingTalk's published pages (open.dingtalk.com "自定义机器人接入",
https://open.dingtalk.com/document/group/custom-robot-access, and "自定义机器人安全设置"; copies
seen in the search corpus, e.g. https://cnblogs.com/Fogram-c/p/16992729.html) and from what the
API answered users:
- `POST .../robot/send?access_token=T`, JSON `{"msgtype": "text", "text": {"content"}, "at":
  {...}}` or `{"msgtype": "markdown", "markdown": {"title", "text"}, "at": {...}}`; the answer
  is HTTP 200 `{"errcode": 0, "errmsg": "ok"}`.
- 20 messages a minute per robot; past that the robot is throttled for 10 minutes (errcode
  130101 "send too fast").
- Signing (加签): `&timestamp=MS&sign=S`, MS the time in milliseconds (within an hour of
  DingTalk's clock), S = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{MS}\\n{secret}"))).
- Security refusals (keyword missing, bad signature, stale timestamp, IP not allowed) are errcode
  310000, told apart only by errmsg ("keywords not in content", "sign not match", "invalid
  timestamp", "ip X not in whitelist"); a bad token is 300001 (also seen: 300005 "token is not
  exist").
- Size: DingTalk documents no content limit for robot messages. The API refuses bodies over
  20000 bytes (errcode 460101 "message too long, exceed 20000 bytes", quoted in
  timonwong/prometheus-webhook-dingtalk issue 30 and Le0nsec/SecCrawler issue 12; newer answers
  say "body 大小不合法...请保持大小在 20000bytes 以内", ZhuLinsen/daily_stock_analysis issue 61).
  We keep every request body within 20000 bytes and, being conservative about an undocumented
  display limit, split content at 5000 UTF-8 bytes (DingTalk's older chat-message API caps
  markdown at 5000 characters, errcode 34016).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from monitor_manager.channels.base import ChannelError, redact
from monitor_manager.channels.chat_text import neutralise_markup, neutralise_message
from monitor_manager.channels.http_json import call_json
from monitor_manager.channels.robot import RobotChannel
from monitor_manager.channels.text_parts import Marker
from monitor_manager.durations import Duration
from monitor_manager.models import Member, Message

PER_MINUTE = 20
THROTTLE = 600.0  # DingTalk throttles a robot for 10 minutes once it went past its limit
BODY_LIMIT = 20000  # bytes of one request body (errcode 460101 past it; see above)
CONTENT_LIMIT = 5000  # bytes of content per part: conservative, see above
TITLE_LIMIT = 64  # characters of a markdown title (the notification preview)

# Codes worth retrying: system busy, and the frequency limit (after the throttle). Every other
# code is a configuration or content error that the same request meets again.
TRANSIENT = frozenset({-1, 130101})

_HINTS: dict[int, str] = {
    -1: "DingTalk is busy",
    130101: "send too fast: DingTalk throttles a robot for 10 minutes past 20 messages a "
    "minute; does something else post through this robot too?",
    300001: "bad access_token: check webhook_url (the robot may have been removed or its "
    "webhook reset)",
    300005: "bad access_token: check webhook_url (the robot may have been removed)",
    310000: "refused by the robot's security settings",
    40035: "webhook_url lacks access_token",
    460101: "message too long",
}
# errcode 310000 says what to fix only in its errmsg.
_SECURITY_HINTS = (
    (
        "keyword",
        "the message lacks the robot's custom keyword (自定义关键词): use signing "
        '(secret) instead, or the keyword "Monitor Manager", which every message carries',
    ),
    ("sign", "the signature does not match: secret must be the robot's 加签 secret (SEC...)"),
    (
        "timestamp",
        "the timestamp is refused: this server's clock is more than an hour off; sync it (NTP)",
    ),
    ("whitelist", "this server's address is not in the robot's IP allowlist (IP地址段)"),
    ("ip ", "this server's address is not in the robot's IP allowlist (IP地址段)"),
)


@dataclass(frozen=True)
class DingtalkRobotSettings:
    webhook_url: str = field(repr=False)
    secret: str = field(default="", repr=False)
    msgtype: Literal["markdown", "text"] = "markdown"
    timeout: Duration = 10.0

    def __post_init__(self) -> None:
        # Checked here so that a wrong URL is a config error, not a failed delivery later.
        url = urllib.parse.urlsplit(self.webhook_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("webhook_url must be an http(s) URL")
        if not access_token(self.webhook_url):
            raise ValueError("webhook_url has no access_token= parameter")
        if self.secret != self.secret.strip():
            raise ValueError("secret has leading or trailing blanks")


def access_token(webhook_url: str) -> str:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(webhook_url).query).get("access_token")
    return values[0] if values else ""


def signature(timestamp_ms: str, secret: str) -> str:
    """DingTalk's `sign` before URL encoding: base64(HMAC-SHA256(secret, "MS\\nsecret"))."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def dingtalk_marker(index: int, total: int) -> str:
    # Names the product in every part: a robot guarded by the keyword "Monitor Manager" takes
    # every part of a split message.
    return f"Monitor Manager ({index}/{total})\n\n"


class DingtalkRobotChannel(RobotChannel):
    Settings: ClassVar[type] = DingtalkRobotSettings  # before `type`, which shadows the builtin
    type: ClassVar[str] = "dingtalk_robot"
    mentions: ClassVar[tuple[str, ...]] = ("dingtalk", "mobile")
    per_minute: ClassVar[int] = PER_MINUTE
    max_body: ClassVar[int] = BODY_LIMIT
    templates: ClassVar[dict[str, tuple[str, ...]]] = {
        "markdown": ("dingtalk.md",),
        "text": ("dingtalk.txt",),
    }

    settings: DingtalkRobotSettings

    def robot_id(self) -> str:
        return hashlib.sha256(access_token(self.settings.webhook_url).encode()).hexdigest()[:16]

    def byte_limit(self) -> int:
        return CONTENT_LIMIT

    def marker(self) -> Marker | None:
        return dingtalk_marker

    def neutraliser(self) -> Callable[[str], str]:
        return neutralise_markup

    def mention_suffix(self, message: Message) -> str:
        user_ids, mobiles = _mentions(message.recipients)
        return " ".join(f"@{neutralise_markup(v)}" for v in user_ids + mobiles)

    def body_size(self, content: str, message: Message, *, last: bool) -> int:
        return len(_encode(self._payload(content, message, last=last)))

    async def post(self, content: str, message: Message, *, last: bool) -> None:
        secrets = self._secrets()
        params = None
        if self.settings.secret:
            timestamp = str(int(self.ctx.clock() * 1000))
            sign = signature(timestamp, self.settings.secret)
            params = {"timestamp": timestamp, "sign": sign}
            secrets += (sign, urllib.parse.quote(sign, safe=""))
        body = await call_json(
            self.ctx.session,
            "POST",
            self.settings.webhook_url,
            service="DingTalk",
            what="robot/send",
            timeout=self.settings.timeout,
            secrets=secrets,
            params=params,
            payload=self._payload(content, message, last=last),
            coded_errors=True,
        )
        errcode = body["errcode"]
        if errcode == 0:
            return
        if errcode == 130101:
            self.hold(THROTTLE)
        raise error_for(errcode, str(body.get("errmsg", "")), *secrets)

    def _secrets(self) -> tuple[str, ...]:
        token = access_token(self.settings.webhook_url)
        return (
            token,
            urllib.parse.quote(token, safe=""),
            self.settings.webhook_url,
            self.settings.secret,
        )

    def title(self, message: Message) -> str:
        """The markdown title DingTalk shows in the chat list and the notification."""
        subject = self.ctx.renderer.subject(neutralise_message(message, neutralise_markup))
        return subject if len(subject) <= TITLE_LIMIT else subject[: TITLE_LIMIT - 1] + "…"

    def _payload(self, content: str, message: Message, *, last: bool) -> dict[str, Any]:
        at: dict[str, Any] = {"isAtAll": False}
        if last:
            user_ids, mobiles = _mentions(message.recipients)
            if user_ids:
                at["atUserIds"] = user_ids
            if mobiles:
                at["atMobiles"] = mobiles
        if self.markdown:
            body = {
                "msgtype": "markdown",
                "markdown": {"title": self.title(message), "text": content},
            }
        else:
            body = {"msgtype": "text", "text": {"content": content}}
        return {**body, "at": at}


def _mentions(members: tuple[Member, ...]) -> tuple[list[str], list[str]]:
    """DingTalk user ids, and the mobiles of members without one (each person once)."""
    user_ids = list(dict.fromkeys(m.dingtalk.strip() for m in members if m.dingtalk.strip()))
    mobiles = list(
        dict.fromkeys(
            m.mobile.strip() for m in members if m.mobile.strip() and not m.dingtalk.strip()
        )
    )
    return user_ids, mobiles


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()  # as call_json sends it


def error_for(errcode: int, errmsg: str, *secrets: str) -> ChannelError:
    """The ChannelError for a non-zero errcode, classified, with a hint saying what to fix."""
    hint = _HINTS.get(errcode, "")
    if errcode == 310000:
        lowered = errmsg.lower()
        hint = next(
            (h for word, h in _SECURITY_HINTS if word in lowered),
            hint + (": keyword, signature (secret), timestamp (clock) or IP allowlist"),
        )
    reason = f"DingTalk robot/send: errcode {errcode}"
    reason += f" ({hint})" if hint else ""
    reason += f": {errmsg[:200]}" if errmsg else ""
    reason = redact(reason, *secrets)
    if errcode == 130101:
        return ChannelError(reason, retry_after=THROTTLE)
    return ChannelError(reason, permanent=errcode not in TRANSIENT)
