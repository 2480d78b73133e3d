"""Alert text made safe for chat messages, and the note that ends a message cut short.

Chat platforms render markup in messages (WeCom even in text messages: `<@userid>` mentions,
`<a href>` links), and alert text is anyone's: label and annotation values are neutralised
before any template sees them, and only http(s) URLs become links.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable

import jinja2

from monitor_manager.channels.base import ChannelError
from monitor_manager.channels.text_parts import Overflow
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Message, map_text

# WeCom markdown has no escape syntax, so characters that would open a tag, a link or inline
# code are swapped for look-alikes that render as text.
_NEUTRAL = str.maketrans({"<": "＜", ">": "＞", "`": "ˋ", "[": "［", "]": "］"})
# Characters that end or break a markdown link target or a tag; percent-encoded in URLs.
_URL_UNSAFE = re.compile(r"[\s()<>\[\]`\"']")


def neutralise(value: str) -> str:
    """`value` with <, >, `, [ and ] replaced by look-alikes that WeCom shows as plain text."""
    return value.translate(_NEUTRAL)


# DingTalk markdown and Feishu (whose text messages too take **bold**, ~~strike~~, [links](url)
# and <at> tags; cards take lark_md) render more than WeCom does, and neither documents an
# escape syntax. Besides WeCom's characters: @ (a mention look-alike), * and ~ (emphasis), an
# underscore that could open or close emphasis (one between two letters or digits cannot, so
# metric names such as node_cpu_seconds_total stay whole and searchable), and at the start of a
# line the characters that make a heading, a list, a rule or a setext heading.
_MARKUP_NEUTRAL = str.maketrans(
    {
        "<": "＜",
        ">": "＞",
        "`": "ˋ",
        "[": "［",
        "]": "］",
        "@": "＠",
        "*": "∗",
        "~": "～",
    }
)
_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
_LINE_START = re.compile(r"(?m)^([ \t]*)([#+=-]|\d+[.)])")
_LINE_START_NEUTRAL = str.maketrans(
    {"#": "＃", "+": "＋", "=": "＝", "-": "－", ".": "．", ")": "）"}
)


def neutralise_markup(value: str) -> str:
    """`value` safe in DingTalk and Feishu messages of every msgtype: what `neutralise` swaps,
    plus @, *, ~, emphasis underscores and line-leading markdown block syntax."""
    value = _EDGE_UNDERSCORE.sub("＿", value.translate(_MARKUP_NEUTRAL))
    return _LINE_START.sub(lambda m: m.group(1) + m.group(2).translate(_LINE_START_NEUTRAL), value)


def safe_url(url: str) -> str:
    """An http(s) URL usable as a markdown link target, or "" when it is not one."""
    url = url.strip()
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        return ""
    return _URL_UNSAFE.sub(lambda m: urllib.parse.quote(m.group(), safe=""), url)


def neutralise_message(message: Message, neutraliser: Callable[[str], str] = neutralise) -> Message:
    """A copy of the message whose label, annotation and name values (and alerts' value
    strings) cannot break markdown (`neutraliser` says how, per platform), and whose URLs are
    http(s) link targets or gone."""
    message = map_text(message, neutraliser)
    groups = tuple(
        dataclasses.replace(
            g,
            key=neutraliser(g.key),
            contact_group=neutraliser(g.contact_group),
            url=safe_url(g.url),
            ack_url=safe_url(g.ack_url),
            alerts=tuple(
                dataclasses.replace(
                    a,
                    generator_url=safe_url(a.generator_url),
                    links={k: url for k, v in a.links.items() if (url := safe_url(v))},
                )
                for a in g.alerts
            ),
        )
        for g in message.groups
    )
    return dataclasses.replace(
        message,
        contact_group=neutraliser(message.contact_group),
        instance=neutraliser(message.instance),
        external_url=safe_url(message.external_url),
        groups=groups,
    )


def tidy(text: str) -> str:
    """Rendered template output without trailing spaces and runs of blank lines."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


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


def render_chat(
    renderer: Renderer,
    names: tuple[str, ...],
    message: Message,
    neutraliser: Callable[[str], str] = neutralise,
    **extra: object,
) -> str:
    """The message rendered by the first of `names` that exists, its alert text neutralised
    first (in every msgtype: WeCom renders <@userid> and <a href> in text too), tidied.
    `extra` goes to the templates (`reply`: people can answer this message with a code)."""
    safe = neutralise_message(message, neutraliser)
    for name in names:
        try:
            text = tidy(renderer.render(name, safe, **extra))
        except jinja2.TemplateNotFound as exc:
            if exc.name != name:  # a template that exists includes one that does not
                raise ChannelError(f"template error: {exc}", permanent=True) from None
            continue
        except jinja2.TemplateError as exc:
            raise ChannelError(f"template error: {exc}", permanent=True) from None
        if not text:
            raise ChannelError("the template rendered an empty message", permanent=True)
        return text
    raise ChannelError(f"no template {' or '.join(names)}", permanent=True)
