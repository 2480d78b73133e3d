"""The console channel: each message printed to standard output, flushed at once."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import ClassVar

from channels.base import Channel, ChannelError
from monitor_manager.models import Message


@dataclass(frozen=True)
class ConsoleSettings:
    pass


class ConsoleChannel(Channel):
    type: ClassVar[str] = "console"
    Settings: ClassVar[builtins.type] = ConsoleSettings

    async def send(self, message: Message) -> str:
        renderer = self.ctx.renderer
        text = renderer.render("subject.txt", message) + "\n" + renderer.render("text.txt", message)
        try:
            self.ctx.stdout.write(f"{text.rstrip()}\n{'-' * 72}\n")
            self.ctx.stdout.flush()
        except (OSError, ValueError) as exc:  # closed or broken stdout
            raise ChannelError(f"cannot write to stdout: {exc}") from exc
        return ""
