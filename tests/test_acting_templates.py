"""Every built-in message template, both languages, shows how to act on a page and what people
did: the acknowledge link (and the WeCom reply code where replies reach us), who acknowledged,
the announcement of an acknowledgement, the escalation marker; untrusted names and comments
escaped or neutralised on every way out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from builders import T0
from fake_wecom import group, message
from monitor_manager.channels.chat_text import neutralise, render_chat
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import Message

ACK_URL = "http://mm-az1.example.com:9095/ack/eyJhIjoxfQ.c2ln"
CHAT = (
    "wechat.md",
    "wechat.txt",
    "dingtalk.md",
    "dingtalk.txt",
    "feishu.md",
    "feishu.txt",
    "feishu_post.txt",
)
ALL = (*CHAT, "text.txt", "email.html")
LANGS = ("en", "zh")


def firing(**extra: Any) -> Message:
    g = dataclasses.replace(group(), ack_url=ACK_URL, code="7KQ2M")
    return dataclasses.replace(message(g), **extra)


def acked(comment: str = "on it", announce: bool = False) -> Message:
    ack = {"by": "Zhang San", "at": T0 + 60, "comment": comment, "via": "link"}
    g = dataclasses.replace(group(), ack=ack, ack_url=ACK_URL, code="7KQ2M")
    return dataclasses.replace(message(g), extra={"announce": "ack"} if announce else {})


def render(lang: str, name: str, msg: Message, **extra: Any) -> str:
    renderer = Renderer(lang)
    if name in CHAT:
        return render_chat(renderer, (name,), msg, neutralise, **extra)
    return renderer.render(name, msg, **extra)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ALL)
def test_a_firing_message_carries_the_acknowledge_link(lang: str, name: str) -> None:
    assert ACK_URL in render(lang, name, firing())


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("wechat.md", "wechat.txt"))
def test_a_wecom_message_shows_the_reply_code_only_where_replies_arrive(
    lang: str, name: str
) -> None:
    with_reply = render(lang, name, firing(), reply=True)
    assert ("ack 7KQ2M" if lang == "en" else "确认 7KQ2M") in with_reply
    assert "7KQ2M" not in render(lang, name, firing())


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ALL)
def test_an_acknowledged_group_says_who_and_offers_no_link(lang: str, name: str) -> None:
    text = render(lang, name, acked())
    assert "Zhang San" in text and "on it" in text
    assert ACK_URL not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", (*ALL, "subject.txt"))
def test_the_announcement_and_the_escalation_are_marked(lang: str, name: str) -> None:
    announce = render(lang, name, acked(announce=True))
    assert "Zhang San" in announce or name == "subject.txt"
    marker = "[ACK]" if name == "subject.txt" else "acknowledged this"
    assert (marker if lang == "en" else "已确认") in announce
    step = {"step": 2, "from": "sre", "unacknowledged_for": 2700.0}
    escalated = render(lang, name, firing(extra={"escalation": step}))
    assert ("ESCALATED" if lang == "en" else "已升级") in escalated
    if name != "subject.txt":
        assert "45m" in escalated and "sre" in escalated


HOSTILE = "<script>alert(1)</script> [x](http://evil.example) <@all>"


@pytest.mark.parametrize("name", CHAT)
def test_a_hostile_comment_cannot_link_or_mention_in_chat(name: str) -> None:
    text = render("en", name, acked(comment=HOSTILE))
    assert "](http://evil.example)" not in text and "<@all>" not in text
    assert "<script>" not in text


def test_a_hostile_comment_is_escaped_in_email() -> None:
    html = render("en", "email.html", acked(comment=HOSTILE))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_non_http_link_is_never_a_button() -> None:
    g = dataclasses.replace(group(), ack_url="javascript:alert(1)", code="7KQ2M")
    html = render("en", "email.html", message(g))
    assert 'href="javascript' not in html
    assert "javascript:" not in render("en", "wechat.md", message(g))


def test_the_webhook_document_carries_the_ack_state_and_the_escalation() -> None:
    import json

    from monitor_manager.channels.webhook import build_payload

    doc = json.loads(json.dumps(build_payload(acked(), "t", "x")))
    (g,) = doc["alertGroups"]
    assert g["ack"]["by"] == "Zhang San" and g["ack"]["at"].endswith("Z")
    step = {"step": 1, "from": "sre", "unacknowledged_for": 900.0}
    doc = build_payload(firing(extra={"escalation": step}), "t", "x")
    assert doc["escalation"] == step and doc["alertGroups"][0]["ackURL"] == ACK_URL
