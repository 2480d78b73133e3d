"""The campaign's checker: what people received against what happened, promise by promise.

Inputs (files in the campaign's work folder; `python bench/campaign.py --check DIR` re-runs
this on them): `changes.jsonl` (every alert-state change the load made, when, which episode),
`faults.jsonl` (every fault, when it began and when it was healed), `mail.jsonl` (every mail
the SMTP sink accepted, with its arrival time), `wecom.jsonl` (every message the fake WeCom
accepted: application messages and the dba group's robot), `meta.json` (timers, seed, times).

Definitions (the timers are the campaign's, campaign_stack.Timers):

- **Announcement.** What one message says about one alert group: its status and counts, and
  each alert it lists with the alert's firing *episode* (the load writes `AID #EPISODE STATE`
  into the summary annotation, which every template shows) and state. A group message lists
  every alert (max_alerts is above any incident's size); a digest, or a WeCom message merged
  from several (the channel's rate limit), lists at most three alerts per group and names the
  group: it *delivers the group* (the issue's rule), and delivers the alerts it lists. Mail is
  read whole; WeCom messages split into numbered parts are joined first; a part cut off past
  five parts ends with "... bytes left out" (SPEC section 12): groups it could not name are
  counted apart ("cut"), as that bound is by design.
- **Position.** An alert's history is a sequence: episode 1 firing, episode 1 resolved,
  episode 2 firing, ... An announcement of the alert has a position in it, whatever time it
  arrives.
- **Settled state.** A state the alert kept for at least `settle` = group_interval + 5 s
  (10 s; 30 s when the state overlaps a fault window: an Alertmanager retrying a stopped
  instance flushes only every ~11 s). Shorter states (quick flaps) may be shown or not: they
  are never counted as lost, and what shows them is news, not a duplicate.
- **Lost change** (must be 0). A settled state of an alert, on a channel of its contact
  group, that no message delivered: no announcement of that episode in that state (or, for a
  firing state, in a later state of the same episode: a resolution that names the alert with
  its start time tells that it fired, and the outbox rightly drops the older message once the
  newer went out), and no digest naming its group that arrived after the state began and at
  most DIGEST_BOUND after it ended. No message is needed where people already know: a
  resolved state of an alert whose firing was never announced (by position: the latest
  announcement before it is a resolution, or there is none), or a firing episode that follows
  an announced firing whose resolution was never announced (a flap inside one
  group_interval, which the service by design does not show).
- **Duplicate.** An announcement that tells nothing new on its channel: every alert it lists
  is at a position already announced there, the group's status and counts are the last ones
  announced, and it is not a repeat (repeat_interval after the last announcement of the group,
  less 10%). One whose listed alerts are all at or before positions already announced, some
  before, is **stale** (an older state arriving after a newer one). While healthy (outside
  every fault window: from a fault's start to 45 s after it was healed) both must be 0; inside
  a fault window each announcement may arrive at most twice (one duplicate, as at least once
  delivery and a partition allow).
- **Pages** for internal alerts must match the faults: each fault implies, from its measured
  duration, pages it must cause, may cause, or must not cause (PeerDown for an instance down
  longer than its peers' detection, HeartbeatMissing when Prometheus was down past the
  heartbeat timeout, StoreFailing past store_failing_after, ChannelFailing for a channel failing
  past channel_failing_after); one that must is paged exactly once on each channel of the
  watchdog group that can carry it, and resolved once; any other internal page is false.
- **Acknowledged** (an ack the API answered 200, from its answer plus ACT_SLACK until it was
  withdrawn or the group resolved): the group gets no repeat (an announcement that tells nothing
  new, repeat_interval after the last one); changes still reach people (the lost count). The
  acknowledgement itself is announced ("X acknowledged this", subject `[ACK]`) at most once per
  channel, and at least once where the group kept firing ACK_ANNOUNCED_WITHIN after it outside
  any fault; these announcements are not duplicates of the group's messages.
- **Silenced** (a silence of an incident's alertname that amtool or the API made, from its
  answer plus ACT_SLACK until its expiry was asked, or its end): no announcement takes an alert
  of it to a new firing state, and none repeats it (must be 0). A firing state is owed a message
  only for a settled stretch outside every silence that may have been made (a failed request
  may still have made it; an expiry that failed may not have ended it): a silence that ends
  while the alert fires is owed a message from its end. A resolution whose firing was announced
  is owed as always. An acknowledged repeat or silenced page inside a fault window is excused
  only from the instance the fault hit (it could not hear of the action); from any other
  instance it is broken too.
- **Latency** of a settled state people did not know yet: from the change to the first message
  that delivered it, per channel; "healthy" excludes states whose delivery overlapped a fault
  window.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Who is who (campaign_stack.MEMBERS; repeated so that the checker reads only the files).
GROUP_EMAILS = {
    "sre": frozenset({"zhangsan@example.com", "lisi@example.com"}),
    "dba": frozenset({"wangwu@example.com"}),
}
GROUP_WECHAT = {"sre": frozenset({"zhangsan", "lisi"}), "dba": frozenset({"wangwu"})}
DBA_ROBOT_KEY = "c0ffee00-dba0-4d3e-a1f0-6c2b9e7d4a13"
CHANNELS = {"sre": ("mail", "wecom"), "dba": ("mail", "dba-robot")}
WATCHDOG_GROUP = "sre"
INTERNAL = (
    "PeerDown",
    "HeartbeatMissing",
    "StoreFailing",
    "ChannelFailing",
    "DeliveryFailed",
    "PeeringDisabled",
)
AFTER_FAULT = 45.0  # a fault window lasts until this long after the fault was healed
DIGEST_BOUND = 60.0  # a digest naming a group delivers states that ended this recently
REPEAT_SLACK = 0.9
ACT_SLACK = 2.0  # an ack or silence answered this long ago holds on every instance
ACK_ANNOUNCED_WITHIN = 30.0  # an ack is announced within this (outside faults)

Position = tuple[int, int]  # (episode, 0 firing | 1 resolved)


def position(episode: int, status: str) -> Position:
    return (episode, 0 if status == "firing" else 1)


# -- announcements -----------------------------------------------------------------------------


@dataclass
class Listed:
    key: str  # the alert: its aid, or for an internal alert its name and subject
    status: str  # firing | resolved | stale
    episode: int  # 0 when the message does not say (internal alerts)


@dataclass
class Announcement:
    t: float
    channel: str  # mail | wecom | dba-robot
    cg: str
    title: str
    status: str  # firing | resolved | stale
    firing: int | None
    resolved: int | None
    alerts: list[Listed]
    complete: bool  # every alert of the group is listed
    digest: bool
    message: int  # index of the message it came from
    keys: frozenset[str] = frozenset()  # internal alerts named (group-level, any channel)
    instance: str = ""  # the instance that sent it (from the message's footer)
    ack_announce: bool = False  # "X acknowledged this": the acknowledgement's announcement

    @property
    def internal(self) -> bool:
        return self.title.split(" ")[0] in INTERNAL

    def signature(self) -> tuple[Any, ...]:
        return (self.status, self.firing)


_SUMMARY = re.compile(r"\b([IS]\d{4}(?:-\d+)?) #(\d+) (?:firing|resolved)\b")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_SUBJECT = re.compile(
    r"^(\[ACK\] |\[ESCALATED\] )?\[(FIRING:(\d+)|RESOLVED|STALE|DIGEST|TEST)\]\s*(.*)$"
)
_ACK_HEADER = re.compile(r"acknowledged this\**(?: at |$)", re.M)
_TAG = re.compile(r"\[(FIRING:(\d+)|RESOLVED|STALE)\]\s*(.+)$")
_MAIL_FOOTER = re.compile(r"(?m)^-- Monitor Manager (\S+),")
_CHAT_FOOTER = re.compile(r"Monitor Manager (\S+) ·")
_INTERNAL_SUBJECT = re.compile(r"\b(peer|heartbeat|channel|instance)=([\w.\-]+)")
# What an internal alert is about, from its summary (digests and WeCom show no labels).
_INTERNAL_SUMMARY = (
    ("peer", re.compile(r"Monitor Manager peer (\S+) is down")),
    ("heartbeat", re.compile(r"Heartbeat (\S+) (?:missing|arrives)")),
    ("channel", re.compile(r"Channel (\S+) has failed")),
    ("channel", re.compile(r"Deliveries through channel (\S+) are failing")),
)


def internal_key(alertname: str, labels: dict[str, str]) -> str:
    subject = ",".join(
        f"{k}={labels[k]}" for k in ("peer", "heartbeat", "channel", "instance") if k in labels
    )
    return f"{alertname}{{{subject}}}"


def _status_of(tag: str) -> str:
    return "firing" if tag.startswith("FIRING") else tag.lower()


def parse_mail(index: int, mail: dict[str, Any]) -> list[Announcement]:
    """A mail's announcements, one per alert group it names."""
    cg = _group_of(mail["rcpt"], GROUP_EMAILS)
    m = _SUBJECT.match(mail["subject"].strip())
    if cg is None or m is None or m.group(2) in ("TEST",):
        return []
    text: str = mail["text"]
    footer = _MAIL_FOOTER.findall(text)
    instance = footer[-1] if footer else ""
    if m.group(2) == "DIGEST":
        out = []
        for block in re.split(r"(?m)^== ", text)[1:]:
            head, _, body = block.partition("\n")
            tag = _TAG.match(head.strip())
            if tag is None:
                continue
            out.append(_mail_group(index, mail["t"], cg, tag.group(1), tag.group(3), body, True))
    else:
        out = [_mail_group(index, mail["t"], cg, m.group(2), m.group(4), text, False)]
    for a in out:
        a.instance = instance
        a.ack_announce = m.group(1) == "[ACK] "
    return out


def _mail_group(
    index: int, t: float, cg: str, tag: str, title: str, body: str, digest: bool
) -> Announcement:
    firing = re.search(r"(?m)^Firing \((\d+)\):", body)
    resolved = re.search(r"(?m)^Resolved \((\d+)\):", body)
    listed: list[Listed] = []
    keys: set[str] = set()
    for block in re.split(r"(?m)^- ", body)[1:]:
        first, _, rest = block.partition("\n")
        state = re.search(r"\[(firing|resolved|stale)\]", first)
        if state is None:
            continue
        labels = {}
        label_line = re.search(r"(?m)^  Labels: (.*)$", rest)
        if label_line:
            labels = dict(_LABEL.findall(label_line.group(1)))
        summary = _SUMMARY.search(rest)
        if summary:
            listed.append(Listed(summary.group(1), state.group(1), int(summary.group(2))))
        elif labels.get("source") == "monitor-manager":
            key = internal_key(labels.get("alertname", "?"), labels)
            keys.add(key)
            listed.append(Listed(key, state.group(1), 0))
    more = re.search(r"(?m)^\.\.\. and \d+ more", body) is not None
    return Announcement(
        t,
        "mail",
        cg,
        title.strip(),
        _status_of(tag),
        int(firing.group(1)) if firing else 0,
        int(resolved.group(1)) if resolved else 0,
        listed,
        complete=not digest and not more,
        digest=digest,
        message=index,
        keys=frozenset(keys),
    )


_MARKER = re.compile(r'^<font color="comment">\((\d+)/(\d+)\)</font>\n')
_CHAT_GROUP = re.compile(
    r'(?m)^(#{2,3}) <font color="\w+">\[(FIRING:(\d+)|RESOLVED|STALE)\] (.+?)</font>'
)
_CHAT_COUNTS = re.compile(
    r'\*\*Firing\*\* <font color="warning">(\d+)</font> · '
    r'\*\*Resolved\*\* <font color="info">(\d+)</font>'
)
_CHAT_ALERT = re.compile(
    r'(?m)^\*\*\d+\. \S+\*\* <font color="\w+">(firing|resolved|no longer reported)</font>.*\n'
    r"(?:> (.*))?"
)
_CHAT_DIGEST_ALERT = re.compile(r'(?m)^> <font color="(warning|info|comment)">●</font> (.*)$')
_COLOUR = {"warning": "firing", "info": "resolved", "comment": "stale"}


@dataclass
class ChatMessage:
    t: float
    channel: str
    cg: str
    content: str
    cut: bool  # the last part said that the rest was left out
    dropped: bool = False  # WeCom took it but showed it to none of its members


def join_chat(records: list[dict[str, Any]]) -> list[ChatMessage]:
    """WeCom records (one per accepted request) as messages: numbered parts joined."""
    out: list[ChatMessage] = []
    open_parts: dict[tuple[str, str], tuple[int, int, ChatMessage]] = {}
    for r in sorted(records, key=lambda r: r["t"]):
        if r["endpoint"] == "robot":
            if r["robot_key"] != DBA_ROBOT_KEY:
                continue
            channel, cg, dest = "dba-robot", "dba", r["robot_key"]
        else:
            group = _group_of(r["touser"], GROUP_WECHAT)
            if group is None:
                continue
            channel, cg, dest = "wecom", group, ",".join(r["touser"])
        # WeCom accepts application messages beyond 30 a minute to one member and shows them
        # to nobody (the fake records whom it skipped): such a part reached no one.
        dropped = bool(r.get("dropped_for")) and set(r["dropped_for"]) >= set(r["touser"])
        content: str = r["content"]
        cut = "more bytes left out" in content
        marker = _MARKER.match(content)
        if marker is None:
            out.append(ChatMessage(r["t"], channel, cg, content, cut, dropped))
            continue
        k, n = int(marker.group(1)), int(marker.group(2))
        body = content[marker.end() :]
        key = (channel, dest)
        previous = open_parts.get(key)
        if k > 1 and previous is not None and previous[0] == k - 1 and previous[1] == n:
            message = previous[2]
            message.content += "\n" + body
            message.cut = message.cut or cut
            message.dropped = message.dropped or dropped
        else:
            message = ChatMessage(r["t"], channel, cg, body, cut, dropped)
            out.append(message)
        if k < n:
            open_parts[key] = (k, n, message)
        else:
            open_parts.pop(key, None)
    return out


def parse_chat(index: int, message: ChatMessage) -> list[Announcement]:
    text = message.content
    footer = _CHAT_FOOTER.findall(text)
    instance = footer[-1] if footer else ""
    heads = list(_CHAT_GROUP.finditer(text))
    digest = "[DIGEST]" in text.split("\n", 1)[0] or any(h.group(1) == "###" for h in heads)
    announce = (
        not digest and bool(heads) and _ACK_HEADER.search(text[: heads[0].start()]) is not None
    )
    out = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        block = text[head.end() : end]
        title = head.group(4).strip()
        listed: list[Listed] = []
        keys: set[str] = set()
        if title.split(" ")[0] in INTERNAL:
            found = dict(_INTERNAL_SUBJECT.findall(block))
            for label, pattern in _INTERNAL_SUMMARY:
                hit = pattern.search(block)
                if hit and label not in found:
                    found[label] = hit.group(1)
            if found:
                keys.add(internal_key(title.split(" ")[0], found))
        if digest:
            for colour, summary in _CHAT_DIGEST_ALERT.findall(block):
                s = _SUMMARY.search(summary)
                if s:
                    listed.append(Listed(s.group(1), _COLOUR[colour], int(s.group(2))))
        else:
            for state, summary in _CHAT_ALERT.findall(block):
                s = _SUMMARY.search(summary or "")
                if s:
                    status = "stale" if state == "no longer reported" else state
                    listed.append(Listed(s.group(1), status, int(s.group(2))))
        counts = _CHAT_COUNTS.search(block)
        more = "… and " in block
        firing = int(head.group(3)) if head.group(3) else 0
        out.append(
            Announcement(
                message.t,
                message.channel,
                message.cg,
                title,
                _status_of(head.group(2)),
                firing,
                int(counts.group(2)) if counts else None,
                listed,
                complete=not digest and not more and counts is not None,
                digest=digest,
                message=index,
                keys=frozenset(keys),
                instance=instance,
                ack_announce=announce,
            )
        )
    return out


def _group_of(recipients: Iterable[str], table: dict[str, frozenset[str]]) -> str | None:
    found = frozenset(r.lower() for r in recipients)
    for name, members in table.items():
        if found and found <= members:
            return name
    return None


# -- the truth ---------------------------------------------------------------------------------


@dataclass
class Period:
    aid: str
    title: str
    cg: str
    status: str
    episode: int
    start: float
    end: float  # when the next change came, or the end of the run
    settled: bool

    @property
    def position(self) -> Position:
        return position(self.episode, self.status)


@dataclass
class FaultWindow:
    kind: str
    target: str
    began: float
    ended: float
    notes: dict[str, Any]

    @property
    def until(self) -> float:
        return self.ended + AFTER_FAULT

    def covers(self, t: float) -> bool:
        return self.began - 2.0 <= t <= self.until

    def overlaps(self, a: float, b: float) -> bool:
        return a <= self.until and b >= self.began - 2.0

    def name(self) -> str:
        return f"{self.kind}{' ' + self.target if self.target else ''}"


def periods(
    changes: list[dict[str, Any]], end: float, faults: list[FaultWindow], settle: float
) -> list[Period]:
    by_alert: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in changes:
        by_alert[c["aid"]].append(c)
    out = []
    for aid, history in by_alert.items():
        history.sort(key=lambda c: c["t"])
        for i, c in enumerate(history):
            stop = history[i + 1]["t"] if i + 1 < len(history) else end
            during_fault = any(f.overlaps(c["t"], stop) for f in faults)
            need = 30.0 if during_fault else settle
            out.append(
                Period(
                    aid,
                    c["title"],
                    c["cg"],
                    c["status"],
                    int(c["episode"]),
                    c["t"],
                    stop,
                    settled=stop - c["t"] >= need,
                )
            )
    return out


@dataclass
class Acked:
    """A group acknowledged (the API answered 200) from `begin` to `end`."""

    cg: str
    title: str
    asked: float
    begin: float
    end: float
    instance: str
    announced: dict[str, int] = field(default_factory=dict)  # channel -> announcements


@dataclass
class Muted:
    """A silence of one incident (its alertname): `sure` pages are forbidden (None when the
    request failed), `maybe` nothing is owed."""

    alertname: str
    sure: tuple[float, float] | None
    maybe: tuple[float, float]


@dataclass
class Acting:
    acked: list[Acked] = field(default_factory=list)
    muted: list[Muted] = field(default_factory=list)
    unacked: list[tuple[str, str, float]] = field(default_factory=list)  # cg, title, asked

    def renewed(self, cg: str, title: str, a: float, b: float) -> str | None:
        """Why a group may be told again between a and b although nothing changed: a silence
        of it ended (its groups are notified as a change), an ack was withdrawn (it repeats)."""
        name = title.split(" ")[0]
        for m in self.muted:
            ends = [m.maybe[1]] + ([m.sure[1]] if m.sure else [])
            if m.alertname == name and any(a < t <= b + ACT_SLACK for t in ends):
                return "told again when its silence ended"
        if any(c == cg and t == title and a < at <= b for c, t, at in self.unacked):
            return "told again when its acknowledgement was withdrawn"
        return None

    def ack_at(self, cg: str, title: str, t: float) -> Acked | None:
        return next(
            (a for a in self.acked if a.cg == cg and a.title == title and a.begin <= t < a.end),
            None,
        )

    def silenced_at(self, title: str, t: float) -> bool:
        name = title.split(" ")[0]
        return any(
            m.sure is not None and m.alertname == name and m.sure[0] <= t < m.sure[1]
            for m in self.muted
        )

    def unmuted_from(self, title: str, start: float, end: float, settle: float) -> float | None:
        """The start of the first stretch of [start, end) at least `settle` long that no
        silence may have muted (None: there is none)."""
        name = title.split(" ")[0]
        spans = sorted(m.maybe for m in self.muted if m.alertname == name)
        at = start
        for a, b in spans:
            if b <= at:
                continue
            if a - at >= settle:
                return at
            at = max(at, b)
            if at >= end:
                return None
        return at if end - at >= settle else None


def acting(actions: list[dict[str, Any]], changes: list[dict[str, Any]], end: float) -> Acting:
    """What people did, as intervals the promises apply in."""
    out = Acting()
    # When each incident group stopped firing: every alert of it resolved (changes by time).
    firing: dict[str, set[str]] = defaultdict(set)
    quiet_at: dict[str, list[float]] = defaultdict(list)
    for c in sorted(changes, key=lambda c: c["t"]):
        alerts = firing[c["title"]]
        if c["status"] == "firing":
            alerts.add(c["aid"])
        elif c["aid"] in alerts:
            alerts.discard(c["aid"])
            if not alerts:
                quiet_at[c["title"]].append(c["t"])
    acts = sorted(actions, key=lambda a: a["t"])
    for i, a in enumerate(acts):
        if a["kind"] == "unack":
            out.unacked.append((a["cg"], a["title"], a["t"]))
        if a["kind"] != "ack" or not a["ok"]:
            continue
        stops = [
            u["t"]
            for u in acts[i + 1 :]
            if u["kind"] == "unack" and u["cg"] == a["cg"] and u["title"] == a["title"]
        ]
        stops += [t for t in quiet_at[a["title"]] if t > a["t"]]
        out.acked.append(
            Acked(
                a["cg"],
                a["title"],
                a["t"],
                a["done"] + ACT_SLACK,
                min(stops, default=end),
                a["instance"],
            )
        )
    expiries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in acts:
        if a["kind"] == "expire":
            expiries[a["id"]].append(a)
    for a in acts:
        if a["kind"] != "silence":
            continue
        asked = expiries.get(a["id"] or "", [])
        sure_end = min([e["t"] for e in asked] + [a["ends_at"]])
        maybe_end = min([e["done"] for e in asked if e["ok"]] + [a["ends_at"]])
        out.muted.append(
            Muted(
                a["alertname"],
                (a["done"] + ACT_SLACK, sure_end) if a["ok"] else None,
                (a["t"], maybe_end),
            )
        )
    return out


# -- the verdict -------------------------------------------------------------------------------


@dataclass
class Verdict:
    seed: int | None
    figures: dict[str, Any] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)  # each broken promise, one line
    details: dict[str, list[str]] = field(default_factory=dict)  # samples per promise

    @property
    def ok(self) -> bool:
        return not self.broken

    def sample(self, promise: str, line: str, limit: int = 12) -> None:
        lines = self.details.setdefault(promise, [])
        if len(lines) < limit:
            lines.append(line)


def load(workdir: Path) -> dict[str, Any]:
    def lines(name: str) -> list[dict[str, Any]]:
        path = workdir / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    records = lines("changes.jsonl")
    return {
        "meta": json.loads((workdir / "meta.json").read_text()),
        "changes": [r for r in records if "kind" not in r],
        "actions": [r for r in records if "kind" in r],
        "faults": lines("faults.jsonl"),
        "mail": lines("mail.jsonl"),
        "wecom": lines("wecom.jsonl"),
    }


def check(data: dict[str, Any]) -> Verdict:
    meta = data["meta"]
    timers = meta["timers"]
    verdict = Verdict(meta.get("seed"))
    faults = [
        FaultWindow(f["kind"], f["target"], f["began"], f["ended"], f.get("notes", {}))
        for f in data["faults"]
        if f.get("began")
    ]
    end = meta["checked_at"]
    settle = timers["group_interval"] + 5.0
    anns: list[Announcement] = []
    for i, mail in enumerate(data["mail"]):
        anns += parse_mail(i, mail)
    chats = join_chat(data["wecom"])
    dropped = [c for c in chats if c.dropped]
    for i, chat in enumerate(chats):
        if not chat.dropped:
            anns += parse_chat(len(data["mail"]) + i, chat)
    if dropped:
        verdict.broken.append(
            f"{len(dropped)} WeCom messages were accepted but shown to nobody: more than "
            "30 a minute reached one member (WeCom drops those silently)"
        )
        for c in dropped[:6]:
            verdict.sample(
                "dropped by WeCom", f"{c.channel} {c.cg} at {c.t:.1f}: {c.content[:80]!r}"
            )
    anns.sort(key=lambda a: a.t)
    cut_chat = [c for c in chats if c.cut]
    verdict.figures["messages"] = {
        "mail": len(data["mail"]),
        "wecom": sum(1 for c in chats if c.channel == "wecom"),
        "dba-robot": sum(1 for c in chats if c.channel == "dba-robot"),
        "chat cut at five parts": len(cut_chat),
        "WeCom messages shown to nobody (over 30 a minute to a member)": len(dropped),
    }
    ps = periods(data["changes"], end, faults, settle)
    acts = acting(data.get("actions", []), data["changes"], end)
    _lost_and_latency(verdict, ps, anns, faults, cut_chat, acts, settle)
    _duplicates(verdict, anns, faults, timers, acts)
    _acting(verdict, anns, faults, acts, data.get("actions", []))
    _pages(verdict, anns, faults, timers)
    verdict.figures["faults"] = [
        {
            "fault": f.name(),
            "began": f.began,
            "seconds": round(f.ended - f.began, 1),
            **({"notes": f.notes} if f.notes else {}),
        }
        for f in faults
    ]
    return verdict


def _lost_and_latency(
    verdict: Verdict,
    ps: list[Period],
    anns: list[Announcement],
    faults: list[FaultWindow],
    cut_chat: list[ChatMessage],
    acts: Acting,
    settle: float,
) -> None:
    # Per (channel, alert): every explicit listing, by arrival; per (channel, cg, title): digests.
    listings: dict[tuple[str, str], list[tuple[float, Position]]] = defaultdict(list)
    digests: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for a in anns:
        for item in a.alerts:
            if item.episode:
                listings[(a.channel, item.key)].append((a.t, position(item.episode, item.status)))
        if a.digest:
            digests[(a.channel, a.cg, a.title)].append(a.t)
    counts: dict[str, int] = defaultdict(int)
    latencies: dict[str, list[float]] = defaultdict(list)
    healthy: dict[str, list[float]] = defaultdict(list)
    for p in ps:
        counts["states"] += 1
        if not p.settled:
            counts["states too short to be owed a message"] += 1
            continue
        if p.status == "firing":
            # A silence that may have muted the state: owed from when one could not have.
            unmuted = acts.unmuted_from(p.title, p.start, p.end, settle)
            if unmuted is None:
                counts["no message owed (silenced)"] += len(CHANNELS[p.cg])
                continue
            if unmuted > p.start:
                counts["owed from the end of a silence"] += len(CHANNELS[p.cg])
                p = dataclasses.replace(p, start=unmuted)
        for channel in CHANNELS[p.cg]:
            counts["settled states x channels"] += 1
            seen = listings.get((channel, p.aid), [])
            target = p.position
            # What people knew before this state, by position (arrival order aside).
            before = [pos for _, pos in seen if pos < target]
            known = max(before) if before else None
            if p.status == "resolved" and (known is None or known[1] == 1):
                counts["no message owed (never told it fired)"] += 1
                continue
            if (
                p.status == "firing"
                and known is not None
                and known[1] == 0
                and known[0] < p.episode
            ):
                counts["no message owed (flap inside one group_interval)"] += 1
                continue
            if p.status == "firing" and known == target:
                pass  # impossible: `before` holds positions below target only
            # Delivered by an explicit listing of this episode (this state, or for firing, the
            # resolution of the same episode), or by a digest naming the group.
            direct = [
                t
                for t, pos in seen
                if pos == target or (p.status == "firing" and pos == (p.episode, 1))
            ]
            later_state_only = (
                p.status == "firing" and direct and not any(pos == target for _, pos in seen)
            )
            after = [t for t in direct if t >= p.start - 1.0]
            bound = p.end + DIGEST_BOUND + _fault_time(faults, p.start, p.end + DIGEST_BOUND)
            dig = [t for t in digests.get((channel, p.cg, p.title), []) if p.start <= t <= bound]
            first = min(after + dig, default=None)
            if first is None:
                cut = [
                    c.t
                    for c in cut_chat
                    if c.channel == channel and c.cg == p.cg and p.start <= c.t <= bound
                ]
                if cut:
                    counts["delivered only as 'left out' of a message cut at five parts"] += 1
                    continue
                later = [t for t, pos in seen if pos > target and p.start <= t <= bound]
                if later and any(f.overlaps(p.start, p.end) for f in faults):
                    # Every message that could tell it waited out a fault, and by then a newer
                    # state had replaced it (the outbox sends the newest, by design).
                    counts["replaced by a newer state before a fault let it out"] += 1
                    continue
                counts["LOST"] += 1
                verdict.sample(
                    "lost",
                    f"{channel} {p.cg} {p.aid} ({p.title}) episode {p.episode} {p.status} "
                    f"from {p.start:.1f} to {p.end:.1f}: no message (listings {seen[-4:]})",
                )
                continue
            if dig and min(dig) < min(after, default=math.inf):
                counts["delivered by a digest"] += 1
            elif later_state_only:
                counts["firing told only by its resolution"] += 1
            else:
                counts["delivered by a message listing it"] += 1
            latency = first - p.start
            kind = f"{channel}, {'storm' if p.aid.startswith('S') else 'incidents'}"
            latencies[kind].append(latency)
            if not any(f.overlaps(p.start, first) for f in faults):
                healthy[kind].append(latency)
    verdict.figures["changes"] = dict(counts)
    verdict.figures["latency (seconds from the change to the first message)"] = {
        kind: {"healthy": _percentiles(healthy[kind]), "all": _percentiles(latencies[kind])}
        for kind in sorted(latencies)
    }
    if counts["LOST"]:
        verdict.broken.append(
            f"{counts['LOST']} settled alert states reached nobody on a channel that owed them"
        )


def _fault_time(faults: list[FaultWindow], a: float, b: float) -> float:
    return sum(f.until - f.began for f in faults if f.overlaps(a, b))


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)

    return {"n": len(ordered), "p50": pct(0.5), "p99": pct(0.99), "max": round(ordered[-1], 2)}


def _excused(faults: list[FaultWindow], a: Announcement) -> FaultWindow | None:
    """The fault window that excuses a message sent against an ack or a silence: one that hit
    the very instance that sent it (stopped, killed: it could not hear of the action)."""
    return next((f for f in faults if f.covers(a.t) and f.target == a.instance), None)


def _duplicates(
    verdict: Verdict,
    anns: list[Announcement],
    faults: list[FaultWindow],
    timers: dict[str, Any],
    acts: Acting | None = None,
) -> None:
    acts = acts or Acting()
    repeat_after = timers["repeat_interval"] * REPEAT_SLACK
    highest: dict[tuple[str, str], Position] = {}  # (channel, alert) -> highest announced
    told_by: dict[tuple[str, str], str] = {}  # (channel, alert) -> who announced the highest
    last: dict[tuple[str, str, str], Announcement] = {}  # (channel, cg, title) -> last one
    copies: dict[tuple[Any, ...], int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for a in anns:
        if a.ack_announce:
            continue  # the acknowledgement's own message: judged by _acting
        group = (a.channel, a.cg, a.title)
        previous = last.get(group)
        positions = [
            (item.key, position(item.episode, item.status)) for item in a.alerts if item.episode
        ]
        advanced = [k for k, pos in positions if pos > highest.get((a.channel, k), (0, -1))]
        older = [k for k, pos in positions if pos < highest.get((a.channel, k), (0, -1))]
        # An instance that itself sent the newer state has no excuse for the older one.
        own_stale = [k for k in older if a.instance and told_by.get((a.channel, k)) == a.instance]
        for k, pos in positions:
            if pos > highest.get((a.channel, k), (0, -1)):
                highest[(a.channel, k)] = pos
                told_by[(a.channel, k)] = a.instance
        last[group] = a
        paged = [
            k
            for k, pos in positions
            if pos[1] == 0
            and (k in advanced or previous is None or a.t - previous.t >= repeat_after)
        ]
        if paged and not a.internal and acts.silenced_at(a.title, a.t):
            # A silenced alert told firing: new, or again (a repeat).
            _against_action(verdict, counts, faults, a, "silenced alert notified", paged)
        if previous is None or advanced:
            continue
        if a.internal:
            continue  # internal pages are judged by _pages
        same_counts = previous.signature() == a.signature() and (
            previous.resolved is None or a.resolved is None or previous.resolved == a.resolved
        )
        if not positions and not same_counts:
            continue  # a group-level listing with other counts: news
        if positions and not same_counts and not older:
            continue
        renewed = acts.renewed(a.cg, a.title, previous.t, a.t)
        if renewed is not None:
            counts[renewed] += 1
            continue
        if a.t - previous.t >= repeat_after and not a.digest:
            counts["repeats"] += 1
            if acts.ack_at(a.cg, a.title, a.t) is not None:
                _against_action(verdict, counts, faults, a, "repeat of an acknowledged group", [])
            continue
        kind = "stale" if older else "duplicate"
        window = next((f for f in faults if f.covers(a.t)), None)
        if own_stale:
            counts["stale from the instance that had sent the newer state"] += 1
            verdict.sample(
                "stale from the instance that had sent the newer state",
                f"{a.channel} {a.cg} [{a.status}:{a.firing}] {a.title} from {a.instance} at "
                f"{a.t:.1f}: older states of {', '.join(own_stale)}",
            )
        where = "healthy" if window is None else f"fault {window.name()} at {window.began:.0f}"
        counts[f"{kind} ({'healthy' if window is None else 'during a fault'})"] += 1
        content = (a.channel, a.cg, a.title, a.signature(), tuple(sorted(positions)))
        if window is not None:
            copies[(window.began, *content)] += 1
        verdict.sample(
            f"{kind} ({'healthy' if window is None else 'fault'})",
            f"{a.channel} {a.cg} [{a.status}:{a.firing}] {a.title}"
            f"{' (digest)' if a.digest else ''} at {a.t:.1f}, "
            f"{a.t - previous.t:.1f}s after the last one ({where})",
        )
    verdict.figures["duplicates"] = {k: n for k, n in counts.items() if not k.startswith("acting")}
    verdict.figures["acting on pages"] = {
        k.removeprefix("acting: "): n for k, n in counts.items() if k.startswith("acting")
    }
    for promise in ("silenced alert notified", "repeat of an acknowledged group"):
        n = counts[f"acting: {promise}"]
        if n:
            verdict.broken.append(f"{n} messages: {promise}")
    healthy = counts["duplicate (healthy)"] + counts["stale (healthy)"]
    if healthy:
        verdict.broken.append(f"{healthy} duplicate or stale messages while healthy")
    own = counts["stale from the instance that had sent the newer state"]
    if own:
        verdict.broken.append(
            f"{own} messages arrived after a newer state of their alerts that the same instance "
            "had sent (an older state, shown last)"
        )
    over = {k: n for k, n in copies.items() if n > 1}
    if over:
        verdict.broken.append(
            f"{len(over)} announcements duplicated more than once inside one fault window"
        )
        for what, n in list(over.items())[:6]:
            verdict.sample("more than one duplicate in a fault window", f"{n + 1} copies: {what}")


def _against_action(
    verdict: Verdict,
    counts: dict[str, int],
    faults: list[FaultWindow],
    a: Announcement,
    what: str,
    keys: list[str],
) -> None:
    window = _excused(faults, a)
    line = (
        f"{a.channel} {a.cg} [{a.status}:{a.firing}] {a.title} from {a.instance or '?'} at "
        f"{a.t:.1f}{' (' + ', '.join(keys) + ')' if keys else ''}"
    )
    if window is not None:
        counts[f"acting: {what}, by the instance a fault hit (excused)"] += 1
        verdict.sample(f"{what} (excused: {window.name()})", line)
        return
    counts[f"acting: {what}"] += 1
    verdict.sample(what, line)


def _acting(
    verdict: Verdict,
    anns: list[Announcement],
    faults: list[FaultWindow],
    acts: Acting,
    actions: list[dict[str, Any]],
) -> None:
    """Acknowledgements announced once per channel (and at all, where nothing stood in the
    way); the actions' figures."""
    figures = verdict.figures.setdefault("acting on pages", {})
    done: dict[str, int] = defaultdict(int)
    for r in actions:
        done[f"{r['kind']} {'ok' if r['ok'] else 'failed'}"] += 1
    figures["actions"] = dict(sorted(done.items()))
    unmatched = 0
    for a in anns:
        if not a.ack_announce:
            continue
        ack = next(
            (
                k
                for k in acts.acked
                if k.cg == a.cg and k.title == a.title and k.asked - 1 <= a.t <= k.end + 60
            ),
            None,
        )
        if ack is None:
            unmatched += 1  # from an ack whose request failed (it may still have been made)
            continue
        ack.announced[a.channel] = ack.announced.get(a.channel, 0) + 1
    counts: dict[str, int] = defaultdict(int)
    for k in acts.acked:
        for channel in CHANNELS[k.cg]:
            n = k.announced.get(channel, 0)
            if n > 1:
                counts["acknowledgements announced more than once"] += 1
                verdict.sample("ack announced more than once", f"{channel} {k.cg} {k.title} {n}x")
            elif n == 1:
                counts["acknowledgements announced once"] += 1
            elif k.end - k.begin >= ACK_ANNOUNCED_WITHIN and not any(
                f.overlaps(k.asked, k.begin + ACK_ANNOUNCED_WITHIN) for f in faults
            ):
                counts["acknowledgements never announced"] += 1
                verdict.sample(
                    "ack never announced", f"{channel} {k.cg} {k.title} acked at {k.asked:.1f}"
                )
            else:
                counts["not announced (resolved or a fault soon after: allowed)"] += 1
    counts["announcements of acks whose request failed"] = unmatched
    figures.update(counts)
    bad = (
        counts["acknowledgements announced more than once"]
        + counts["acknowledgements never announced"]
    )
    if bad:
        verdict.broken.append(
            f"{bad} acknowledgements not announced exactly once on a channel of their group"
        )


@dataclass
class Expectation:
    key: str  # internal alert key, e.g. PeerDown{peer=mm-az2}
    mode: str  # must | may
    channels: tuple[str, ...]
    began: float
    until: float  # pages about it must arrive before this
    fault: str
    fired: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)


def expectations(faults: list[FaultWindow], t: dict[str, Any]) -> list[Expectation]:
    """What each fault must (or may) page, from how long it actually lasted."""
    out: list[Expectation] = []
    both = CHANNELS[WATCHDOG_GROUP]
    # Failures needed, each a probe round apart (a round lasts up to the timeout).
    detect = t["peer_failures"] * max(t["peer_interval"], t["peer_timeout"]) + t["peer_timeout"]
    for f in faults:
        down = f.ended - f.began
        page_until = f.ended + 60.0
        if f.kind in ("kill", "kill-mid-send", "stop"):
            mode = (
                "must"
                if down >= detect + 2.0
                else "may"
                if down > (t["peer_failures"] - 1) * t["peer_interval"] - 0.5
                else ""
            )
            if mode:
                out.append(
                    Expectation(
                        f"PeerDown{{peer={f.target}}}", mode, both, f.began, page_until, f.name()
                    )
                )
        elif f.kind == "store-ro":
            after = t["store_failing_after"]
            mode = "must" if down >= after + 5 else "may" if down >= after - 2 else ""
            if mode:
                out.append(
                    Expectation(
                        f"StoreFailing{{instance={f.target}}}",
                        mode,
                        both,
                        f.began,
                        page_until,
                        f.name(),
                    )
                )
        elif f.kind == "prometheus-kill":
            timeout = t["heartbeat_timeout"]
            mode = "must" if down >= timeout + 8 else "may" if down > timeout - 8 else ""
            if mode:
                out.append(
                    Expectation(
                        "HeartbeatMissing{heartbeat=prometheus}",
                        mode,
                        both,
                        f.began,
                        page_until,
                        f.name(),
                    )
                )
        elif f.kind in ("smtp-451", "smtp-down"):
            after = t["channel_failing_after"]
            mode = "must" if down >= after + 15 else "may" if down >= after - 10 else ""
            if mode:
                out.append(
                    Expectation(
                        "ChannelFailing{channel=mail}",
                        mode,
                        ("wecom",),
                        f.began,
                        page_until,
                        f.name(),
                    )
                )
        elif f.kind == "wecom-errors":
            # 45009 holds every retry for at least a minute: the channel may well fail longer
            # than channel_failing_after.
            after = t["channel_failing_after"]
            mode = "may" if f.target == "45009" or down >= after - 10 else ""
            if mode:
                out.append(
                    Expectation(
                        "ChannelFailing{channel=wecom}",
                        mode,
                        ("mail",),
                        f.began,
                        page_until,
                        f.name(),
                    )
                )
                out.append(
                    Expectation(
                        "ChannelFailing{channel=dba-robot}",
                        "may",
                        ("mail", "wecom"),
                        f.began,
                        page_until,
                        f.name(),
                    )
                )
    return out


def _pages(
    verdict: Verdict, anns: list[Announcement], faults: list[FaultWindow], timers: dict[str, Any]
) -> None:
    expected = expectations(faults, timers)
    counts: dict[str, int] = defaultdict(int)
    for a in anns:
        if not a.internal or a.cg != WATCHDOG_GROUP:
            continue
        keys = {item.key for item in a.alerts if not item.episode} | set(a.keys)
        if not keys:
            keys = {f"{a.title}{{?}}"}  # the message does not say what about: the name decides
        for key in keys:
            states = [item.status for item in a.alerts if item.key == key]
            status = states[0] if states else a.status
            match = next(
                (
                    e
                    for e in expected
                    if (e.key == key or (key.endswith("{?}") and e.key.startswith(key[:-3] + "{")))
                    and e.began - 2 <= a.t <= (e.until if status == "firing" else e.until + 120)
                ),
                None,
            )
            if match is None or a.channel not in match.channels:
                counts["false pages"] += 1
                verdict.sample(
                    "false page",
                    f"{a.channel} [{status}] {key} at {a.t:.1f}{' (digest)' if a.digest else ''}"
                    f" — no fault implies it",
                )
                continue
            book = match.fired if status == "firing" else match.resolved
            book[a.channel] = book.get(a.channel, 0) + 1
    for e in expected:
        for channel in e.channels:
            fired, resolved = e.fired.get(channel, 0), e.resolved.get(channel, 0)
            what = f"{e.key} for {e.fault} on {channel}: paged {fired}x, resolved {resolved}x"
            if e.mode == "must" and fired == 0:
                counts["missed pages"] += 1
                verdict.sample("missed page", what)
            elif fired > 1 or resolved > 1:
                counts["pages sent more than once"] += 1
                verdict.sample("page more than once", what)
            elif fired and not resolved:
                counts["pages never resolved"] += 1
                verdict.sample("page never resolved", what)
            elif fired:
                counts[f"paged once and resolved ({e.mode})"] += 1
            else:
                counts["not paged (allowed)"] += 1
    verdict.figures["pages"] = dict(counts)
    verdict.figures["expected pages"] = [
        f"{e.mode}: {e.key} on {','.join(e.channels)} ({e.fault})" for e in expected
    ]
    bad = (
        counts["false pages"]
        + counts["missed pages"]
        + counts["pages sent more than once"]
        + counts["pages never resolved"]
    )
    if bad:
        verdict.broken.append(
            f"internal pages do not match the faults: {counts['false pages']} false, "
            f"{counts['missed pages']} missed, {counts['pages sent more than once']} repeated, "
            f"{counts['pages never resolved']} never resolved"
        )


# -- the report --------------------------------------------------------------------------------


def render(verdict: Verdict, meta: dict[str, Any]) -> str:
    lines = [
        f"# Fault campaign: seed {verdict.seed}, {meta.get('minutes')} minutes",
        "",
        f"Verdict: **{'every promise kept' if verdict.ok else 'BROKEN PROMISES'}**",
        "",
    ]
    for broken in verdict.broken:
        lines.append(f"- broken: {broken}")
    if verdict.broken:
        lines.append("")
    for name, value in verdict.figures.items():
        lines.append(f"## {name}")
        lines.append("")
        if isinstance(value, dict):
            for k, v in value.items():
                lines.append(f"- {k}: {v}")
        elif isinstance(value, list):
            for v in value:
                lines.append(f"- {v}")
        else:
            lines.append(str(value))
        lines.append("")
    for promise, samples in verdict.details.items():
        lines.append(f"## samples: {promise}")
        lines.append("")
        lines += [f"- {s}" for s in samples]
        lines.append("")
    lines.append(
        f"Replay: `python bench/campaign.py --minutes {meta.get('minutes')} --seed {verdict.seed}`"
    )
    return "\n".join(lines)
