"""The real app for console tests: store, pipeline and console on a temporary database, a
manual clock, nothing running on its own (`tick()` decides, SQL sets delivery states)."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from builders import T0, alert_json, groups, make_config, payload, routes
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.channels.console import ConsoleSettings
from monitor_manager.clock import ManualClock
from monitor_manager.config import ChannelConfig, ConsoleConfig, ConsoleUserConfig
from monitor_manager.passwords import hash_password

WEBHOOK = "/webhook/alertmanager"
HTML = {"Accept": "text/html,application/xhtml+xml"}
PASSWORD = "correct horse"
# Cheap scrypt parameters: the tests check the logic, not the cost.
HASH = hash_password(PASSWORD, n=2**10, r=8, p=1)


def console_config(tmp_path: Any, *, users: bool = False, **sections: Any) -> Any:
    """Two contact groups (sre, dba), two console-type channels (console, pager), one route
    sending team=db to dba and on."""
    defaults: dict[str, Any] = {
        "server": {"instance": "mm-test", "listen": "127.0.0.1:9095"},
        "channels": (
            ChannelConfig("console", "console", ConsoleSettings()),
            ChannelConfig("pager", "console", ConsoleSettings()),
        ),
        "contact_groups": groups("sre", "dba", channels=("console", "pager")),
        "routing": {"default_groups": ("sre",)},
        "routes": routes({"match": {"team": "db"}, "groups": ("dba",), "continue_": True}),
    }
    if users:
        defaults["console"] = ConsoleConfig(
            users=(ConsoleUserConfig("zhangsan", HASH), ConsoleUserConfig("lisi", "from-env"))
        )
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(defaults.get(name), dict):
            defaults[name] = {**defaults[name], **value}
        else:
            defaults[name] = value
    return make_config(tmp_path, **defaults)


@dataclass
class ConsoleService:
    client: TestClient
    clock: ManualClock
    stdout: io.StringIO

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    async def post_alerts(self, *alerts: dict[str, Any]) -> None:
        response = await self.client.post(
            WEBHOOK, data=json.dumps(payload(*alerts)), headers={"Content-Type": "application/json"}
        )
        assert response.status == 200, await response.text()

    async def decide(self, seconds: float = 31.0) -> None:
        """Past group_wait (30 s): due groups become notifications and outbox rows."""
        self.clock.advance(seconds)
        await self.app[keys.PIPELINE].tick()

    async def sql(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        await self.app[keys.STORE].write([(statement, params)])

    async def page(self, path: str, status: int = 200, **headers: str) -> str:
        response = await self.client.get(path, headers={**HTML, **headers}, allow_redirects=False)
        text = await response.text()
        assert response.status == status, text[:2000]
        return text

    async def form(self, path: str) -> str:
        """The CSRF token of the first form on the page at `path`."""
        return csrf_of(await self.page(path))

    async def login(self, name: str = "zhangsan", password: str = PASSWORD) -> ClientResponse:
        token = await self.form("/login")
        return await self.client.post(
            "/login",
            data={"csrf": token, "name": name, "password": password, "next": "/"},
            allow_redirects=False,
        )

    def group_keys(self) -> list[str]:
        return list(self.app[keys.PIPELINE].convergence.groups)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no form with a CSRF token on the page"
    return m.group(1)


async def start_console(
    aiohttp_client: Any, tmp_path: Any, *, users: bool = False, **sections: Any
) -> ConsoleService:
    clock = ManualClock(T0 + 60)
    stdout = io.StringIO()
    app = create_app(
        console_config(tmp_path, users=users, **sections),
        clock=clock,
        stdout=stdout,
        scheduler=False,
    )
    return ConsoleService(await aiohttp_client(app), clock, stdout)


__all__ = ["HTML", "alert_json", "console_config", "csrf_of", "start_console"]
