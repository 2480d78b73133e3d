"""A real headless Chromium for the console tests: Debian's `chromium` driven through its
`chromium-driver` by Selenium. Nothing is downloaded: both paths are given, so Selenium
Manager never runs. Every browser gets a fresh profile directory.

    with Browser(tmp_path) as browser:
        browser.get(url)
        browser.text()                       # what a person reads on the page
        browser.screenshot(path, width=360)  # the whole page at that width
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def available() -> str:
    """Why a browser cannot run here, or "" when it can."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        return f"{', '.join(missing)} missing (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return ""


class Browser:
    def __init__(self, workdir: Path | None = None, width: int = 1280, height: int = 900) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = Path(tempfile.mkdtemp(prefix="mm-chromium-", dir=workdir))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument("--lang=en-US")
        self.driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER), options=options
        )
        self.driver.set_page_load_timeout(20)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- what a person does ------------------------------------------------------------------

    def get(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def submit(self, css: str, timeout: float = 20.0) -> None:
        """Click the button `css` that sends a form, and wait for the page it brings: reading
        the page before it arrived found no <body> once (the old page was being torn down)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        old = self.driver.find_element(By.TAG_NAME, "html")
        self.find(css).click()
        wait = WebDriverWait(self.driver, timeout)
        wait.until(expected_conditions.staleness_of(old))
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def text(self) -> str:
        """The visible text of the page."""
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def click_link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.LINK_TEXT, text).click()

    def type_into(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def cookie(self, name: str) -> dict[str, Any] | None:
        found = self.driver.get_cookie(name)
        return dict(found) if found else None

    def console_errors(self) -> list[str]:
        """Errors the pages logged since the last call: a CSP violation, a script error, a
        static file that did not load. A page answered 4xx on purpose (a wrong password, a
        group that does not exist) is not one."""
        try:
            entries = self.driver.get_log("browser")
        except Exception:  # not every driver keeps the log
            return []
        return [
            e["message"]
            for e in entries
            if e.get("level") == "SEVERE"
            and not ("Failed to load resource" in e["message"] and "/static/" not in e["message"])
        ]

    # -- what the tests keep -------------------------------------------------------------------

    def screenshot(self, path: Path, width: int) -> Path:
        """The whole page as it lays out `width` CSS pixels wide (a phone at 360), as PNG."""
        mobile = width < 600
        cdp = self.driver.execute_cdp_cmd
        cdp(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": mobile},
        )
        try:
            height = int(
                self.driver.execute_script(
                    "return Math.ceil(document.documentElement.scrollHeight)"
                )
            )
            cdp(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": width,
                    "height": min(max(height, 400), 12000),
                    "deviceScaleFactor": 1,
                    "mobile": mobile,
                },
            )
            shot = cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        finally:
            cdp("Emulation.clearDeviceMetricsOverride", {})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def screenshots(self, name: str, directory: Path = ARTIFACTS) -> list[Path]:
        """`name`-360.png (a phone) and `name`-1280.png (a desktop)."""
        return [self.screenshot(directory / f"{name}-{w}.png", w) for w in (360, 1280)]
