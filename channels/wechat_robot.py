"""WeCom group robot (群机器人): `type = "wechat_robot"`.

Posts to the group chat through the robot's webhook URL, whose `key` is its only credential,
and mentions the contact group's members: in markdown as `<@userid>`, in text through
`mentioned_list` (wechat ids) and `mentioned_mobile_list` (mobiles of members without a wechat
id; markdown cannot mention by mobile).

A robot accepts 20 messages a minute. The channel counts its calls per robot and tells the
outbox, through `ready_at`, when the next message fits; the outbox merges what queues up
meanwhile into one digest.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import jinja2

from monitor_manager.channels.base import (
    Channel,
    ChannelContext,
    ChannelError,
    SlidingWindowLimiter,
)
from monitor_manager.channels.wechat import parts_key, shared
from monitor_manager.channels.wecom_format import (
    ROBOT_MARKDOWN_LIMIT,
    ROBOT_TEXT_LIMIT,
    RateLimited,
    call_api,
    error_for,
    neutralise,
    neutralise_message,
    overflow_note,
    split_content,
    tidy,
)
from monitor_manager.durations import Duration
from monitor_manager.models import Member, Message

log = logging.getLogger(__name__)

ROBOT_PER_MINUTE = 20
WINDOW_SLACK = 1.0  # see channels.wechat


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


class WechatRobotChannel(Channel):
    Settings: ClassVar[type] = WechatRobotSettings  # before `type`, which would shadow the builtin
    type: ClassVar[str] = "wechat_robot"
    merges_backlog: ClassVar[bool] = True

    settings: WechatRobotSettings

    def __init__(self, name: str, settings: WechatRobotSettings, ctx: ChannelContext) -> None:
        super().__init__(name, settings, ctx)
        self._key = robot_key(settings.webhook_url)
        # Channels posting through the same robot share its limit.
        self._robot = hashlib.sha256(self._key.encode()).hexdigest()[:16]
        self._limiter: SlidingWindowLimiter = shared(
            ctx,
            "wecom.robots",
            lambda: SlidingWindowLimiter(ROBOT_PER_MINUTE, 60.0 + WINDOW_SLACK, ctx.clock),
        )
        self._parts = ctx.parts
        self._rendered: tuple[Message, list[str]] | None = None

    @property
    def _markdown(self) -> bool:
        return self.settings.msgtype == "markdown"

    def _contents(self, message: Message) -> list[str]:
        """The message rendered (with its mentions) and split into parts (cached)."""
        if self._rendered and self._rendered[0] is message:
            return self._rendered[1]
        if self._markdown:
            text = self._render(("robot.md", "wechat.md"), neutralise_message(message))
            mentions = " ".join(f"<@{neutralise(u)}>" for u in _wechat_ids(message.recipients))
            # At the end, so the mention arrives with the last part of the message.
            text = f"{text}\n\n{mentions}" if mentions else text
            limit = ROBOT_MARKDOWN_LIMIT
        else:
            # Neutralised in text too: WeCom renders <@userid> mentions there as well.
            text = self._render(("robot.txt", "wechat.txt"), neutralise_message(message))
            limit = ROBOT_TEXT_LIMIT
        contents = split_content(
            text,
            limit,
            markdown=self._markdown,
            overflow=overflow_note(message, self.ctx.renderer.language, markdown=self._markdown),
        )
        self._rendered = (message, contents)
        return contents

    def _render(self, names: tuple[str, ...], message: Message) -> str:
        # robot.* lets a robot look different from application messages; wechat.* otherwise.
        for name in names:
            try:
                text = tidy(self.ctx.renderer.render(name, message))
            except jinja2.TemplateNotFound as exc:
                if exc.name != name:
                    raise ChannelError(f"template error: {exc}", permanent=True) from None
                continue
            except jinja2.TemplateError as exc:
                raise ChannelError(f"template error: {exc}", permanent=True) from None
            if not text:
                raise ChannelError("the template rendered an empty message", permanent=True)
            return text
        raise ChannelError(f"no template {' or '.join(names)}", permanent=True)

    def ready_at(self, message: Message) -> float:
        try:
            contents = self._contents(message)
        except ChannelError:
            return 0.0  # send() reports the problem
        needed = len(contents) - self._parts.get(parts_key(self.name, message, contents))
        return self._limiter.ready_at(self._robot, min(max(needed, 1), ROBOT_PER_MINUTE))

    def _take_slot(self) -> None:
        # Checked and recorded with no await in between, so concurrent sends cannot both pass.
        now = self.ctx.clock()
        ready = self._limiter.ready_at(self._robot)
        if ready > now:
            raise RateLimited(
                f"holding back: a WeCom robot accepts {ROBOT_PER_MINUTE} messages a minute",
                ready - now,
            )
        self._limiter.record(self._robot)

    async def send(self, message: Message) -> str:
        contents = self._contents(message)
        key = parts_key(self.name, message, contents)
        for index in range(self._parts.get(key), len(contents)):
            last = index == len(contents) - 1
            self._take_slot()
            await self._post(self._payload(contents[index], message, mention=last))
            if len(contents) > 1:  # kept when complete too, as the app channel does
                await self._parts.set(key, index + 1)
        return f"sent in {len(contents)} parts" if len(contents) > 1 else ""

    def _payload(self, content: str, message: Message, *, mention: bool) -> dict[str, Any]:
        if self._markdown:
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

    async def _post(self, payload: dict[str, Any]) -> None:
        secrets = (self._key, self.settings.webhook_url)
        body = await call_api(
            self.ctx.session,
            "POST",
            self.settings.webhook_url,
            what="robot webhook/send",
            timeout=self.settings.timeout,
            secrets=secrets,
            payload=payload,
        )
        errcode = body["errcode"]
        if errcode == 0:
            return
        if errcode == 45009:
            # Someone else posts through this robot too: treat its window as full for a minute.
            self._limiter.record(self._robot, ROBOT_PER_MINUTE)
        raise error_for(errcode, str(body.get("errmsg", "")), "robot webhook/send", *secrets)


def _wechat_ids(members: tuple[Member, ...]) -> list[str]:
    return list(dict.fromkeys(m.wechat for m in members if m.wechat))
