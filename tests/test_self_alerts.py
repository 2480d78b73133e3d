"""Self-alerts: Monitor Manager pages about its own failing channels, through the same road."""

from __future__ import annotations

from typing import Any

from builders import console_channels, groups, incoming, make_config
from harness import OutboxHarness
from monitor_manager.channels.email import EmailSettings
from monitor_manager.config import ChannelConfig, WatchdogConfig
from smtp_server import SMTPTestServer


def two_channel_config(tmp_path: Any, server: SMTPTestServer, **watchdog: Any) -> Any:
    mail = ChannelConfig(
        "mail",
        "email",
        EmailSettings(host=server.host, port=server.port, tls="none", from_="MM <mm@example.com>"),
    )
    return make_config(
        tmp_path,
        channels=(mail, *console_channels()),
        contact_groups=groups("default", channels=("mail", "console")),
        convergence={"group_wait": 1.0, "group_by": ("alertname",)},
        delivery={"retry_initial": 10.0, "retry_max": 60.0, "give_up_after": 3600.0},
        watchdog=WatchdogConfig(**watchdog),
    )


def delivered_console_pages(box: OutboxHarness, alertname: str) -> list[str]:
    pages = box.stdout.getvalue().split("-" * 72)
    return [p for p in pages if f"] {alertname}" in p]


async def test_a_channel_failing_for_good_is_paged_through_the_other_channel(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    smtp_server.mode = "550"
    box = await OutboxHarness(two_channel_config(tmp_path, smtp_server)).start()
    await box.push(incoming("DiskFull"))
    await box.step(1)  # mail fails for good, console delivers
    rows = await box.step(1)  # the watchdog raises DeliveryFailed{channel="mail"}
    rows = await box.step(1)
    by_notification: dict[int, list[str]] = {}
    for r in rows:
        by_notification.setdefault(r["notification_id"], []).append(f"{r['channel']}:{r['state']}")
    assert list(by_notification.values()) == [
        ["mail:failed", "console:delivered"],
        ["console:delivered"],
    ]
    page = delivered_console_pages(box, "DeliveryFailed")
    assert len(page) == 1 and "550" in page[0] and 'channel="mail"' in page[0]
    # The channel works again: the next delivery through it resolves the page.
    smtp_server.mode = "accept"
    await box.push(incoming("Another"))
    await box.step(1)
    await box.step(1)
    await box.step(300)  # group_interval after the first page of that group
    assert any("[RESOLVED] DeliveryFailed" in p for p in box.stdout.getvalue().split("-" * 72))
    await box.stop()


async def test_a_channel_failing_longer_than_channel_failing_after_is_paged(
    tmp_path: Any, smtp_server: SMTPTestServer
) -> None:
    smtp_server.mode = "451"
    box = await OutboxHarness(
        two_channel_config(tmp_path, smtp_server, channel_failing_after=120.0)
    ).start()
    await box.push(incoming("DiskFull"))
    await box.step(1)
    for _ in range(10):
        await box.step(10)
    assert delivered_console_pages(box, "ChannelFailing") == []
    for _ in range(5):
        await box.step(10)
    page = delivered_console_pages(box, "ChannelFailing")
    assert len(page) == 1 and "451" in page[0]
    await box.stop()


async def test_a_store_refusing_writes_is_paged_straight_to_the_channels_once(
    tmp_path: Any, aiohttp_client: Any
) -> None:
    import io

    from builders import alert_json, payload
    from monitor_manager import app as app_module
    from monitor_manager import keys

    out = io.StringIO()
    config = make_config(tmp_path, watchdog=WatchdogConfig(store_failing_after=0.0))
    app = app_module.create_app(config, stdout=out, scheduler=False)
    client = await aiohttp_client(app)
    store = app[keys.STORE]
    await store.run(lambda c: c.execute("PRAGMA query_only = ON"))  # writes now fail
    response = await client.post("/webhook/alertmanager", json=payload(alert_json("Disk")))
    assert response.status == 503
    await app_module.watch(app)
    await app_module.watch(app)  # still failing: not paged a second time
    assert out.getvalue().count("[FIRING:1] StoreFailing") == 1
    assert "refused writes" in out.getvalue()
    assert (await client.get("/readyz")).status == 503
    assert "[RESOLVED] StoreFailing" not in out.getvalue()
    await store.run(lambda c: c.execute("PRAGMA query_only = OFF"))
    await app_module.watch(app)
    await app_module.watch(app)
    assert store.healthy and (await client.get("/readyz")).status == 200
    assert "[RESOLVED] StoreFailing" not in out.getvalue()  # not straight: through the outbox
    await app[keys.OUTBOX].drain()
    assert out.getvalue().count("[RESOLVED] StoreFailing") == 1
    [row] = await store.query("SELECT state FROM deliveries")
    assert row[0] == "delivered"
    response = await client.post("/webhook/alertmanager", json=payload(alert_json("Disk")))
    assert response.status == 200 and (await response.json())["accepted"] == 1
