"""Acting in the console (SPEC sections 8 and 9): the acknowledge link of every firing message,
the group page's ack, un-ack and silence, the badges, the silences page and the overview's
guard rails.

Each test drives the real app (store, pipeline, console) on a temporary database over
loopback, with a manual clock; tests/test_console_acting_browser.py does the link in a real
browser at phone width."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from builders import T0, groups
from console_app import HTML, ConsoleService, alert_json, csrf_of, start_console
from monitor_manager import keys
from monitor_manager.act.links import LinkKey, Links
from monitor_manager.config import ContactGroupConfig
from monitor_manager.config.schema import EscalationStep, MaintenanceConfig
from monitor_manager.web.console import group_path
from monitor_manager.web.console.paths import silence_anchor

HOSTILE = "<script>alert(1)</script>"
TEMPLATE = "{{7*7}}"


@pytest.fixture
async def console(aiohttp_client: Any, tmp_path: Any) -> ConsoleService:
    """Open: a loopback listen address and no users."""
    return await start_console(aiohttp_client, tmp_path)


@pytest.fixture
async def guarded(aiohttp_client: Any, tmp_path: Any) -> ConsoleService:
    """With [[console.users]]: every console page asks for a login."""
    return await start_console(aiohttp_client, tmp_path, users=True)


@pytest.fixture
async def closed(aiohttp_client: Any, tmp_path: Any) -> ConsoleService:
    """Closed: a config listening on every address without users (the test client still
    reaches the app over loopback)."""
    return await start_console(aiohttp_client, tmp_path, server={"listen": "0.0.0.0:9095"})


# -- helpers -----------------------------------------------------------------------------------


async def firing_group(service: ConsoleService, name: str = "DiskFull", **labels: str) -> str:
    """One alert group that fired and was told (its first message is written)."""
    alert = alert_json(name)
    alert["labels"].update(instance="db-7", **labels)
    alert["annotations"] = {"summary": f"{name} on db-7", "description": "details"}
    await service.post_alerts(alert)
    await service.decide()
    (key,) = [k for k in service.group_keys() if k not in _seen(service)]
    _seen(service).add(key)
    return key


async def resolve(service: ConsoleService, name: str = "DiskFull") -> None:
    """The alert of `firing_group` resolves (its group is resolving until its message)."""
    ends = service.clock.now
    await service.post_alerts(alert_json(name, status="resolved", ends=ends, instance="db-7"))
    await service.decide()


def _seen(service: ConsoleService) -> set[str]:
    return service.__dict__.setdefault("_seen_keys", set())  # type: ignore[no-any-return]


async def ack_link(service: ConsoleService, key: str) -> str:
    """The path of the acknowledge link in the group's latest firing message, as sent."""

    def latest(conn: Any) -> str:
        row = conn.execute(
            "SELECT message FROM notifications WHERE group_key = ? ORDER BY id DESC LIMIT 1",
            (key,),
        ).fetchone()
        return str(json.loads(row[0])["groups"][0]["ack_url"])

    url = await service.app[keys.STORE].read(latest)
    assert "/ack/" in url, url
    return urlsplit(url).path


def current_ack(service: ConsoleService, key: str) -> Any:
    conv = service.app[keys.PIPELINE].convergence
    group = conv.groups[key]
    return conv.acks.current(key, group.created_at)


async def audit(service: ConsoleService) -> list[tuple[str, str, str]]:
    rows = await service.app[keys.STORE].read(
        lambda conn: conn.execute("SELECT who, via, action FROM audit ORDER BY id").fetchall()
    )
    return [tuple(r) for r in rows]


async def post_form(
    service: ConsoleService, path: str, data: dict[str, str], token_from: str | None = None
) -> Any:
    """POST a console form with the CSRF token of the page at `token_from` (or `path`)."""
    token = csrf_of(await service.page(token_from or path))
    return await service.client.post(
        path, data={**data, "csrf": token}, headers=HTML, allow_redirects=False
    )


def main_of(html: str) -> str:
    return html.split("<main>")[1].split("</main>")[0]


def nav_links(html: str) -> list[str]:
    """Where the page's frame leads, besides this page in another language."""
    header = html.split("<header")[1].split("</header>")[0]
    return [h for h in re.findall(r'href="(/[^"?]*)', header) if not h.startswith("/ack/")]


# -- the acknowledge link: reading it ----------------------------------------------------------


async def test_the_link_shows_what_fires_and_a_form_and_a_get_changes_nothing(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)
    notifications_before = await console.app[keys.STORE].read(
        lambda conn: conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    )

    for _ in range(2):  # a preview, then the person
        html = await console.page(link)
    head = await console.client.head(link, headers=HTML)

    main = main_of(html)
    assert "DiskFull" in main and "DiskFull on db-7" in main
    assert "sre" in main and "1 of 1 firing" in main and "instance" in main
    assert f'action="{link}"' in main and 'name="csrf"' in main
    assert '<option value="sre-oncall">sre-oncall</option>' in main
    assert head.status == 200
    assert current_ack(console, key) is None
    assert await audit(console) == []
    notifications_after = await console.app[keys.STORE].read(
        lambda conn: conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    )
    assert notifications_after == notifications_before


async def test_acknowledging_through_the_link_records_the_member_and_says_the_others_know(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)

    response = await post_form(console, link, {"by": "sre-oncall", "comment": "on it <b>"})

    html = await response.text()
    assert response.status == 200, html
    assert "Acknowledged" in html and "The others in sre are told that sre-oncall is on it" in html
    assert "on it &lt;b&gt;" in html
    ack = current_ack(console, key)
    assert (ack.by, ack.via, ack.comment) == ("sre-oncall", "link", "on it <b>")
    assert await audit(console) == [("sre-oncall", "link", "ack")]
    announced = await console.app[keys.STORE].read(
        lambda conn: conn.execute(
            "SELECT COUNT(*) FROM notifications WHERE group_key = ?", (key,)
        ).fetchone()[0]
    )
    assert announced == 2  # the firing message, and the acknowledgement told once
    again = main_of(await console.page(link))
    assert "Already acknowledged" in again and "Acknowledged by sre-oncall at" in again
    assert "<form" not in again  # no second acknowledgement offered


async def test_a_second_acknowledgement_through_the_link_shows_who_was_first(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)
    token = csrf_of(await console.page(link))  # the page was open before alice acted
    api = await console.client.post(
        f"/api/v1/alert-groups/{key}/ack", json={"by": "alice", "comment": "mine"}
    )
    assert api.status == 200

    response = await console.client.post(
        link, data={"csrf": token, "by": "sre-oncall", "comment": "me too"}
    )

    html = await response.text()
    assert response.status == 200
    assert "Already acknowledged" in html and "Acknowledged by alice at" in html and "mine" in html
    assert current_ack(console, key).by == "alice"
    assert [a[0] for a in await audit(console)] == ["alice"]


async def test_the_link_works_while_the_console_is_closed_and_leads_nowhere_closed(
    closed: ConsoleService,
) -> None:
    key = await firing_group(closed)
    link = await ack_link(closed, key)
    assert "The console is closed" in await closed.page(group_path(key), status=403)

    html = await closed.page(link)
    response = await post_form(closed, link, {"by": "sre-oncall", "comment": ""})

    assert "DiskFull on db-7" in html and "The console is closed" not in html
    assert nav_links(html) == []  # no navigation, and the brand is no link
    assert "Open in the console" not in html
    done = await response.text()
    assert response.status == 200 and "The others in sre are told" in done
    assert nav_links(done) == []
    assert current_ack(closed, key).by == "sre-oncall"


async def test_the_link_needs_no_login_and_shows_the_navigation_only_after_one(
    guarded: ConsoleService,
) -> None:
    key = await firing_group(guarded)
    link = await ack_link(guarded, key)

    anonymous = await guarded.page(link)
    await guarded.login()
    logged_in = await guarded.page(link)

    assert "DiskFull on db-7" in anonymous and nav_links(anonymous) == []
    assert "/silences" in nav_links(logged_in) and "Open in the console" in logged_in


async def test_the_link_page_escapes_what_labels_and_annotations_hold(
    console: ConsoleService,
) -> None:
    alert = alert_json("Hostile", instance="web-1", evil=HOSTILE, tpl=TEMPLATE)
    alert["annotations"] = {"summary": f"{TEMPLATE} {HOSTILE}"}
    await console.post_alerts(alert)
    await console.decide()
    (key,) = console.group_keys()
    link = await ack_link(console, key)

    html = await console.page(link)
    response = await post_form(console, link, {"by": "sre-oncall", "comment": HOSTILE})
    done = await response.text()

    for page in (html, done):
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert TEMPLATE in page  # shown as written, never evaluated
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)


async def test_the_link_page_speaks_chinese_when_asked(console: ConsoleService) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)

    html = await console.page(f"{link}?lang=zh")

    assert '<html lang="zh-CN">' in html and "你是谁" in html and "确认告警" in html


# -- the acknowledge link: what it refuses ------------------------------------------------------


def _forged(key: str, opened_at: float) -> str:
    other = Links()
    other.add(LinkKey("mm-test:0000", b"k" * 32, T0))
    other.own = other.keys["mm-test:0000"]
    return other.sign(key, opened_at)


def _tampered(token: str) -> str:
    body, mac = token.split(".")
    return f"{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda token, key, at: _forged(key, at), id="signed-by-another-key"),
        pytest.param(lambda token, key, at: _tampered(token), id="body-altered"),
        pytest.param(lambda token, key, at: token[:-3], id="cut-short"),
        pytest.param(lambda token, key, at: token.replace(".", ""), id="no-dot"),
        pytest.param(lambda token, key, at: "x" * 600 + "." + "y", id="too-long"),
        pytest.param(lambda token, key, at: "not-a-token", id="garbage"),
        pytest.param(lambda token, key, at: "%E2%9C%93.%00", id="escapes"),
    ],
)
async def test_a_forged_altered_or_malformed_link_is_a_clear_4xx_and_changes_nothing(
    console: ConsoleService, make: Any
) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)
    token = link.rsplit("/", 1)[1]
    opened_at = console.app[keys.PIPELINE].convergence.groups[key].created_at
    bad = f"/ack/{make(token, key, opened_at)}"

    html = await console.page(bad, status=400)
    csrf = csrf_of(await console.page(link))
    post = await console.client.post(bad, data={"csrf": csrf, "by": "sre-oncall"}, headers=HTML)

    assert "This acknowledge link is not valid" in html and "DiskFull" not in html
    assert post.status == 400
    assert current_ack(console, key) is None and await audit(console) == []


async def test_a_link_whose_group_resolved_answers_410_and_acknowledges_nothing(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)
    csrf = csrf_of(await console.page(link))
    await resolve(console)
    assert key in console.group_keys()  # resolving: the resolved message is not sent yet

    resolving = await console.page(link, status=410)
    post = await console.client.post(link, data={"csrf": csrf, "by": "sre-oncall"}, headers=HTML)
    await console.decide(300)  # group_interval: the resolved message closes the group
    assert key not in console.group_keys()
    closed = await console.page(link, status=410)

    for html in (resolving, closed):
        assert "This alert group has resolved" in html and "DiskFull" in html
        assert "fires again" not in html
    assert post.status == 410
    assert await audit(console) == []


async def test_a_link_of_an_earlier_episode_answers_410_when_the_group_fires_again(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    old = await ack_link(console, key)
    await resolve(console)
    await console.decide(300)
    console.clock.advance(600)
    await console.post_alerts(alert_json("DiskFull", starts=console.clock.now, instance="db-7"))
    await console.decide()
    assert key in console.group_keys()  # the same group key, a new episode
    new = await ack_link(console, key)
    assert new != old

    stale = await console.page(old, status=410)
    fresh = await console.page(new)

    assert "fires again" in stale
    assert "Who are you?" in fresh


async def test_a_link_post_without_the_pages_token_is_refused(console: ConsoleService) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)
    token = csrf_of(await console.page(link))

    missing = await console.client.post(link, data={"by": "sre-oncall"}, headers=HTML)
    wrong = await console.client.post(
        link, data={"by": "sre-oncall", "csrf": "0" * 40}, headers=HTML
    )
    cross = await console.client.post(
        link,
        data={"by": "sre-oncall", "csrf": token},
        headers={**HTML, "Sec-Fetch-Site": "cross-site"},
    )

    for refused in (missing, wrong, cross):
        assert refused.status == 403
    assert current_ack(console, key) is None


@pytest.mark.parametrize("name", ["Mallory", "", "sre-oncall ", "SRE-ONCALL"])
async def test_a_name_that_is_not_a_member_is_refused(console: ConsoleService, name: str) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)

    response = await post_form(console, link, {"by": name, "comment": "hi"})

    html = await response.text()
    assert response.status == 400
    assert "Choose your name from the members of sre." in html
    assert 'aria-invalid="true"' in html and ">hi</textarea>" in html  # the comment is kept
    assert current_ack(console, key) is None


async def test_without_members_the_link_asks_for_a_name_in_words(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    service = await start_console(
        aiohttp_client,
        tmp_path,
        contact_groups=(
            ContactGroupConfig("sre", ("console",)),
            *groups("dba", channels=("console",)),
        ),
    )
    key = await firing_group(service)
    link = await ack_link(service, key)
    html = await service.page(link)
    assert '<input id="ack-by" type="text" name="by"' in html and "<select" not in html

    empty = await post_form(service, link, {"by": "  ", "comment": ""})
    named = await post_form(service, link, {"by": "Wang Wu", "comment": ""})

    assert empty.status == 400 and "Say who you are" in await empty.text()
    assert named.status == 200
    assert current_ack(service, key).by == "Wang Wu"


async def test_a_too_long_comment_is_refused_and_kept_in_the_form(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)

    response = await post_form(console, link, {"by": "sre-oncall", "comment": "x" * 1001})

    assert response.status == 400 and "At most 1000 characters." in await response.text()
    assert current_ack(console, key) is None


# -- the group page: acknowledge, withdraw, silence ----------------------------------------------


async def test_on_an_open_console_acknowledging_asks_a_name_and_shows_it_everywhere(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    page = group_path(key)
    html = await console.page(page)
    actions = html.split('class="actions"')[1].split("</section>")[0]
    assert f'action="{page}/ack"' in actions and 'name="by"' in actions and "required" in actions
    assert ">Acknowledge</button>" in actions and "Silence…" in actions

    nameless = await post_form(console, f"{page}/ack", {"by": "", "comment": "x"}, page)
    named = await post_form(console, f"{page}/ack", {"by": "Li Si", "comment": "disk"}, page)

    assert nameless.status == 400 and "Say who you are" in await nameless.text()
    assert named.status == 303 and named.headers["Location"] == page
    assert named.cookies["mm_name"].value == "Li%20Si"
    assert (current_ack(console, key).by, current_ack(console, key).via) == ("Li Si", "console")
    assert await audit(console) == [("Li Si", "console", "ack")]
    after = await console.page(page)
    assert "Acknowledged by Li Si" in after and ">Withdraw acknowledgement</button>" in after
    assert 'value="Li Si"' in after  # the name typed is remembered for the next form
    assert "Acknowledged by Li Si" in await console.page("/")

    withdrawn = await post_form(console, f"{page}/unack", {"by": "Li Si"}, page)

    assert withdrawn.status == 303
    assert current_ack(console, key) is None
    assert "Acknowledged by" not in await console.page(page)
    assert [a[2] for a in await audit(console)] == ["ack", "unack"]


async def test_a_logged_in_user_acknowledges_as_themselves(guarded: ConsoleService) -> None:
    key = await firing_group(guarded)
    await guarded.login()
    page = group_path(key)
    actions = (await guarded.page(page)).split('class="actions"')[1].split("</section>")[0]
    assert 'name="by"' not in actions

    response = await post_form(guarded, f"{page}/ack", {"comment": "mine", "by": "spoof"}, page)

    assert response.status == 303
    assert current_ack(guarded, key).by == "zhangsan"


async def test_group_actions_post_without_a_token_or_login_change_nothing(
    guarded: ConsoleService,
) -> None:
    key = await firing_group(guarded)
    page = group_path(key)

    no_login = await guarded.client.post(f"{page}/ack", data={"comment": "x"}, headers=HTML)
    await guarded.login()
    no_token = await guarded.client.post(f"{page}/ack", data={"comment": "x"}, headers=HTML)

    assert no_login.status == 401 and no_token.status == 403
    assert current_ack(guarded, key) is None


async def test_acknowledging_a_group_that_resolved_says_so(console: ConsoleService) -> None:
    key = await firing_group(console)
    page = group_path(key)
    token = csrf_of(await console.page(page))
    await resolve(console)

    ack = await console.client.post(
        f"{page}/ack", data={"csrf": token, "by": "Li Si"}, headers=HTML
    )
    unack = await console.client.post(
        f"{page}/unack", data={"csrf": token, "by": "Li Si"}, headers=HTML
    )

    assert ack.status == 409 and "no longer fires" in await ack.text()
    assert unack.status == 409 and "no longer fires" in await unack.text()
    assert await audit(console) == []


async def test_withdrawing_when_nobody_acknowledged_says_so(console: ConsoleService) -> None:
    key = await firing_group(console)
    page = group_path(key)

    response = await post_form(console, f"{page}/unack", {"by": "Li Si"}, page)

    assert response.status == 409 and "is not acknowledged" in await response.text()


async def test_silence_from_a_group_prefills_its_labels(console: ConsoleService) -> None:
    key = await firing_group(console, team="db")
    html = await console.page(group_path(key))
    (href,) = re.findall(r'href="(/silences/new\?[^"]+)"', html)
    query = parse_qs(urlsplit(href.replace("&amp;", "&")).query)

    form = await console.page(href.replace("&amp;", "&"))

    assert query["group"] == [key]
    labels = console.app[keys.PIPELINE].convergence.groups[key].group_labels
    expected = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    assert query["matchers"] == [expected]
    escaped = expected.replace('"', "&#34;")
    assert f">{escaped}</textarea>" in form
    assert f'href="{group_path(key)}"' in form  # back to the group


# -- badges --------------------------------------------------------------------------------------


async def test_an_escalated_group_is_marked_with_its_step(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    sre = ContactGroupConfig(
        "sre",
        ("console",),
        groups("sre")[0].members,
        escalation=(EscalationStep(60.0, ("dba",)),),
    )
    service = await start_console(
        aiohttp_client,
        tmp_path,
        contact_groups=(sre, *groups("dba", channels=("console",))),
    )
    key = await firing_group(service)
    await service.decide(61)

    assert service.app[keys.PIPELINE].convergence.groups[key].escalated == 1
    assert "Escalated (step 1)" in await service.page(group_path(key))
    assert "Escalated (step 1)" in await service.page("/")


async def test_a_group_whose_firing_alerts_are_all_muted_is_marked_silenced(
    console: ConsoleService,
) -> None:
    key = await firing_group(console)
    page = group_path(key)
    assert "Silenced" not in main_of(await console.page("/"))

    created = await post_form(
        console,
        "/silences",
        {"matchers": 'alertname="DiskFull"', "duration": "1h", "comment": "disk swap", "by": "Li"},
        "/silences/new",
    )
    assert created.status == 303
    await console.app[keys.PIPELINE].watch()  # every second: decides muting again

    assert 'class="badge b-silenced">Silenced<' in await console.page(page)
    assert 'class="badge b-silenced">Silenced<' in await console.page("/")


# -- the silences page -------------------------------------------------------------------------


async def test_a_silence_created_in_the_console_is_listed_and_can_be_expired(
    console: ConsoleService,
) -> None:
    created = await post_form(
        console,
        "/silences",
        {
            "matchers": 'cluster="db1", instance=~"db-.*"',
            "duration": "2h",
            "comment": "replacing disks",
            "by": "Wang Wu",
        },
        "/silences/new",
    )

    assert created.status == 303
    (silence,) = console.app[keys.PIPELINE].convergence.muting.silences.values()
    assert created.headers["Location"] == f"/silences#{silence_anchor(silence.id)}"
    assert (silence.created_by, silence.comment) == ("Wang Wu", "replacing disks")
    assert silence.ends_at - silence.starts_at == pytest.approx(7200, abs=1)
    html = main_of(await console.page("/silences"))
    row = html.split(f'id="{silence_anchor(silence.id)}"')[1].split("</li>")[0]
    assert "{cluster=&#34;db1&#34;, instance=~&#34;db-.*&#34;}" in row
    assert "Wang Wu" in row and "replacing disks" in row and ">active<" in row
    assert "mutes internal alerts" not in row
    assert await audit(console) == [("Wang Wu", "console", "silence")]

    expired = await post_form(
        console, f"/silences/{silence.id}/expire", {"by": "Wang Wu"}, "/silences"
    )

    assert expired.status == 303
    html = main_of(await console.page("/silences"))
    assert "No active or pending silences." in html
    assert "Recently expired (1)" in html and ">expired<" in html
    assert [a[2] for a in await audit(console)] == ["silence", "silence.expire"]


async def test_a_silence_that_could_mute_internal_alerts_is_flagged(
    console: ConsoleService,
) -> None:
    await post_form(
        console,
        "/silences",
        {"matchers": 'alertname=~"Heartbeat.*"', "duration": "1h", "comment": "az1", "by": "x"},
        "/silences/new",
    )

    html = main_of(await console.page("/silences"))
    overview = main_of(await console.page("/"))

    assert "mutes internal alerts" in html
    assert "1 mutes internal alerts" in overview and "1 active silence" in overview


@pytest.mark.parametrize(
    "form, field, says",
    [
        ({"matchers": ""}, "Matchers", "Give at least one matcher"),
        ({"matchers": "alertname"}, "Matchers", "bad matcher format"),
        ({"matchers": 'a=~"("'}, "Matchers", ""),
        ({"matchers": 'team=~".*"'}, "Matchers", "must not match the empty string"),
        ({"duration": "soon"}, "Duration", "Not a duration"),
        ({"duration": "8d"}, "Duration", "longer than silences.max_duration (7d)"),
        ({"comment": "  "}, "Comment", "a comment is required"),
        ({"by": ""}, "", "Say who you are"),
        ({"ends": "2020-01-01T00:00"}, "Ends", "start time must be before end time"),
        (
            {"starts": "2019-01-01T00:00", "ends": "2020-01-01T00:00"},
            "Ends",
            "end time can&#39;t be in the past",
        ),
        ({"starts": "yesterday"}, "Starts", "Not a date and time"),
    ],
)
async def test_a_silence_form_with_a_mistake_is_shown_again_saying_what_and_stores_nothing(
    console: ConsoleService, form: dict[str, str], field: str, says: str
) -> None:
    good = {"matchers": 'alertname="DiskFull"', "duration": "1h", "comment": "c", "by": "Li"}

    response = await post_form(console, "/silences", {**good, **form}, "/silences/new")

    html = await response.text()
    assert response.status == 400
    error = html.split('id="silence-error"')[1].split("</p>")[0]
    assert says in error and field in error
    assert 'aria-invalid="true"' in html
    kept = {**good, **form}["matchers"].replace('"', "&#34;")
    assert f">{kept}</textarea>" in html  # what was typed is kept
    assert console.app[keys.PIPELINE].convergence.muting.silences == {}
    assert await audit(console) == []


async def test_a_silence_may_start_later_at_a_time_in_the_consoles_zone(
    console: ConsoleService,
) -> None:
    # T0 + 60 is 2027-01-15 08:01 UTC; the console's zone is UTC in these tests.
    created = await post_form(
        console,
        "/silences",
        {
            "matchers": 'alertname="Batch"',
            "starts": "2027-01-15T10:00",
            "ends": "2027-01-15T12:30",
            "duration": "",
            "comment": "batch run",
            "by": "Li",
        },
        "/silences/new",
    )

    assert created.status == 303
    (silence,) = console.app[keys.PIPELINE].convergence.muting.silences.values()
    assert silence.starts_at == 1_800_000_000 + 2 * 3600
    assert silence.ends_at == 1_800_000_000 + 4.5 * 3600
    html = main_of(await console.page("/silences"))
    assert ">pending<" in html and "2027-01-15 10:00:00 UTC" in html


async def test_silence_forms_need_the_pages_token_and_a_name_on_an_open_console(
    console: ConsoleService,
) -> None:
    await post_form(
        console,
        "/silences",
        {"matchers": 'alertname="X"', "duration": "1h", "comment": "c", "by": "Li"},
        "/silences/new",
    )
    (silence,) = console.app[keys.PIPELINE].convergence.muting.silences.values()

    no_token = await console.client.post(
        "/silences", data={"matchers": 'a="b"', "comment": "c", "by": "Li"}, headers=HTML
    )
    expire_no_token = await console.client.post(
        f"/silences/{silence.id}/expire", data={"by": "Li"}, headers=HTML
    )
    expire_nameless = await post_form(
        console, f"/silences/{silence.id}/expire", {"by": ""}, "/silences"
    )
    expire_unknown = await post_form(console, "/silences/nope/expire", {"by": "Li"}, "/silences")

    assert no_token.status == 403 and expire_no_token.status == 403
    assert expire_nameless.status == 400 and "Say who you are" in await expire_nameless.text()
    assert expire_unknown.status == 404 and "No such silence" in await expire_unknown.text()
    assert len(console.app[keys.PIPELINE].convergence.muting.silences) == 1
    assert silence.state(console.clock.now) == "active"


async def test_the_silences_pages_are_closed_with_the_console(closed: ConsoleService) -> None:
    for path in ("/silences", "/silences/new"):
        assert "The console is closed" in await closed.page(path, status=403)
    refused = await closed.client.post("/silences", data={"matchers": 'a="b"'}, headers=HTML)
    assert refused.status == 403


async def test_a_logged_in_user_creates_silences_as_themselves(guarded: ConsoleService) -> None:
    await guarded.login()
    form = await guarded.page("/silences/new")
    assert 'name="by"' not in main_of(form) and "zhangsan" in form

    created = await post_form(
        guarded,
        "/silences",
        {"matchers": 'alertname="X"', "duration": "1h", "comment": "c", "by": "spoof"},
        "/silences/new",
    )

    assert created.status == 303
    (silence,) = guarded.app[keys.PIPELINE].convergence.muting.silences.values()
    assert silence.created_by == "zhangsan"


# -- maintenance windows and the overview's guard rails ------------------------------------------


async def test_running_maintenance_windows_show_on_the_silences_page_and_the_overview(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    # T0 + 60 is 08:01 UTC: "0 * * * *" for 30 minutes runs from 08:00 to 08:30.
    service = await start_console(
        aiohttp_client,
        tmp_path,
        maintenance=(
            MaintenanceConfig("hourly-compaction", "0 * * * *", 1800.0, {"cluster": "db1"}),
            MaintenanceConfig("nightly-batch", "0 2 * * *", 3600.0, {"cluster": "batch"}),
        ),
    )
    key = await firing_group(service)
    await service.client.post(f"/api/v1/alert-groups/{key}/ack", json={"by": "alice"})

    silences = main_of(await service.page("/silences"))
    overview = main_of(await service.page("/"))

    running = silences.split("hourly-compaction")[1].split("</li>")[0]
    assert "{cluster=&#34;db1&#34;}" in running and "2027-01-15 08:30:00 UTC" in running
    idle = silences.split("nightly-batch")[1].split("</li>")[0]
    assert "next" in idle and "2027-01-16 02:00:00 UTC" in idle
    assert silences.index("hourly-compaction") < silences.index("nightly-batch")
    guard = overview.split('id="acting"')[1].split("</p>")[0]
    assert "0 active silences" in guard and "1 alert group acknowledged" in guard
    assert "Maintenance now" in guard and "hourly-compaction" in guard
    assert "nightly-batch" not in guard


async def test_the_overview_says_when_nothing_is_muted_or_taken(console: ConsoleService) -> None:
    guard = main_of(await console.page("/")).split('id="acting"')[1].split("</p>")[0]
    assert "0 active silences" in guard and "0 alert groups acknowledged" in guard
    assert "no maintenance window running" in guard


async def test_the_new_pages_carry_the_csp_and_no_inline_code(console: ConsoleService) -> None:
    key = await firing_group(console)
    link = await ack_link(console, key)
    for path in ("/silences", "/silences/new", link, "/ack/bad.token"):
        response = await console.client.get(path, headers=HTML)
        html = await response.text()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Cache-Control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"<[a-z][^>]*\s(style|on[a-z]+)=", html), path
