"""Templates (languages, overrides) and the send-test command against a real SMTP server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fake_wecom import alert, group, message
from monitor_manager.deliver.render import Renderer
from smtp_server import SMTPTestServer


def test_builtin_templates_compile_in_both_languages() -> None:
    for language in ("en", "zh"):
        renderer = Renderer(language)
        assert renderer.check() == []
        subject = renderer.render("subject.txt", message())
        assert subject.startswith("[FIRING:1] HighLatency")


def test_chinese_text_is_chinese() -> None:
    text = Renderer("zh").render("text.txt", message())
    assert "告警中" in text and "Firing (" not in text


def test_a_template_dir_overrides_one_template_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "subject.txt").write_text("ALERT {{ message.groups[0].title }}")
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / "subject.txt").write_text("告警 {{ message.groups[0].title }}")
    assert Renderer("en", tmp_path).render("subject.txt", message()) == "ALERT HighLatency prod"
    assert Renderer("zh", tmp_path).render("subject.txt", message()) == "告警 HighLatency prod"
    assert "Firing (1)" in Renderer("en", tmp_path).render("text.txt", message())


def test_a_broken_override_is_reported_by_check(tmp_path: Path) -> None:
    (tmp_path / "text.txt").write_text("{% if %}")
    problems = Renderer("en", tmp_path).check()
    assert problems and problems[0].startswith("text.txt")


SEND_TEST = """
[channels.mail]
type = "email"
host = "127.0.0.1"
port = %d
tls = "none"
from = "MM <mm@example.com>"
[channels.console]
type = "console"
[[contact_groups]]
name = "sre"
channels = ["mail", "console"]
members = [{ name = "A", email = "a@example.com" }]
[routing]
default_groups = ["sre"]
"""


def run_send_test(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor_manager",
            "send-test",
            "--config",
            str(config),
            "--group",
            "sre",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_send_test_reports_each_channel_and_exits_zero(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    config = tmp_path / "mm.toml"
    config.write_text(SEND_TEST % smtp_server.port)
    result = run_send_test(config)
    assert result.returncode == 0, result.stderr
    assert "mail: ok" in result.stdout and "console: ok" in result.stdout
    assert "[TEST]" in result.stdout  # the console channel printed the test message
    assert len(smtp_server.messages) == 1
    assert str(smtp_server.messages[0]["Subject"]).startswith("[TEST]")


def test_send_test_exits_non_zero_when_a_channel_fails(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    smtp_server.mode = "550"
    config = tmp_path / "mm.toml"
    config.write_text(SEND_TEST % smtp_server.port)
    result = run_send_test(config)
    assert result.returncode == 1
    assert "mail: FAILED (permanent)" in result.stdout and "console: ok" in result.stdout


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("template", ["wechat.md", "wechat.txt"])
def test_the_counts_line_ends_before_the_common_labels(language: str, template: str) -> None:
    text = Renderer(language).render(template, message(group("g1", alert(1), alert(2, "resolved"))))
    lines = text.splitlines()
    counts = next(
        i for i, line in enumerate(lines) if "1" in line and ("Firing" in line or "告警中" in line)
    )
    assert lines[counts].rstrip().endswith(("1", "1</font>")), lines[counts]
    assert "cluster=prod" in lines[counts + 1]
