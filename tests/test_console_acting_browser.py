"""Acting through the console in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against a real `monitor-manager serve` process.

A person on call opens the acknowledge link of a message on a phone, without a login, picks
their name and acknowledges; a colleague at a desk logs in, sees who is on it, and silences
the other alert group from its page. The assertions are on the text a person sees. Pages are
saved under tests/artifacts/console/ (not committed) at 375 px (a phone) and 1280 px.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from browser import ARTIFACTS, Browser, available
from builders import alert_json, payload
from console_app import HASH, PASSWORD
from processes import ServeProcess, http

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PHONE = 375

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "mm-az1"
[storage]
path = "mm.db"
[convergence]
group_wait = "1s"
group_interval = "2s"
[channels.out]
type = "console"
[[contact_groups]]
name = "sre"
channels = ["out"]
members = [
  { name = "Zhang San", email = "zhangsan@example.com" },
  { name = "Li Si", email = "lisi@example.com" },
]
escalation = [ { after = "2s", groups = ["sre-lead"] } ]
[[contact_groups]]
name = "sre-lead"
channels = ["out"]
members = [{ name = "Wang Wu", email = "wangwu@example.com" }]
[routing]
default_groups = ["sre"]
[[maintenance]]
name = "db-compaction"
match = { cluster = "db1" }
schedule = "* * * * *"
duration = "10m"
[[maintenance]]
name = "nightly-batch"
match = { cluster = "batch" }
schedule = "0 2 * * *"
duration = "1h"
time_zone = "Asia/Shanghai"
[console]
session_lifetime = "1h"
[[console.users]]
name = "zhangsan"
password = "HASH"
"""


@dataclass
class Stack:
    proc: ServeProcess
    db: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("console-acting")
    proc = ServeProcess(workdir, CONFIG.replace("HASH", HASH))
    try:
        proc.start()
        post(proc)
        yield Stack(proc, workdir / "mm.db")
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    why = available()
    assert not why, f"the browser tests need Chromium: {why} (bash scripts/test.sh installs it)"
    with Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def post(proc: ServeProcess) -> None:
    latency = alert_json(
        "HighLatency", cluster="prod", instance="web-1", severity="critical", evil="<b>x</b>"
    )
    latency["annotations"] = {"summary": "p99 latency above 2s on web-1"}
    second = alert_json("HighLatency", cluster="prod", instance="web-2", severity="critical")
    second["annotations"] = {"summary": "p99 latency above 3s on web-2"}
    disk = alert_json("DiskFull", cluster="db2", severity="warning", instance="db-7")
    disk["annotations"] = {"summary": "磁盘 /var/lib/mysql 使用率 93%"}
    status, answer = http(
        "POST", f"{proc.url}/webhook/alertmanager", payload(latency, second, disk)
    )
    assert status == 200, answer


def ack_link(stack: Stack, alertname: str, timeout: float = 15.0) -> str:
    """The acknowledge link of the first firing message about `alertname`, read from the
    store as the message carries it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{stack.db}?mode=ro", uri=True) as conn:
            for (message,) in conn.execute("SELECT message FROM notifications ORDER BY id"):
                for group in json.loads(message)["groups"]:
                    if group["group_labels"].get("alertname") == alertname and group.get("ack_url"):
                        url = str(group["ack_url"])
                        assert urlsplit(url).netloc == urlsplit(stack.proc.url).netloc
                        return url
        time.sleep(0.1)
    raise AssertionError(f"no firing message about {alertname} within {timeout}s")


def as_phone(browser: Browser) -> None:
    browser.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE, "height": 812, "deviceScaleFactor": 1, "mobile": True},
    )


def as_desktop(browser: Browser) -> None:
    browser.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def fits_the_width(browser: Browser) -> bool:
    """No sideways scrolling: nothing is wider than the viewport."""
    return bool(
        browser.driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
    )


def shot(browser: Browser, name: str, width: int) -> Path:
    return browser.screenshot(ARTIFACTS / f"{name}-{width}.png", width)


def click_and_wait(browser: Browser, css: str = "", link: str = "") -> None:
    """Click a button (submitting its form) or a link, and wait for the next page: a click
    returns before the browser has navigated."""
    from selenium.webdriver.common.by import By

    page = browser.driver.find_element(By.TAG_NAME, "html")
    (browser.find(css) if css else browser.driver.find_element(By.LINK_TEXT, link)).click()
    browser.wait_for_next_page(page)


def log_in(browser: Browser, stack: Stack, path: str) -> None:
    browser.get(f"{stack.proc.url}{path}")
    if "/login" in browser.url:
        browser.type_into("input[name=name]", "zhangsan")
        browser.type_into("input[name=password]", PASSWORD)
        click_and_wait(browser, "form.login button")


def test_acknowledging_from_a_message_link_on_a_phone_without_a_login(
    stack: Stack, browser: Browser
) -> None:
    from selenium.webdriver.support.ui import Select

    link = ack_link(stack, "HighLatency")
    browser.driver.delete_all_cookies()
    as_phone(browser)
    try:
        browser.get(link)
        text = browser.text()
        assert "HighLatency prod" in text and "2 of 2 firing" in text
        assert "p99 latency above 2s on web-1" in text and "evil=<b>x</b>" in text
        assert "Who are you?" in text
        assert "Overview" not in text and "Log in" not in text  # nothing it may not open
        assert fits_the_width(browser)
        shot(browser, "ack-form", PHONE)
        as_phone(browser)

        Select(browser.find("#ack-by")).select_by_visible_text("Li Si")
        browser.type_into("#ack-comment", "looking at the upstream pool")
        click_and_wait(browser, "#ack-form button[type=submit]")

        text = browser.text()
        assert "✓ Acknowledged" in text
        assert "The others in sre are told that Li Si is on it." in text
        assert "looking at the upstream pool" in text
        assert fits_the_width(browser)
        shot(browser, "ack-done", PHONE)
        as_phone(browser)

        browser.get(link)  # a second visit (or a colleague's): who is on it, no form
        text = browser.text()
        assert "Already acknowledged" in text and "Acknowledged by Li Si at" in text
        assert not browser.find_all("#ack-form")
        shot(browser, "ack-already", PHONE)
        as_phone(browser)

        browser.get(f"{link}?lang=zh")
        text = browser.text()
        assert "已被确认" in text and "Li Si 于" in text
        assert fits_the_width(browser)
        shot(browser, "ack-already-zh", PHONE)
        browser.get(f"{link}?lang=en")

        browser.get(f"{link}x")  # altered
        assert "This acknowledge link is not valid" in browser.text()
        assert browser.console_errors() == []
    finally:
        as_desktop(browser)


def test_at_a_desk_the_acknowledgement_shows_and_a_group_is_silenced_from_its_page(
    stack: Stack, browser: Browser
) -> None:
    log_in(browser, stack, "/")
    text = browser.text()
    # DiskFull's escalation step is taken by the service's timer on the real clock: on a busy
    # machine it may come a little after the page was first read.
    deadline = time.monotonic() + 30
    while "Escalated (step 1)" not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        browser.get(f"{stack.proc.url}/")
        text = browser.text()
    assert "Acknowledged by Li Si" in text  # the badge beside the group
    assert "1 alert group acknowledged" in text and "db-compaction" in text
    assert "Escalated (step 1)" in text  # DiskFull: nobody acknowledged it
    shot(browser, "overview-acting", 1280)

    click_and_wait(browser, "a.card-main[href^='/groups/']")  # HighLatency: worst first
    text = browser.text()
    assert "HighLatency prod" in text and "Acknowledged by Li Si" in text
    assert "Withdraw acknowledgement" in text

    browser.get(f"{stack.proc.url}/")
    (disk,) = [a for a in browser.find_all("a.card-main") if "DiskFull" in a.text]
    browser.get(disk.get_attribute("href"))
    browser.type_into("#actions input[name=comment]", "disk swap tonight")
    click_and_wait(browser, "#actions button.btn-primary")
    assert "Acknowledged by zhangsan" in browser.text()
    shot(browser, "group-acting", 1280)

    click_and_wait(browser, link="Silence…")
    matchers = browser.find("#sil-matchers").get_attribute("value")
    assert matchers == '{alertname="DiskFull", cluster="db2"}'  # its group labels
    browser.type_into("#sil-duration", "4h")
    browser.type_into("#sil-comment", "replacing the disk of db-7")
    shot(browser, "silence-new", 1280)
    click_and_wait(browser, "form.stack button[type=submit]")

    assert browser.url.split("#")[0].endswith("/silences")
    text = browser.text()
    assert '{alertname="DiskFull", cluster="db2"}' in text and "replacing the disk" in text
    assert "zhangsan" in text and "active" in text
    assert "db-compaction" in text and "running" in text and "nightly-batch" in text
    browser.get(f"{stack.proc.url}/silences")  # without the new one's highlight
    shot(browser, "silences", 1280)
    shot(browser, "silences", PHONE)

    click_and_wait(browser, link="中文")
    assert "静默" in browser.text() and "维护窗口" in browser.text()
    click_and_wait(browser, link="EN")
    assert browser.console_errors() == []
