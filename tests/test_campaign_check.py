"""The fault campaign's checker (bench/campaign_check.py) on made-up runs: messages rendered
by the service's own templates, so that the checker reads what people really get."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from campaign_check import check, join_chat, parse_chat, parse_mail
from campaign_stack import Timers

from monitor_manager.channels.chat_text import render_chat
from monitor_manager.deliver.render import Renderer
from monitor_manager.models import AlertView, GroupView, Member, Message

T0 = 1_800_000_000.0
RENDERER = Renderer("en", None, 50, None)
SRE = (
    Member("Zhang San", "zhangsan@example.com", "zhangsan"),
    Member("Li Si", "lisi@example.com", "lisi"),
)


def alert(aid: str, status: str, episode: int = 1, title: str = "Inc0001 prod") -> AlertView:
    alertname, cluster = title.split()
    return AlertView(
        aid,
        status,  # type: ignore[arg-type]
        {"alertname": alertname, "cluster": cluster, "aid": aid, "team": "sre"},
        {"summary": f"{aid} #{episode} {status}"},
        T0,
        T0 + 1 if status == "resolved" else None,
    )


def group(*alerts: AlertView, title: str = "Inc0001 prod") -> GroupView:
    alertname, cluster = title.split()
    return GroupView(title, "sre", {"alertname": alertname, "cluster": cluster}, alerts, "http://x")


def message(
    *groups: GroupView, kind: str = "group", instance: str = "mm-az1", **extra: Any
) -> Message:
    return Message(1, kind, "sre", SRE, groups, T0, instance, "http://mm", extra)  # type: ignore[arg-type]


def mail(
    t: float, msg: Message, rcpt: tuple[str, ...] = ("zhangsan@example.com",)
) -> dict[str, Any]:
    return {
        "t": t,
        "rcpt": list(rcpt),
        "subject": RENDERER.subject(msg),
        "text": RENDERER.render("text.txt", msg),
    }


def chat(t: float, msg: Message, **extra: Any) -> dict[str, Any]:
    return {
        "t": t,
        "endpoint": "app",
        "touser": ["lisi", "zhangsan"],
        "robot_key": "",
        "content": render_chat(RENDERER, ("wechat.md",), msg),
        "truncated": False,
        "dropped_for": [],
        **extra,
    }


def change(
    t: float, aid: str, status: str, episode: int = 1, title: str = "Inc0001 prod"
) -> dict[str, Any]:
    return {"t": t, "aid": aid, "title": title, "cg": "sre", "status": status, "episode": episode}


def run(
    changes: list[dict[str, Any]],
    mails: list[dict[str, Any]] = (),  # type: ignore[assignment]
    chats=(),
    faults=(),
    end=T0 + 300,
    actions=(),
):  # type: ignore[no-untyped-def]
    meta = {"seed": 1, "minutes": 1, "timers": Timers().to_json(), "checked_at": end}
    return check(
        {
            "meta": meta,
            "changes": changes,
            "actions": list(actions),
            "faults": list(faults),
            "mail": list(mails),
            "wecom": list(chats),
        }
    )


def test_mail_and_chat_are_read_alert_by_alert_with_their_episodes() -> None:
    msg = message(group(alert("I0001-1", "firing", 2), alert("I0001-2", "resolved")))
    (a,) = parse_mail(0, mail(T0, msg))
    assert (a.title, a.status, a.firing, a.resolved, a.instance) == (
        "Inc0001 prod",
        "firing",
        1,
        1,
        "mm-az1",
    )
    assert [(x.key, x.status, x.episode) for x in a.alerts] == [
        ("I0001-1", "firing", 2),
        ("I0001-2", "resolved", 1),
    ]
    from campaign_check import join_chat

    (c,) = parse_chat(0, join_chat([chat(T0, msg)])[0])
    assert [(x.key, x.status, x.episode) for x in c.alerts] == [
        ("I0001-1", "firing", 2),
        ("I0001-2", "resolved", 1),
    ]
    digest = message(
        group(alert("I0001-1", "firing")),
        group(alert("S0001", "firing", title="Storm s0001"), title="Storm s0001"),
        kind="digest",
    )
    assert [x.title for x in parse_mail(0, mail(T0, digest))] == ["Inc0001 prod", "Storm s0001"]
    assert all(x.digest for x in parse_chat(0, join_chat([chat(T0, digest)])[0]))


def test_a_settled_state_nobody_was_told_is_lost_and_a_quick_flap_is_not() -> None:
    changes = [
        change(T0, "I0001-1", "firing"),
        change(T0 + 60, "I0001-1", "resolved"),
        change(T0 + 61, "I0001-1", "firing", 2),  # back within a second: nobody owes a message
        change(T0 + 120, "I0001-1", "resolved", 2),
    ]
    first = message(group(alert("I0001-1", "firing")))
    last = message(group(alert("I0001-1", "resolved", 2)))
    # Mail told both settled news; WeCom only the first: the resolution is lost there.
    verdict = run(changes, [mail(T0 + 5, first), mail(T0 + 125, last)], [chat(T0 + 5, first)])
    assert verdict.figures["changes"]["LOST"] == 1
    assert verdict.details["lost"][0].startswith(
        "wecom sre I0001-1 (Inc0001 prod) episode 2 resolved"
    )
    assert verdict.figures["changes"]["no message owed (flap inside one group_interval)"] == 2
    # A firing that was never told: its resolution is owed to nobody.
    verdict = run(changes, [mail(T0 + 125, last)], [chat(T0 + 125, last)])
    assert verdict.figures["changes"]["LOST"] == 2  # the first firing, on each channel


def test_a_resolution_tells_the_firing_it_ends_and_a_digest_delivers_the_groups_it_names() -> None:
    changes = [change(T0, "I0001-1", "firing"), change(T0 + 60, "I0001-1", "resolved")]
    resolved = message(group(alert("I0001-1", "resolved")))
    counts = run(changes, [mail(T0 + 65, resolved)], [chat(T0 + 65, resolved)]).figures["changes"]
    assert counts["firing told only by its resolution"] == 2 and "LOST" not in counts
    digest = message(group(alert("I0001-9", "firing")), kind="digest")  # names the group only
    told = [mail(T0 + 12, digest), mail(T0 + 65, resolved)]
    counts = run(changes, told, [chat(T0 + 12, digest), chat(T0 + 65, resolved)]).figures["changes"]
    assert counts["delivered by a digest"] == 2 and "LOST" not in counts


def test_duplicates_count_while_healthy_and_one_is_allowed_per_fault_window() -> None:
    changes = [change(T0, "I0001-1", "firing")]
    msg = message(group(alert("I0001-1", "firing")))
    verdict = run(
        changes,
        [
            mail(T0 + 5, msg),
            mail(T0 + 6, message(group(alert("I0001-1", "firing")), instance="mm-az2")),
        ],
    )
    assert verdict.figures["duplicates"] == {"duplicate (healthy)": 1}
    assert any("while healthy" in b for b in verdict.broken)
    fault = {"kind": "stop", "target": "mm-az1", "began": T0 + 1, "ended": T0 + 4, "notes": {}}
    verdict = run(changes, [mail(T0 + 5, msg), mail(T0 + 6, msg)], faults=[fault])
    assert not [b for b in verdict.broken if "duplicate" in b]
    verdict = run(changes, [mail(T0 + 5, msg)] * 3, faults=[fault])
    assert any("more than once inside one fault window" in b for b in verdict.broken)


def test_an_older_state_after_the_newer_from_the_same_instance_always_breaks() -> None:
    changes = [change(T0, "I0001-1", "firing"), change(T0 + 30, "I0001-1", "resolved")]
    fault = {"kind": "smtp-down", "target": "", "began": T0, "ended": T0 + 40, "notes": {}}
    told = [
        mail(T0 + 41, message(group(alert("I0001-1", "resolved")))),
        mail(T0 + 41.2, message(group(alert("I0001-1", "firing")))),
    ]
    verdict = run(changes, told, faults=[fault])
    assert any("same instance" in b for b in verdict.broken)


def test_wecom_messages_past_its_limit_reach_nobody() -> None:
    changes = [change(T0, "I0001-1", "firing")]
    msg = message(group(alert("I0001-1", "firing")))
    verdict = run(
        changes, [mail(T0 + 5, msg)], chats=[chat(T0 + 5, msg, dropped_for=["lisi", "zhangsan"])]
    )
    assert any("shown to nobody" in b for b in verdict.broken)
    assert verdict.figures["changes"]["LOST"] == 1


@pytest.mark.parametrize(
    ("kind", "seconds", "paged", "broken"),
    [
        ("kill", 20.0, True, False),  # down long enough: must page
        ("kill", 20.0, False, True),  # ... and did not
        ("kill", 2.0, True, True),  # too short to be detected: a page is false
        ("stop", 12.0, False, False),  # in between: may page
    ],
)
def test_pages_must_match_the_faults(kind: str, seconds: float, paged: bool, broken: bool) -> None:
    fault = {"kind": kind, "target": "mm-az2", "began": T0, "ended": T0 + seconds, "notes": {}}
    labels = {
        "alertname": "PeerDown",
        "peer": "mm-az2",
        "severity": "critical",
        "source": "monitor-manager",
    }
    mails: list[dict[str, Any]] = []
    chats: list[dict[str, Any]] = []
    if paged:
        for status, t in (("firing", T0 + 9), ("resolved", T0 + seconds + 3)):
            view = AlertView(
                "x",
                status,  # type: ignore[arg-type]
                labels,
                {"summary": "Monitor Manager peer mm-az2 is down"},
                T0,
            )
            msg = message(GroupView("k", "sre", {"alertname": "PeerDown"}, (view,)))
            mails.append(mail(t, msg))
            chats.append(chat(t, msg))
    verdict = run([], mails, chats, faults=[fault])
    assert (not verdict.ok) is broken, verdict.broken


# -- acting on pages --------------------------------------------------------------------------

REPEAT = Timers().repeat_interval
ACK = {"by": "Zhang San", "at": T0 + 10, "comment": "", "via": "api"}


def ack(t: float, kind: str = "ack", ok: bool = True, instance: str = "mm-az2") -> dict[str, Any]:
    return {"kind": kind, "t": t, "done": t + 0.1, "ok": ok, "status": 200 if ok else 0} | {
        "title": "Inc0001 prod",
        "cg": "sre",
        "key": "k",
        "instance": instance,
    }


def silence(t: float, ok: bool = True, sid: str = "s1") -> dict[str, Any]:
    return {"kind": "silence", "t": t, "done": t + 0.1, "ok": ok, "id": sid if ok else None} | {
        "alertname": "Inc0001",
        "ends_at": t + 900,
        "instance": "mm-az1",
        "via": "amtool",
    }


def expire(t: float, ok: bool = True, sid: str = "s1") -> dict[str, Any]:
    return {"kind": "expire", "t": t, "done": t + 0.1, "ok": ok, "id": sid}


def both(*sent: tuple[float, Message]) -> dict[str, Any]:
    """The same messages by mail and by WeCom (sre's two channels), as run()'s arguments."""
    return {"mails": [mail(t, m) for t, m in sent], "chats": [chat(t, m) for t, m in sent]}


FIRING = message(group(alert("I0001-1", "firing")))
RESOLVED = message(group(alert("I0001-1", "resolved")))


def test_an_acknowledged_group_must_not_repeat_and_its_announcement_is_no_duplicate() -> None:
    acked = message(dataclasses.replace(group(alert("I0001-1", "firing")), ack=ACK))
    announced = message(
        dataclasses.replace(group(alert("I0001-1", "firing")), ack=ACK), announce="ack"
    )
    changes = [change(T0, "I0001-1", "firing"), change(T0 + 400, "I0001-1", "resolved")]
    (a,) = parse_mail(0, mail(T0, announced))
    assert a.ack_announce and a.status == "firing"
    (c,) = parse_chat(0, join_chat([chat(T0, announced)])[0])
    assert c.ack_announce
    first, repeat, last = (T0 + 3, FIRING), (T0 + 3 + REPEAT + 1, acked), (T0 + 403, RESOLVED)
    # Without the ack the later message is an ordinary repeat.
    verdict = run(changes, end=T0 + 500, **both(first, repeat, last))
    assert verdict.ok, verdict.broken
    assert verdict.figures["duplicates"]["repeats"] == 2
    # With it, the repeat breaks the promise; the announcement itself is fine.
    sent = both(first, (T0 + 10.5, announced), repeat, last)
    verdict = run(changes, end=T0 + 500, actions=[ack(T0 + 10)], **sent)
    assert verdict.figures["acting on pages"]["repeat of an acknowledged group"] == 2
    assert any("repeat of an acknowledged group" in b for b in verdict.broken)
    assert "duplicate (healthy)" not in verdict.figures["duplicates"]
    # Withdrawn before the repeat: the repeat is due again.
    actions = [ack(T0 + 10), ack(T0 + 60, "unack")]
    verdict = run(changes, end=T0 + 500, actions=actions, **sent)
    assert verdict.ok, verdict.broken
    # From the instance a fault stopped (it could not hear of the ack): excused.
    fault = {"kind": "stop", "target": "mm-az1", "began": T0 + 100, "ended": T0 + 103}
    verdict = run(changes, end=T0 + 500, faults=[fault], actions=[ack(T0 + 10)], **sent)
    assert verdict.ok, verdict.broken
    # A fault that hit another instance excuses nothing: the sender knew of the ack.
    fault["target"] = "mm-az3"
    verdict = run(changes, end=T0 + 500, faults=[fault], actions=[ack(T0 + 10)], **sent)
    assert any("repeat of an acknowledged group" in b for b in verdict.broken)


def test_an_acknowledgement_is_announced_exactly_once() -> None:
    announced = message(
        dataclasses.replace(group(alert("I0001-1", "firing")), ack=ACK), announce="ack"
    )
    changes = [change(T0, "I0001-1", "firing"), change(T0 + 100, "I0001-1", "resolved")]
    first, last = (T0 + 3, FIRING), (T0 + 103, RESOLVED)
    verdict = run(changes, actions=[ack(T0 + 10)], **both(first, (T0 + 10.5, announced), last))
    assert verdict.ok, verdict.broken
    assert verdict.figures["acting on pages"]["acknowledgements announced once"] == 2
    twice = both(first, (T0 + 10.5, announced), (T0 + 11, announced), last)
    verdict = run(changes, actions=[ack(T0 + 10)], **twice)
    assert any("not announced exactly once" in b for b in verdict.broken)
    verdict = run(changes, actions=[ack(T0 + 10)], **both(first, last))
    assert verdict.figures["acting on pages"]["acknowledgements never announced"] == 2
    assert not verdict.ok


def test_a_silenced_alert_must_not_be_notified_and_is_owed_a_message_when_the_silence_ends() -> (
    None
):
    changes = [change(T0, "I0001-1", "firing"), change(T0 + 200, "I0001-1", "resolved")]
    # Silenced before it fired: nothing is owed, and a message breaks the promise.
    verdict = run(changes, [], actions=[silence(T0 - 1)])
    assert verdict.ok, verdict.broken
    assert verdict.figures["changes"]["no message owed (silenced)"] == 2
    paged = both((T0 + 3, FIRING), (T0 + 203, RESOLVED))
    verdict = run(changes, actions=[silence(T0 - 1)], **paged)
    assert verdict.figures["acting on pages"]["silenced alert notified"] == 2
    assert not verdict.ok
    # A silence whose request failed may have been made: nothing owed, nothing forbidden.
    verdict = run(changes, actions=[silence(T0 - 1, ok=False)], **paged)
    assert verdict.ok, verdict.broken
    # Expired while it fires: owed a message from then, which is no duplicate of the first.
    actions = [silence(T0 - 1), expire(T0 + 100)]
    verdict = run(changes, [], actions=actions)
    assert verdict.figures["changes"]["LOST"] == 2
    verdict = run(changes, actions=actions, **both((T0 + 103, FIRING), (T0 + 203, RESOLVED)))
    assert verdict.ok, verdict.broken
    assert verdict.figures["changes"]["owed from the end of a silence"] == 2
    # Announced before a silence and again after it ended: told as a change, not a duplicate.
    actions = [silence(T0 + 20), expire(T0 + 100)]
    sent = both((T0 + 3, FIRING), (T0 + 103, FIRING), (T0 + 203, RESOLVED))
    verdict = run(changes, actions=actions, **sent)
    assert verdict.ok, verdict.broken
    assert verdict.figures["duplicates"]["told again when its silence ended"] == 2
