"""WeCom group robot (群机器人): `type = "wechat_robot"`.

Posts to the group chat through the robot's webhook URL, whose `key` is its only credential,
and mentions the contact group's members: in markdown as `<@userid>`, in text through
`mentioned_list` (wechat ids) and `mentioned_mobile_list` (mobiles of members without a wechat
id; markdown cannot mention by mobile). A robot accepts 20 messages a minute; robot markdown
takes 4096 UTF-8 bytes, text 2048 (developer.work.weixin.qq.com/document/path/91770).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from monitor_manager.channels.chat_text import neutralise
from monitor_manager.channels.robot import RobotChannel
from monitor_manager.channels.text_parts import Marker
from monitor_manager.channels.wecom_api import (
    ROBOT_MARKDOWN_LIMIT,
    ROBOT_TEXT_LIMIT,
    call_api,
    error_for,
    markdown_marker,
)
from monitor_manager.durations import Duration
from monitor_manager.models import Member, Message

ROBOT_PER_MINUTE = 20


@dataclass(frozen=True)
class WechatRobotSettings:
    webhook_url: str = field(repr=False)
    msgtype: Literal["markdown", "text"] = "markdown"
    timeout: Duration = 10.0

    def __post_init__(self) -> None:
        # Checked here so that a wrong URL is a config error, not a failed delivery later.
        url = urllib.parse.urlsplit(self.webhook_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("webhook_url must be an http(s) URL")
        if not robot_key(self.webhook_url):
            raise ValueError("webhook_url has no key= parameter")


def robot_key(webhook_url: str) -> str:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(webhook_url).query).get("key")
    return values[0] if values else ""


class WechatRobotChannel(RobotChannel):
    Settings: ClassVar[type] = WechatRobotSettings  # before `type`, which would shadow the builtin
    type: ClassVar[str] = "wechat_robot"
    mentions: ClassVar[tuple[str, ...]] = ("wechat", "mobile")
    per_minute: ClassVar[int] = ROBOT_PER_MINUTE
    templates: ClassVar[dict[str, tuple[str, ...]]] = {
        "markdown": ("robot.md", "wechat.md"),
        "text": ("robot.txt", "wechat.txt"),
    }

    settings: WechatRobotSettings

    def robot_id(self) -> str:
        return hashlib.sha256(robot_key(self.settings.webhook_url).encode()).hexdigest()[:16]

    def byte_limit(self) -> int:
        return ROBOT_MARKDOWN_LIMIT if self.markdown else ROBOT_TEXT_LIMIT

    def marker(self) -> Marker | None:
        return markdown_marker if self.markdown else None

    def mention_suffix(self, message: Message) -> str:
        if not self.markdown:
            return ""  # text mentions go in mentioned_list, with the last part
        return " ".join(f"<@{neutralise(u)}>" for u in _wechat_ids(message.recipients))

    async def post(self, content: str, message: Message, *, last: bool) -> None:
        secrets = (robot_key(self.settings.webhook_url), self.settings.webhook_url)
        body = await call_api(
            self.ctx.session,
            "POST",
            self.settings.webhook_url,
            what="robot webhook/send",
            timeout=self.settings.timeout,
            secrets=secrets,
            payload=self._payload(content, message, mention=last),
        )
        errcode = body["errcode"]
        if errcode == 0:
            return
        if errcode == 45009:
            self.fill_window()
        raise error_for(errcode, str(body.get("errmsg", "")), "robot webhook/send", *secrets)

    def _payload(self, content: str, message: Message, *, mention: bool) -> dict[str, Any]:
        if self.markdown:
            return {"msgtype": "markdown", "markdown": {"content": content}}
        text: dict[str, Any] = {"content": content}
        if mention:
            ids = _wechat_ids(message.recipients)
            mobiles = list(
                dict.fromkeys(m.mobile for m in message.recipients if m.mobile and not m.wechat)
            )
            if ids:
                text["mentioned_list"] = ids
            if mobiles:
                text["mentioned_mobile_list"] = mobiles
        return {"msgtype": "text", "text": text}


def _wechat_ids(members: tuple[Member, ...]) -> list[str]:
    return list(dict.fromkeys(m.wechat for m in members if m.wechat))
