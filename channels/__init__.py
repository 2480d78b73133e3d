"""Channel kinds. `REGISTRY` is the only code that knows every kind."""

from __future__ import annotations

from channels.base import Channel, ChannelContext, ChannelError
from channels.console import ConsoleChannel
from channels.email import EmailChannel
from channels.wechat import WechatChannel
from channels.wechat_robot import WechatRobotChannel

REGISTRY: dict[str, type[Channel]] = {
    kind.type: kind
    for kind in (ConsoleChannel, EmailChannel, WechatChannel, WechatRobotChannel)
}

__all__ = ["REGISTRY", "Channel", "ChannelContext", "ChannelError"]
