"""What the two WeCom channels share: byte-limit splitting, markdown neutralising, errcodes, HTTP.

WeCom measures content in UTF-8 bytes of the `content` string (2048 for application text and
markdown, 2048 for robot text, 4096 for robot markdown). A longer message is split at line
boundaries into numbered parts whose markers count inside the limit; a line that alone is too
long is split between words, then between characters, never inside a markdown link or a
`<font>` element (see `split_content`). Nothing is dropped.

WeCom answers HTTP 200 even on failure; success is `errcode == 0` (`error_for`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp

from monitor_manager.channels.base import ChannelError, redact
from monitor_manager.models import Message, map_text

# Application text/markdown and robot text; robot markdown allows twice as much.
APP_LIMIT = 2048
ROBOT_TEXT_LIMIT = 2048
ROBOT_MARKDOWN_LIMIT = 4096

# Tokens that expired or were invalidated early: refresh once and re-send (reference A.3, A.4).
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# System busy and the two frequency limits: worth retrying later. Everything else is a
# configuration or content error that the same request will hit again.
TRANSIENT_ERRORS = frozenset({-1, 45009, 45033})
# A 45009 block lasts as long as the window that was hit, at least a minute (DOC-freq).
FREQ_LIMIT_BACKOFF = 60.0

# Hints for the codes an operator will meet, so a failed delivery says what to fix.
_HINTS: dict[int, str] = {
    -1: "WeCom is busy",
    40001: "wrong corp_id/secret, secret reset, or application disabled",
    40003: "invalid user id",
    40013: "invalid corp_id",
    40014: "invalid access token",
    40056: "invalid agent_id",
    40058: "invalid parameter or content too long",
    41001: "access token missing",
    42001: "access token expired",
    44004: "empty content",
    45002: "content too long",
    45009: "API frequency limit hit",
    45033: "too many concurrent calls",
    48002: "API not authorised for this application",
    60020: "this server's IP is not in the application's trusted IP list (企业可信IP)",
    81013: "none of the recipients is a valid member in the application's visible range",
    82001: "no recipients",
    93000: "invalid robot webhook URL, or the robot was removed from its group",
    93004: "robot disabled",
    93008: "robot not in the group",
    301002: "access token belongs to another agent_id",
}


class RateLimited(ChannelError):
    """A transient failure that must not be retried before `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason, permanent=False)
        self.retry_after = retry_after


def error_for(errcode: int, errmsg: str, what: str, *secrets: str) -> ChannelError:
    """The ChannelError for a non-zero errcode, classified transient or permanent."""
    hint = _HINTS.get(errcode, "")
    detail = _short_errmsg(errmsg)
    reason = f"WeCom {what}: errcode {errcode}"
    reason += f" ({hint})" if hint else ""
    reason += f": {detail}" if detail else ""
    reason = redact(reason, *secrets)
    if errcode == 45009:
        return RateLimited(reason, FREQ_LIMIT_BACKOFF)
    return ChannelError(reason, permanent=errcode not in TRANSIENT_ERRORS)


def _short_errmsg(errmsg: str) -> str:
    # Real errmsgs end in ", hint: [...], from ip: ..., more info at ..."; the head is the news.
    head = errmsg.split(", hint:")[0].strip()
    return head[:200]


# --- HTTP -----------------------------------------------------------------------------------

_MAX_BODY = 64 * 1024


async def call_api(
    session: aiohttp.ClientSession | None,
    method: str,
    url: str,
    *,
    what: str,
    timeout: float,
    secrets: tuple[str, ...],
    params: dict[str, str] | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One WeCom API call; the decoded JSON body, which still has to be checked for errcode.

    Transport errors, timeouts, non-200 answers and bodies that are not a JSON object raise a
    transient ChannelError. Reasons are redacted and chain no exception, because aiohttp's
    exceptions can carry the request URL with its token or key.
    """
    if session is None:
        raise ChannelError(f"WeCom {what}: no HTTP session", permanent=True)
    data = None
    headers = {}
    if payload is not None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    try:
        async with session.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            status = resp.status
            raw = await _read_capped(resp)
    except TimeoutError:
        raise ChannelError(f"WeCom {what}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        reason = redact(f"WeCom {what}: {type(exc).__name__}: {exc}", *secrets)
        raise ChannelError(reason) from None
    snippet = raw[:200].decode("utf-8", "replace").strip()
    if status != 200:
        raise ChannelError(redact(f"WeCom {what}: HTTP {status}: {snippet}", *secrets))
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("errcode"), int):
        raise ChannelError(redact(f"WeCom {what}: unexpected answer: {snippet}", *secrets))
    return body


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    # WeCom answers are small; a wrong api_url must not make us buffer a whole web page.
    body = bytearray()
    while len(body) < _MAX_BODY:
        chunk = await resp.content.read(_MAX_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


# --- Markdown neutralising ------------------------------------------------------------------

# WeCom markdown has no escape syntax, so characters that would open a tag, a link or inline
# code are swapped for look-alikes that render as text.
_NEUTRAL = str.maketrans({"<": "＜", ">": "＞", "`": "ˋ", "[": "［", "]": "］"})
# Characters that end or break a markdown link target or a tag; percent-encoded in URLs.
_URL_UNSAFE = re.compile(r"[\s()<>\[\]`\"']")


def neutralise(value: str) -> str:
    """`value` with <, >, `, [ and ] replaced by look-alikes that WeCom shows as plain text."""
    return value.translate(_NEUTRAL)


def safe_url(url: str) -> str:
    """An http(s) URL usable as a markdown link target, or "" when it is not one."""
    url = url.strip()
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        return ""
    return _URL_UNSAFE.sub(lambda m: urllib.parse.quote(m.group(), safe=""), url)


def neutralise_message(message: Message) -> Message:
    """A copy of the message whose label, annotation and name values cannot break markdown."""
    message = map_text(message, neutralise)
    groups = tuple(
        dataclasses.replace(
            g,
            key=neutralise(g.key),
            contact_group=neutralise(g.contact_group),
            url=safe_url(g.url),
            alerts=tuple(
                dataclasses.replace(a, generator_url=safe_url(a.generator_url)) for a in g.alerts
            ),
        )
        for g in message.groups
    )
    return dataclasses.replace(
        message,
        contact_group=neutralise(message.contact_group),
        instance=neutralise(message.instance),
        external_url=safe_url(message.external_url),
        groups=groups,
    )


def tidy(text: str) -> str:
    """Rendered template output without trailing spaces and runs of blank lines."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


# --- Splitting ------------------------------------------------------------------------------

Marker = Callable[[int, int], str]
Overflow = Callable[[int], str]  # the note ending a message cut short: bytes left out -> text
MAX_PARTS = 5  # parts one message may take (SPEC section 12)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def text_marker(index: int, total: int) -> str:
    return f"({index}/{total})\n"


def markdown_marker(index: int, total: int) -> str:
    return f'<font color="comment">({index}/{total})</font>\n'


# Markdown elements that must stay whole: font elements (possibly over several lines), links,
# mentions, inline code and bold runs.
_ATOM = re.compile(
    r"<font\b[^>]*>.*?</font>|\[[^\]\n]*\]\([^)\n]*\)|<@[^>\n]*>|`[^`\n]*`|\*\*[^*\n]+\*\*",
    re.IGNORECASE | re.DOTALL,
)
_FONT = re.compile(r"(<font\b[^>]*>)(.*)(</font>)", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"\S+\s*|\s+")
# Below this many bytes per part the markers would crowd out the content.
_MIN_BUDGET = 32


def split_content(
    text: str,
    limit: int,
    *,
    markdown: bool,
    marker: Marker | None = None,
    max_parts: int = MAX_PARTS,
    overflow: Overflow | None = None,
) -> list[str]:
    """`text` as at most `max_parts` parts of at most `limit` UTF-8 bytes each, markers
    included.

    One part when it fits. Otherwise each part starts with a marker such as "(2/3)"; parts
    break at line boundaries, preferring blank lines, and only a line longer than a part is
    broken inside, between words or characters but not inside a markdown element. Past
    `max_parts` the rest is left out, and the last part ends with `overflow(bytes left out)`
    (by default a plain count): one alert must not hold a member's message quota for an hour.
    """
    if utf8_len(text) <= limit:
        return [text]
    mark = marker or (markdown_marker if markdown else text_marker)
    total = 2
    while True:
        budget = limit - max(utf8_len(mark(1, total)), utf8_len(mark(total, total)))
        if budget < _MIN_BUDGET:
            raise ValueError(f"a limit of {limit} bytes leaves no room for content")
        chunks = _pack(text, budget, markdown)
        if len(chunks) > max_parts:
            chunks = _capped(
                chunks, budget, markdown, max_parts, utf8_len(text), overflow or _default_overflow
            )
        if len(chunks) <= total:
            break
        # More parts than the markers were sized for: wider numbers, a smaller budget.
        total = len(chunks)
    if len(chunks) == 1:
        return chunks
    return [mark(i, len(chunks)) + chunk for i, chunk in enumerate(chunks, 1)]


def _capped(
    chunks: list[str],
    budget: int,
    markdown: bool,
    max_parts: int,
    total_bytes: int,
    overflow: Overflow,
) -> list[str]:
    """The first `max_parts` chunks, the last shortened to make room for the overflow note."""
    kept = chunks[:max_parts]
    last = kept[-1]
    while True:
        shown = sum(utf8_len(c) for c in kept[:-1]) + utf8_len(last)
        note = overflow(max(total_bytes - shown, 0))
        if utf8_len(last) + 1 + utf8_len(note) <= budget or not last:
            break
        lines = last.split("\n")
        # Whole lines go first; a single line left is cut between characters.
        last = (
            "\n".join(lines[:-1])
            if len(lines) > 1
            else _split_chars(last, max(budget - utf8_len(note) - 1, 1))[0]
        )
        if markdown and last.count("<font") != last.count("</font>"):
            last = re.sub(r"<font\b[^>]*>[^<]*$", "", last)
    kept[-1] = f"{last}\n{note}" if last else note
    return kept


def _default_overflow(left_out: int) -> str:
    return f"… {left_out} more bytes left out"


_OVERFLOW = {"en": "… {n} more bytes left out", "zh": "……另有 {n} 字节未显示"}
_OVERFLOW_LINK = {"en": "the whole message", "zh": "查看完整内容"}


def overflow_note(message: Message, language: str, *, markdown: bool) -> Overflow:
    """The note ending a message cut at MAX_PARTS: how much is missing, and where it is."""
    url = safe_url(
        message.groups[0].url if message.groups and message.groups[0].url else message.external_url
    )
    head = _OVERFLOW.get(language, _OVERFLOW["en"])
    link = _OVERFLOW_LINK.get(language, _OVERFLOW_LINK["en"])

    def note(left_out: int) -> str:
        text = head.format(n=left_out)
        if url:
            text += f": [{link}]({url})" if markdown else f": {url}"
        return text

    return note


def _units(text: str, markdown: bool) -> list[str]:
    """Lines, except that a markdown <font> element spanning lines is one unit."""
    lines = text.split("\n")
    if not markdown:
        return lines
    units: list[str] = []
    pending: list[str] = []
    depth = 0
    for line in lines:
        pending.append(line)
        depth += len(re.findall(r"<font\b", line, re.I)) - len(re.findall(r"</font>", line, re.I))
        if depth <= 0:
            units.append("\n".join(pending))
            pending, depth = [], 0
    if pending:
        units.append("\n".join(pending))
    return units


class _Packer:
    """Greedy filling of parts with units joined by newlines, within `budget` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.parts: list[str] = []
        self.lines: list[str] = []
        self.size = 0

    def add(self, unit: str) -> None:
        size = utf8_len(unit)
        if self.lines and self.size + 1 + size > self.budget:
            self._break()
        if self.lines and self.size + 1 + size > self.budget:
            self.flush()
        self.size += size + (1 if self.lines else 0)
        self.lines.append(unit)

    def _break(self) -> None:
        # Prefer ending a part at a blank line (between alerts) once the part is half full, and
        # carry what follows it into the next part.
        for j in range(len(self.lines) - 1, 0, -1):
            if self.lines[j].strip():
                continue
            head = self.lines[:j]
            if utf8_len("\n".join(head)) >= self.budget // 2:
                tail = self.lines[j + 1 :]
                self.lines = head
                self.flush()
                self.lines = tail
                self.size = utf8_len("\n".join(tail)) if tail else 0
            return

    def flush(self) -> None:
        chunk = "\n".join(self.lines).strip("\n")
        if chunk.strip():
            self.parts.append(chunk)
        self.lines, self.size = [], 0


def _pack(text: str, budget: int, markdown: bool) -> list[str]:
    packer = _Packer(budget)
    for unit in _units(text, markdown):
        if utf8_len(unit) <= budget:
            packer.add(unit)
            continue
        packer.flush()
        pieces = _split_long(unit, budget, markdown)
        for piece in pieces[:-1]:
            packer.add(piece)
            packer.flush()
        packer.add(pieces[-1])
    packer.flush()
    return packer.parts


def _tokens(unit: str, markdown: bool) -> list[str]:
    """Pieces of a unit that may be separated: markdown elements whole, then words."""
    tokens: list[str] = []
    pos = 0
    atoms = _ATOM.finditer(unit) if markdown else iter(())
    for m in atoms:
        tokens += _WORD.findall(unit[pos : m.start()])
        tokens.append(m.group())
        pos = m.end()
    tokens += _WORD.findall(unit[pos:])
    return tokens


def _split_long(unit: str, budget: int, markdown: bool) -> list[str]:
    """A unit longer than `budget` as pieces within it, broken at the safest points."""
    pieces: list[str] = []
    current, size = "", 0
    for token in _tokens(unit, markdown):
        tsize = utf8_len(token)
        if size + tsize <= budget:
            current, size = current + token, size + tsize
            continue
        if current:
            pieces.append(current)
            current, size = "", 0
        if tsize <= budget:
            current, size = token, tsize
            continue
        # One element or word larger than a whole part: cut between characters, repeating
        # a font element's tags around each piece so every part stays well formed.
        fragments = _split_oversized(token, budget, markdown)
        pieces += fragments[:-1]
        current, size = fragments[-1], utf8_len(fragments[-1])
    if current or not pieces:
        pieces.append(current)
    return [p.strip("\n") for p in pieces]


def _split_oversized(token: str, budget: int, markdown: bool) -> list[str]:
    font = _FONT.fullmatch(token) if markdown else None
    if font:
        opening, inner, closing = font.groups()
        room = budget - utf8_len(opening) - utf8_len(closing)
        if room >= _MIN_BUDGET:
            return [opening + p + closing for p in _split_chars(inner, room)]
    return _split_chars(token, budget)


def _split_chars(text: str, budget: int) -> list[str]:
    # Whole code points only, so no part ends in half of a multi-byte character.
    pieces: list[str] = []
    start, size = 0, 0
    for i, char in enumerate(text):
        csize = utf8_len(char)
        if size + csize > budget:
            pieces.append(text[start:i])
            start, size = i, 0
        size += csize
    pieces.append(text[start:])
    return pieces
