"""Channel kinds. `REGISTRY` is the only code that knows every kind."""

from __future__ import annotations

from monitor_manager.channels.base import Channel, ChannelContext, ChannelError
from monitor_manager.channels.console import ConsoleChannel
from monitor_manager.channels.dingtalk_robot import DingtalkRobotChannel
from monitor_manager.channels.email import EmailChannel
from monitor_manager.channels.feishu_robot import FeishuRobotChannel
from monitor_manager.channels.webhook import WebhookChannel
from monitor_manager.channels.wechat import WechatChannel
from monitor_manager.channels.wechat_robot import WechatRobotChannel

REGISTRY: dict[str, type[Channel]] = {
    kind.type: kind
    for kind in (
        ConsoleChannel,
        EmailChannel,
        WechatChannel,
        WechatRobotChannel,
        DingtalkRobotChannel,
        FeishuRobotChannel,
        WebhookChannel,
    )
}

__all__ = ["REGISTRY", "Channel", "ChannelContext", "ChannelError"]
