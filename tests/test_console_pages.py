"""The console over HTTP (SPEC section 9): escaping, security headers, CSRF, login and its
throttle, the closed console, the language switch, unknown paths, the hooks for actions.

Each test drives the real app (store, pipeline, console) on a temporary database over
loopback; see tests/test_console_browser.py for the same pages in a real browser."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web

from console_app import HTML, ConsoleService, alert_json, csrf_of, start_console
from monitor_manager import keys
from monitor_manager.web.console import (
    Action,
    Badge,
    add_group_actions,
    add_group_badges,
    console_form,
    group_path,
)
from monitor_manager.web.console.pages import CONSOLE, CSP
from monitor_manager.web.console.paths import safe_next

HOSTILE_LABEL = "<script>alert(1)</script>"
TEMPLATE_LABEL = "{{7*7}}"
HOSTILE_NOTE = '<img src=x onerror="alert(2)">'


@pytest.fixture
async def console(aiohttp_client: Any, tmp_path: Any) -> ConsoleService:
    return await start_console(aiohttp_client, tmp_path)


async def hostile_group(service: ConsoleService) -> str:
    alert = alert_json("Hostile", instance="web-1", evil=HOSTILE_LABEL, tpl=TEMPLATE_LABEL)
    alert["annotations"] = {"summary": TEMPLATE_LABEL, "description": HOSTILE_NOTE}
    alert["generatorURL"] = "javascript:alert(3)"
    await service.post_alerts(alert)
    await service.decide()
    (key,) = service.group_keys()
    return key


# -- what any label can hold is shown as text ------------------------------------------------


async def test_hostile_labels_and_annotations_are_escaped_on_every_page(
    console: ConsoleService,
) -> None:
    key = await hostile_group(console)

    for path in ("/", group_path(key), "/notifications", "/?contact_group=sre"):
        html = await console.page(path)
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "javascript:alert" not in html, path
        # {{7*7}} is never evaluated (group keys and static digests are hex: left out)
        assert "49" not in re.sub(r"[0-9a-f]{12,}", "", html.split("<footer")[0]), path
    group_html = await console.page(group_path(key))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in group_html
    assert TEMPLATE_LABEL in group_html  # shown literally, never evaluated
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in group_html


async def test_pages_send_a_csp_without_inline_code_and_carry_none(
    console: ConsoleService,
) -> None:
    key = await hostile_group(console)
    for path in ("/", group_path(key), "/notifications", "/watchdog", "/contact-groups"):
        response = await console.client.get(path, headers=HTML)
        html = await response.text()
        csp = response.headers["Content-Security-Policy"]
        assert csp == CSP and "unsafe-inline" not in csp and "script-src 'self'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path  # scripts come from files
        # no inline style or event handler in any tag
        assert not re.search(r"<[a-z][^>]*\s(style|on[a-z]+)=", html), path


async def test_static_files_are_served_from_the_package_with_a_version(
    console: ConsoleService,
) -> None:
    html = await console.page("/")
    (css,) = re.findall(r'href="(/static/console/console\.css\?v=[0-9a-f]+)"', html)
    response = await console.client.get(css)
    assert response.status == 200
    assert response.content_type == "text/css"
    assert "max-age" in response.headers["Cache-Control"]
    again = await console.client.get(css, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
    assert (await console.client.get("/static/console/nope.js")).status == 404


# -- CSRF ----------------------------------------------------------------------------------


async def test_the_route_tester_answers_with_the_pages_token_and_refuses_without(
    console: ConsoleService,
) -> None:
    token = await console.form("/contact-groups")
    form = {"labels": 'team="db", alertname=DiskFull'}

    missing = await console.client.post("/contact-groups/route-test", data=form)
    wrong = await console.client.post("/contact-groups/route-test", data={**form, "csrf": "0" * 40})
    cross_site = await console.client.post(
        "/contact-groups/route-test",
        data={**form, "csrf": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    good = await console.client.post("/contact-groups/route-test", data={**form, "csrf": token})

    for refused in (missing, wrong, cross_site):
        assert refused.status == 403
        assert "Refused" in await refused.text()
    assert good.status == 200
    text = await good.text()
    result = text.split('id="rt-result"')[1].split("</div>")[0]
    assert "dba" in result and "route #0" in result
    assert "sre" not in result  # a route matched: the default group is not used


async def test_the_route_tester_says_what_is_wrong_with_its_input(
    console: ConsoleService,
) -> None:
    token = await console.form("/contact-groups")
    for text, says in (("team=~db", "give each label a value"), ("", "at least one label")):
        response = await console.client.post(
            "/contact-groups/route-test", data={"labels": text, "csrf": token}
        )
        assert response.status == 400
        assert says in await response.text()


async def test_a_token_from_another_browser_is_refused(
    console: ConsoleService, aiohttp_client: Any
) -> None:
    token = await console.form("/contact-groups")
    other = await aiohttp_client(console.client.server)  # its own cookie jar
    await other.get("/contact-groups", headers=HTML)

    response = await other.post("/contact-groups/route-test", data={"labels": "a=b", "csrf": token})

    assert response.status == 403


# -- login ---------------------------------------------------------------------------------


@pytest.fixture
async def guarded(aiohttp_client: Any, tmp_path: Any) -> ConsoleService:
    return await start_console(aiohttp_client, tmp_path, users=True)


async def test_with_users_every_page_asks_for_a_login_first(guarded: ConsoleService) -> None:
    for path in ("/", "/notifications", "/watchdog", "/contact-groups", "/groups/0123456789abcdef"):
        response = await guarded.client.get(path, headers=HTML, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/login?next=")
    post = await guarded.client.post("/contact-groups/route-test", data={"labels": "a=b"})
    assert post.status == 401


async def test_a_login_sets_a_guarded_session_cookie_and_a_logout_ends_it(
    guarded: ConsoleService,
) -> None:
    response = await guarded.login()

    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = response.cookies["mm_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
    assert int(cookie["max-age"]) == 12 * 3600
    html = await guarded.page("/")
    assert "zhangsan" in html and "Open alert groups" in html

    logout = await guarded.client.post(
        "/logout", data={"csrf": csrf_of(html)}, allow_redirects=False
    )
    assert logout.status == 303
    assert (await guarded.client.get("/", headers=HTML, allow_redirects=False)).status == 303


async def test_a_password_from_the_environment_logs_in_too_and_a_wrong_one_does_not(
    guarded: ConsoleService,
) -> None:
    wrong = await guarded.login("lisi", "nope")
    unknown = await guarded.login("nobody", "from-env")
    right = await guarded.login("lisi", "from-env")

    assert wrong.status == 401 and "Wrong user name or password" in await wrong.text()
    assert unknown.status == 401
    assert right.status == 303


async def test_the_session_cookie_is_secure_behind_an_https_proxy(guarded: ConsoleService) -> None:
    token = await guarded.form("/login")
    response = await guarded.client.post(
        "/login",
        data={"csrf": token, "name": "zhangsan", "password": "correct horse"},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert response.cookies["mm_session"]["secure"]


async def test_a_session_expires_after_its_lifetime(guarded: ConsoleService) -> None:
    await guarded.login()
    await guarded.page("/")

    guarded.clock.advance(12 * 3600 + 1)

    assert (await guarded.client.get("/", headers=HTML, allow_redirects=False)).status == 303


async def test_failed_logins_are_slowed_per_client_then_allowed_again(
    guarded: ConsoleService,
) -> None:
    for _ in range(5):  # the first five are free
        assert (await guarded.login(password="wrong")).status == 401

    assert (await guarded.login(password="wrong")).status == 401  # the sixth starts the wait
    throttled = await guarded.login()  # even the right password waits its turn
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "Too many failed logins" in await throttled.text()

    guarded.clock.advance(1.5)
    assert (await guarded.login()).status == 303


async def test_login_goes_back_to_the_page_asked_for_and_never_to_another_site(
    guarded: ConsoleService,
) -> None:
    token = await guarded.form("/login")
    response = await guarded.client.post(
        "/login",
        data={"csrf": token, "name": "zhangsan", "password": "correct horse", "next": "//evil"},
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/groups/abc?alerts=2", "/groups/abc?alerts=2"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\r\nSet-Cookie: x", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_safe_next_keeps_paths_on_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# -- a closed console ----------------------------------------------------------------------


async def test_on_a_public_address_without_users_the_console_is_closed_and_paging_works(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    service = await start_console(aiohttp_client, tmp_path, server={"listen": "0.0.0.0:9095"})

    for path in ("/", "/login", "/watchdog", "/groups/0123456789abcdef"):
        html = await service.page(path, status=403)
        assert "The console is closed" in html and "hash-password" in html
        assert "0.0.0.0" in html
    refused = await service.client.post("/contact-groups/route-test", data={"labels": "a=b"})
    assert refused.status == 403

    await service.post_alerts(alert_json("StillPaged"))
    await service.decide()
    await service.app[keys.OUTBOX].drain()
    assert "[FIRING:1] StillPaged" in service.stdout.getvalue()
    alerts = await service.client.get("/api/v1/alerts")
    assert alerts.status == 200 and (await alerts.json())["alerts"]


async def test_on_a_loopback_address_without_users_the_console_is_open(
    console: ConsoleService,
) -> None:
    html = await console.page("/")
    assert "Open alert groups" in html and "Log out" not in html


# -- language ------------------------------------------------------------------------------


async def test_the_language_switch_is_on_every_page_and_remembered(
    console: ConsoleService,
) -> None:
    for path in ("/", "/notifications", "/watchdog", "/contact-groups"):
        assert 'hreflang="zh"' in await console.page(path)

    response = await console.client.get("/watchdog?lang=zh", headers=HTML)
    assert "心跳" in await response.text()
    assert response.cookies["mm_lang"].value == "zh"
    assert "概览" in await console.page("/")  # the cookie holds
    assert "Overview" in await console.page("/?lang=en")


async def test_the_configured_language_is_the_default(aiohttp_client: Any, tmp_path: Any) -> None:
    service = await start_console(aiohttp_client, tmp_path, templates={"language": "zh"})
    html = await service.page("/")
    assert '<html lang="zh-CN">' in html and "当前没有告警" in html


# -- unknown paths and old links -------------------------------------------------------------


async def test_an_unknown_path_answers_json_unless_the_client_asks_for_html(
    console: ConsoleService,
) -> None:
    as_api = await console.client.get("/no/such/page")
    as_page = await console.client.get("/no/such/page", headers=HTML)
    wrong_method = await console.client.delete("/watchdog", headers=HTML)

    assert as_api.status == 404 and (await as_api.json())["error"]
    assert as_page.status == 404 and as_page.content_type == "text/html"
    assert "Page not found" in await as_page.text()
    assert wrong_method.status == 405 and "GET" in wrong_method.headers["Allow"]


async def test_a_group_link_of_the_api_opened_in_a_browser_leads_to_the_groups_page(
    console: ConsoleService,
) -> None:
    await console.post_alerts(alert_json("Linked"))
    (key,) = console.group_keys()

    browser = await console.client.get(
        f"/api/v1/alert-groups/{key}", headers=HTML, allow_redirects=False
    )
    script = await console.client.get(f"/api/v1/alert-groups/{key}")

    assert browser.status == 303 and browser.headers["Location"] == group_path(key)
    assert script.status == 200 and (await script.json())["key"] == key


async def test_an_unknown_alert_group_is_a_page_saying_so(console: ConsoleService) -> None:
    html = await console.page("/groups/0123456789abcdef", status=404)
    assert "No such alert group" in html


# -- hooks for the actions that come later ---------------------------------------------------


async def test_without_action_providers_the_group_page_has_no_action_area(
    console: ConsoleService,
) -> None:
    console.app[CONSOLE].hooks.group_actions.clear()  # the console's own (acting.py) too
    await console.post_alerts(alert_json("Quiet"))
    (key,) = console.group_keys()
    html = await console.page(group_path(key))
    main = html.split("<main>")[1].split("</main>")[0]
    assert 'class="actions"' not in main and "<button" not in main


async def test_a_registered_action_is_a_form_with_a_token_whose_post_is_checked(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    done: list[tuple[str, str | None, str]] = []

    async def actions(request: web.Request, group: Any) -> list[Action]:
        return [Action("Poke", f"/groups/{group.key}/poke", style="primary", comment=True)]

    async def badges(request: web.Request, keys: list[str]) -> dict[str, list[Badge]]:
        return {k: [Badge("poked by lisi", kind="ack")] for k in keys}

    async def poke(request: web.Request, ctx: Any) -> web.StreamResponse:
        key = request.match_info["key"]
        done.append((key, ctx.user, ctx.form.get("comment", "")))
        return ctx.redirect(group_path(key))

    from console_app import console_config
    from monitor_manager.app import create_app
    from monitor_manager.clock import ManualClock

    app = create_app(console_config(tmp_path), clock=ManualClock(), scheduler=False)
    add_group_actions(app, actions)
    add_group_badges(app, badges)
    app.router.add_post("/groups/{key}/poke", console_form(poke))
    client = await aiohttp_client(app)
    service = ConsoleService(client, ManualClock(), None)  # type: ignore[arg-type]
    await service.post_alerts(alert_json("Poked"))
    (key,) = list(app[keys.PIPELINE].convergence.groups)

    html = await service.page(group_path(key))
    assert "poked by lisi" in html and "poked by lisi" in await service.page("/")
    area = html.split('class="actions"')[1].split("</section>")[0]
    form = area.split(f'action="/groups/{key}/poke"')[1].split("</form>")[0]
    assert 'name="csrf"' in form and ">Poke</button>" in form
    refused = await client.post(f"/groups/{key}/poke", data={"comment": "on it"})
    accepted = await client.post(
        f"/groups/{key}/poke",
        data={"comment": "on it", "csrf": csrf_of(form)},
        allow_redirects=False,
    )

    assert refused.status == 403
    assert accepted.status == 303 and done == [(key, None, "on it")]
