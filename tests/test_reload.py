"""Reload without restart (SPEC section 10): SIGHUP, POST /-/reload and `monitor-manager
reload` read the config file again. Timelines on the real app with a manual clock (a valid
reload, an invalid one, a removed contact group with an open group, a changed channel with
queued deliveries, a burst of webhooks during reloads), then real `serve` processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from builders import T0, alert_json, make_config, payload
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.clock import ManualClock, system_clock
from monitor_manager.config import load_config
from monitor_manager.reload import config_changes, keep_running_values
from processes import ServeProcess, free_port, http
from tls_certs import self_signed

WEBHOOK = "/webhook/alertmanager"
RELOAD = "/-/reload"
GROUP_WAIT = 30.0
OK = "monitor_manager_config_last_reload_successful"
OK_AT = "monitor_manager_config_last_reload_success_timestamp_seconds"


def config_text(
    hook: str,
    *,
    groups: dict[str, list[str]],
    routes: str = "",
    server: str = "",
    extra: str = "",
) -> str:
    """A config: one webhook channel `hook` (a URL), contact groups by name with their
    members' names (each member's email is NAME@example.com)."""
    contact_groups = "".join(
        f'[[contact_groups]]\nname = "{name}"\nchannels = ["hook"]\nmembers = ['
        + ", ".join(f'{{ name = "{m}", email = "{m}@example.com" }}' for m in members)
        + "]\n"
        for name, members in groups.items()
    )
    return f"""
[server]
instance = "mm-reload"
{server}
[storage]
path = "mm.db"
[convergence]
group_by = ["alertname"]
[templates]
time_zone = "UTC"
[delivery]
retry_initial = "5s"
retry_max = "10s"
[channels.hook]
type = "webhook"
url = "{hook}"
[routing]
default_groups = ["ops"]
{contact_groups}
{routes}
{extra}
"""


@dataclass
class Receiver:
    """A loopback HTTP receiver for the webhook channel: /up answers 200, /down 503."""

    url: str = ""
    got: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def messages(self, path: str = "/up") -> list[dict[str, Any]]:
        return [body for p, body in self.got if p == path]

    def recipients(self, path: str = "/up") -> list[list[str]]:
        return [sorted(r["name"] for r in m["recipients"]) for m in self.messages(path)]


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receiver:
    found = Receiver()

    async def handle(request: web.Request) -> web.Response:
        found.got.append((request.path, await request.json()))
        return web.Response(status=200 if request.path == "/up" else 503)

    app = web.Application()
    app.router.add_post("/up", handle)
    app.router.add_post("/down", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    found.url = str(server.make_url("")).rstrip("/")
    return found


@dataclass
class Svc:
    client: TestClient
    clock: ManualClock
    path: Path

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    def write(self, text: str) -> None:
        # Whole or not at all: a reload reads the file on another thread.
        partial = self.path.with_suffix(".partial")
        partial.write_text(text)
        os.replace(partial, self.path)

    async def drain(self) -> None:
        """Send everything due (the outbox takes a bounded batch per pass)."""
        for _ in range(20):
            await self.app[keys.OUTBOX].drain()
            if not await self.rows(
                f"SELECT id FROM deliveries WHERE state IN ('pending', 'retrying') "
                f"AND next_attempt_at <= {self.clock()}"
            ):
                return
        raise AssertionError("the outbox did not drain")

    async def reload(self, status: int = 200, **headers: str) -> dict[str, Any]:
        response = await self.client.post(RELOAD, headers=headers)
        body = await response.json()
        assert response.status == status, body
        return body  # type: ignore[no-any-return]

    async def fire(self, *alerts: dict[str, Any]) -> None:
        response = await self.client.post(WEBHOOK, json=payload(*alerts))
        assert response.status == 200, await response.text()

    async def decide(self, seconds: float = GROUP_WAIT + 1) -> None:
        """Move the clock, let the timer job decide and the outbox send what is due."""
        self.clock.advance(seconds)
        await self.app[keys.PIPELINE].tick()
        await self.drain()

    async def metric(self, name: str) -> float:
        text = await (await self.client.get("/metrics")).text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        raise AssertionError(f"{name} is not exported")

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.app[keys.STORE].query(sql)]


Start = Callable[..., Awaitable[Svc]]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Start:
    monkeypatch.chdir(tmp_path)  # storage.path is relative: the store lands in tmp_path

    async def run(text: str, scheduler: bool = False) -> Svc:
        """`scheduler`: the timer jobs and the outbox run by themselves, on the real clock."""
        path = tmp_path / "config.toml"
        path.write_text(text)
        clock = ManualClock(T0 + 60)
        app = create_app(
            load_config(path),
            clock=system_clock if scheduler else clock,
            scheduler=scheduler,
            config_path=str(path),
        )
        return Svc(await aiohttp_client(app), clock, path)

    return run


# -- a valid reload ------------------------------------------------------------------------------
async def test_a_valid_reload_changes_routes_and_members_and_keeps_the_state(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    svc = await start(config_text(hook, groups={"ops": ["alice"]}))
    assert await svc.metric(OK) == 1 and await svc.metric(OK_AT) == T0 + 60
    await svc.fire(alert_json("Disk", instance="a"))
    await svc.decide()
    assert receiver.recipients() == [["alice"]]
    before = await svc.rows("SELECT key, contact_group, state FROM alert_groups")

    svc.write(
        config_text(
            hook,
            groups={"ops": ["alice", "bob"], "dba": ["carol"]},
            routes='[[routes]]\nmatch = { team = "db" }\ngroups = ["dba"]\n',
        )
    )
    svc.clock.advance(5)
    answer = await svc.reload()
    assert answer["status"] == "ok" and answer["config"] == str(svc.path)
    assert answer["changed"] == [
        "contact_groups.ops",
        "contact_groups.dba (new)",
        "routes",
    ]
    assert answer["needs_restart"] == [] and answer["rerouted"] == []
    assert await svc.metric(OK) == 1 and await svc.metric(OK_AT) == svc.clock()

    # Stored alerts and open groups were kept; the next messages follow the new config.
    assert await svc.rows("SELECT key, contact_group, state FROM alert_groups") == before
    await svc.fire(alert_json("Replication", team="db"), alert_json("Cpu", instance="b"))
    await svc.fire(alert_json("Disk", "resolved", ends=T0 + 100, instance="a"))
    await svc.decide(301)  # past group_wait, and group_interval for the Disk group
    got = {m["alertGroups"][0]["groupLabels"]["alertname"]: m for m in receiver.messages()[1:]}
    assert set(got) == {"Replication", "Cpu", "Disk"}
    assert got["Replication"]["contactGroup"] == "dba"
    assert [r["name"] for r in got["Replication"]["recipients"]] == ["carol"]
    assert sorted(r["name"] for r in got["Cpu"]["recipients"]) == ["alice", "bob"]
    # The group opened before the reload resolves to its members as they are now.
    assert got["Disk"]["status"] == "resolved"
    assert sorted(r["name"] for r in got["Disk"]["recipients"]) == ["alice", "bob"]

    (row,) = await svc.rows("SELECT who, via, action, target, detail FROM audit")
    assert row["via"] == "api" and row["action"] == "reload" and row["who"] == "api"
    assert row["target"] == str(svc.path) and "contact_groups.dba (new)" in row["detail"]


async def test_the_timer_jobs_and_the_outbox_run_on_the_new_core(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    fast = '[convergence]\ngroup_wait = "100ms"\n'
    text = config_text(hook, groups={"ops": ["alice"]}).replace("[convergence]\n", fast)
    svc = await start(text, scheduler=True)
    old_pipeline = svc.app[keys.PIPELINE]
    svc.write(text.replace('{ name = "alice", email = "alice@example.com" }', '{ name = "bob" }'))
    await svc.reload()
    assert svc.app[keys.PIPELINE] is not old_pipeline
    await svc.client.post(WEBHOOK, json=payload(alert_json("Disk", starts=time.time())))
    for _ in range(100):  # the tick job decides, the outbox worker sends: at most 5 s
        if receiver.messages():
            break
        await asyncio.sleep(0.05)
    assert receiver.recipients() == [["bob"]]
    assert old_pipeline.convergence.groups == {}  # the old core heard nothing


async def test_wecom_apps_that_take_replies_follow_the_config(
    start: Start, receiver: Receiver
) -> None:
    aes_key = "A" * 43
    wecom = (
        '[channels.wecom]\ntype = "wechat"\ncorp_id = "wwreload"\nagent_id = 1000002\n'
        'secret = "s"\napi_url = "http://127.0.0.1:9/cgi-bin/"\n'
    )
    text = config_text(f"{receiver.url}/up", groups={"ops": ["alice"]}, extra=wecom)
    svc = await start(text)
    recent = svc.app[keys.WECOM_CALLBACKS].recent
    assert (await svc.client.get("/callback/wecom/wecom")).status == 404
    svc.write(text + f'callback_token = "t0ken"\ncallback_aes_key = "{aes_key}"\n')
    await svc.reload()
    response = await svc.client.get("/callback/wecom/wecom")
    assert response.status == 400 and "missing query parameter" in await response.text()
    assert svc.app[keys.WECOM_CALLBACKS].recent is recent  # replays are still recognised


# -- an invalid reload ---------------------------------------------------------------------------
async def test_an_invalid_reload_changes_nothing_and_names_every_problem(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    good = config_text(hook, groups={"ops": ["alice"]})
    svc = await start(good)
    config = svc.app[keys.CONFIG]
    svc.write(
        config_text(
            hook,
            groups={"ops": ["alice", "bob"]},
            routes='[[routes]]\nmatch = { team = "db" }\ngroups = ["dbas"]\n',
            extra='[watchdog]\npeer_interval = "soon"\n',
        )
    )
    answer = await svc.reload(status=400)
    assert "2 problem(s); nothing changed" in answer["error"]
    assert len(answer["problems"]) == 2
    assert answer["problems"][0].startswith("watchdog.peer_interval: ")
    assert answer["problems"][1] == 'routes[0].groups: contact group "dbas" does not exist'
    assert await svc.metric(OK) == 0
    assert await svc.metric(OK_AT) == T0 + 60  # the last good load: the start
    assert svc.app[keys.CONFIG] is config and svc.app[keys.CORE].config is config

    # Routing and members are as before: the new member hears nothing.
    await svc.fire(alert_json("Replication", team="db"))
    await svc.decide()
    assert receiver.recipients() == [["alice"]]
    (row,) = await svc.rows("SELECT via, action, detail FROM audit")
    assert row["action"] == "reload refused" and "routes[0].groups" in row["detail"]

    svc.write(good.replace('"alice" }', '"alice" }, { name = "bob", email = "b@example.com" }'))
    await svc.reload()
    assert await svc.metric(OK) == 1


async def test_a_config_that_does_not_parse_or_is_gone_is_refused(
    start: Start, receiver: Receiver
) -> None:
    svc = await start(config_text(f"{receiver.url}/up", groups={"ops": ["alice"]}))
    svc.write("[server\nlisten = 1")
    answer = await svc.reload(status=400)
    assert len(answer["problems"]) == 1 and "TOML" in answer["problems"][0]
    svc.path.unlink()
    answer = await svc.reload(status=400)
    assert answer["problems"] == ["cannot read the file: No such file or directory"]
    assert await svc.metric(OK) == 0


async def test_serve_without_a_config_file_has_nothing_to_reload(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path), scheduler=False))
    response = await client.post(RELOAD)
    assert response.status == 400
    assert "started without --config" in (await response.json())["error"]


# -- settings that need a restart ------------------------------------------------------------------
async def test_settings_that_need_a_restart_are_reported_and_the_rest_applied(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    svc = await start(config_text(hook, groups={"ops": ["alice"]}))
    running = svc.app[keys.CONFIG]
    svc.write(
        config_text(
            hook,
            groups={"ops": ["alice", "bob"]},
            server='listen = "127.0.0.1:19999"\nmax_body_bytes = 1000',
        ).replace('path = "mm.db"', 'path = "other.db"')
    )
    answer = await svc.reload()
    assert answer["needs_restart"] == [
        'server.listen: "127.0.0.1:19999" needs a restart; running with "127.0.0.1:9095" '
        "until then",
        "server.max_body_bytes: 1000 needs a restart; running with 4194304 until then",
        'storage.path: "other.db" needs a restart; running with "mm.db" until then',
    ]
    assert answer["changed"] == ["contact_groups.ops"]
    config = svc.app[keys.CONFIG]
    assert config.server == running.server and config.storage == running.storage
    assert [m.name for m in config.contact_groups[0].members] == ["alice", "bob"]
    assert svc.app[keys.STORE] is svc.app[keys.CORE].store  # the same open store


def test_what_a_reload_changes_is_named_by_key_path(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_text("http://127.0.0.1:1/up", groups={"ops": ["a"], "dba": ["b"]}))
    old = load_config(path)
    path.write_text(
        config_text("http://127.0.0.1:2/up", groups={"ops": ["a"], "sre": ["c"]}).replace(
            'group_by = ["alertname"]', 'group_by = ["alertname", "cluster"]'
        )
    )
    new, notes = keep_running_values(old, load_config(path))
    assert notes == []
    assert config_changes(old, new) == [
        "convergence",
        "channels.hook",
        "contact_groups.sre (new)",
        "contact_groups.dba (removed)",
    ]


# -- a removed contact group with an open group ----------------------------------------------------
async def test_the_firing_alerts_of_a_removed_contact_group_are_routed_again(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    routes = '[[routes]]\nmatch = { team = "db" }\ngroups = ["dba"]\n'
    svc = await start(config_text(hook, groups={"ops": ["alice"], "dba": ["carol"]}, routes=routes))
    await svc.fire(
        alert_json("Replication", team="db", instance="a"),
        alert_json("Replication", team="db", instance="b"),
    )
    await svc.fire(alert_json("Replication", "resolved", ends=T0 + 50, team="db", instance="b"))
    await svc.decide()
    assert [(m["contactGroup"], m["status"]) for m in receiver.messages()] == [("dba", "firing")]
    (old_key,) = svc.app[keys.PIPELINE].convergence.groups

    svc.write(config_text(hook, groups={"ops": ["alice"]}))  # dba and its route are gone
    answer = await svc.reload()
    assert answer["rerouted"] == [
        {"group": old_key, "contact_group": "dba", "alerts": 1, "to": ["ops"]}
    ]
    assert "contact_groups.dba (removed)" in answer["changed"]
    groups = {
        r["key"]: r for r in await svc.rows("SELECT key, contact_group, state FROM alert_groups")
    }
    assert groups[old_key]["state"] == "closed"
    (new_key,) = svc.app[keys.PIPELINE].convergence.groups
    assert groups[new_key] == {"key": new_key, "contact_group": "ops", "state": "open"}

    # The old group's people get no resolved message; ops hears the alert after group_wait.
    await svc.decide(1)
    assert len(receiver.messages()) == 1
    await svc.decide(GROUP_WAIT)
    last = receiver.messages()[-1]
    assert (last["contactGroup"], last["status"]) == ("ops", "firing")
    assert [a["labels"]["instance"] for a in last["alertGroups"][0]["alerts"]] == ["a"]
    assert [r["name"] for r in last["recipients"]] == ["alice"]
    (alert,) = await svc.rows("SELECT memberships FROM alerts WHERE status = 'firing'")
    assert json.loads(alert["memberships"]) == {new_key: "firing"}
    (row,) = await svc.rows("SELECT detail FROM audit")
    assert f"group {old_key} of removed contact group dba closed" in row["detail"]


async def test_a_removed_heartbeat_or_peer_closes_its_page_instead_of_repeating_for_ever(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    watched = """
[watchdog]
groups = ["ops"]
peer_failures = 1
[[watchdog.heartbeats]]
name = "prom-az2"
match = { alertname = "DeadMansSwitch", az = "az2" }
timeout = "1m"
[[peers]]
name = "mm-gone"
url = "http://127.0.0.1:9"
[ha]
token = "t"
"""
    svc = await start(config_text(hook, groups={"ops": ["alice"]}, extra=watched))
    pipeline = svc.app[keys.PIPELINE]
    svc.clock.advance(120)  # the heartbeat never came: missing
    await pipeline.watch()
    await pipeline.raise_internal(await svc.app[keys.PEERS].probe_all())  # nothing listens
    await svc.decide(1)
    firing = {m["alertGroups"][0]["groupLabels"].get("alertname") for m in receiver.messages()}
    assert {"HeartbeatMissing", "PeerDown"} <= firing, receiver.messages()
    sent = len(receiver.messages())

    svc.write(config_text(hook, groups={"ops": ["alice"]}, extra='[watchdog]\ngroups = ["ops"]'))
    await svc.reload()
    await svc.app[keys.PIPELINE].watch()  # the new core's watchdog
    await svc.decide(301)  # group_interval after the firing messages
    closed = receiver.messages()[sent:]
    assert sorted(
        (m["alertGroups"][0]["groupLabels"]["alertname"], m["status"]) for m in closed
    ) == [("HeartbeatMissing", "resolved"), ("PeerDown", "resolved")]
    texts = json.dumps(closed, ensure_ascii=False)
    assert "no longer configured" in texts and "not recovered" in texts
    # Closed for good: no repeat, nothing more however long it runs.
    for _ in range(3):
        await svc.app[keys.PIPELINE].watch()
        await svc.decide(3600 * 5)
    assert len(receiver.messages()) == sent + 2
    internal = await svc.rows(
        "SELECT status FROM alerts WHERE source = 'monitor-manager' AND status = 'firing'"
    )
    assert internal == []


# -- a changed channel with queued deliveries ---------------------------------------------------
async def test_queued_deliveries_of_a_changed_channel_use_its_new_settings(
    start: Start, receiver: Receiver
) -> None:
    svc = await start(config_text(f"{receiver.url}/down", groups={"ops": ["alice"]}))
    await svc.fire(alert_json("Disk", instance="a"), alert_json("Cpu", instance="a"))
    await svc.decide()
    assert len(receiver.messages("/down")) == 2  # both refused: queued for a retry
    queued = await svc.rows("SELECT state FROM deliveries")
    assert [r["state"] for r in queued] == ["retrying", "retrying"]

    svc.write(config_text(f"{receiver.url}/up", groups={"ops": ["alice"]}))
    answer = await svc.reload()
    assert answer["changed"] == ["channels.hook"]
    await svc.decide(11)  # past the retry
    assert sorted(m["alertGroups"][0]["groupLabels"]["alertname"] for m in receiver.messages()) == [
        "Cpu",
        "Disk",
    ]
    assert len(receiver.messages("/down")) == 2
    delivered = await svc.rows("SELECT state, attempts FROM deliveries")
    assert delivered == [{"state": "delivered", "attempts": 2}] * 2


# -- a burst of webhooks during reloads ------------------------------------------------------
async def test_a_burst_of_webhooks_during_reloads_loses_nothing(
    start: Start, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/up"
    storm = "[storm]\nthreshold = 1000\n"  # each group's message on its own, no digest
    svc = await start(config_text(hook, groups={"ops": ["alice"]}, extra=storm))
    requests, reloads = 300, 6

    connections = asyncio.Semaphore(40)  # the client's pool keeps room for the reloads

    async def post(i: int) -> int:
        async with connections:
            response = await svc.client.post(WEBHOOK, json=payload(alert_json(f"Burst{i}")))
            await response.read()
        return response.status

    async def reload(i: int) -> int:
        await asyncio.sleep(0.1 * i)  # spread over the burst
        members = ["alice"] + [f"m{j}" for j in range(i)]
        svc.write(config_text(hook, groups={"ops": members}, extra=storm))
        return (await svc.reload())["status"] == "ok"

    async def burst() -> list[Any]:
        return await asyncio.gather(
            *(post(i) for i in range(requests)), *(reload(i) for i in range(reloads))
        )

    results = await asyncio.wait_for(burst(), timeout=60)
    assert results[:requests] == [200] * requests
    assert all(results[requests:])
    assert svc.app[keys.RELOADER].gate.waited > 0  # some did arrive during a swap
    # Every alert is in the store and in the memory of the core now running, each in its
    # group: after group_wait each group is told once.
    assert len(await svc.rows("SELECT id FROM alerts")) == requests
    assert len(svc.app[keys.PIPELINE].convergence.groups) == requests
    await svc.decide()
    names = {m["alertGroups"][0]["groupLabels"]["alertname"] for m in receiver.messages()}
    assert names == {f"Burst{i}" for i in range(requests)}
    assert len(receiver.messages()) == requests
    assert len(await svc.rows("SELECT id FROM audit WHERE action = 'reload'")) == reloads


# -- credentials -------------------------------------------------------------------------------
async def test_reload_needs_the_api_token_when_one_is_set(start: Start, receiver: Receiver) -> None:
    text = config_text(f"{receiver.url}/up", groups={"ops": ["a"]}, server='api_token = "s3cret"')
    svc = await start(text)
    assert (await svc.reload(status=401))["error"] == "missing or wrong bearer token"
    await svc.reload(status=401, Authorization="Bearer wrong")
    answer = await svc.reload(Authorization="Bearer s3cret")
    assert answer["status"] == "ok"


async def test_without_an_api_token_only_loopback_clients_may_reload(
    start: Start, receiver: Receiver
) -> None:
    svc = await start(config_text(f"{receiver.url}/up", groups={"ops": ["a"]}))
    await svc.reload()  # the test client is a loopback client

    def from_address(address: str) -> web.Request:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            (address, 40000) if name == "peername" else default
        )
        return make_mocked_request("POST", RELOAD, app=svc.app, transport=transport)

    request = from_address("10.1.2.3")
    match = await svc.app.router.resolve(request)
    response = await match.handler(request)
    assert response.status == 401
    assert "server.api_token" in json.loads(response.text)["error"]  # type: ignore[attr-defined]
    assert len(await svc.rows("SELECT id FROM audit")) == 1  # the refused one did nothing


# -- real processes ------------------------------------------------------------------------------
PROCESS_CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "mm-sighup"
api_token = "reload-token"
[storage]
path = "mm.db"
[convergence]
group_by = ["alertname"]
group_wait = "1h"
[routing]
default_groups = ["ops"]
[[contact_groups]]
name = "ops"
channels = ["console"]
%s
"""
DBA = """
[[contact_groups]]
name = "dba"
channels = ["console"]
[[routes]]
match = { team = "db" }
groups = ["dba"]
"""


def _scrape(proc: ServeProcess, name: str) -> float:
    with urllib.request.urlopen(f"{proc.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not exported")


def _groups(proc: ServeProcess) -> dict[str, str]:
    status, body = http("GET", f"{proc.url}/api/v1/alert-groups", token="reload-token", timeout=5)
    assert status == 200, body
    return {g["group_labels"]["alertname"]: g["contact_group"] for g in body["alert_groups"]}


def _post(proc: ServeProcess, *alerts: dict[str, Any]) -> None:
    status, body = http("POST", f"{proc.url}{WEBHOOK}", payload(*alerts), timeout=5)
    assert status == 200, body


def _cli(proc: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor_manager", "reload", *args],
        cwd=proc.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )


@pytest.mark.slow
def test_sighup_and_the_reload_command_reload_a_running_service(tmp_path: Path) -> None:
    proc = ServeProcess(tmp_path, PROCESS_CONFIG % "", port=free_port())
    try:
        proc.start()
        started = _scrape(proc, OK_AT)
        assert _scrape(proc, OK) == 1 and abs(started - time.time()) < 60
        _post(proc, alert_json("Replication", team="db"))
        assert _groups(proc) == {"Replication": "ops"}

        # SIGHUP: dba and its route appear; the open group stays where it is.
        proc.config.write_text((PROCESS_CONFIG % DBA).replace("{port}", str(proc.port)))
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_for(lambda: _scrape(proc, OK_AT) > started, what="the reload by SIGHUP")
        _post(proc, alert_json("Lag", team="db"))
        assert _groups(proc) == {"Replication": "ops", "Lag": "dba"}
        status, audit = http("GET", f"{proc.url}/api/v1/audit", token="reload-token")
        assert status == 200
        assert [(a["who"], a["via"], a["action"]) for a in audit["audit"]] == [
            ("SIGHUP", "signal", "reload")
        ]

        # SIGHUP with a broken file: the service keeps running on the previous config.
        proc.config.write_text(
            (PROCESS_CONFIG % DBA.replace('"dba"]', '"dbas"]')).replace("{port}", str(proc.port))
        )
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_for(lambda: _scrape(proc, OK) == 0, what="the refused reload")
        assert 'routes[0].groups: contact group "dbas" does not exist' in proc.logs()
        _post(proc, alert_json("Backup", team="db"))
        assert _groups(proc)["Backup"] == "dba"

        # The command line: the same problems, exit 1; fixed, exit 0.
        refused = _cli(proc, "--config", str(proc.config))
        assert refused.returncode == 1, refused
        assert f'{proc.config}: routes[0].groups: contact group "dbas" does not exist' in (
            refused.stderr
        )
        proc.config.write_text((PROCESS_CONFIG % "").replace("{port}", str(proc.port)))
        done = _cli(proc, "--config", str(proc.config))
        assert done.returncode == 0, done
        assert done.stdout.startswith(f"reloaded {proc.config}; changed: contact_groups.dba ")
        assert "alert group" in done.stdout and "routed again, to ops" in done.stdout
        assert _scrape(proc, OK) == 1
        status, audit = http("GET", f"{proc.url}/api/v1/audit", token="reload-token")
        assert [a["via"] for a in audit["audit"]] == ["cli", "cli", "signal", "signal"]
        assert proc.proc.poll() is None
        assert proc.terminate() == 0
    finally:
        proc.stop()


@pytest.mark.slow
def test_the_reload_command_says_when_no_service_answers(tmp_path: Path) -> None:
    port = free_port()
    proc = ServeProcess(tmp_path, PROCESS_CONFIG % "", port=port)  # written, never started
    result = _cli(proc, "--config", str(proc.config))
    assert result.returncode == 1
    assert f"no answer from the service at http://127.0.0.1:{port}/-/reload" in result.stderr


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate named monitor.example.com only: not the address the
    command dials (127.0.0.1)."""
    return self_signed(directory, "monitor.example.com", ("monitor.example.com",), "server")


@pytest.mark.slow
def test_the_reload_command_speaks_https_trusting_the_services_certificate(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path)
    tls = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
    text = (PROCESS_CONFIG % "").replace('api_token = "reload-token"\n', tls)
    proc = ServeProcess(tmp_path, text, port=free_port())
    try:
        proc.launch()
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False

        def healthy() -> bool:  # over https (ServeProcess would ask over http)
            try:
                url = f"https://127.0.0.1:{proc.port}/healthz"
                with urllib.request.urlopen(url, context=context, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        proc.wait_for(healthy, what="healthy over https")
        done = _cli(proc, "--config", str(proc.config))
        assert done.returncode == 0, (done, proc.logs())
        assert done.stdout == f"reloaded {proc.config}; changed: nothing\n"
        other = tmp_path / "other"
        other.mkdir()
        stranger, its_key = _certificate(other)  # one the service does not present
        wrong = tmp_path / "wrong.toml"
        text = proc.config.read_text().replace(str(cert), str(stranger))
        wrong.write_text(text.replace(str(key), str(its_key)))
        refused = _cli(proc, "--config", str(wrong))
        assert refused.returncode == 1
        assert "no answer from the service at https://127.0.0.1:" in refused.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
        assert "reload it by SIGHUP (systemctl reload monitor-manager)" in refused.stderr
    finally:
        proc.stop()
