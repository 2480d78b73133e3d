"""The real `serve` process: accepted alerts survive SIGKILL; SIGTERM stops cleanly."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from builders import alert_json, payload
from processes import ServeProcess, http

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "mm-test"
[storage]
path = "mm.db"
[convergence]
group_by = ["alertname"]
group_wait = "%s"
group_interval = "2s"
repeat_interval = "1h"
[storm]
threshold = 1000
"""


def delivered_alerts(proc: ServeProcess) -> set[str]:
    status, body = http("GET", f"{proc.url}/api/v1/notifications?limit=1000")
    assert status == 200
    seen = set()
    for n in body["notifications"]:
        if n["deliveries"] and all(d["state"] == "delivered" for d in n["deliveries"]):
            seen.update(n["alert_groups"])
    return seen


@pytest.mark.slow
def test_alerts_accepted_before_sigkill_are_all_notified_after_restart(tmp_path: Path) -> None:
    proc = ServeProcess(tmp_path, CONFIG % "3s").start()
    try:
        count = 30
        for i in range(count):
            status, body = http(
                "POST",
                f"{proc.url}/webhook/alertmanager",
                payload(alert_json(f"Crash{i}", instance="a")),
            )
            assert (status, body["accepted"]) == (200, 1)
        proc.kill()  # well before group_wait: nothing was notified yet
        assert "[FIRING" not in proc.stdout.read_text()
        proc.start()
        groups = proc.wait_for(
            lambda: len(delivered_alerts(proc)) >= count and delivered_alerts(proc),
            timeout=30,
            what="all groups delivered",
        )
        assert len(groups) == count
        out = proc.stdout.read_text()
        for i in range(count):
            assert f"[FIRING:1] Crash{i}\n" in out
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal_and_keeps_pending_work(tmp_path: Path, sig: int) -> None:
    proc = ServeProcess(tmp_path, CONFIG % "2s").start()
    try:
        status, _ = http("POST", f"{proc.url}/webhook/alertmanager", payload(alert_json("Later")))
        assert status == 200
        started = time.monotonic()
        assert proc.terminate(sig) == 0
        assert time.monotonic() - started < 15
        assert "Traceback" not in proc.stderr.read_text()
        proc.start()  # the group timer was stored; the notification still comes
        proc.wait_for(
            lambda: "[FIRING:1] Later" in proc.stdout.read_text(),
            timeout=20,
            what="notification after restart",
        )
    finally:
        proc.stop()


@pytest.mark.slow
def test_serve_without_config_uses_embedded_defaults_and_check_config_reports(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n[[routes]]\ngroups = ["ghost"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "monitor_manager", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "server.listen" in result.stderr and "routes[0].groups" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text('[server]\nlisten = "127.0.0.1:9999"\n')
    result = subprocess.run(
        [sys.executable, "-m", "monitor_manager", "check-config", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.count("\n") == 1


@pytest.mark.slow
def test_a_second_signal_ends_a_shutdown_that_waits_for_a_send(tmp_path: Path) -> None:
    # An SMTP server that accepts connections and never answers: the send hangs, and a clean
    # stop would wait the send grace period for it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        config = (
            CONFIG % "0s"
            + f"""
[channels.mail]
type = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "mm@example.com"
timeout = "60s"
[[contact_groups]]
name = "default"
channels = ["mail"]
members = [{{ name = "ops", email = "ops@example.com" }}]
"""
        )
        proc = ServeProcess(tmp_path, config).start()
        try:
            status, _ = http(
                "POST", f"{proc.url}/webhook/alertmanager", payload(alert_json("Stuck"))
            )
            assert status == 200
            connection, _ = silent.accept()  # the send has begun
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert proc.proc.poll() is None  # the first signal waits for the send
            started = time.monotonic()
            assert proc.terminate(signal.SIGTERM, timeout=5) == 1
            assert time.monotonic() - started < 5
            assert "second SIGTERM during shutdown" in proc.stderr.read_text()
            connection.close()
            proc.start()  # nothing accepted was lost: the notification waits in the outbox
            status, body = http("GET", f"{proc.url}/api/v1/notifications")
            assert status == 200
            [notification] = body["notifications"]
            [delivery] = notification["deliveries"]
            assert delivery["state"] in ("retrying", "sending")  # due again, or being sent
        finally:
            proc.stop()


@pytest.mark.slow
def test_serve_takes_a_gzip_webhook_and_builds_its_handler_as_configured(tmp_path: Path) -> None:
    """The app reads gzip bodies itself (bounded): aiohttp must not decompress them first.
    (serve once passed its handler arguments where aiohttp ignores them: every gzip webhook
    got a 400, which Alertmanager never retries, and every connection logged a warning.)"""
    proc = ServeProcess(tmp_path, CONFIG % "1h").start()
    try:
        body = gzip.compress(json.dumps(payload(alert_json("Zipped"))).encode())
        request = urllib.request.Request(
            f"{proc.url}/webhook/alertmanager",
            data=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read())["accepted"] == 1
    finally:
        proc.stop()
    assert "Failed to create request handler" not in proc.logs()
