"""Channel kinds. `REGISTRY` is the only code that knows every kind."""

from __future__ import annotations

from channels.base import Channel, ChannelContext, ChannelError
from channels.console import ConsoleChannel

REGISTRY: dict[str, type[Channel]] = {
    ConsoleChannel.type: ConsoleChannel,
}


def _register_optional() -> None:
    # Each kind lives in its own module; a module that is not there yet is simply not offered.
    import importlib

    for module, cls in (
        ("channels.email", "EmailChannel"),
        ("channels.wechat", "WechatChannel"),
        ("channels.wechat_robot", "WechatRobotChannel"),
    ):
        try:
            kind = getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError:
            continue
        REGISTRY[kind.type] = kind


_register_optional()

__all__ = ["REGISTRY", "Channel", "ChannelContext", "ChannelError"]
