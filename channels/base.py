"""The one interface every channel implements, and the one error type it raises.

The outbox decides what to do with a failure from `ChannelError.permanent`; channels never
retry on their own (a WeCom token refresh is part of one send, not a retry).
"""

from __future__ import annotations

import bisect
import builtins
import collections
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TextIO, TypeVar

import aiohttp

from monitor_manager.clock import Clock
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Member, Message

T = TypeVar("T")


class ChannelError(Exception):
    """A send failed. `permanent` means retrying the same message cannot succeed."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        recipients_refused: bool = False,
        held: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        # Seconds before a retry may help (a rate limit hit; an HTTP Retry-After): at least
        # this long, whatever the backoff says.
        self.retry_after = retry_after
        # The destination works and refused these recipients (e.g. every RCPT refused): a
        # fact about them, not about the channel.
        self.recipients_refused = recipients_refused
        # Held back by this instance's own count of a platform's rate limit: the platform was
        # not called, so it says nothing about the channel's health (no ChannelFailing).
        self.held = held

    def __str__(self) -> str:
        return self.reason


class PartlySent(ChannelError):
    """Some recipients got the message; the destination asked to try the others again later
    (an SMTP 4xx for one recipient, such as greylisting). The outbox records `note` and
    retries, with the usual backoff, for the recipients in `retry` only, named as configured
    (a member's `email`, `wechat` or `mobile` value)."""

    def __init__(self, reason: str, *, note: str, retry: tuple[str, ...]) -> None:
        super().__init__(reason, permanent=False)
        self.note = note
        self.retry = retry


class PartsLog(Protocol):
    """How many parts of a message sent in parts already went out, by a key the channel
    makes; a retry resumes after them."""

    def get(self, key: str) -> int: ...
    async def set(self, key: str, done: int) -> None: ...


class MemoryPartsLog:
    """A PartsLog in memory only (send-test, channel tests): after a restart a retried
    message is sent whole (at least once). The service keeps one in its store."""

    def __init__(self, size: int = 1000) -> None:
        self._done: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._size = size

    def get(self, key: str) -> int:
        return self._done.get(key, 0)

    async def set(self, key: str, done: int) -> None:
        self._done[key] = done
        self._done.move_to_end(key)
        while len(self._done) > self._size:
            self._done.popitem(last=False)


@dataclass
class ChannelContext:
    """What the service lends every channel: one HTTP session, the templates, the clock,
    and where to note the progress of messages sent in parts."""

    session: aiohttp.ClientSession | None
    renderer: Renderer
    clock: Clock
    stdout: TextIO
    instance: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    parts: PartsLog = field(default_factory=MemoryPartsLog)

    def shared(self, name: str, factory: Callable[[], T]) -> T:
        """One object per service under `name`, created on first use: channels that post
        through the same robot or application share its rate limiter and its token cache."""
        if name not in self.extra:
            self.extra[name] = factory()
        return self.extra[name]  # type: ignore[no-any-return]


def parts_key(channel: str, message: Message, contents: list[str]) -> str:
    """Names one message as a channel splits it (ChannelContext.parts): the same message
    rendered the same way. A message merged with others is new content, sent whole."""
    digest = hashlib.sha256("\0".join(contents).encode()).hexdigest()[:32]
    return f"{channel}:{message.id}:{digest}"


class Channel(ABC):
    """A configured destination (`[channels.NAME]`).

    Subclasses set `type` (the config's `type` value) and `Settings` (a frozen dataclass whose
    fields are the config keys besides `type`; the config loader validates against it).
    """

    type: ClassVar[str]
    Settings: ClassVar[builtins.type]
    # True where the channel has a rate limit: the outbox then merges messages that queued up
    # for one contact group into one message instead of sending them one by one.
    merges_backlog: ClassVar[bool] = False
    # The member address (a field of models.Member) this kind sends to, where it addresses
    # members one by one: a member without it is not reached (check-config warns).
    member_address: ClassVar[str | None] = None
    # Member addresses this kind mentions people by in a group chat (optional).
    mentions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: Any, ctx: ChannelContext) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        # Peers that can send now (high availability sets it): what they are sending this
        # very moment reaches this instance only once it went out.
        self.peer_senders: Callable[[], int] = _none

    def ready_at(self, message: Message) -> float:
        """The earliest time this message may be sent; the clock's now or earlier means now."""
        return 0.0

    def calls(self, message: Message) -> int:
        """Requests a send of `message` makes per recipient (its parts): what the peers are
        told with the notification log, for limits the platform counts across callers."""
        return 1

    def peer_sent(self, recipients: tuple[Member, ...], at: float, calls: int) -> None:  # noqa: B027
        """A peer instance sent `calls` requests through this channel's platform to these
        recipients at `at`. Platforms count their limits per member or per robot, whoever
        calls: a channel with a rate limit counts the peers' sends as its own."""

    @abstractmethod
    async def send(self, message: Message) -> str:
        """Send the message; return a short note for the delivery record ("" when none).

        Success: the destination accepted the message (partial refusals for good, such as
        some SMTP recipients or WeCom invalid users, are a success whose note names them).
        Failure: raise ChannelError, with permanent=True when retrying cannot help; PartlySent
        when only some recipients are to be tried again.
        """

    async def close(self) -> None:  # noqa: B027 - most channels hold nothing to release
        """Release connections; called once at shutdown."""


def _none() -> int:
    return 0


class SlidingWindowLimiter:
    """At most `limit` events per `window` seconds for each key."""

    def __init__(self, limit: int, window: float, clock: Clock) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, collections.deque[float]] = {}

    def ready_at(self, key: str, needed: int = 1) -> float:
        """When `needed` more events fit: 0.0 when they fit now (callers compare the answer
        with their own, earlier reading of the clock), else the moment the window frees."""
        events = self._events.get(key)
        if not events:
            return 0.0
        now = self.clock()
        while events and events[0] <= now - self.window:
            events.popleft()
        over = len(events) + needed - self.limit
        if over <= 0:
            return 0.0
        if over > len(events):
            return now + self.window
        return events[over - 1] + self.window

    def record(self, key: str, count: int = 1) -> None:
        events = self._events.setdefault(key, collections.deque())
        now = self.clock()
        events.extend([now] * count)

    def record_at(self, key: str, at: float, count: int = 1) -> None:
        """`count` events that happened at `at` (another instance's, learnt a moment later),
        kept in time order; events already out of the window are not kept."""
        if at <= self.clock() - self.window:
            return
        events = self._events.setdefault(key, collections.deque())
        index = bisect.bisect_right(events, at)
        for _ in range(count):
            events.insert(index, at)


_SECRET_PARAMS = re.compile(
    r"(?i)((?:access_token|corpsecret|secret|key|token|password)=)[^&\s\"']+"
)


def redact(text: str, *secrets: str) -> str:
    """Remove secrets from text bound for an error, a log or an API response."""
    text = _SECRET_PARAMS.sub(r"\1<redacted>", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
