"""README.zh-CN.md is the whole user guide in Chinese and must stay in step with README.md.

The two are compared by what a translation must not change: the heading structure (the same
levels in the same order), the fenced code blocks (the same languages in the same order), the
commands in them, the TOML they show (keys, and values once comments are dropped), every
block left untranslated (equal to the English one), every metric name and every `/api/...`
path. Prose, headings and comments are free to differ. Each failure names what is missing,
and from which file, so that a change to the English guide that was not carried over says
where to look.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent.parent
EN = ROOT / "README.md"
ZH = ROOT / "README.zh-CN.md"

FENCE = re.compile(r"^(`{3,})(.*)$")
HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
SHELL_LANGS = {"sh", "bash", "shell", "console"}
# The first word of a line that is a command in an untagged block (the Commands listing, an
# example session); in ```sh blocks every line that starts at the margin is one.
COMMAND_WORDS = {
    "monitor-manager",
    "amtool",
    "curl",
    "python",
    "python3",
    "bash",
    "pip",
    "sudo",
    "systemctl",
    "systemd-analyze",
    "journalctl",
    "promtool",
    "docker",
    "podman",
    "apt-get",
    "install",
    "useradd",
    "openssl",
}
METRIC = re.compile(r"\bmonitor_manager_[a-z0-9_]*[a-z0-9]")
API_PATH = re.compile(r"(?<![\w.])/api/v\d+(?:/[A-Za-z0-9_{}*.\-]+)*")
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
TOML_KEY = re.compile(r'^\s*([A-Za-z0-9_\-."]+)\s*=')
TOML_TABLE = re.compile(r"^\s*(\[\[?[A-Za-z0-9_\-.\"]+\]\]?)\s*(?:#.*)?$")


def read(path: Path) -> str:
    assert path.exists(), f"{path.name} is missing"
    return path.read_text(encoding="utf-8")


def blocks_and_prose(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The fenced code blocks as (language, lines), and the lines outside them.

    A fence indented in a list item indents its lines as much: they are given back without it.
    """
    blocks: list[tuple[str, list[str]]] = []
    prose: list[str] = []
    fence: str | None = None
    indent = 0
    for line in text.splitlines():
        match = FENCE.match(line.strip())
        if fence is None:
            if match:
                fence, indent = match.group(1), len(line) - len(line.lstrip())
                blocks.append((match.group(2).strip(), []))
            else:
                prose.append(line)
        elif match and match.group(1) == fence and not match.group(2).strip():
            fence = None
        else:
            dedented = line[indent:] if line[:indent].strip() == "" else line.lstrip()
            blocks[-1][1].append(dedented)
    assert fence is None, "a fenced code block is never closed"
    return blocks, prose


def headings(text: str) -> list[tuple[int, str]]:
    _, prose = blocks_and_prose(text)
    return [(len(m.group(1)), m.group(2)) for line in prose if (m := HEADING.match(line))]


def command_of(line: str) -> str:
    """A command without its trailing comment or the description aligned after it."""
    line = re.split(r"\s+#\s", line, maxsplit=1)[0]
    line = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
    return re.sub(r"\s*\\\s+", " ", line).strip()


def commands(text: str) -> Counter[str]:
    """Every command of the code blocks, its continuation lines (after a `\\`) joined on."""
    found: Counter[str] = Counter()
    blocks, _ = blocks_and_prose(text)
    for lang, lines in blocks:
        command: str | None = None
        for line in lines:
            if command is not None:  # the line after a backslash
                command += " " + line.strip()
            elif line.startswith("$ "):
                command = line[2:]
            elif lang in SHELL_LANGS and re.match(r"[A-Za-z./]", line):
                command = line
            elif lang == "" and line.strip() and line.split()[0] in COMMAND_WORDS:
                command = line
            if command is not None and not command.rstrip().endswith("\\"):
                found[command_of(command)] += 1
                command = None
    return found


def toml_blocks(text: str) -> list[str]:
    blocks, _ = blocks_and_prose(text)
    return ["\n".join(lines) for lang, lines in blocks if lang == "toml"]


def toml_keys(text: str) -> Counter[str]:
    """Every `key =` line of the ```toml blocks, named with its table (`report.schedule`)."""
    found: Counter[str] = Counter()
    for block in toml_blocks(text):
        table = ""
        for line in block.splitlines():
            if m := TOML_TABLE.match(line):
                table = m.group(1).strip("[]")
                found[m.group(1)] += 1
            elif m := TOML_KEY.match(line):
                found[f"{table}.{m.group(1)}" if table else m.group(1)] += 1
    return found


def missing(english: Counter[str] | set[str], chinese: Counter[str] | set[str]) -> list[str]:
    if isinstance(english, Counter) and isinstance(chinese, Counter):
        return sorted((english - chinese).elements())
    return sorted(set(english) - set(chinese))


def test_the_chinese_readme_links_back_and_the_english_one_links_to_it() -> None:
    en, zh = read(EN), read(ZH)
    first = next(line for line in zh.splitlines() if line.strip())
    assert "(README.md)" in first, f"README.zh-CN.md must start with a link to README.md: {first!r}"
    top = en[: en.index("\n## ")]
    assert "(README.zh-CN.md)" in top, "README.md links to README.zh-CN.md before its first section"


def test_the_english_readme_still_starts_with_the_two_commands() -> None:
    blocks, prose = blocks_and_prose(read(EN))
    assert [line for line in prose[:3] if line.strip()] == ["# Monitor Manager"]
    assert [lang for lang, _ in blocks[:2]] == ["sh", "sh"]
    assert read(EN).split("```")[2].strip() == "", "nothing between the two commands"


def test_both_have_the_same_headings_in_the_same_order() -> None:
    en, zh = headings(read(EN)), headings(read(ZH))
    en_levels = [level for level, _ in en]
    zh_levels = [level for level, _ in zh]
    if en_levels != zh_levels:
        # Name the first English heading from which the structures part.
        at = next(
            (i for i, (a, b) in enumerate(zip(en_levels, zh_levels, strict=False)) if a != b),
            min(len(en), len(zh)),
        )
        english = f"{'#' * en[at][0]} {en[at][1]}" if at < len(en) else "(none: English ends)"
        chinese = f"{'#' * zh[at][0]} {zh[at][1]}" if at < len(zh) else "(none: Chinese ends)"
        raise AssertionError(
            f"README.md has {len(en)} headings, README.zh-CN.md {len(zh)}; they part at heading "
            f"{at + 1}: English {english!r}, Chinese {chinese!r}"
        )


def test_both_have_the_same_code_blocks_in_the_same_order() -> None:
    en, _ = blocks_and_prose(read(EN))
    zh, _ = blocks_and_prose(read(ZH))
    en_langs = [lang or "(plain)" for lang, _ in en]
    zh_langs = [lang or "(plain)" for lang, _ in zh]
    assert en_langs == zh_langs, (
        f"fenced code blocks differ: README.md {en_langs}, README.zh-CN.md {zh_langs}"
    )


def test_a_code_block_left_in_english_is_the_english_one() -> None:
    """A block without a Chinese character (output, JSON, a config) is copied, not translated:
    it must equal the English block at the same place, so a changed example is carried over."""
    en, _ = blocks_and_prose(read(EN))
    zh, _ = blocks_and_prose(read(ZH))
    for n, ((lang, english), (_, chinese)) in enumerate(zip(en, zh, strict=False), start=1):
        if not any(CJK.search(line) for line in chinese) and chinese != english:
            first = next(
                (
                    f"English {a!r}, Chinese {b!r}"
                    for a, b in zip(english, chinese, strict=False)
                    if a != b
                ),
                f"English {len(english)} lines, Chinese {len(chinese)}",
            )
            raise AssertionError(
                f"code block {n} ({lang or 'plain'}) of README.zh-CN.md is not README.md's: {first}"
            )


def test_every_command_appears_identically_in_both() -> None:
    en, zh = commands(read(EN)), commands(read(ZH))
    assert en, "no command found in README.md: the rule that finds them is broken"
    assert "monitor-manager serve [--config PATH]" in en
    assert not (gone := missing(en, zh)), "README.zh-CN.md lacks commands: " + "; ".join(gone)
    assert not (extra := missing(zh, en)), "README.md lacks commands: " + "; ".join(extra)


def test_every_config_key_appears_in_both() -> None:
    en, zh = toml_keys(read(EN)), toml_keys(read(ZH))
    assert "report.schedule" in en, "the rule that finds TOML keys is broken"
    assert not (gone := missing(en, zh)), "README.zh-CN.md lacks config keys: " + ", ".join(gone)
    assert not (extra := missing(zh, en)), "README.md lacks config keys: " + ", ".join(extra)


def test_the_toml_blocks_say_the_same_once_comments_are_dropped() -> None:
    en, zh = toml_blocks(read(EN)), toml_blocks(read(ZH))
    for n, (english, chinese) in enumerate(zip(en, zh, strict=False), start=1):
        assert tomllib.loads(chinese) == tomllib.loads(english), (
            f"TOML block {n} of README.zh-CN.md has other values than README.md's"
        )


def test_every_metric_and_api_path_of_the_english_readme_is_in_the_chinese_one() -> None:
    en, zh = read(EN), read(ZH)
    for what, pattern in (("metric names", METRIC), ("API paths", API_PATH)):
        english = {m.rstrip(".") for m in pattern.findall(en)}
        chinese = {m.rstrip(".") for m in pattern.findall(zh)}
        assert english, f"no {what} found in README.md: the rule that finds them is broken"
        gone = missing(english, chinese)
        assert not gone, f"README.zh-CN.md never mentions these {what}: " + ", ".join(gone)


def test_the_rules_find_what_they_should() -> None:
    sample = "\n".join(
        [
            "# T",
            "```sh",
            "curl -X DELETE 'x?by=a'    # withdraw it",
            "amtool --a=b \\",
            "  silence query",
            "```",
            "```",
            "monitor-manager serve [--config PATH]          run the service",
            "$ monitor-manager reload --config c.toml",
            "reloaded c.toml",
            "```",
            "  ```sh",
            "  systemctl reload monitor-manager",
            "  ```",
            "```toml",
            "[report]",
            'schedule = "0 9 * * *"   # crontab',
            "```",
            "## A heading, and `monitor_manager_record_payloads_total` at /api/v1/alerts.",
        ]
    )
    assert commands(sample) == Counter(
        [
            "curl -X DELETE 'x?by=a'",
            "amtool --a=b silence query",
            "monitor-manager serve [--config PATH]",
            "monitor-manager reload --config c.toml",
            "systemctl reload monitor-manager",
        ]
    )
    assert toml_keys(sample) == Counter(["[report]", "report.schedule"])
    assert [level for level, _ in headings(sample)] == [1, 2]
    assert METRIC.findall(sample) == ["monitor_manager_record_payloads_total"]
    assert [p.rstrip(".") for p in API_PATH.findall(sample)] == ["/api/v1/alerts"]
