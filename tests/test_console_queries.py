"""What each console page is given (web/console/queries.py): the data of the views, read from
the real store and memory of a running app, before any template touches it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from builders import T0
from console_app import ConsoleService, alert_json, start_console
from monitor_manager import keys
from monitor_manager.config import HeartbeatConfig
from monitor_manager.watch.watchdog import Heartbeat
from monitor_manager.web.console import queries
from monitor_manager.web.console.i18n import EN, TEXTS, ZH, translate
from monitor_manager.web.console.queries import NotificationFilter
from monitor_manager.web.console.times import TimeFormat

TEMPLATES = Path(queries.__file__).parent / "templates"


@pytest.fixture
async def console(aiohttp_client: Any, tmp_path: Any) -> ConsoleService:
    return await start_console(aiohttp_client, tmp_path)


def key_of(service: ConsoleService, contact_group: str, alertname: str) -> str:
    conv = service.app[keys.PIPELINE].convergence
    return next(
        g.key
        for g in conv.groups.values()
        if g.contact_group == contact_group and g.group_labels.get("alertname") == alertname
    )


# -- the overview ------------------------------------------------------------------------------


async def test_open_groups_are_worst_first_within_their_contact_group(
    console: ConsoleService,
) -> None:
    await console.post_alerts(
        alert_json("Warn", severity="warning", instance="a"),
        alert_json("Crit", severity="critical", instance="a"),
    )
    await console.decide()  # both notified: firing
    await console.post_alerts(
        alert_json("Crit", severity="critical", instance="b"),  # a second firing alert
        alert_json("Fresh", severity="critical", instance="a"),  # inside group_wait: waiting
        alert_json("Warn", "resolved", severity="warning", instance="a", ends=T0 + 90),
    )

    overview = await queries.overview(console.app)

    (sre,) = overview.sections
    assert [(c.title, c.state, c.firing) for c in sre.cards] == [
        ("Crit", "firing", 2),
        ("Fresh", "pending", 1),
        ("Warn", "resolving", 0),
    ]
    assert sre.cards[0].summary == "Crit summary" and sre.cards[0].severity == "critical"
    assert (overview.firing_groups, overview.pending_groups, overview.alerts) == (1, 1, 3)


async def test_each_contact_group_shows_a_few_groups_and_one_group_pages_through_all(
    console: ConsoleService,
) -> None:
    await console.post_alerts(*(alert_json(f"A{i:02d}") for i in range(12)))
    await console.post_alerts(alert_json("Db", team="db"))

    overview = await queries.overview(console.app, per_section=10)
    first = await queries.overview(console.app, "sre", page=1, per_page=5)
    last = await queries.overview(console.app, "sre", page=3, per_page=5)

    assert {s.name: (len(s.cards), s.groups) for s in overview.sections} == {
        "sre": (10, 12),
        "dba": (1, 1),
    }
    assert [s.name for s in first.sections] == ["sre"]
    assert first.pager is not None and first.pager.has_next and first.pager.pages == 3
    assert last.pager is not None and not last.pager.has_next
    assert len(last.sections[0].cards) == 2
    pages = [await queries.overview(console.app, "sre", page=p, per_page=5) for p in (1, 2, 3)]
    titles = sorted(c.title for o in pages for c in o.sections[0].cards)
    assert titles == [f"A{i:02d}" for i in range(12)]  # each once, none left out


async def test_failing_deliveries_and_queued_rows_per_channel(console: ConsoleService) -> None:
    await console.post_alerts(alert_json("Sent"), alert_json("Broken", team="db"))
    await console.decide()
    await console.sql(
        "UPDATE deliveries SET state = 'failed', attempts = 7, last_error = 'SMTP 550' "
        "WHERE channel = 'pager' AND notification_id IN "
        "(SELECT id FROM notifications WHERE contact_group = 'dba')"
    )
    await console.sql(
        "UPDATE deliveries SET state = 'retrying', attempts = 2, last_error = 'timeout' "
        "WHERE channel = 'console' AND notification_id IN "
        "(SELECT id FROM notifications WHERE contact_group = 'dba')"
    )

    overview = await queries.overview(console.app)

    assert overview.failing_count == 2
    assert {(f.delivery.channel, f.delivery.state, f.title) for f in overview.failing} == {
        ("pager", "failed", "Broken"),
        ("console", "retrying", "Broken"),
    }
    queued = {c.name: c.queued for c in overview.channels}
    assert queued == {
        "console": {"pending": 1, "retrying": 1},
        "pager": {"pending": 1, "failed": 1},
    }


# -- one alert group ----------------------------------------------------------------------------


async def test_a_group_shows_firing_alerts_first_and_its_messages_with_deliveries(
    console: ConsoleService,
) -> None:
    await console.post_alerts(
        alert_json("Mixed", instance="old", starts=T0 - 600),
        alert_json("Mixed", instance="new", starts=T0),
    )
    await console.decide()
    await console.post_alerts(alert_json("Mixed", "resolved", instance="old", ends=T0 + 60))
    key = key_of(console, "sre", "Mixed")

    detail = await queries.group_detail(console.app, key)

    assert detail is not None
    assert [(a.labels["instance"], a.status, a.notified) for a in detail.alerts] == [
        ("new", "firing", True),
        ("old", "resolved", True),
    ]
    assert detail.alerts[0].annotations == {"summary": "Mixed summary", "description": "details"}
    (message,) = detail.timeline
    assert (message.status, message.firing, message.alerts) == ("firing", 2, 2)
    assert sorted(d.channel for d in message.deliveries) == ["console", "pager"]
    assert detail.state == "firing" and detail.firing == 1 and detail.total == 2


async def test_a_groups_alerts_come_a_page_at_a_time(console: ConsoleService) -> None:
    await console.post_alerts(*(alert_json("Many", instance=f"i{i:03d}") for i in range(25)))
    key = key_of(console, "sre", "Many")

    first = await queries.group_detail(console.app, key, alerts_per_page=10)
    third = await queries.group_detail(console.app, key, alerts_page=3, alerts_per_page=10)

    assert first is not None and third is not None
    assert len(first.alerts) == 10 and first.alerts_pager.has_next
    assert len(third.alerts) == 5 and not third.alerts_pager.has_next
    assert first.alerts_pager.total == 25


async def test_a_closed_group_shows_the_alerts_of_its_last_message(
    console: ConsoleService,
) -> None:
    await console.post_alerts(alert_json("Gone"))
    await console.decide()
    key = key_of(console, "sre", "Gone")
    await console.post_alerts(alert_json("Gone", "resolved", ends=T0 + 60))
    await console.decide(301)  # group_interval: the resolved message closes the group

    detail = await queries.group_detail(console.app, key)

    assert detail is not None and detail.state == "closed" and not detail.open
    assert [(a.labels["alertname"], a.status) for a in detail.alerts] == [("Gone", "resolved")]
    assert [n.status for n in detail.timeline] == ["resolved", "firing"]


async def test_no_group_is_none(console: ConsoleService) -> None:
    assert await queries.group_detail(console.app, "0123456789abcdef") is None


# -- notifications -------------------------------------------------------------------------------


async def notified(console: ConsoleService) -> None:
    await console.post_alerts(*(alert_json(f"N{i}") for i in range(4)))
    await console.post_alerts(alert_json("DbOne", team="db"))
    await console.decide()
    # Five notifications (DbOne goes to dba alone: its route matched, continue finds no
    # other). N1 failed on the pager; DbOne retrying on the console; the rest delivered.
    await console.sql(
        "UPDATE deliveries SET state = 'delivered', delivered_at = ?, attempts = 1", (T0,)
    )
    await console.sql(
        "UPDATE deliveries SET state = 'failed', last_error = 'gone' WHERE channel = 'pager' "
        "AND notification_id = (SELECT id FROM notifications n JOIN alert_groups g "
        "ON g.key = n.group_key WHERE g.group_labels LIKE '%\"N1\"%')"
    )
    await console.sql(
        "UPDATE deliveries SET state = 'retrying' WHERE channel = 'console' "
        "AND notification_id IN (SELECT id FROM notifications WHERE contact_group = 'dba')"
    )


def titles(rows: list[queries.NotificationRow]) -> list[str]:
    return [r.title for r in rows]


async def test_notifications_put_the_failing_first_then_the_newest(
    console: ConsoleService,
) -> None:
    await notified(console)

    rows, pager, failing = await queries.notifications(console.app, NotificationFilter())

    assert failing == 2
    assert set(titles(rows[:2])) == {"N1", "DbOne"}
    assert rows[0].id > rows[1].id  # newest first among the failing ones
    assert sorted(titles(rows[2:])) == ["N0", "N2", "N3"]
    assert [r.id for r in rows[2:]] == sorted((r.id for r in rows[2:]), reverse=True)
    assert not pager.has_next and all(r.failing for r in rows[:2])


async def test_notifications_filter_by_state_channel_and_contact_group(
    console: ConsoleService,
) -> None:
    await notified(console)

    async def shown(**filters: str) -> list[str]:
        rows, _, _ = await queries.notifications(console.app, NotificationFilter(**filters))
        return sorted(titles(rows))

    assert await shown(state="failed") == ["N1"]
    assert await shown(state="failing") == ["DbOne", "N1"]
    assert await shown(state="retrying", channel="pager") == []
    assert await shown(state="delivered", channel="pager") == ["DbOne", "N0", "N2", "N3"]
    assert await shown(contact_group="dba") == ["DbOne"]
    assert await shown(contact_group="dba", state="failing") == ["DbOne"]


async def test_notifications_come_a_page_at_a_time_failing_ones_first(
    console: ConsoleService,
) -> None:
    await notified(console)

    pages = []
    for page in (1, 2, 3, 4):
        rows, pager, _ = await queries.notifications(
            console.app, NotificationFilter(), page=page, per_page=2
        )
        pages.append((titles(rows), pager.has_next))

    assert [len(p[0]) for p in pages] == [2, 2, 1, 0]
    assert [p[1] for p in pages] == [True, True, False, False]
    assert set(pages[0][0]) == {"N1", "DbOne"}
    everything = [t for p in pages for t in p[0]]
    assert sorted(everything) == ["DbOne", "N0", "N1", "N2", "N3"]


async def test_a_digested_notification_shows_the_digests_deliveries(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    service = await start_console(aiohttp_client, tmp_path, storm={"threshold": 1, "window": 60})
    await service.post_alerts(alert_json("First"), alert_json("Second"))
    await service.decide()
    await service.decide(61)  # the window ends: the digest is written

    rows, _, _ = await queries.notifications(service.app, NotificationFilter())

    merged = [r for r in rows if r.digest_id is not None]
    digests = [r for r in rows if r.kind == "digest"]
    assert len(merged) == 1 and len(digests) == 1
    assert merged[0].digest_id == digests[0].id and digests[0].groups == 1
    assert sorted(d.channel for d in merged[0].digest_deliveries) == ["console", "pager"]


# -- watchdog and contact groups ----------------------------------------------------------------

HB = HeartbeatConfig("prom-az1", {"alertname": "DeadMansSwitch"}, timeout=300.0)


@pytest.mark.parametrize(
    "state, last_seen, via, sources, hop",
    [
        ("ok", T0, "http://am1", {}, None),
        ("missing", None, "", {}, "never"),
        ("missing", T0, "http://am1", {"http://am1": T0 + 60}, "prometheus"),
        ("missing", T0, "http://am1", {"http://am1": T0}, "alertmanager"),
        ("missing", T0, "http://am1", {}, "alertmanager"),
    ],
)
def test_the_silent_hop_is_told_as_the_page_tells_it(
    state: str, last_seen: float | None, via: str, sources: dict[str, float], hop: str | None
) -> None:
    beat = Heartbeat(HB, due_at=T0 + 300, last_seen=last_seen, via=via, state=state)
    assert queries.silent_hop(beat, sources) == hop


async def test_contact_groups_name_the_routes_that_lead_to_them(
    console: ConsoleService,
) -> None:
    await console.post_alerts(alert_json("Db", team="db"), alert_json("Web"))

    found = {g.name: g for g in await queries.contact_groups(console.app)}

    assert [r.index for r in found["dba"].routes] == [0]
    assert found["dba"].routes[0].text == 'team="db"' and found["dba"].routes[0].continue_
    assert found["sre"].routes == [] and found["sre"].default and found["sre"].watchdog
    assert found["sre"].channels == [("console", "console"), ("pager", "console")]
    assert (found["sre"].open_groups, found["dba"].open_groups) == (1, 1)
    assert found["dba"].members[0].email == "dba@example.com"


# -- words and times -----------------------------------------------------------------------------


def test_every_text_exists_in_english_and_chinese() -> None:
    plural_forms = {k for k in EN if k.endswith("_one")}
    assert set(EN) - plural_forms == set(ZH) - {k for k in ZH if k.endswith("_one")}
    for lang, texts in TEXTS.items():
        for key, text in texts.items():
            assert set(re.findall(r"\{(\w+)\}", text)) == set(
                re.findall(r"\{(\w+)\}", EN[key])
            ) or key.endswith("_one"), (lang, key)


def test_every_text_a_template_names_exists() -> None:
    named = set()
    for template in TEMPLATES.glob("*.html"):
        named |= set(re.findall(r"\bt\('([a-z_]+)'", template.read_text()))
    prefixes = {n for n in named if n.endswith("_")}
    assert named - prefixes <= set(EN)
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in EN), prefix


def test_english_counts_one_in_the_singular() -> None:
    assert translate("en", "n_groups", n=1) == "1 group"
    assert translate("en", "n_groups", n=2) == "2 groups"
    assert translate("zh", "n_groups", n=1) == "1 个告警组"


@pytest.mark.parametrize(
    "lang, delta, ago",
    [
        ("en", 5, "5s ago"),
        ("en", 3725, "1h 2m ago"),
        ("en", -90, "in 1m 30s"),
        ("en", 2 * 86400 + 7200, "2d 2h ago"),
        ("zh", 3725, "1小时2分钟前"),
        ("zh", -30, "30秒后"),
    ],
)
def test_times_are_shown_in_one_zone_named_with_ages(lang: str, delta: float, ago: str) -> None:
    import datetime as dt

    fmt = TimeFormat(dt.UTC, lang, T0)
    assert fmt.ago(T0 - delta) == ago
    assert fmt.time(T0) == "2027-01-15 08:00:00 UTC"
    assert fmt.zone == "UTC" and fmt.time(None) == "-"
