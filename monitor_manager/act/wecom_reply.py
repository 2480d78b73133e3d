"""What a member's reply to the WeCom app means: `ack CODE` / `确认 CODE` acknowledges.

Decide, then do: `decide` turns one decrypted callback message into a value, either a text
to answer with (`Say`) or an acknowledgement to make (`Acknowledge`), from the config and
memory alone; web/wecom_callback.py carries it out and answers. `say` words the answers, in
the config's language. `RecentMessages` remembers the MsgIds answered lately: WeCom sends a
callback again when it has no answer within 5 s (three times), and a retried `ack` must not
act twice.

A member acknowledges as themselves: the sender (FromUserName, authenticated by the
callback's signature) is matched to a configured member by their `wechat` id, and only in a
contact group that reaches that member through this channel, and is the alert group's own or
one it escalated to.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from monitor_manager.act.actions import MAX_COMMENT, comment_text
from monitor_manager.act.links import CODE_LENGTH, short_code
from monitor_manager.act.wecom_crypto import WecomCrypto
from monitor_manager.channels.chat_text import neutralise
from monitor_manager.channels.wechat import WechatSettings
from monitor_manager.clock import Clock, format_time
from monitor_manager.config import Config
from monitor_manager.converge.convergence import Convergence, Group
from monitor_manager.models import Member

# Events a person causes by opening or following the app, or by a menu click: answered with
# how to acknowledge. Others (LOCATION is reported every few seconds where enabled, contact
# and job events come from WeCom itself) get an empty answer, or every one would be a message.
ANSWERED_EVENTS = frozenset({"subscribe", "enter_agent", "click"})
MAX_SHOWN = 100  # characters of a label value or name quoted in an answer
MAX_DESCRIBED = 300  # characters of an alert group's description in an answer
# Another request for a MsgId still being handled waits this long for its answer: within
# WeCom's 5 s, which the retry itself is also given.
RETRY_WAIT = 4.0

_KEYWORDS = ("ack", "确认")
_SEPARATORS = " \t\r\n\u3000:：,，"  # between the keyword and the code (full-width too)
# Any 5 letters and digits are read as a code (one outside CODE_LETTERS is simply unknown).
_CODE = re.compile(rf"[0-9A-Z]{{{CODE_LENGTH}}}(?![0-9A-Z])")


@dataclass(frozen=True)
class Command:
    """`ack CODE [comment]`; `code` is "" when the keyword came without a readable code."""

    code: str
    comment: str = ""


def parse_command(content: str) -> Command | None:
    """`ack 7KQ2M`, `ACK 7kq2m done`, `确认 7KQ2M 已处理`, `确认７ＫＱ２Ｍ`: the code (upper
    case) and the comment; None when the text is not an acknowledgement at all.

    Phones type full-width letters and spaces, so the keyword and the code are read after NFKC
    normalisation; the comment is kept as written.
    """
    text = content.strip()  # str.strip takes U+3000 (the ideographic space) too
    keyword = next(
        (k for k in _KEYWORDS if unicodedata.normalize("NFKC", text[: len(k)]).lower() == k),
        None,
    )
    if keyword is None:
        return None
    rest = text[len(keyword) :]
    first = unicodedata.normalize("NFKC", rest[:1])
    if first.isascii() and first.isalpha():
        return None  # "acknowledged", "acme": another word that starts the same
    rest = rest.lstrip(_SEPARATORS)
    head = unicodedata.normalize("NFKC", rest[: CODE_LENGTH + 1]).upper()
    m = _CODE.match(head)
    if m is None or len(head) != len(rest[: CODE_LENGTH + 1]):
        return Command("")
    comment = rest[CODE_LENGTH:]  # NFKC kept the length, so the code is the first 5 characters
    return Command(m.group(), comment.strip(_SEPARATORS))


@dataclass(frozen=True)
class Say:
    """An answer without a change: `what` names one of the texts in `TEXTS`."""

    what: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Acknowledge:
    """Acknowledge alert group `key` as `member` (its contact group's name for them)."""

    key: str
    member: str
    contact_group: str
    code: str
    comment: str
    what: str  # the group, as `describe` words it
    firing: int  # its alerts firing


Decision = Say | Acknowledge | None  # None: answer nothing (an empty 200)


def decide(
    fields: dict[str, str], channel: str, config: Config, convergence: Convergence
) -> Decision:
    """What to do about one decrypted message from the app of `channel`."""
    msg_type = fields.get("MsgType", "")
    if msg_type == "event":
        return Say("help") if fields.get("Event", "") in ANSWERED_EVENTS else None
    if msg_type != "text":
        return Say("not_text")
    command = parse_command(fields.get("Content", ""))
    if command is None:
        return Say("help")
    if not command.code:
        return Say("bad_code")
    code = command.code
    sender = fields.get("FromUserName", "")
    reached = _reached_groups(config, channel)
    if not any(_member(reached[g], sender) for g in reached):
        return Say("stranger", {"user": _shown(sender)})
    matches = [g for g in convergence.groups.values() if short_code(g.key) == code]
    if not matches:
        return Say("unknown_code", {"code": code})
    mine = [(g, m) for g in matches if (m := _acting_member(g, sender, reached, convergence))]
    if not mine:
        contact_groups = ", ".join(sorted({_shown(g.contact_group) for g in matches}))
        return Say("not_member", {"code": code, "contact_group": contact_groups})
    firing = [(g, m) for g, m in mine if convergence.fires(g)]
    if len(firing) > 1:  # five characters of a hash: two open groups may share them
        return Say("ambiguous", {"code": code})
    if not firing:
        return Say("resolved", {"code": code, "what": describe(mine[0][0])})
    group, member = firing[0]
    what = describe(group)
    known = convergence.acks.current(group.key, group.created_at)
    if known is not None:
        return already(code, what, known.by, known.at, config)
    comment = comment_text(command.comment[:MAX_COMMENT])
    count = sum(1 for fp in group.members if convergence.alerts[fp].status == "firing")
    return Acknowledge(group.key, member.name, group.contact_group, code, comment, what, count)


def already(code: str, what: str, by: str, at: float, config: Config) -> Say:
    when = format_time(at, config.templates.zone)
    return Say("already", {"code": code, "what": what, "by": _shown(by), "at": when})


def _reached_groups(config: Config, channel: str) -> dict[str, tuple[Member, ...]]:
    """The contact groups this channel reaches, with their members."""
    return {g.name: g.members for g in config.contact_groups if channel in g.channels}


def _member(members: tuple[Member, ...], sender: str) -> Member | None:
    # WeCom user ids are case-insensitive (and its API answers them lower-cased).
    wanted = sender.casefold()
    return next((m for m in members if m.wechat and m.wechat.casefold() == wanted), None)


def _acting_member(
    group: Group, sender: str, reached: dict[str, tuple[Member, ...]], convergence: Convergence
) -> Member | None:
    """The sender as a member of the group's own contact group, or of one it was escalated to
    (those were sent its code too); only contact groups this channel reaches count."""
    steps = convergence.escalation.get(group.contact_group, ())[: group.escalated]
    names = [group.contact_group] + [name for step in steps for name in step.groups]
    for name in names:
        member = _member(reached.get(name, ()), sender)
        if member is not None:
            return member
    return None


def describe(group: Group) -> str:
    """`Disk (cluster=prod)`: the group labels, alertname first, neutralised (the values are
    alert text, and WeCom text messages render <a href> and <@userid>)."""
    labels = {k: v for k, v in group.group_labels.items() if v}
    name = _shown(labels.pop("alertname", ""))
    rest = ", ".join(f"{_shown(k)}={_shown(v)}" for k, v in sorted(labels.items()))
    text = f"{name} ({rest})" if name and rest else name or rest or "-"
    # Grouped by every label ("..."), that is many: an answer stays well within WeCom's
    # 2048 bytes of text.
    return text if len(text) <= MAX_DESCRIBED else text[: MAX_DESCRIBED - 1] + "…"


def _shown(value: str) -> str:
    value = " ".join(value.split())  # no line breaks inside a value
    if len(value) > MAX_SHOWN:
        value = value[: MAX_SHOWN - 1] + "…"
    return neutralise(value)


# -- the answers -------------------------------------------------------------------------------
_HELP = {
    "en": "To acknowledge an alert, reply: ack CODE [comment], with the code from the alert "
    "message (e.g. ack 7KQ2M).",
    "zh": "确认告警请回复：确认 代码 [备注]，代码见告警消息（例如：确认 7KQ2M）。",
}
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "acknowledged": "Acknowledged {code} as {member}: {what}, {firing} firing (contact "
        "group {contact_group}). It will not repeat or escalate while it fires.",
        "already": "{code} ({what}) was already acknowledged by {by} at {at}.",
        "resolved": "{code} ({what}) has resolved: nothing to acknowledge.",
        "unknown_code": "No open alert group has the code {code} (it may have resolved). "
        + _HELP["en"],
        "not_member": "{code} belongs to contact group {contact_group}, and you are not one of "
        "its members: it was not acknowledged.",
        "stranger": "Your WeCom account ({user}) is not a member of any contact group this app "
        "pages, so it cannot acknowledge alerts. Ask an administrator to add "
        'wechat = "{user}" to your entry in the config.',
        "ambiguous": "{code} matches more than one open alert group: use the acknowledge link "
        "in the alert message instead.",
        "bad_code": "That is not an alert code: codes are 5 letters and digits. " + _HELP["en"],
        "not_text": "Only text replies are understood. " + _HELP["en"],
        "help": _HELP["en"],
        "store_failed": "The acknowledgement could not be saved just now: please send it again.",
    },
    "zh": {
        "acknowledged": "已确认 {code}（{member}）：{what}，{firing} 条告警中（联系组 "
        "{contact_group}）。告警持续期间不再重复通知或升级。",
        "already": "{code}（{what}）已由 {by} 于 {at} 确认。",
        "resolved": "{code}（{what}）已恢复，无需确认。",
        "unknown_code": "没有代码为 {code} 的未恢复告警组（可能已经恢复）。" + _HELP["zh"],
        "not_member": "{code} 属于联系组 {contact_group}，你不是该组成员，未确认。",
        "stranger": "你的企业微信账号（{user}）不在本应用通知的任何联系组中，无法确认告警。"
        '请管理员在配置中为你添加 wechat = "{user}"。',
        "ambiguous": "代码 {code} 对应多个未恢复的告警组，请改用告警消息中的确认链接。",
        "bad_code": "这不是告警代码：代码为 5 位字母或数字。" + _HELP["zh"],
        "not_text": "只能处理文字回复。" + _HELP["zh"],
        "help": _HELP["zh"],
        "store_failed": "暂时无法保存确认，请重新发送。",
    },
}


def say(which: str, language: str, /, **params: str) -> str:
    """The answer `which` (a key of TEXTS) in `language` (English unless "zh")."""
    return TEXTS.get(language, TEXTS["en"])[which].format(**params)


def acknowledged(decision: Acknowledge, language: str) -> str:
    return say(
        "acknowledged",
        language,
        code=decision.code,
        member=_shown(decision.member),
        what=decision.what,
        firing=str(decision.firing),
        contact_group=_shown(decision.contact_group),
    )


# -- retried callbacks -------------------------------------------------------------------------
class RecentMessages:
    """The answers to the MsgIds seen in the last `keep` seconds (at most `limit` of them).

    An entry is a future: a retry that comes while the first request is still acting waits for
    its answer rather than acting again. `keep` outlasts the window in which a request's
    timestamp is fresh (±300 s), so a replayed request is always recognised.
    """

    def __init__(self, clock: Clock, limit: int = 10_000, keep: float = 900.0) -> None:
        self.clock = clock
        self.limit = limit
        self.keep = keep
        self._entries: OrderedDict[Hashable, tuple[float, asyncio.Future[str | None]]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> asyncio.Future[str | None] | None:
        self._prune()
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def start(self, key: Hashable) -> asyncio.Future[str | None]:
        """A new entry for `key`: set its result when the answer is known."""
        self._prune()
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._entries[key] = (self.clock(), future)
        while len(self._entries) > self.limit:
            self._drop_oldest()
        return future

    @staticmethod
    def settle(future: asyncio.Future[str | None], answer: str | None) -> None:
        """Give the waiting retries `answer` (unless the entry was dropped meanwhile)."""
        if not future.done():
            future.set_result(answer)

    def forget(self, key: Hashable) -> None:
        """Forget `key` (its change was not made: a retry may try again)."""
        self._entries.pop(key, None)

    def _prune(self) -> None:
        horizon = self.clock() - self.keep
        while self._entries and next(iter(self._entries.values()))[0] < horizon:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, (_, future) = self._entries.popitem(last=False)
        if not future.done():
            future.set_result(None)  # nobody waits this long; never leave one hanging


@dataclass
class CallbackState:
    """Per application: the WeCom apps that take replies (channel name → their crypto and
    settings) and the MsgIds answered lately."""

    apps: dict[str, tuple[WecomCrypto, WechatSettings]]
    recent: RecentMessages

    @classmethod
    def from_config(cls, config: Config, clock: Clock) -> CallbackState:
        apps = {}
        for channel in config.channels:
            settings = channel.settings
            if channel.type == "wechat" and settings.takes_replies:
                crypto = WecomCrypto(
                    settings.callback_token, settings.callback_aes_key, settings.corp_id
                )
                apps[channel.name] = (crypto, settings)
        return cls(apps, RecentMessages(clock))
