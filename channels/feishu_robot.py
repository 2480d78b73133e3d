"""Feishu / Lark custom bot (自定义机器人): `type = "feishu_robot"`.

Posts to one group chat through the bot's webhook URL (`.../open-apis/bot/v2/hook/TOKEN`, the
token its only credential) as an interactive card (`msgtype = "interactive"`), rich text
(`"post"`) or plain text (`"text"`), and mentions the members with a Feishu open id (`feishu`,
"ou_..."): `<at id=ou_...></at>` in a card's lark_md, `{"tag": "at", "user_id": "ou_..."}` in
rich text, `<at user_id="ou_...">name</at>` in text.

Facts, from Feishu's published guide "自定义机器人使用指南"
(https://open.larkoffice.com/document/ukTMukTMukTM/ucTM5YjL3ETO24yNxkjN, also
open.feishu.cn/document/client-docs/bot-v3/add-custom-bot), its card docs ("Markdown" component,
https://open.larkoffice.com/document/ukTMukTMukTM/uADOwUjLwgDM14CM4ATN) and what the API answered
users:
- 100 requests a minute and 5 a second per bot; a request body of at most 20 KB (we keep to
  20000 bytes).
- Signing (签名校验): body fields `timestamp` (seconds, within an hour) and `sign` =
  base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")).
- Answers: `{"code": 0, "msg": "success", "data": {}}`; 19021 "sign match fail or timestamp is
  not within one hour from current time"; 19024 "Key Words Not Found"; 19001 "param invalid:
  incoming webhook access token invalid" (a wrong or deleted bot); 11232 frequency limited
  (system pressure around the full and half hour); 9499 is both "too many request" (observed
  with HTTP 400) and, in the guide, "Bad Request" for a malformed body or one over 20 KB: a
  9499 whose msg says "Bad Request" is permanent, any other 9499 a frequency limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
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

PER_MINUTE = 100
PER_SECOND = 5
BODY_LIMIT = 20000  # "请求体的数据大小不能超过 20 KB", read as 20000 bytes to be safe
CONTENT_LIMIT = 8000  # bytes of rendered text per part; requests are then checked whole
FREQ_BACKOFF = 60.0  # a frequency refusal: the bot's minute counts as full
TITLE_LIMIT = 100  # characters of a card header or post title

_HINTS: dict[int, str] = {
    9499: "frequency limit (100 a minute, 5 a second per bot)",
    11232: "frequency limited by Feishu under load",
    19001: "bad webhook token: check webhook_url (the bot may have been removed)",
    19002: "the request was refused as malformed",
    19007: "the bot is disabled (Bot Not Enabled)",
    19021: "signature refused: secret must be the bot's 签名校验 secret, and this server's "
    "clock within an hour of Feishu's (NTP)",
    19022: "this server's address is not in the bot's IP allowlist (IP 白名单)",
    19024: "the message lacks the bot's custom keyword (自定义关键词): use signing (secret) "
    'instead, or the keyword "Monitor Manager", which every message carries',
}
_BAD_REQUEST_HINT = "Feishu could not take the message (malformed, or a body over 20 KB)"
TRANSIENT = frozenset({9499, 11232})
_OPEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Links the templates write; alert text cannot write one ("[" and "]" are neutralised).
_LINK = re.compile(r"\[([^\[\]\n]*)\]\((https?://[^()\s]*)\)")
_COLOURS = {"firing": "red", "resolved": "green", "stale": "grey"}


@dataclass(frozen=True)
class FeishuRobotSettings:
    webhook_url: str = field(repr=False)
    secret: str = field(default="", repr=False)
    msgtype: Literal["interactive", "post", "text"] = "interactive"
    timeout: Duration = 10.0

    def __post_init__(self) -> None:
        # Checked here so that a wrong URL is a config error, not a failed delivery later.
        url = urllib.parse.urlsplit(self.webhook_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("webhook_url must be an http(s) URL")
        if "/hook/" not in url.path or not hook_token(self.webhook_url):
            raise ValueError("webhook_url must end in /hook/TOKEN (the bot's webhook address)")
        if self.secret != self.secret.strip():
            raise ValueError("secret has leading or trailing blanks")


def hook_token(webhook_url: str) -> str:
    path = urllib.parse.urlsplit(webhook_url).path
    return path.rsplit("/hook/", 1)[-1].strip("/") if "/hook/" in path else ""


def signature(timestamp: str, secret: str) -> str:
    """Feishu's `sign`: base64(HMAC-SHA256(key="timestamp\\nsecret", message=empty))."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_marker(index: int, total: int) -> str:
    # Names the product in every part: a bot guarded by the keyword "Monitor Manager" takes
    # every part of a split message.
    return f"Monitor Manager ({index}/{total})\n"


class FeishuRobotChannel(RobotChannel):
    Settings: ClassVar[type] = FeishuRobotSettings  # before `type`, which shadows the builtin
    type: ClassVar[str] = "feishu_robot"
    mentions: ClassVar[tuple[str, ...]] = ("feishu",)
    per_minute: ClassVar[int] = PER_MINUTE
    per_second: ClassVar[int] = PER_SECOND
    max_body: ClassVar[int] = BODY_LIMIT
    templates: ClassVar[dict[str, tuple[str, ...]]] = {
        "interactive": ("feishu.md",),
        "post": ("feishu_post.txt",),
        "text": ("feishu.txt",),
    }

    settings: FeishuRobotSettings

    def robot_id(self) -> str:
        return hashlib.sha256(hook_token(self.settings.webhook_url).encode()).hexdigest()[:16]

    def byte_limit(self) -> int:
        return CONTENT_LIMIT

    def marker(self) -> Marker | None:
        return feishu_marker

    def neutraliser(self) -> Callable[[str], str]:
        return neutralise_markup

    def mention_suffix(self, message: Message) -> str:
        people = _mentions(message.recipients)
        if self.msgtype == "interactive":
            return " ".join(f"<at id={open_id}></at>" for open_id, _ in people)
        if self.msgtype == "text":
            return " ".join(
                f'<at user_id="{open_id}">{neutralise_markup(name)}</at>'
                for open_id, name in people
            )
        return ""  # post: at elements in a paragraph of their own, with the last part

    def body_size(self, content: str, message: Message, *, last: bool) -> int:
        payload = self._payload(content, message, last=last)
        if self.settings.secret:
            payload = {"timestamp": "1800000000", "sign": "=" * 44, **payload}
        return len(json.dumps(payload, ensure_ascii=False).encode())

    async def post(self, content: str, message: Message, *, last: bool) -> None:
        secrets = self._secrets()
        payload = self._payload(content, message, last=last)
        if self.settings.secret:
            timestamp = str(int(self.ctx.clock()))
            payload = {
                "timestamp": timestamp,
                "sign": signature(timestamp, self.settings.secret),
                **payload,
            }
        body = await call_json(
            self.ctx.session,
            "POST",
            self.settings.webhook_url,
            service="Feishu",
            what="bot/v2/hook",
            timeout=self.settings.timeout,
            secrets=secrets,
            payload=payload,
            code_field="code",
            coded_errors=True,  # a frequency refusal comes with HTTP 400
        )
        code = body["code"]
        if code == 0:
            return
        error = error_for(code, str(body.get("msg", "")), *secrets)
        if error.retry_after:
            self.fill_window()
        raise error

    def _secrets(self) -> tuple[str, ...]:
        return (
            hook_token(self.settings.webhook_url),
            self.settings.webhook_url,
            self.settings.secret,
        )

    def title(self, message: Message) -> str:
        subject = self.ctx.renderer.subject(neutralise_message(message, neutralise_markup))
        return subject if len(subject) <= TITLE_LIMIT else subject[: TITLE_LIMIT - 1] + "…"

    def _payload(self, content: str, message: Message, *, last: bool) -> dict[str, Any]:
        if self.msgtype == "text":
            return {"msg_type": "text", "content": {"text": content}}
        if self.msgtype == "post":
            paragraphs = [_paragraph(line) for line in content.split("\n")]
            people = _mentions(message.recipients) if last else []
            if people:
                paragraphs.append(
                    [
                        {"tag": "at", "user_id": open_id, "user_name": name}
                        for open_id, name in people
                    ]
                )
            post = {"title": self.title(message), "content": paragraphs}
            # One language: Feishu shows the only one given whatever the reader's language.
            lang = "zh_cn" if self.ctx.renderer.language == "zh" else "en_us"
            return {"msg_type": "post", "content": {"post": {lang: post}}}
        status = message.kind if message.kind in ("test", "report") else message.status
        card = {
            "config": {"wide_screen_mode": True},
            "header": {
                "title": {"tag": "plain_text", "content": self.title(message)},
                "template": _COLOURS.get(status, "blue"),
            },
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": content}}],
        }
        return {"msg_type": "interactive", "card": card}


def _paragraph(line: str) -> list[dict[str, str]]:
    """One line of rendered rich text as post elements: text, and links the template wrote."""
    elements: list[dict[str, str]] = []
    pos = 0
    for m in _LINK.finditer(line):
        if m.start() > pos:
            elements.append({"tag": "text", "text": line[pos : m.start()]})
        elements.append({"tag": "a", "text": m.group(1) or m.group(2), "href": m.group(2)})
        pos = m.end()
    if pos < len(line) or not elements:
        elements.append({"tag": "text", "text": line[pos:]})
    return elements


def _mentions(members: tuple[Member, ...]) -> list[tuple[str, str]]:
    """(open id, name) of each member with a well-formed Feishu open id, once each."""
    seen: dict[str, str] = {}
    for m in members:
        open_id = m.feishu.strip()
        if open_id and _OPEN_ID.fullmatch(open_id) and open_id not in seen:
            seen[open_id] = m.name
    return list(seen.items())


def error_for(code: int, msg: str, *secrets: str) -> ChannelError:
    """The ChannelError for a non-zero code, classified, with a hint saying what to fix."""
    bad_request = code == 9499 and "bad request" in msg.lower()
    hint = _BAD_REQUEST_HINT if bad_request else _HINTS.get(code, "")
    reason = f"Feishu bot/v2/hook: code {code}"
    reason += f" ({hint})" if hint else ""
    reason += f": {msg[:200]}" if msg else ""
    reason = redact(reason, *secrets)
    if code in TRANSIENT and not bad_request:
        return ChannelError(reason, retry_after=FREQ_BACKOFF)
    return ChannelError(reason, permanent=True)
