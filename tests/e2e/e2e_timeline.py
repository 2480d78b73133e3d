"""Pages as people receive them, and timelines over them.

A `Recorder` turns what the SMTP server and the fake WeCom API received into `Page`s with
their arrival time. A `Timeline` states a scenario the way an on-call engineer would:

    tl = Timeline(recorder)
    t = tl.act("test gauge set to 1")
    tl.expect("E2ETestAlert", "firing", EVERY_CHANNEL, after=t, between=(1, 12))
    tl.expect_nothing_else(quiet=3)

`expect` waits (never longer than `after + b`) for one page per (channel, contact group),
checks none came before `after + a`, and claims them; `expect_nothing_else` fails on any
page since the timeline began that no `expect` claimed. Assertion messages print the whole
timeline: what the test did and every page, in seconds from the start.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage

from e2e_configs import GROUP_EMAILS, GROUP_WECHAT

POLL = 0.05
_TAG = re.compile(r"\[(FIRING:(\d+)|RESOLVED|DIGEST)\]\s*([^<\n]*)")

Channel = tuple[str, str]  # (channel kind "email" | "wecom", contact group)
EVERY_CHANNEL: tuple[Channel, ...] = (
    ("email", "sre"),
    ("wecom", "sre"),
    ("email", "dba"),
    ("wecom", "dba"),
)
SRE_CHANNELS: tuple[Channel, ...] = (("email", "sre"), ("wecom", "sre"))


@dataclass(frozen=True)
class Page:
    seq: int
    at: float  # epoch seconds of arrival
    channel: str  # "email" | "wecom"
    group: str  # contact group, from the recipients
    status: str  # "firing" | "resolved" | "digest" | "?"
    firing: int  # the n of [FIRING:n]
    title: str  # e.g. "E2ETestAlert"
    text: str  # the whole body, for content checks

    def describe(self, origin: float) -> str:
        tag = f"FIRING:{self.firing}" if self.status == "firing" else self.status.upper()
        return f"t={self.at - origin:+7.2f}s {self.channel:5} {self.group:4} [{tag}] {self.title}"


def _classify(headline: str) -> tuple[str, int, str]:
    m = _TAG.search(headline)
    if not m:
        return "?", 0, headline[:60]
    if m.group(2):
        return "firing", int(m.group(2)), m.group(3).strip()
    return m.group(1).lower(), 0, m.group(3).strip()


def _group_of(recipients: Iterable[str], table: dict[str, frozenset[str]]) -> str:
    found = frozenset(r.lower() for r in recipients)
    return next(
        (name for name, members in table.items() if members == found), "?" + ",".join(sorted(found))
    )


def _email_text(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    return body.get_content() if body is not None else str(mail)


class Recorder:
    """Polls the sinks in a thread and stamps each new message with its arrival time."""

    def __init__(
        self,
        mails: Callable[[], list[tuple[EmailMessage, tuple[str, ...]]]],
        wecom: Callable[[], list[tuple[float, str, list[str]]]],
    ) -> None:
        self._mails = mails  # (message, envelope recipients) in arrival order
        self._wecom = wecom  # (arrival epoch, content, touser) in arrival order
        self.pages: list[Page] = []
        self._seen_mail = 0
        self._seen_wecom = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-recorder", daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            now = time.time()
            mails = self._mails()
            for mail, rcpts in mails[self._seen_mail :]:
                status, firing, title = _classify(str(mail["Subject"]))
                self._add(
                    now,
                    "email",
                    _group_of(rcpts, GROUP_EMAILS),
                    status,
                    firing,
                    title,
                    _email_text(mail),
                )
            self._seen_mail = len(mails)
            sent = self._wecom()
            for at, content, users in sent[self._seen_wecom :]:
                status, firing, title = _classify(content)
                self._add(
                    at, "wecom", _group_of(users, GROUP_WECHAT), status, firing, title, content
                )
            self._seen_wecom = len(sent)

    def _add(
        self, at: float, channel: str, group: str, status: str, firing: int, title: str, text: str
    ) -> None:
        self.pages.append(Page(len(self.pages), at, channel, group, status, firing, title, text))

    def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Until no page arrived for `quiet` seconds (leftovers of an earlier scenario)."""
        start = time.time()
        deadline = start + timeout
        while time.time() < deadline:
            self.poll()
            with self._lock:
                last = max([start, *(p.at for p in self.pages)])
            if time.time() - last >= quiet:
                return
            time.sleep(POLL)
        raise AssertionError(
            f"pages kept coming for {timeout}s: "
            + "; ".join(p.describe(deadline - timeout) for p in self.pages[-10:])
        )

    def since(self, at: float) -> list[Page]:
        self.poll()
        with self._lock:
            return [p for p in self.pages if p.at >= at]


@dataclass
class Timeline:
    recorder: Recorder
    origin: float = field(default_factory=time.time)
    claimed: set[int] = field(default_factory=set)
    actions: list[tuple[float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.time() - self.origin

    def act(self, what: str) -> float:
        """Note an action of the test; returns its time on this timeline."""
        t = self.now()
        self.actions.append((t, what))
        return t

    def pages(self) -> list[Page]:
        return self.recorder.since(self.origin)

    def show(self) -> str:
        rows = [(t, f"t={t:+7.2f}s TEST  {what}") for t, what in self.actions]
        for page in self.pages():
            mark = "   " if page.seq in self.claimed else "(!)"
            rows.append((page.at - self.origin, f"{page.describe(self.origin)} {mark}"))
        return "timeline ((!) = not expected):\n" + "\n".join(r for _, r in sorted(rows))

    def expect(
        self,
        title: str,
        status: str,
        channels: Iterable[Channel],
        *,
        after: float,
        between: tuple[float, float],
        firing: int | None = None,
    ) -> dict[Channel, Page]:
        """One page per channel with this title and status, in [after + a, after + b]."""
        want = list(channels)
        a, b = between
        deadline = self.origin + after + b
        found: dict[Channel, Page] = {}
        while True:
            for page in self.pages():
                key = (page.channel, page.group)
                if (
                    page.seq not in self.claimed
                    and key in want
                    and key not in found
                    and page.title == title
                    and page.status == status
                    and (firing is None or page.firing == firing)
                ):
                    found[key] = page
            if len(found) == len(want) or time.time() > deadline:
                break
            time.sleep(POLL)
        missing = [c for c in want if c not in found]
        assert not missing, (
            f"expected [{status}] {title} on {missing} between t={after + a:.1f}s and "
            f"t={after + b:.1f}s\n{self.show()}"
        )
        early = [p for p in found.values() if p.at < self.origin + after + a]
        assert not early, f"[{status}] {title} came earlier than t={after + a:.1f}s\n{self.show()}"
        self.claimed.update(p.seq for p in found.values())
        return found

    def tolerate(self, title: str, status: str, channels: Iterable[Channel]) -> list[Page]:
        """Claim (without requiring) one more page per channel: a duplicate the product
        accepts here, e.g. at least once delivery racing between instances."""
        wanted = set(channels)
        extra: list[Page] = []
        for page in self.pages():
            key = (page.channel, page.group)
            if (
                page.seq not in self.claimed
                and key in wanted
                and key not in {(p.channel, p.group) for p in extra}
                and page.title == title
                and page.status == status
            ):
                extra.append(page)
        self.claimed.update(p.seq for p in extra)
        return extra

    def expect_nothing_else(self, quiet: float = 0.0) -> None:
        """Wait `quiet` seconds, then fail on any page nobody expected."""
        time.sleep(quiet)
        extra = [p for p in self.pages() if p.seq not in self.claimed]
        if extra:
            raise AssertionError(f"{len(extra)} page(s) nobody expected\n{self.show()}")
