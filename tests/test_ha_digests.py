"""Storm digests across instances: each instance fills its digests from storm windows of its
own, so two instances' digests about one storm seldom match whole; what a reachable peer
already told about a group (in a group message, or in its own digest) is left out of ours.

Found by the fault campaign (bench/campaign.py): in a storm of 1,000 alert groups through two
real Alertmanagers to three instances, each instance sent its own digest and its own first
`threshold` groups directly, and people got most groups two or three times.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from builders import groups, incoming, make_config
from harness import Harness
from monitor_manager.cluster.ha import DIGEST_LOG_KEY, Entry
from monitor_manager.config import PeerConfig
from monitor_manager.deliver.outbox import group_entries
from monitor_manager.store.deliveries import Delivery

PEER = "mm-b"


def peered_storm(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = make_config(
        tmp_path,
        storm={"threshold": 1, "window": 10.0},
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
        contact_groups=groups("default", channels=("console",)),
        peers=(PeerConfig(PEER, "http://127.0.0.1:9"),),
        ha={"token": "t0ken", "peer_wait": 3.0},
    )
    # This instance sorts before its peer: position 0, it sends without waiting.
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, instance="mm-a"))


async def storm_digest(h: Harness) -> Delivery:
    """Three groups: one goes out directly, the other two wait for the window's digest."""
    await h.push(*(incoming(name) for name in ("StormA", "StormB", "StormC")))
    await h.run_until(2)
    await h.outbox.drain()  # the direct one
    await h.run_until(12)  # the window closes: the digest is decided, not sent yet
    assert h.store is not None
    (row,) = await h.rows(
        "SELECT d.id FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        "WHERE n.kind = 'digest'"
    )
    (digest,) = [d for d in h.decided if d.message.kind == "digest"]
    assert len(digest.message.groups) == 2
    return Delivery(row["id"], digest.message.id, "console", 0, h.clock(), digest.message)


def told_by_peer(h: Harness, entries: list[Entry]) -> None:
    assert h.core is not None
    h.core.ha.record([dataclasses.replace(e, instance=PEER, sent_at=h.clock()) for e in entries])


async def test_a_group_a_peer_already_told_is_left_out_of_the_digest(tmp_path: Path) -> None:
    h = await Harness(peered_storm(tmp_path)).start()
    try:
        digest = await storm_digest(h)
        first, second = group_entries(digest, h.clock(), "mm-a")
        told_by_peer(h, [first])  # the peer sent the first group, as a group message
        await h.outbox.drain()
        out = h.stdout.getvalue().split("[DIGEST]", 1)[1]
        assert digest.message.groups[1].title in out
        assert digest.message.groups[0].title not in out
        (row,) = await h.rows("SELECT state, note FROM deliveries WHERE id = ?", (digest.id,))
        assert row["state"] == "delivered"
        assert row["note"] == f"1 of 2 alert groups not sent here: peer {PEER} already sent them"
        # What went out is logged group by group, for the peers to compare theirs with.
        assert h.core is not None
        logged = h.core.ha.log.entries
        key = ("default", second.group_key, "console")
        assert logged[key].instance == "mm-a" and logged[key].content_hash == second.content_hash
        assert logged[("default", DIGEST_LOG_KEY, "console")].instance == "mm-a"
    finally:
        await h.stop()


async def test_a_digest_whose_groups_peers_all_told_is_not_sent(tmp_path: Path) -> None:
    h = await Harness(peered_storm(tmp_path)).start()
    try:
        digest = await storm_digest(h)
        told_by_peer(h, group_entries(digest, h.clock(), "mm-a"))
        await h.outbox.drain()
        assert "[DIGEST]" not in h.stdout.getvalue()
        (row,) = await h.rows("SELECT state, note FROM deliveries WHERE id = ?", (digest.id,))
        assert (row["state"], row["note"]) == (
            "delivered",
            f"not sent here: peer {PEER} already sent it (or a newer state)",
        )
    finally:
        await h.stop()


async def test_a_group_a_peer_told_in_another_state_stays_in_the_digest(tmp_path: Path) -> None:
    h = await Harness(peered_storm(tmp_path)).start()
    try:
        digest = await storm_digest(h)
        first, _ = group_entries(digest, h.clock(), "mm-a")
        # The peer told an older state of the group, before this digest was decided.
        told_by_peer(h, [dataclasses.replace(first, content_hash="0" * 32)])
        h.core.ha.log.entries[first.key] = dataclasses.replace(  # type: ignore[union-attr]
            h.core.ha.log.entries[first.key],  # type: ignore[union-attr]
            sent_at=digest.created_at - 5,
        )
        await h.outbox.drain()
        out = h.stdout.getvalue().split("[DIGEST]", 1)[1]
        assert all(g.title in out for g in digest.message.groups)
    finally:
        await h.stop()


async def test_a_group_whose_newer_state_went_out_first_is_left_out_of_the_digest(
    tmp_path: Path,
) -> None:
    """Found by the fault campaign: a storm's digest held back by WeCom's rate limit went out
    after the same instance had sent the groups' resolutions, showing them firing again. What a
    message decided after the digest already told is left out of it."""
    h = await Harness(peered_storm(tmp_path)).start()
    assert h.store is not None
    try:
        digest = await storm_digest(h)
        later = 10**10  # the digest waits (a rate limit), while
        await h.store.write(
            [("UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", (later, digest.id))]
        )
        first = digest.message.groups[0]
        name = first.group_labels["alertname"]
        await h.push(incoming(name, status="resolved", ends=h.clock()))
        await h.run_until(400)  # after group_interval
        await h.outbox.drain()  # the resolution goes out
        assert f"[RESOLVED] {first.title}" in h.stdout.getvalue()
        await h.store.write(
            [("UPDATE deliveries SET next_attempt_at = 0 WHERE id = ?", (digest.id,))]
        )
        await h.outbox.drain()
        out = h.stdout.getvalue().split("[DIGEST]", 1)[1]
        assert first.title not in out and digest.message.groups[1].title in out
        (row,) = await h.rows("SELECT state, note FROM deliveries WHERE id = ?", (digest.id,))
        assert row["state"] == "delivered" and row["note"].startswith("1 alert groups left out")
    finally:
        await h.stop()
