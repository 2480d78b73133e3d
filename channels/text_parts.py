"""Splitting a message at a byte limit into numbered parts, at most five.

Chat platforms measure content in UTF-8 bytes. A longer message is split at line boundaries
into numbered parts whose markers count inside the limit; a line that alone is too long is
split between words, then between characters, never inside a markdown link, inline code, bold
run or `<font>` element (see `split_content`). Past MAX_PARTS the rest is left out and the last
part says how much (SPEC section 12).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Marker = Callable[[int, int], str]
Overflow = Callable[[int], str]  # the note ending a message cut short: bytes left out -> text
MAX_PARTS = 5  # parts one message may take (SPEC section 12)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def text_marker(index: int, total: int) -> str:
    return f"({index}/{total})\n"


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
    mark = marker or text_marker
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
