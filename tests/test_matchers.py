"""The matcher engine: Alertmanager's text forms, anchoring, negation and missing labels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor_manager.converge.matchers import (
    Matcher,
    MatcherError,
    compile_regex,
    from_config,
    matches_all,
    parse_matcher,
    parse_matchers,
    to_text,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a="b"', Matcher("a", "b")),
        ("a=b", Matcher("a", "b")),
        ('  a  !=  "x y"  ', Matcher("a", "x y", False, False)),
        ('a=~"b.*"', Matcher("a", "b.*", True, True)),
        ("a!~b", Matcher("a", "b", True, False)),
        ('a=""', Matcher("a", "")),
        ("a=", Matcher("a", "")),
        ("a==b", Matcher("a", "=b")),  # the value is everything after the operator
        ('foo="bar\\"baz"', Matcher("foo", 'bar"baz')),
        ('a="x\\ny"', Matcher("a", "x\ny")),
        ('a="back\\\\slash"', Matcher("a", "back\\slash")),
        ('a="\\d+"', Matcher("a", "\\d+")),  # a spurious escape keeps its backslash
        ('a=~"\\d+"', Matcher("a", "\\d+", True)),
        ("a=trailing\\", Matcher("a", "trailing\\")),
        ('a="x, y"', Matcher("a", "x, y")),
        ("job:rate=1", Matcher("job:rate", "1")),  # the text form allows colons, as Prometheus
        ('a="中文"', Matcher("a", "中文")),
        ('a="  padded "', Matcher("a", "  padded ")),
    ],
)
def test_parse_matcher_reads_alertmanager_text_forms(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "bad matcher format"),
        ("alertname", "bad matcher format"),
        ('"a"="b"', "bad matcher format"),
        ("1a=b", "bad matcher format"),
        ("a~=b", "bad matcher format"),
        ('a="b', "unescaped double quote"),
        ('a=b"', "unescaped double quote"),
        ('a="b"c"', "unescaped double quote"),
        ('a="b\\"', "unescaped double quote"),
        ('a=~"(unclosed"', "invalid regular expression"),
        ("a=\ud800", "not valid UTF-8"),
    ],
)
def test_parse_matcher_refuses_bad_text_with_a_clear_error(text: str, error: str) -> None:
    with pytest.raises(MatcherError, match=error):
        parse_matcher(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{foo = "bar", dings != "bums", }',
            [Matcher("foo", "bar"), Matcher("dings", "bums", False, False)],
        ),
        ("foo=bar,dings!=bums", [Matcher("foo", "bar"), Matcher("dings", "bums", False, False)]),
        (
            '{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}',
            [Matcher("quote", 'She said: "Hi, ladies! That\'s gender-neutral…"')],
        ),
        ('statuscode=~"5.."', [Matcher("statuscode", "5..", True)]),
        ('{a="b", c=~"d"}', [Matcher("a", "b"), Matcher("c", "d", True)]),
        ('{a="x,y",b=~"1|2"}', [Matcher("a", "x,y"), Matcher("b", "1|2", True)]),
        ("{}", []),
        ("", []),
    ],
)
def test_parse_matchers_reads_a_braces_list(text: str, expected: list[Matcher]) -> None:
    assert parse_matchers(text) == expected


def test_parse_matchers_refuses_an_empty_item() -> None:
    with pytest.raises(MatcherError, match="bad matcher format"):
        parse_matchers("a=b,,c=d")


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        # regexes are anchored at both ends
        ('a=~"b"', {"a": "ab"}, False),
        ('a=~"b"', {"a": "ba"}, False),
        ('a=~"b"', {"a": "b"}, True),
        ('a=~"b|c"', {"a": "xc"}, False),  # anchoring wraps the alternation: ^(?:b|c)$
        ('a=~"b|c"', {"a": "c"}, True),
        ('a=~"b.*"', {"a": "bcd"}, True),
        ('a=~"x"', {"a": "x\n"}, False),  # Python's $ would accept a trailing newline
        ('a=~"x$"', {"a": "x\n"}, False),
        ('a=~"\\\\d+"', {"a": "٣"}, False),  # \d is ASCII in RE2
        ('a=~"(?i)prod"', {"a": "PROD"}, True),
        ('a=~"(?i)b|c"', {"a": "xB"}, False),  # a leading flag keeps the whole pattern anchored
        # a missing label is the empty string
        ('a="b"', {}, False),
        ('a=""', {}, True),
        ('a=""', {"a": "x"}, False),
        ('a!="b"', {}, True),
        ('a!="b"', {"a": "b"}, False),
        ('a!=""', {}, False),
        ('a!=""', {"a": "x"}, True),
        ('a=~".*"', {}, True),
        ('a=~".+"', {}, False),
        ('a!~".+"', {}, True),
        ('a!~"b"', {"a": "b"}, False),
        ('a!~"b"', {"a": "bb"}, True),
        ('a!~"b"', {}, True),
        ('a="b"', {"a": "B"}, False),
    ],
)
def test_matcher_semantics_follow_alertmanager(
    matcher: str, labels: dict[str, str], expected: bool
) -> None:
    assert parse_matcher(matcher).matches(labels) is expected


def test_matches_all_needs_every_matcher_and_an_empty_list_matches_everything() -> None:
    ms = parse_matchers('{alertname="X", env=~"prod|stage"}')
    assert matches_all(ms, {"alertname": "X", "env": "prod"})
    assert not matches_all(ms, {"alertname": "X", "env": "dev"})
    assert not matches_all(ms, {"env": "prod"})
    assert matches_all([], {"anything": "x"})


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("(?=a)a", "lookahead"),
        ("(?!a)b", "negative lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "negative lookbehind"),
        ("(?>a)", "atomic group"),
        ("(a)\\1", "backreference"),
        ("(?P<x>a)(?P=x)", "backreference"),
        ("(a)?(?(1)b|c)", "conditional"),
        ("a++", "possessive"),
        ("a*+", "possessive"),
        ("a{2,3}+", "possessive"),
        ("a{,3}", "ambiguous"),
        ("[[:alpha:]]+", "POSIX classes"),
        ("\\pL", "invalid regular expression"),
        ("(", "invalid regular expression"),
        ("a)|(b", "unbalanced parenthesis"),  # it must not escape the anchoring
    ],
)
def test_regex_syntax_re2_refuses_is_refused(pattern: str, error: str) -> None:
    with pytest.raises(MatcherError, match=error):
        Matcher("a", pattern, is_regex=True)


@pytest.mark.parametrize(
    "pattern",
    [
        "[(?=]",
        "[\\1]",
        "a+?",
        "a*?",
        "a{2,3}?",
        "(?P<name>x)",
        "(?i)x",
        "[]a]",
        "[^]a]+",
        "a{}+",
        "\\++",
        "x{2}",
    ],
)
def test_regex_syntax_re2_accepts_is_accepted(pattern: str) -> None:
    Matcher("a", pattern, is_regex=True)


def test_an_equality_value_is_never_compiled() -> None:
    assert Matcher("a", "(").matches({"a": "("})


def test_each_distinct_regex_is_compiled_once() -> None:
    compile_regex.cache_clear()
    for _ in range(3):
        Matcher("a", "cached-.*", True).matches({"a": "cached-x"})
    info = compile_regex.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize(
    ("matcher", "text"),
    [
        (Matcher("a", "b"), 'a="b"'),
        (Matcher("a", "b", False, False), 'a!="b"'),
        (Matcher("a", "b.*", True), 'a=~"b.*"'),
        (Matcher("a", "b", True, False), 'a!~"b"'),
        (Matcher("a", 'say "hi"\nback\\slash'), 'a="say \\"hi\\"\\nback\\\\slash"'),
    ],
)
def test_to_text_is_alertmanagers_display_form(matcher: Matcher, text: str) -> None:
    assert to_text(matcher) == text == str(matcher)
    assert parse_matcher(text) == matcher


_VALUES = st.text(st.characters(codec="utf-8"), max_size=30)


@given(
    name=st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True),
    value=_VALUES,
    op=st.sampled_from([(False, True), (False, False)]),
)
def test_to_text_round_trips_through_parse_matcher(
    name: str, value: str, op: tuple[bool, bool]
) -> None:
    matcher = Matcher(name, value, *op)
    assert parse_matcher(to_text(matcher)) == matcher
    assert parse_matchers("{" + to_text(matcher) + ", b=c}") == [matcher, Matcher("b", "c")]


def test_from_config_builds_equality_then_regex_matchers() -> None:
    ms = from_config({"cluster": "batch"}, {"env": "prod|stage"})
    assert ms == (Matcher("cluster", "batch"), Matcher("env", "prod|stage", True))
    assert matches_all(ms, {"cluster": "batch", "env": "stage"})
    assert not matches_all(ms, {"cluster": "batch", "env": "production"})


@pytest.mark.parametrize(
    ("match", "match_re", "field"),
    [
        ({"1bad": "x"}, {}, "maintenance[0].match.1bad"),
        ({"ok": 1}, {}, "maintenance[0].match.ok"),
        ({}, {"env": "("}, "maintenance[0].match_re.env"),
        ({}, {"job:x": "a"}, "maintenance[0].match_re.job:x"),
    ],
)
def test_from_config_errors_name_the_key(
    match: dict[str, object], match_re: dict[str, object], field: str
) -> None:
    with pytest.raises(MatcherError) as info:
        from_config(match, match_re, path="maintenance[0]")  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")
