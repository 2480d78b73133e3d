"""The chat helpers: byte-limit splitting, markdown neutralising, WeCom's errcode classes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_wecom import alert, group, message
from monitor_manager.channels.base import ChannelError
from monitor_manager.channels.chat_text import neutralise, neutralise_message, safe_url
from monitor_manager.channels.text_parts import split_content, text_marker, utf8_len
from monitor_manager.channels.wecom_api import error_for, markdown_marker

MARKER = re.compile(r'^(?:<font color="comment">)?\((\d+)/(\d+)\)(?:</font>)?\n')

UNCAPPED = 1000  # these tests are about where parts break, not how many there may be


def strip_markers(parts: list[str]) -> list[str]:
    return [MARKER.sub("", p, count=1) for p in parts]


def numbers(parts: list[str]) -> list[tuple[int, int]]:
    found = [MARKER.match(p) for p in parts]
    assert all(found), parts
    return [(int(m.group(1)), int(m.group(2))) for m in found if m]


def same_text(parts: list[str], original: str) -> bool:
    """Nothing lost: the parts, markers removed, hold the original apart from whitespace."""
    return "".join("".join(strip_markers(parts)).split()) == "".join(original.split())


# --- splitting ------------------------------------------------------------------------------


def test_content_within_the_limit_is_one_part_without_marker() -> None:
    text = "告警\n" * 100
    assert split_content(text, utf8_len(text), markdown=False) == [text]


def test_long_chinese_text_splits_at_lines_into_numbered_parts_within_the_byte_limit() -> None:
    lines = [f"第{i}行：数据库连接池耗尽，请立即检查主库与从库的复制延迟。" for i in range(200)]
    text = "\n".join(lines)
    parts = split_content(text, 2048, markdown=False, max_parts=UNCAPPED)
    assert len(parts) > 1
    assert all(utf8_len(p) <= 2048 for p in parts)
    assert numbers(parts) == [(i, len(parts)) for i in range(1, len(parts) + 1)]
    # Whole lines only: every line of every part is one of the original lines.
    assert [line for p in strip_markers(parts) for line in p.split("\n")] == lines


def test_a_single_line_longer_than_the_limit_splits_between_characters_not_bytes() -> None:
    text = "磁盘空间不足" * 1000  # 18 000 bytes, no spaces, no newlines
    parts = split_content(text, 2048, markdown=False, max_parts=UNCAPPED)
    assert all(utf8_len(p) <= 2048 for p in parts)
    for p in parts:
        p.encode("utf-8").decode("utf-8", "strict")  # no half characters anywhere
    assert "".join(strip_markers(parts)) == text


def test_parts_prefer_to_end_at_a_blank_line_between_alerts() -> None:
    blocks = ["\n".join(f"alert {b} line {i} " + "x" * 40 for i in range(6)) for b in range(12)]
    parts = split_content("\n\n".join(blocks), 1024, markdown=False, max_parts=UNCAPPED)
    for p in strip_markers(parts):
        # Each part holds whole alert blocks, never the tail or head of one.
        assert p.split("\n")[0].endswith("line 0 " + "x" * 40)
        assert p.split("\n")[-1].endswith("line 5 " + "x" * 40)


def test_markers_count_inside_the_limit_even_past_nine_parts() -> None:
    text = "\n".join("行" * 30 for _ in range(400))  # ~36 KB: dozens of parts
    parts = split_content(text, 300, markdown=True, max_parts=UNCAPPED, marker=markdown_marker)
    assert len(parts) > 99
    assert all(utf8_len(p) <= 300 for p in parts)
    assert numbers(parts)[-1] == (len(parts), len(parts))
    assert parts[0].startswith(markdown_marker(1, len(parts)))


def test_links_are_never_split() -> None:
    links = " ".join(f"[来源{i}](http://prometheus.example.com/graph?n={i})" for i in range(200))
    parts = split_content(links, 512, markdown=True, max_parts=UNCAPPED)
    assert len(parts) > 1
    for p in strip_markers(parts):
        assert utf8_len(p) <= 512
        # Every bracket opens a whole link and every link is whole.
        assert p.count("[") == p.count("]") == len(re.findall(r"\[[^\]]*\]\([^)]*\)", p))
    assert same_text(parts, links)


def test_font_elements_are_never_split_even_across_lines() -> None:
    element = '<font color="warning">第一行\n第二行\n第三行</font>'
    text = "\n".join(["前言" * 20] + [element] * 40)
    parts = split_content(text, 400, markdown=True, max_parts=UNCAPPED)
    assert len(parts) > 1
    for p in strip_markers(parts):
        assert p.count("<font") == p.count("</font>")
        assert "第二行" not in p or element in p
    assert same_text(parts, text)


def test_a_font_element_larger_than_a_part_is_split_and_rewrapped() -> None:
    text = '<font color="warning">' + "告警" * 400 + "</font>"
    parts = split_content(text, 512, markdown=True, max_parts=UNCAPPED)
    for p in strip_markers(parts):
        assert p.startswith('<font color="warning">') and p.endswith("</font>")
    assert all(utf8_len(p) <= 512 for p in parts)


def test_a_limit_too_small_for_the_markers_is_refused() -> None:
    with pytest.raises(ValueError):
        split_content("x" * 100, 20, markdown=True)


alphabet = st.sampled_from(
    [
        "a",
        "b",
        " ",
        "\n",
        "\n\n",
        "告",
        "警",
        "🔥",
        "é",
        "[链接](http://x.cn/a)",
        '<font color="info">好</font>',
        "`代码`",
        "**粗体**",
        "<@zhangsan>",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(alphabet, min_size=1, max_size=600),
    limit=st.sampled_from([100, 257, 2048]),
    markdown=st.booleans(),
)
def test_every_split_fits_the_limit_and_loses_nothing(
    pieces: list[str], limit: int, markdown: bool
) -> None:
    text = "".join(pieces)
    parts = split_content(text, limit, markdown=markdown, max_parts=UNCAPPED)
    assert all(utf8_len(p) <= limit for p in parts)
    if len(parts) > 1:
        assert [n for n, _ in numbers(parts)] == list(range(1, len(parts) + 1))
    assert same_text(parts, text)


def test_markers_read_as_part_numbers() -> None:
    assert text_marker(2, 3) == "(2/3)\n"
    assert markdown_marker(1, 2) == '<font color="comment">(1/2)</font>\n'


# --- neutralising ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["<", ">", "`", "[", "]"])
def test_markup_characters_are_neutralised(raw: str) -> None:
    assert raw not in neutralise(f"a{raw}b")


def test_neutralised_values_keep_their_meaning_to_a_reader() -> None:
    assert neutralise('<font color="info">[ok](x) `rm`</font>') == (
        '＜font color="info"＞［ok］(x) ˋrmˋ＜/font＞'
    )


def test_a_message_is_neutralised_in_labels_annotations_and_names() -> None:
    evil = alert(1, labels={"job": "<font>[x](y)`"}, annotations={"summary": "<@all> ]"})
    msg = neutralise_message(message(group("g1", evil)))
    a = msg.groups[0].alerts[0]
    for value in [a.labels["job"], a.annotations["summary"]]:
        assert not set(value) & set("<>`[]")
    assert a.generator_url.startswith("http://prometheus.example.com")


def test_urls_are_made_safe_as_link_targets() -> None:
    assert safe_url("http://p:9090/graph?g0.expr=rate(x[5m]) > 1") == (
        "http://p:9090/graph?g0.expr=rate%28x%5B5m%5D%29%20%3E%201"
    )
    assert safe_url("javascript:alert(1)") == ""
    assert safe_url("") == ""


# --- errcodes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errcode", "permanent"),
    [
        (-1, False),
        (45009, False),
        (45033, False),
        (40003, True),
        (40013, True),
        (40056, True),
        (40058, True),
        (44004, True),
        (45002, True),
        (48002, True),
        (60020, True),
        (81013, True),
        (82001, True),
        (93000, True),
        (12345, True),
    ],
)
def test_errcodes_are_classified(errcode: int, permanent: bool) -> None:
    error = error_for(errcode, "some errmsg, hint: [x], from ip: 1.2.3.4", "message/send")
    assert isinstance(error, ChannelError)
    assert error.permanent is permanent
    assert f"errcode {errcode}" in error.reason
    assert "from ip" not in error.reason


def test_a_frequency_limit_asks_for_at_least_a_minute_of_backoff() -> None:
    error = error_for(45009, "api freq out of limit", "message/send")
    assert not error.permanent and error.retry_after is not None and error.retry_after >= 60


def test_the_errcode_reason_names_the_fix() -> None:
    assert "trusted IP" in error_for(60020, "not allow to access from your ip", "send").reason


def test_error_reasons_are_redacted() -> None:
    error = error_for(40014, "invalid access_token=abc123 for s3cr3t", "send", "s3cr3t")
    assert "abc123" not in error.reason and "s3cr3t" not in error.reason


def test_dingtalk_and_feishu_neutralising_goes_further_than_wecom_and_keeps_metric_names() -> None:
    from monitor_manager.channels.chat_text import neutralise, neutralise_markup

    assert neutralise_markup('node_cpu_seconds_total{mode="idle"}') == (
        'node_cpu_seconds_total{mode="idle"}'
    )
    assert neutralise_markup("_it_ __b__ **b** ~~s~~ @all") == (
        "＿it＿ ＿＿b＿＿ ∗∗b∗∗ ～～s～～ ＠all"
    )
    assert neutralise_markup("<at id=all></at> [x](http://e) `c`") == (
        "＜at id=all＞＜/at＞ ［x］(http://e) ˋcˋ"
    )
    assert neutralise_markup("# h\n  - item\n+ p\n1. one\n2) two\n===\nok-not-a-list") == (
        "＃ h\n  － item\n＋ p\n1． one\n2） two\n＝==\nok-not-a-list"
    )
    # WeCom's neutralising is unchanged.
    assert neutralise("**b** @all _i_ # h") == "**b** @all _i_ # h"
