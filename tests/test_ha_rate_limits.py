"""Rate limits the platforms count across callers, with several instances.

WeCom drops application messages beyond 30 a minute to one member (without an error), and
robots refuse posts beyond 20 a minute; both count per member or robot, whichever instance
calls. Found by the fault campaign (bench/campaign.py): each instance counted only its own
sends, so when the instance at position 0 held its messages back for its slot, the next one,
with free slots of its own, sent them after its position wait, and WeCom silently dropped
what went beyond the limit. Peers' sends (learnt from the notification log, with the requests
each made) now count in each instance's windows, and a deferred row still waits its position
after the slot.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from builders import T0, incoming, make_config
from fake_wecom import AGENT_ID, CORP_ID, ROBOT_KEY, SECRET, FakeWeCom
from harness import OutboxHarness
from monitor_manager.act.actions import Actor
from monitor_manager.channels.base import SlidingWindowLimiter
from monitor_manager.channels.wechat import WechatSettings
from monitor_manager.channels.wechat_robot import WechatRobotSettings
from monitor_manager.clock import ManualClock
from monitor_manager.cluster.ha import (
    ANNOUNCE_LOG_KEY,
    Entry,
    EntryError,
    PeerMessage,
    parse_message,
)
from monitor_manager.config import ChannelConfig, ContactGroupConfig, MemberConfig, PeerConfig
from monitor_manager.store import StoreError

GROUP_KEY = "0123456789abcdef"


def test_events_learnt_late_are_counted_at_their_own_time() -> None:
    clock = ManualClock(T0)
    limiter = SlidingWindowLimiter(3, 60.0, clock)
    limiter.record("u")
    limiter.record_at("u", T0 - 30, 2)  # a peer's, half a minute ago
    assert limiter.ready_at("u") == T0 - 30 + 60  # full until the peer's events leave
    limiter.record_at("u", T0 - 61)  # already out of the window: not kept
    clock.advance(31)
    assert limiter.ready_at("u") == 0.0


def test_calls_travel_in_version_2_and_default_to_one() -> None:
    entry = Entry("sre", GROUP_KEY, "wecom", "a" * 32, T0, "mm-b", calls=3)
    wire = {"version": 2, "instance": "mm-b", "entries": [entry.wire(2)]}
    assert parse_message(wire).entries == [entry]
    del wire["entries"][0]["calls"]  # type: ignore[index]  # a peer from before this field
    assert parse_message(wire).entries[0].calls == 1
    assert "calls" not in entry.wire(1)
    for bad in (0, 101, "3", True):
        wire["entries"][0]["calls"] = bad  # type: ignore[index]
        with pytest.raises(EntryError) as error:
            parse_message(wire)
        assert error.value.field == "entries[0].calls"


def peered_wecom(tmp_path: Path, fake: FakeWeCom, instance: str) -> Any:
    channels = (
        ChannelConfig(
            "wecom",
            "wechat",
            WechatSettings(corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, api_url=fake.api_url),
        ),
        ChannelConfig(
            "robot", "wechat_robot", WechatRobotSettings(webhook_url=fake.robot_url(ROBOT_KEY))
        ),
    )
    cfg = make_config(
        tmp_path,
        channels=channels,
        contact_groups=(
            ContactGroupConfig("sre", ("wecom", "robot"), (MemberConfig("Z", wechat="zhangsan"),)),
        ),
        routing={"default_groups": ("sre",)},
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
        storm={"threshold": 1000, "window": 60.0},
        peers=(PeerConfig("mm-b", "http://127.0.0.1:9"),),
        ha={"token": "t0ken", "peer_wait": 3.0},
    )
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, instance=instance))


def peer_sends(box: OutboxHarness, channel: str, sends: int, calls: int) -> None:
    assert box.core is not None
    # One send each (a merged send's entries would share their time, and count once).
    entries = [
        Entry("sre", f"{i:016x}", channel, "a" * 32, box.clock() - 1 + i / 100, "mm-b", calls=calls)
        for i in range(sends)
    ]
    box.core.ha.accept(PeerMessage(2, "mm-b", entries), pushed=True)


async def test_a_peers_wecom_sends_fill_this_instances_minute(tmp_path: Path) -> None:
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-a")).start()
        fake.clock = box.clock
        try:
            # mm-b sent 10 messages of 3 parts to the member in the last second: 30, WeCom's
            # minute is full for everyone. (And 20 one-part posts fill the robot's minute.)
            peer_sends(box, "wecom", 10, 3)
            peer_sends(box, "robot", 20, 1)
            # The same entries pushed again (a retried push, a pull) count once.
            peer_sends(box, "wecom", 10, 3)
            await box.push(incoming("DiskFull"))
            rows = await box.step(1)
            assert {r["channel"]: r["state"] for r in rows} == {
                "wecom": "pending",
                "robot": "pending",
            }
            assert fake.accepted == []
            # This instance is at position 0: it sends when the peer's sends leave the minute.
            assert [r["next_attempt_at"] for r in rows] == [pytest.approx(T0 + 60, abs=1.5)] * 2
            box.clock.advance(61)
            await box.outbox.drain()
            assert {r["state"] for r in await box.deliveries()} == {"delivered"}
            assert not fake.dropped
        finally:
            await box.stop()


async def test_a_row_held_for_a_slot_still_waits_its_position_after_it(tmp_path: Path) -> None:
    async with FakeWeCom() as fake:
        # "mm-c" sorts after its peer "mm-b": position 1, 3 s after whatever slot.
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-c")).start()
        fake.clock = box.clock
        try:
            peer_sends(box, "wecom", 30, 1)
            await box.push(incoming("DiskFull"))
            await box.step(2)  # decided after group_wait; due after its position wait
            rows = await box.step(4)
            (wecom,) = [r for r in rows if r["channel"] == "wecom"]
            assert wecom["state"] == "pending"
            assert wecom["next_attempt_at"] == pytest.approx(T0 + 60 + 3.0, abs=1.5)
        finally:
            await box.stop()


async def test_an_instance_that_did_not_run_asks_the_peers_before_sending(tmp_path: Path) -> None:
    """Found by the fault campaign: an instance stopped for 42 s sent, when it ran again, every
    message that fell due meanwhile although its peers had sent them (their pushes had failed),
    and its copies took the members' WeCom quota: WeCom then dropped others' messages."""
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-c")).start()
        fake.clock = box.clock
        try:
            await box.push(incoming("DiskFull"))
            await box.step(2)  # decided; due after its position wait
            (sent,) = await box.rows(
                "SELECT contact_group, group_key, content_hash FROM notifications"
            )
            pulled: list[float] = []

            async def pull() -> list[Any]:  # what mm-b answers: it sent the message
                pulled.append(box.clock())
                assert box.core is not None
                entries = [
                    Entry(
                        sent["contact_group"],
                        sent["group_key"],
                        channel,
                        sent["content_hash"],
                        box.clock() - 30,
                        "mm-b",
                    )
                    for channel in ("wecom", "robot")
                ]
                ops, _, _ = box.core.ha.accept(PeerMessage(2, "mm-b", entries), pushed=False)
                return ops

            assert box.core is not None
            box.core.ha.pull = pull  # type: ignore[method-assign]
            rows = await box.step(60)  # the instance did not run for a minute
            assert pulled == [box.clock()]
            assert {r["state"] for r in rows} == {"delivered"}
            assert all("peer mm-b already sent it" in r["note"] for r in rows)
            assert fake.accepted == []
            await box.step(1)
            assert pulled == [box.clock() - 1]  # running again: no more pulls
        finally:
            await box.stop()


async def test_what_a_peer_could_not_be_told_is_pushed_when_it_answers_again(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    """Found by the fault campaign: pushes went to the peers reachable at that moment only and
    were never repeated, so a peer back from a partition (or one whose push timed out under a
    storm) sent those pages again and counted none of them in WeCom's limit."""
    import aiohttp
    from aiohttp import web

    from monitor_manager.cluster.ha import HighAvailability
    from monitor_manager.metrics import Metrics
    from monitor_manager.watch.peers import Peers

    received: list[list[str]] = []
    answer = {"status": 200}

    async def nflog(request: web.Request) -> web.Response:
        body = await request.json()
        received.append([e["group_key"] for e in body["entries"]])
        return web.json_response(
            {"version": 2, "accepted": 1, "rejected": 0}, status=answer["status"]
        )

    app = web.Application()
    app.router.add_post("/api/v1/peer/nflog", nflog)
    server = await aiohttp_server(app)
    async with FakeWeCom() as fake:
        config = peered_wecom(tmp_path, fake, "mm-a")
    config = dataclasses.replace(config, peers=(PeerConfig("mm-b", str(server.make_url(""))),))
    clock = ManualClock(T0)
    async with aiohttp.ClientSession() as session:
        peers = Peers(config, session, clock, Metrics(), lambda labels: False)
        peers.states["mm-b"].protocol = 2
        ha = HighAvailability(config, peers, session, clock, Metrics())

        def entry(n: int) -> Entry:
            return Entry("sre", f"{n:016x}", "wecom", "a" * 32, clock(), "mm-a")

        peers.states["mm-b"].failures = 1  # unreachable: nothing is sent, it is kept
        await ha.push([entry(1)])
        assert received == []
        peers.states["mm-b"].failures = 0  # a probe answered
        await ha.flush()
        assert received == [[f"{1:016x}"]]
        answer["status"] = 500  # a push that fails is kept for the next one
        await ha.push([entry(2)])
        answer["status"] = 200
        await ha.push([entry(3)])
        assert sorted(received[-1]) == [f"{2:016x}", f"{3:016x}"]
        await ha.flush()
        assert len(received) == 3  # nothing owed any more


async def test_an_acknowledgements_announcement_counts_in_the_peers_limits(tmp_path: Path) -> None:
    """Found by the fault campaign: an acknowledgement is announced by the instance where it
    was made and logged nowhere, so the peers did not count its WeCom request; one of them then
    sent the member's 31st message of the minute, which WeCom showed to nobody. The send is now
    logged under its own key, compared with nothing, counted by everyone."""
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-a")).start()
        fake.clock = box.clock
        assert box.core is not None
        try:
            await box.push(incoming("DiskFull"))
            await box.step(2)
            await box.outbox.drain()
            (key,) = box.core.pipeline.convergence.groups
            await box.core.actions.acknowledge(key, Actor("Z", "api"), "on it")
            await box.step(1)
            await box.outbox.drain()
            assert len(fake.accepted) == 4  # the page and the announcement, app and robot
            logged = box.core.ha.log.entries
            assert logged[("sre", ANNOUNCE_LOG_KEY, "wecom")].instance == "mm-a"
            # Never compared: the group's own entry still names the page's content.
            assert (
                logged[("sre", key, "wecom")].sent_at
                < logged[("sre", ANNOUNCE_LOG_KEY, "wecom")].sent_at
            )
            # And a peer's announcements fill this instance's minute like any send.
            entries = [
                Entry("sre", ANNOUNCE_LOG_KEY, "wecom", "b" * 32, box.clock() + i / 100, "mm-b")
                for i in range(30)
            ]
            ops, accepted, rejected = box.core.ha.accept(
                PeerMessage(2, "mm-b", entries), pushed=True
            )
            assert (accepted, rejected) == (30, 0)
            before = len(fake.accepted)
            await box.push(incoming("CpuHigh"))
            rows = await box.step(2)
            assert len(fake.accepted) == before + 1  # the robot's; the member's minute is full
            assert sorted(r["state"] for r in rows if r["channel"] == "wecom") == [
                "delivered",
                "delivered",
                "pending",
            ]
        finally:
            await box.stop()


async def test_a_peer_whose_store_fails_holds_no_send_position(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    """Found by the fault campaign (a storm's end while mm-az1's store was read-only): the
    others waited their positions behind an instance that could not send, then, late and busy,
    sent side by side, and each sent what the other did. A peer says on /healthz whether it
    commits; one that does not is no sender."""
    import aiohttp
    from aiohttp import web

    from monitor_manager.cluster.ha import HighAvailability
    from monitor_manager.metrics import Metrics
    from monitor_manager.watch.peers import Peers

    commits: dict[str, Any] = {"commits": True}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "instance": "mm-a", "peer_protocol": 2, **commits}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app, host="127.0.0.1")
    cfg = make_config(
        tmp_path,
        peers=(PeerConfig("mm-a", f"http://127.0.0.1:{server.port}"),),
        ha={"token": "t0ken", "peer_wait": 3.0},
    )
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, instance="mm-b"))
    clock = ManualClock(T0)
    async with aiohttp.ClientSession() as session:
        metrics = Metrics()
        peers = Peers(cfg, session, clock, metrics, lambda labels: False)
        ha = HighAvailability(cfg, peers, session, clock, metrics)
        await peers.probe_all()
        assert ha.send_delay() == 3.0  # behind mm-a
        commits["commits"] = False
        await peers.probe_all()
        assert peers.reachable() == ["mm-a"]  # up: no PeerDown for it
        assert ha.send_delay() == 0.0  # but it cannot send: first in line
        del commits["commits"]  # release 1 says nothing: it sends
        await peers.probe_all()
        assert ha.send_delay() == 3.0


async def test_an_instance_whose_store_failed_asks_the_peers_before_sending(
    tmp_path: Path,
) -> None:
    """Found by the fault campaign: peers' pushes failed while this instance's store was read
    only, and they sent in its place; back, it sent the same messages again at once."""
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-a")).start()
        fake.clock = box.clock
        assert box.core is not None
        pulled: list[float] = []

        async def pull() -> list[Any]:
            pulled.append(box.clock())
            return []

        box.core.ha.pull = pull  # type: ignore[method-assign]
        store = box.core.store
        write = store.write

        async def read_only(ops: list[Any]) -> None:
            store.healthy = False
            raise StoreError("the disk is read-only")

        try:
            await box.step(1)
            assert pulled == []
            store.write = read_only  # type: ignore[method-assign]
            with pytest.raises(StoreError):
                await store.write([])  # a commit fails
            with pytest.raises(StoreError):
                await box.outbox.dispatch_due()  # so does the outbox's, and it pulls nothing
            assert pulled == []
            store.write = write  # type: ignore[method-assign]
            await box.push(incoming("DiskFull"))  # commits again
            rows = await box.step(2)
            assert pulled == [box.clock()]  # back: it asks first, then sends
            assert {r["state"] for r in rows} == {"delivered"}
            await box.step(1)
            assert pulled == [box.clock() - 1]  # once
        finally:
            await box.stop()


@pytest.mark.parametrize(("peer_up", "state"), [(True, "pending"), (False, "delivered")])
async def test_a_message_starts_only_with_room_for_what_a_peer_may_be_sending(
    tmp_path: Path, peer_up: bool, state: str
) -> None:
    """Found by the fault campaign: two instances started a five-part digest to the same
    members in the same second, each counting only what the other had already sent, and WeCom
    showed the 31st and 32nd parts of the minute to nobody. A message now starts only with room
    for one whole message (five parts) of each peer that can send."""
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-a")).start()
        fake.clock = box.clock
        assert box.core is not None
        try:
            if not peer_up:
                box.core.peers.states["mm-b"].failures = 3  # down: it sends nothing now
            assert box.core.peers.senders() == (["mm-b"] if peer_up else [])
            peer_sends(box, "wecom", 25, 1)
            await box.push(incoming("DiskFull"))
            rows = await box.step(2)
            (wecom,) = [r for r in rows if r["channel"] == "wecom"]
            # 25 + 1 fits WeCom's 30, but not with room for the 5 parts mm-b may be sending.
            assert wecom["state"] == state
            assert not fake.dropped
        finally:
            await box.stop()


async def test_a_state_pull_whose_commit_failed_is_pulled_again(tmp_path: Path) -> None:
    """Found by the fault campaign: a silence made on mm-az2 while mm-az1's store was read-only
    reached mm-az1 by a pull whose commit failed; the pull was marked done anyway, nothing
    brought the silence again, and mm-az1 paged the silenced incident for two minutes after
    the fault. A pull is marked done only once committed."""
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-a")).start()
        assert box.core is not None
        shared = box.core.shared
        shared.peers.states["mm-b"].protocol = 2
        asked: list[float] = []

        async def pull_one(name: str) -> Any:
            asked.append(shared._pulled.get(name, 0.0))
            return object()  # what mm-b told; accept() below takes it

        async def read_only(ops: list[Any]) -> None:
            raise StoreError("the disk is read-only")

        shared._pull_one = pull_one  # type: ignore[method-assign]
        shared.accept = lambda name, told: (["op"], 1, 0)  # type: ignore[assignment,method-assign,list-item]
        write = shared.write
        try:
            shared.write = read_only  # type: ignore[assignment]
            with pytest.raises(StoreError):
                await shared.pull()
            box.clock.advance(5)
            shared.write = lambda ops: write([])  # type: ignore[assignment]
            await shared.pull()
            box.clock.advance(5)
            await shared.pull()
            # The second pull asks for everything again (its first attempt never committed).
            assert asked == [0.0, 0.0, box.clock() - 5]
        finally:
            await box.stop()


async def test_a_send_held_back_by_our_own_count_of_the_limit_is_no_channel_failure(
    tmp_path: Path,
) -> None:
    """Found by the fault campaign: the peers' sends, learnt between the slot check and the
    send, filled the member's minute; the send was held back (the platform never called), yet
    counted as the channel failing, and a storm's backlog paged ChannelFailing for a robot and
    a WeCom app that worked."""
    async with FakeWeCom() as fake:
        box = await OutboxHarness(peered_wecom(tmp_path, fake, "mm-a")).start()
        fake.clock = box.clock
        assert box.core is not None
        try:
            for name in ("wecom", "robot"):
                # The slot check passed just before the peers' sends arrived.
                box.core.channels[name].ready_at = lambda message: 0.0  # type: ignore[method-assign]
            peer_sends(box, "wecom", 30, 1)
            peer_sends(box, "robot", 20, 1)
            await box.push(incoming("DiskFull"))
            rows = await box.step(2)
            assert {r["state"] for r in rows} == {"retrying"}
            assert all(r["last_error"].startswith("holding back") for r in rows)
            assert fake.accepted == []
            watchdog = box.core.pipeline.watchdog
            assert watchdog is not None
            assert all(h.failing_since is None for h in watchdog.channels.values())
        finally:
            await box.stop()
