"""The console channel: each message printed to standard output, flushed at once.

Alert text reaches a terminal here: control characters (C0, C1, DEL) and bidirectional
overrides are written as visible escapes, so a label cannot move the cursor, clear the screen,
retitle the window or disguise a line. Inside label and annotation values line breaks are
escaped too, so a value cannot forge lines of its own.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import ClassVar

from monitor_manager.channels.base import Channel, ChannelError
from monitor_manager.models import Message, map_text

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_VALUE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, value: bool = False) -> str:
    """`text` with every control character shown as an escape (`\\x1b`); line breaks and tabs
    stay unless `value`."""
    return (_VALUE_CONTROL if value else _CONTROL).sub(_escape, text)


@dataclass(frozen=True)
class ConsoleSettings:
    pass


class ConsoleChannel(Channel):
    type: ClassVar[str] = "console"
    Settings: ClassVar[builtins.type] = ConsoleSettings

    async def send(self, message: Message) -> str:
        renderer = self.ctx.renderer
        message = map_text(message, lambda v: printable(v, value=True))
        text = printable(renderer.subject(message) + "\n" + renderer.render("text.txt", message))
        try:
            self.ctx.stdout.write(f"{text.rstrip()}\n{'-' * 72}\n")
            self.ctx.stdout.flush()
        except (OSError, ValueError) as exc:  # closed or broken stdout
            raise ChannelError(f"cannot write to stdout: {exc}") from exc
        return ""
