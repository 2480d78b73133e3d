"""The console in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium) against a real `monitor-manager serve` process that mails a real SMTP
server. A person's path: open the link of a mail, log in, read the group, the overview, the
notifications and the watchdog, test a route, switch to Chinese. The assertions are on the
text a person sees. Every page is saved at 360 px (a phone) and 1280 px wide under
tests/artifacts/console/ (not committed) for people to look at.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from browser import Browser, available
from builders import alert_json, payload
from console_app import HASH, PASSWORD
from processes import ServeProcess, http
from smtp_server import SMTPTestServer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "mm-az1"
[storage]
path = "mm.db"
[convergence]
group_wait = "1s"
group_interval = "2s"
[delivery]
retry_initial = "1m"
[channels.mail]
type = "email"
host = "127.0.0.1"
port = SMTP_PORT
tls = "none"
from = "Monitor Manager <mm@example.com>"
[channels.dba-pager]
type = "email"
host = "127.0.0.1"
port = 9
tls = "none"
from = "mm@example.com"
timeout = "1s"
[[contact_groups]]
name = "sre"
channels = ["mail"]
members = [
  { name = "Zhang San", email = "zhangsan@example.com", wechat = "zs", mobile = "13800000000" },
  { name = "Li Si", email = "lisi@example.com" },
]
[[contact_groups]]
name = "dba"
channels = ["mail", "dba-pager"]
members = [{ name = "Wang Wu", email = "wangwu@example.com" }]
[routing]
default_groups = ["sre"]
[[routes]]
match = { team = "db" }
match_re = { severity = "critical|warning" }
groups = ["dba"]
continue = true
[[watchdog.heartbeats]]
name = "prometheus-az1"
match = { alertname = "DeadMansSwitch", az = "az1" }
timeout = "10m"
resend_interval = "2m"
[console]
session_lifetime = "1h"
[[console.users]]
name = "zhangsan"
password = "HASH"
"""


@dataclass
class Stack:
    smtp: SMTPTestServer
    proc: ServeProcess
    link: str = ""  # the "Alert group:" link of the HighLatency mail


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One service for the module's tests, with alerts posted and the first mail received."""
    smtp = SMTPTestServer()
    smtp.start()
    text = CONFIG.replace("SMTP_PORT", str(smtp.port)).replace("HASH", HASH)
    proc = ServeProcess(tmp_path_factory.mktemp("console-browser"), text)
    try:
        proc.start()
        post(proc)
        yield Stack(smtp, proc, group_link(smtp, "HighLatency"))
    finally:
        proc.stop()
        smtp.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    why = available()
    assert not why, f"the browser tests need Chromium: {why} (bash scripts/test.sh installs it)"
    with Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def logged_in(browser: Browser, stack: Stack, path: str = "/", lang: str = "en") -> str:
    """Open `path` as zhangsan, logging in when the console asks; returns the page text."""
    browser.get(f"{stack.proc.url}{path}")
    if "/login" in browser.url:
        browser.type_into("input[name=name]", "zhangsan")
        browser.type_into("input[name=password]", PASSWORD)
        browser.submit("form.login button")
    if f'lang="{"zh-CN" if lang == "zh" else "en"}"' not in browser.driver.page_source:
        browser.click_link("中文" if lang == "zh" else "EN")
    return browser.text()


def post(proc: ServeProcess) -> None:
    first = alert_json(
        "HighLatency",
        cluster="prod",
        instance="web-1",
        severity="critical",
        evil="<script>alert(1)</script>",
        tpl="{{7*7}}",
    )
    first["annotations"] = {
        "summary": "p99 latency above 2s on web-1",
        "description": "web-1 answers slowly.\nRunbook: check the upstream pool first.",
    }
    second = alert_json("HighLatency", cluster="prod", instance="web-2", severity="critical")
    second["annotations"] = {"summary": "p99 latency above 3s on web-2"}
    disk = alert_json("DiskFull", cluster="db1", team="db", severity="warning", instance="db-7")
    disk["annotations"] = {"summary": "磁盘 /var/lib/mysql 使用率 93%"}
    heartbeat = alert_json("DeadMansSwitch", az="az1")
    for body in (payload(first, second, disk), payload(heartbeat)):
        status, answer = http("POST", f"{proc.url}/webhook/alertmanager", body)
        assert status == 200, answer


def group_link(smtp: SMTPTestServer, name: str, timeout: float = 15.0) -> str:
    """The "Alert group:" link of the first mail about `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for mail in list(smtp.messages):
            if name in str(mail["Subject"]):
                body = mail.get_body(preferencelist=("plain",))
                assert body is not None
                m = re.search(r"Alert group: (\S+)", body.get_content())
                assert m, body.get_content()
                return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no mail about {name} within {timeout}s")


def test_a_mail_link_asks_for_a_login_then_shows_the_alert_group(
    stack: Stack, browser: Browser
) -> None:
    assert stack.link.startswith(stack.proc.url)
    browser.driver.delete_all_cookies()

    browser.get(stack.link)
    assert "/login" in browser.url
    assert "Log in to Monitor Manager" in browser.text()
    browser.screenshots("login")
    browser.type_into("input[name=name]", "zhangsan")
    browser.type_into("input[name=password]", "wrong")
    browser.submit("form.login button")
    assert "Wrong user name or password." in browser.text()
    browser.type_into("input[name=password]", PASSWORD)
    browser.submit("form.login button")

    assert re.search(r"/groups/[0-9a-f]{16}$", browser.url), browser.url
    text = browser.text()
    assert "HighLatency prod" in text and "2 of 2 firing" in text
    assert "p99 latency above 2s on web-1" in text
    assert "Runbook: check the upstream pool first." in text
    assert "evil=<script>alert(1)</script>" in text  # shown as text, never run
    assert "tpl={{7*7}}" in text  # shown as written, never evaluated
    assert "mail delivered" in text  # the message that brought us here
    assert "zhangsan" in text  # who is logged in
    session = browser.cookie("mm_session")
    assert session is not None and session["httpOnly"] and session["sameSite"] == "Lax"
    browser.screenshots("group")
    assert browser.console_errors() == []  # no CSP violation, no script error


def test_the_overview_shows_what_fires_by_contact_group_and_what_fails(
    stack: Stack, browser: Browser
) -> None:
    logged_in(browser, stack, "/watchdog")
    browser.click_link("Overview")  # from any page, by the navigation

    text = browser.text()
    assert "Open alert groups" in text
    sre, dba = text.index("\nsre"), text.index("\ndba")
    assert sre < text.index("HighLatency prod") < dba < text.index("DiskFull db1")
    assert "磁盘 /var/lib/mysql 使用率 93%" in text
    assert "Failing deliveries" in text and "dba-pager" in text
    assert "prometheus-az1" in text
    browser.screenshots("overview")
    assert browser.console_errors() == []


def test_notifications_and_the_watchdog_pages(stack: Stack, browser: Browser) -> None:
    logged_in(browser, stack, "/notifications")
    text = browser.text()
    # The failing one first: DiskFull's dba-pager has not got through.
    assert text.index("DiskFull db1") < text.index("HighLatency prod")
    assert "FIRING:2" in text and "delivered" in text and "retrying" in text
    browser.screenshots("notifications")

    browser.click_link("Watchdog")
    text = browser.text()
    assert "prometheus-az1" in text and "arriving" in text
    assert "http://alertmanager-az1:9093" in text
    browser.screenshots("watchdog")
    assert browser.console_errors() == []


def test_the_route_tester_tells_which_groups_channels_and_route(
    stack: Stack, browser: Browser
) -> None:
    logged_in(browser, stack, "/contact-groups")
    browser.type_into("#rt-labels", "alertname=DiskFull, team=db, severity=critical")
    browser.submit("form.route-test button")

    result = browser.find("#rt-result").text
    assert "dba" in result and "route #0" in result and "dba-pager" in result
    assert "Zhang San" in browser.text()  # the members, on the same page
    browser.screenshots("contact-groups")


def test_switching_to_chinese_is_remembered_across_pages(stack: Stack, browser: Browser) -> None:
    logged_in(browser, stack, "/contact-groups")
    browser.click_link("中文")
    assert "路由测试" in browser.text()

    browser.click_link("概览")
    text = browser.text()
    assert "未关闭的告警组" in text and "HighLatency prod" in text
    browser.screenshots("overview-zh")
    browser.get(stack.link)
    assert "通知记录" in browser.text()
    browser.screenshots("group-zh")
    browser.click_link("EN")
    assert "Messages" in browser.text()
    assert browser.console_errors() == []
