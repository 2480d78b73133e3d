"""What every group-chat robot shares (WeCom, DingTalk, Feishu): render, split, pace, resume.

A robot posts to one group chat through a webhook URL whose token is its only credential. A
subclass says how big one post may be, which templates render it, how many posts the platform
takes a minute (and a second), and how one part is posted and its answer classified; this
class does the rest:
- alert text is neutralised before any template sees it (`chat_text.render_chat`);
- the message is split at the byte limit into at most five numbered parts
  (`text_parts.split_content`), the mentions arriving with the last;
- posts are paced below the platform's limits: `ready_at` tells the outbox when the next
  message fits, and the outbox merges what queues up meanwhile into one digest;
- a message retried after some of its parts went out (also after a restart) resumes after them
  (`ChannelContext.parts`);
- where a platform limits the whole request body (DingTalk, Feishu: 20000 bytes), parts whose
  request would not fit (JSON escaping, mention lists, card structure) are split smaller;
- when the platform says stop for a while (DingTalk throttles a robot ten minutes past its
  limit), `hold` keeps every channel of that robot from posting until then.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from monitor_manager.channels.base import (
    Channel,
    ChannelContext,
    ChannelError,
    SlidingWindowLimiter,
    parts_key,
)
from monitor_manager.channels.chat_text import neutralise, overflow_note, render_chat
from monitor_manager.channels.text_parts import Marker, split_content
from monitor_manager.models import Member, Message

# A little more than the platform's window, so that network delay cannot crowd it: a second on
# a minute, a fifth of a second on a second.
WINDOW_SLACK = 1.0
SECOND_SLACK = 0.2
_SHRINK_TRIES = 8  # re-splits at a smaller limit before a message is declared unsendable
_MIN_PART = 512  # bytes of content below which re-splitting stops


class RobotChannel(Channel):
    merges_backlog: ClassVar[bool] = True
    per_minute: ClassVar[int]  # posts a minute per robot
    per_second: ClassVar[int] = 0  # posts a second per robot; 0: no such limit
    # Per msgtype, the templates to try in order (the first found renders the message).
    templates: ClassVar[dict[str, tuple[str, ...]]]
    # UTF-8 bytes one whole request body may take (0: the platform limits the content only).
    max_body: ClassVar[int] = 0

    def __init__(self, name: str, settings: object, ctx: ChannelContext) -> None:
        super().__init__(name, settings, ctx)
        robot = f"robot.{self.type}.{self.robot_id()}"  # channels of one robot share its limits
        self._limiters = [
            ctx.shared(
                f"{robot}.{window}",
                partial(SlidingWindowLimiter, n, window + slack, ctx.clock),
            )
            for n, window, slack in (
                (self.per_minute, 60.0, WINDOW_SLACK),
                (self.per_second, 1.0, SECOND_SLACK),
            )
            if n
        ]
        self._robot = robot
        # When the robot may post again after the platform said stop (shared, like the limits).
        self._hold: list[float] = ctx.shared(f"{robot}.hold", lambda: [0.0])
        self._rendered: tuple[Message, list[str]] | None = None

    # -- what a kind says -------------------------------------------------------------------
    @property
    def msgtype(self) -> str:
        msgtype: str = self.settings.msgtype  # type: ignore[attr-defined]
        return msgtype

    @property
    def markdown(self) -> bool:
        return self.msgtype != "text"

    @abstractmethod
    def robot_id(self) -> str:
        """A stable name of the robot (a hash of its token: never the token itself)."""

    @abstractmethod
    def byte_limit(self) -> int:
        """UTF-8 bytes one post of the current msgtype may carry."""

    def marker(self) -> Marker | None:
        """The "(2/3)" marker of split parts; None: the plain default."""
        return None

    def mention_suffix(self, message: Message) -> str:
        """Text appended to the rendered message to mention its recipients ("" for none)."""
        return ""

    def neutraliser(self) -> Callable[[str], str]:
        """How alert text is made inert before the templates see it (WeCom's by default)."""
        return neutralise

    def body_size(self, content: str, message: Message, *, last: bool) -> int:
        """UTF-8 bytes of the request that would post `content` (checked when `max_body`)."""
        return 0

    @abstractmethod
    async def post(self, content: str, message: Message, *, last: bool) -> None:
        """Post one part; raise ChannelError classified from the platform's answer."""

    # -- the shared flow --------------------------------------------------------------------
    def contents(self, message: Message) -> list[str]:
        """The message rendered (with its mentions) and split into parts (cached)."""
        if self._rendered and self._rendered[0] is message:
            return self._rendered[1]
        text = render_chat(
            self.ctx.renderer, self.templates[self.msgtype], message, self.neutraliser()
        )
        suffix = self.mention_suffix(message)
        text = f"{text}\n\n{suffix}" if suffix else text  # at the end: with the last part
        limit = self.byte_limit()
        for _ in range(_SHRINK_TRIES):
            contents = split_content(
                text,
                limit,
                markdown=self.markdown,
                marker=self.marker(),
                overflow=overflow_note(message, self.ctx.renderer.language, markdown=self.markdown),
            )
            biggest = self._biggest_body(contents, message)
            if biggest <= self.max_body:
                break
            # Escaping and structure made a request too big: a proportionally smaller limit.
            limit = min(limit - 64, limit * self.max_body // biggest)
            if limit < _MIN_PART:
                break
        else:
            biggest = self.max_body + 1
        if biggest > self.max_body:
            raise ChannelError(
                f"the message cannot be split into requests of at most {self.max_body} bytes",
                permanent=True,
            )
        self._rendered = (message, contents)
        return contents

    def _biggest_body(self, contents: list[str], message: Message) -> int:
        if not self.max_body:
            return 0
        last = len(contents) - 1
        return max(self.body_size(c, message, last=i == last) for i, c in enumerate(contents))

    def ready_at(self, message: Message) -> float:
        try:
            contents = self.contents(message)
        except ChannelError:
            return 0.0  # send() reports the problem
        needed = len(contents) - self.ctx.parts.get(parts_key(self.name, message, contents))
        return max(
            self._held_until(),
            *(
                limiter.ready_at(self._robot, min(max(needed, 1), limiter.limit))
                for limiter in self._limiters
            ),
        )

    def _held_until(self) -> float:
        return self._hold[0] if self._hold[0] > self.ctx.clock() else 0.0

    def hold(self, seconds: float) -> None:
        """The platform said stop for `seconds`: no channel of this robot posts before then."""
        self._hold[0] = max(self._hold[0], self.ctx.clock() + seconds)

    def _take_slot(self) -> None:
        # Checked and recorded with no await in between, so concurrent sends cannot both pass.
        now = self.ctx.clock()
        held = self._held_until()
        if held > now:
            raise ChannelError(
                f"holding back: the {self.type} robot asked for a pause", retry_after=held - now
            )
        ready = max(limiter.ready_at(self._robot) for limiter in self._limiters)
        if ready > now:
            raise ChannelError(
                f"holding back: a {self.type} robot accepts {self.per_minute} messages a minute"
                + (f" and {self.per_second} a second" if self.per_second else ""),
                retry_after=ready - now,
                held=True,
            )
        for limiter in self._limiters:
            limiter.record(self._robot)

    def calls(self, message: Message) -> int:
        try:
            return len(self.contents(message))
        except ChannelError:
            return 1

    def peer_sent(self, recipients: tuple[Member, ...], at: float, calls: int) -> None:
        # The platform counts per robot, whichever instance posts.
        for limiter in self._limiters:
            limiter.record_at(self._robot, at, calls)

    def fill_window(self) -> None:
        """Someone else posts through this robot too (the platform said: too fast): count
        its minute as full."""
        self._limiters[0].record(self._robot, self.per_minute)

    async def send(self, message: Message) -> str:
        contents = self.contents(message)
        key = parts_key(self.name, message, contents)
        for index in range(self.ctx.parts.get(key), len(contents)):
            self._take_slot()
            await self.post(contents[index], message, last=index == len(contents) - 1)
            if len(contents) > 1:  # kept when complete too: a crash before the outbox
                await self.ctx.parts.set(key, index + 1)  # records it resumes at the end
        return f"sent in {len(contents)} parts" if len(contents) > 1 else ""
