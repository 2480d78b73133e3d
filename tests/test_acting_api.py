"""The HTTP side of acting on a page: acknowledge endpoints, Alertmanager's silences API v2,
the audit, the peers' shared state, and the credentials every change needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from builders import T0, incoming, make_config
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.clock import ManualClock, iso
from monitor_manager.web.acting import credential_problem

HOUR = 3600.0


class Svc:
    def __init__(self, client: Any, clock: ManualClock) -> None:
        self.client = client
        self.clock = clock
        self.app = client.app

    async def call(
        self, method: str, path: str, body: Any = None, status: int = 200, **headers: str
    ) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        response = await self.client.request(method, path, data=data, headers=headers)
        text = await response.text()
        assert response.status == status, text
        return json.loads(text) if text else None

    async def firing_group(self) -> str:
        pipeline = self.app[keys.PIPELINE]
        await pipeline.ingest([incoming("Disk", instance="a")])
        self.clock.advance(31)
        await pipeline.tick()
        (key,) = pipeline.convergence.groups
        return key

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.app[keys.STORE].query(sql)]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Any:
    async def run(**sections: Any) -> Svc:
        sections["server"] = {"instance": "mm-a", **sections.get("server", {})}
        clock = ManualClock(T0)
        app = create_app(make_config(tmp_path, **sections), clock=clock, scheduler=False)
        return Svc(await aiohttp_client(app), clock)

    return run


# -- acknowledgements --------------------------------------------------------------------------
async def test_ack_through_the_api_shows_in_the_group_and_the_audit(start: Any) -> None:
    svc = await start()
    key = await svc.firing_group()
    answer = await svc.call(
        "POST", f"/api/v1/alert-groups/{key}/ack", {"by": "alice", "comment": "on it"}
    )
    ack = {"by": "alice", "at": iso(svc.clock.now), "comment": "on it", "via": "api"}
    assert answer == {"key": key, "ack": ack, "acknowledged_now": True}
    group = await svc.call("GET", f"/api/v1/alert-groups/{key}")
    assert group["ack"] == ack
    listed = await svc.call("GET", "/api/v1/alert-groups")
    assert listed["alert_groups"][0]["ack"] == ack
    audit = await svc.call("GET", "/api/v1/audit")
    assert [(a["who"], a["via"], a["action"], a["target"]) for a in audit["audit"]] == [
        ("alice", "api", "ack", key)
    ]
    # Withdrawn: the group shows no ack; a second withdrawal finds nothing to withdraw.
    assert await svc.call("DELETE", f"/api/v1/alert-groups/{key}/ack?by=bob") == {
        "key": key,
        "ack": None,
    }
    assert (await svc.call("GET", f"/api/v1/alert-groups/{key}"))["ack"] is None
    gone = await svc.call("DELETE", f"/api/v1/alert-groups/{key}/ack", status=409)
    assert gone["field"] == "key"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"comment": "no name"}, 400, "by"),
        ({"by": ""}, 400, "by"),
        ({"by": "a\x07b"}, 400, "by"),
        ({"by": "x" * 300}, 400, "by"),
        ({"by": 7}, 400, "by"),
        ({"by": "alice", "comment": ["list"]}, 400, "comment"),
        ({"by": "alice", "comment": "c" * 5000}, 400, "comment"),
        ([1, 2], 400, None),
        (b"{not json", 400, None),
    ],
)
async def test_bad_ack_bodies_are_refused_and_change_nothing(
    start: Any, body: Any, status: int, field: str | None
) -> None:
    svc = await start()
    key = await svc.firing_group()
    answer = await svc.call("POST", f"/api/v1/alert-groups/{key}/ack", body, status=status)
    assert answer["error"] and answer.get("field") == field
    assert await svc.rows("SELECT * FROM acks") == []
    assert await svc.rows("SELECT * FROM audit") == []


async def test_acks_on_unknown_or_resolved_groups_are_refused(start: Any) -> None:
    svc = await start()
    missing = await svc.call(
        "POST", "/api/v1/alert-groups/0123456789abcdef/ack", {"by": "a"}, status=404
    )
    assert "not open" in missing["error"]
    key = await svc.firing_group()
    await svc.app[keys.PIPELINE].ingest([incoming("Disk", "resolved", ends=T0 + 40, instance="a")])
    resolved = await svc.call("POST", f"/api/v1/alert-groups/{key}/ack", {"by": "a"}, status=409)
    assert "resolved" in resolved["error"]


async def test_with_an_api_token_a_change_needs_it(start: Any) -> None:
    svc = await start(server={"api_token": "s3cret"})
    key = await svc.firing_group()
    await svc.call("POST", f"/api/v1/alert-groups/{key}/ack", {"by": "a"}, status=401)
    await svc.call("POST", "/api/v2/silences", {}, status=401)
    assert await svc.rows("SELECT * FROM acks") == []
    await svc.call(
        "POST",
        f"/api/v1/alert-groups/{key}/ack",
        {"by": "a"},
        Authorization="Bearer s3cret",
    )


def _request_from(address: str, app: Any) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (address, 40000) if name == "peername" else default
    )
    return make_mocked_request("POST", "/api/v2/silences", app=app, transport=transport)


async def test_without_an_api_token_only_loopback_clients_may_change_anything(
    start: Any,
) -> None:
    svc = await start()
    assert credential_problem(_request_from("127.0.0.1", svc.app)) is None
    assert credential_problem(_request_from("::1", svc.app)) is None
    problem = credential_problem(_request_from("10.1.2.3", svc.app))
    assert problem is not None and "server.api_token" in problem


# -- silences ----------------------------------------------------------------------------------
def silence(**extra: Any) -> dict[str, Any]:
    return {
        "matchers": [{"name": "alertname", "value": "Disk", "isRegex": False, "isEqual": True}],
        "startsAt": iso(T0),
        "endsAt": iso(T0 + HOUR),
        "createdBy": "alice",
        "comment": "disk swap",
        **extra,
    }


async def test_silences_are_created_listed_updated_and_expired(start: Any) -> None:
    svc = await start()
    created = await svc.call("POST", "/api/v2/silences", silence())
    sid = created["silenceID"]
    one = await svc.call("GET", f"/api/v2/silence/{sid}")
    assert one["status"] == {"state": "active"} and one["createdBy"] == "alice"
    assert [s["id"] for s in await svc.call("GET", "/api/v2/silences")] == [sid]
    # Update in place (same matchers, still active): the same id, a later end.
    same = await svc.call("POST", "/api/v2/silences", silence(id=sid, endsAt=iso(T0 + 2 * HOUR)))
    assert same == {"silenceID": sid}
    assert (await svc.call("GET", f"/api/v2/silence/{sid}"))["endsAt"] == iso(T0 + 2 * HOUR)
    filtered = await svc.call("GET", "/api/v2/silences?filter=alertname%3DOther")
    assert filtered == []
    await svc.call("DELETE", f"/api/v2/silence/{sid}")
    assert (await svc.call("GET", f"/api/v2/silence/{sid}"))["status"] == {"state": "expired"}
    actions = [r["action"] for r in await svc.rows("SELECT action FROM audit ORDER BY id")]
    assert actions == ["silence", "silence.update", "silence.expire"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"matchers": []}, "matchers: at least one matcher required"),
        ({"endsAt": iso(T0 - 10)}, "endsAt: "),
        ({"endsAt": iso(T0 + 30 * 86400)}, "silences.max_duration"),
        ({"createdBy": ""}, "createdBy: must not be empty"),
        (
            {"matchers": [{"name": "a", "value": "(", "isRegex": True, "isEqual": True}]},
            "matchers[0].value",
        ),
    ],
)
async def test_refused_silences_answer_a_json_string_and_change_nothing(
    start: Any, change: dict[str, Any], says: str
) -> None:
    svc = await start()
    answer = await svc.call("POST", "/api/v2/silences", silence(**change), status=400)
    assert isinstance(answer, str) and says in answer
    assert await svc.rows("SELECT * FROM silences") == []


async def test_unknown_silences_are_404_strings(start: Any) -> None:
    svc = await start()
    assert await svc.call("GET", "/api/v2/silence/nope", status=404) == "silence not found"
    assert await svc.call("DELETE", "/api/v2/silence/nope", status=404) == "silence not found"
    answer = await svc.call("POST", "/api/v2/silences", silence(id="nope"), status=404)
    assert isinstance(answer, str) and "nope" in answer


async def test_a_silence_of_internal_alerts_is_allowed_but_flagged(start: Any) -> None:
    svc = await start()
    body = silence(matchers=[{"name": "alertname", "value": "HeartbeatMissing", "isRegex": False}])
    sid = (await svc.call("POST", "/api/v2/silences", body))["silenceID"]
    assert (await svc.call("GET", f"/api/v2/silence/{sid}"))["mutesInternalAlerts"] is True


# -- the peers' shared state -------------------------------------------------------------------
PEERS = ({"name": "mm-b", "url": "http://127.0.0.1:1"},)


def peer_config() -> dict[str, Any]:
    from monitor_manager.config.schema import PeerConfig

    return {
        "peers": tuple(PeerConfig(**p) for p in PEERS),
        "ha": {"token": "t0ken"},
    }


AUTH = {"Authorization": "Bearer t0ken"}


async def test_a_peer_ack_is_honoured_and_a_stranger_is_refused(start: Any) -> None:
    svc = await start(**peer_config())
    key = await svc.firing_group()
    now = svc.clock.now
    ack = {
        "group_key": key,
        "by": "bob",
        "at": now,
        "comment": "",
        "via": "link",
        "withdrawn": False,
        "updated_at": now,
        "origin": "mm-b",
    }
    body = {"version": 2, "instance": "mm-b", "acks": [ack]}
    stranger = await svc.call(
        "POST", "/api/v1/peer/state", {**body, "instance": "mm-x"}, status=403, **AUTH
    )
    assert stranger["field"] == "instance"
    await svc.call("POST", "/api/v1/peer/state", body, status=401)
    bad = await svc.call(
        "POST", "/api/v1/peer/state", {**body, "acks": [{**ack, "via": "x"}]}, status=400, **AUTH
    )
    assert bad["field"] == "acks[0].via"
    assert await svc.rows("SELECT * FROM acks") == []
    # From the future, or from an origin that is not a peer: dropped and counted.
    future = {**ack, "updated_at": now + 60}
    foreign = {**ack, "origin": "mm-x"}
    answer = await svc.call(
        "POST", "/api/v1/peer/state", {**body, "acks": [future, foreign]}, **AUTH
    )
    assert answer == {"version": 2, "accepted": 0, "rejected": 2}
    answer = await svc.call("POST", "/api/v1/peer/state", body, **AUTH)
    assert answer == {"version": 2, "accepted": 1, "rejected": 0}
    group = await svc.call("GET", f"/api/v1/alert-groups/{key}")
    assert group["ack"]["by"] == "bob"
    # A pull sees it, with this instance's link key (and never a key in the peer's name
    # that did not come from the peer).
    pulled = await svc.call("GET", "/api/v1/peer/state?since=0", **AUTH)
    assert [a["by"] for a in pulled["acks"]] == ["bob"]
    assert [k["kid"].split(":")[0] for k in pulled["link_keys"]] == ["mm-a"]


async def test_a_peer_cannot_plant_a_signing_key_in_our_name(start: Any) -> None:
    svc = await start(**peer_config())
    await svc.app[keys.PIPELINE].load()
    links = svc.app[keys.CORE].pipeline.links
    own = links.own
    planted = {"kid": "mm-a:evil", "key": "A" * 43, "created_at": svc.clock.now + 1}
    body = {"version": 2, "instance": "mm-b", "link_keys": [planted]}
    await svc.call("POST", "/api/v1/peer/state", body, **AUTH)
    assert "mm-a:evil" not in links.keys and links.own == own


# -- clocks ----------------------------------------------------------------------------------
async def test_a_peer_clock_off_by_more_than_the_allowed_skew_raises_clock_skew(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A peer's /healthz reports its time; further off than ha.max_clock_skew pages
    ClockSkew{peer}, and it resolves when the clocks agree again."""
    import aiohttp
    from aiohttp import web

    from monitor_manager.config.schema import PeerConfig
    from monitor_manager.metrics import Metrics
    from monitor_manager.watch.peers import Peers

    clock = ManualClock(T0)
    offset = {"seconds": 30.0}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "instance": "mm-b",
                "peer_protocol": 2,
                "time": clock.now + offset["seconds"],
            }
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app, host="127.0.0.1")
    config = make_config(
        tmp_path,
        peers=(PeerConfig("mm-b", f"http://127.0.0.1:{server.port}"),),
        ha={"token": "t", "max_clock_skew": 5.0},
    )
    firing: set[str] = set()

    def is_firing(labels: dict[str, str]) -> bool:
        return labels.get("peer", "") in firing and labels["alertname"] == "ClockSkew"

    async with aiohttp.ClientSession() as session:
        peers = Peers(config, session, clock, Metrics(), is_firing)
        raised = [a for a in await peers.probe_all() if a.labels["alertname"] == "ClockSkew"]
        assert [(a.status, a.labels["peer"]) for a in raised] == [("firing", "mm-b")]
        assert "30s" in raised[0].annotations["summary"]
        assert peers.states["mm-b"].offset == pytest.approx(30.0, abs=1.0)
        firing.add("mm-b")
        assert [a for a in await peers.probe_all() if a.labels["alertname"] == "ClockSkew"] == []
        offset["seconds"] = -2.0  # within the allowed skew: resolved
        raised = [a for a in await peers.probe_all() if a.labels["alertname"] == "ClockSkew"]
        assert [a.status for a in raised] == ["resolved"]
