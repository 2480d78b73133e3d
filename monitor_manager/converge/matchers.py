"""Alertmanager's label matchers: the one engine behind silences, maintenance windows and routes.

Semantics are those of prometheus/alertmanager `pkg/labels` (v0.25, the amtool Debian ships):
- a label an alert does not carry reads as the empty string, so `team!="db"` matches an alert
  without `team` and `team=~".*"` matches every alert;
- a regular expression is fully anchored, `^(?:re)$`: `a=~"b"` does not match "ab";
- the text form is `name OP value`, OP one of `=` `!=` `=~` `!~`, the value optionally in
  double quotes with OpenMetrics escapes (`\\"`, `\\n`, `\\\\`); `{a="b", c=~"d"}` is a list.

Regular expressions: Alertmanager compiles them with Go's regexp (RE2 syntax); here they are
Python's `re` with `re.ASCII`, because `\\d`, `\\w`, `\\s` and `\\b` are ASCII-only in RE2
(the price: `(?i)` folds ASCII letters only). What RE2 refuses (backreferences, lookaround,
atomic groups, possessive quantifiers, conditionals) is refused here too, so a matcher accepted
here means the same to Alertmanager, and the constructs that make a backtracking engine slow
never get in. RE2 classes Python lacks (`\\pL`, `[[:alpha:]]`) are refused with a clear error
instead of being read as something else.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from monitor_manager.ingest.payload import LABEL_NAME

# Go's \s is [\t\n\f\r ] (no \v, no Unicode spaces): whitespace around the tokens of a matcher.
_WS = "[\t\n\f\r ]"
# '=~' before '=' so that '~' is not read as the start of the value (as in pkg/labels/parse.go).
_MATCHER_TEXT = re.compile(
    rf"{_WS}*([a-zA-Z_:][a-zA-Z0-9_:]*){_WS}*(=~|=|!=|!~){_WS}*(.*?){_WS}*", re.DOTALL
)
_OPS = {"=": (False, True), "!=": (False, False), "=~": (True, True), "!~": (True, False)}
# Constructs Go's RE2 rejects, looked for outside character classes.
_RE2_UNSUPPORTED = (
    ("(?=", "lookahead"),
    ("(?!", "negative lookahead"),
    ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"),
    ("(?>", "an atomic group"),
    ("(?(", "a conditional"),
    ("(?P=", "a backreference"),
)
_COUNTED_REPEAT = re.compile(r"\{(?:\d+(?:,\d*)?|,\d+)\}")


class MatcherError(ValueError):
    """A matcher that cannot be parsed or compiled; `field` names where it came from, if known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Matcher:
    """One label matcher. The four kinds are Alertmanager's: `=` (is_equal), `!=`, `=~`
    (is_regex and is_equal) and `!~`. A bad regular expression raises MatcherError here, so a
    Matcher that exists can always match."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.is_regex:
            object.__setattr__(self, "_pattern", compile_regex(self.value))

    @property
    def op(self) -> str:
        return (
            ("=~" if self.is_equal else "!~") if self.is_regex else ("=" if self.is_equal else "!=")
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.matches_value(labels.get(self.name, ""))

    def matches_value(self, value: str) -> bool:
        """Whether a label value (the empty string for a missing label) satisfies the matcher."""
        if self._pattern is not None:
            hit = self._pattern.fullmatch(value) is not None
        else:
            hit = value == self.value
        return hit == self.is_equal

    def __str__(self) -> str:
        return to_text(self)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches; an empty list matches everything (as in Alertmanager)."""
    return all(m.matches(labels) for m in matchers)


def matches_unlabelled(matchers: Iterable[Matcher]) -> bool:
    """True when an alert carrying none of the matchers' labels would match all of them, so a
    silence or window made of them would mute nearly everything (internal alerts included)."""
    return all(m.matches_value("") for m in matchers)


@functools.lru_cache(maxsize=2048)
def compile_regex(pattern: str) -> re.Pattern[str]:
    """A matcher's regex compiled once per distinct pattern (the same few silences and windows
    are checked against every incoming alert); match it with `fullmatch`, which anchors it."""
    problem = _re2_incompatibility(pattern)
    if problem:
        raise MatcherError(f"invalid regular expression {pattern!r}: {problem}")
    try:
        with warnings.catch_warnings():
            # Python warns (FutureWarning) where it reads RE2 syntax such as [[:alpha:]]
            # differently; treat that as the error it would be for the user.
            warnings.simplefilter("error")
            # Not wrapped in ^(?:...)$: matching uses fullmatch, which anchors the same way
            # (Python's $ would also match before a trailing newline), and a wrapper would
            # push a leading "(?i)" off the start, where Python requires global flags.
            return re.compile(pattern, re.ASCII)
    except re.error as exc:
        raise MatcherError(f"invalid regular expression {pattern!r}: {exc}") from None
    except Warning as exc:
        raise MatcherError(
            f"invalid regular expression {pattern!r}: RE2 syntax that Python reads differently"
            f" ({exc}); POSIX classes such as [[:alpha:]] are not supported"
        ) from None


def _re2_incompatibility(pattern: str) -> str | None:
    """What in `pattern` Go's RE2 would refuse, or None. Scans outside character classes."""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern[i + 1 : i + 2] in tuple("123456789"):
                return "backreferences are not supported (Alertmanager uses RE2)"
            i += 2
            continue
        if c == "[":  # skip the class; a ']' right after '[' or '[^' is a literal
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            continue
        for prefix, what in _RE2_UNSUPPORTED:
            if pattern.startswith(prefix, i):
                return f"{what} is not supported (Alertmanager uses RE2)"
        end = i + 1
        if c == "{" and (counted := _COUNTED_REPEAT.match(pattern, i)):
            if pattern[i + 1 : i + 2] == ",":  # RE2 reads "{,n}" as literal text, Python as 0..n
                return f"{counted.group()!r} is ambiguous: write {{0,n}} for 0 to n repeats"
            end = counted.end()
        if (c in "*+?" or end > i + 1) and pattern[end : end + 1] == "+":
            return "possessive quantifiers are not supported (Alertmanager uses RE2)"
        i = end
    return None


def parse_matcher(text: str) -> Matcher:
    """One matcher in amtool's text form: `name="value"`, `name=value`, `name!=v`,
    `name=~"re"`, `name!~"re"`, whitespace allowed around each token (pkg/labels ParseMatcher).

    In the value, `\\"` is a quote, `\\n` a line feed and `\\\\` a backslash; any other backslash
    is literal, as is a line feed. An unescaped quote may only open and close the value."""
    m = _MATCHER_TEXT.fullmatch(text)
    if not m:
        raise MatcherError(
            f'bad matcher format: {text!r} (expected name="value", with =, !=, =~ or !~)'
        )
    name, op, raw = m.group(1), m.group(2), m.group(3)
    quoted = raw.startswith('"')
    if quoted:
        raw = raw[1:]
    if not is_utf8(raw):
        raise MatcherError(f"matcher value not valid UTF-8: {m.group(3)!r}")
    out: list[str] = []
    escaped = False
    last = len(raw) - 1
    for i, c in enumerate(raw):
        if escaped:
            escaped = False
            out.append("\n" if c == "n" else c if c in '"\\' else "\\" + c)
        elif c == "\\":
            if i < last:
                escaped = True
            else:
                out.append(c)  # a trailing backslash is literal
        elif c == '"':
            if not quoted or i < last:
                raise MatcherError(f"matcher value contains unescaped double quote: {m.group(3)!r}")
            quoted = False  # the closing quote
        else:
            out.append(c)
    if quoted:
        raise MatcherError(f"matcher value contains unescaped double quote: {m.group(3)!r}")
    is_regex, is_equal = _OPS[op]
    return Matcher(name, "".join(out), is_regex, is_equal)


def parse_matchers(text: str) -> list[Matcher]:
    """A comma-separated list, braces optional: `{a="b", c=~"d"}` (pkg/labels ParseMatchers).

    Commas inside double quotes do not separate; a trailing comma is allowed; `{}` and the
    empty string are the empty list."""
    text = text.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    in_quotes = escaped = False
    for c in text:
        if c == "," and not in_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if c == '"':
            if escaped:
                escaped = False
            else:
                in_quotes = not in_quotes
        elif c == "\\":
            escaped = not escaped
        elif c != ",":  # a quoted comma leaves `escaped` as it was, as Alertmanager's loop does
            escaped = False
        token.append(c)
    if rest := "".join(token).strip():
        tokens.append(rest)
    return [parse_matcher(t) for t in tokens]


def to_text(matcher: Matcher) -> str:
    """Alertmanager's display form, `name="value"` with the operator, value escaped so that
    parse_matcher reads it back to the same matcher."""
    value = matcher.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'{matcher.name}{matcher.op}"{value}"'


def from_config(
    match: Mapping[str, str], match_re: Mapping[str, str], path: str = ""
) -> tuple[Matcher, ...]:
    """Matchers of a config table's `match` (equality) and `match_re` (anchored regex).

    MatcherError names the key, e.g. `maintenance[0].match_re.cluster`, under `path`."""
    prefix = f"{path}." if path else ""
    out: list[Matcher] = []
    for key, table, is_regex in (("match", match, False), ("match_re", match_re, True)):
        for name, value in table.items():
            where = f"{prefix}{key}.{name}"
            if not isinstance(name, str) or not LABEL_NAME.fullmatch(name):
                raise MatcherError(f"{name!r} is not a valid label name", where)
            if not isinstance(value, str):
                raise MatcherError(f"expected a string, got {type(value).__name__}", where)
            try:
                out.append(Matcher(name, value, is_regex, True))
            except MatcherError as exc:
                raise MatcherError(exc.message, where) from None
    return tuple(out)


def is_utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (Alertmanager's rule for a valid label value): a Python
    str fails only through lone surrogates, which JSON's "\\ud800" escapes can produce."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
