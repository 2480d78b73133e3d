"""The whole pipeline on loopback, as users run it in two AZs:

    exporter --> Prometheus az1 --+--> Alertmanager az1 --+--> mm-az1 --+--> SMTP (aiosmtpd)
                 Prometheus az2 --+--> Alertmanager az2 --+--> mm-az2 --+--> fake WeCom API
                 (each sends to both)  (one gossip cluster)   (peers)

Every Prometheus sends to both Alertmanagers, both Alertmanagers (peered in one cluster) send
to both Monitor Manager instances, the instances probe each other and share what they sent.
The exporter serves one gauge the test sets, which our test rule turns into an alert on az1's
Prometheus (the only one that scrapes it, as each AZ's Prometheus scrapes its own AZ).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from e2e_configs import (
    TEST_METRIC,
    TEST_RULES,
    WEBHOOK_TOKEN,
    Ports,
    alertmanager_config,
    mm_config,
    prometheus_config,
)
from e2e_processes import Process
from e2e_timeline import Page, Recorder

from fake_wecom import AGENT_ID, CORP_ID, SECRET, FakeWeCom
from smtp_server import SMTPTestServer

REPO = Path(__file__).resolve().parents[2]
AZS = ("az1", "az2")
INSTANCES = ("mm-az1", "mm-az2")
PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_TAKEN: set[int] = set()


def free_port() -> int:
    """A loopback port free for TCP and UDP (memberlist gossips over both), below the ephemeral
    range: a port from bind(0) can be handed out again to any outgoing connection (the
    instances keep theirs open) between our probe and the process binding it."""
    low, _ = _ephemeral_range()
    for _ in range(1000):
        port = random.randrange(max(low - 12000, 1024), low)
        if port in _TAKEN:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        _TAKEN.add(port)
        return port
    raise AssertionError("no free loopback port below the ephemeral range")


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(
    what: str, predicate: Callable[[], Any], timeout: float, details: Callable[[], str] = lambda: ""
) -> Any:
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except OSError as exc:  # a process not answering (yet) is not a result
            result, last_error = None, f"{type(exc).__name__}: {exc}"
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s {last_error}\n{details()}")


class Exporter:
    """A tiny /metrics endpoint with one gauge the test sets."""

    def __init__(self) -> None:
        self.value = 0.0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (f"# TYPE {TEST_METRIC} gauge\n{TEST_METRIC} {exporter.value}\n").encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape would bury the useful output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="e2e-exporter", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()


class WeComThread:
    """FakeWeCom on its own event loop in a thread, with the real clock."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeWeCom(clock=time.time)
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-wecom", daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()

    def sent(self) -> list[tuple[float, str, list[str]]]:
        return [
            (a.at, a.content, a.touser) for a in list(self.fake.accepted) if a.endpoint == "app"
        ]


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.smtp = SMTPTestServer()
        self.smtp.port = free_port()  # restarted in a scenario: must stay ours meanwhile
        self.wecom = WeComThread()
        self.exporter = Exporter()
        self.ports = Ports(
            prometheus={az: free_port() for az in AZS},
            alertmanager={az: free_port() for az in AZS},
            am_cluster={az: free_port() for az in AZS},
            mm={name: free_port() for name in INSTANCES},
            exporter=self.exporter.port,
            smtp=self.smtp.port,
        )
        self.mm: dict[str, Process] = {}
        self.am: dict[str, Process] = {}
        self.prometheus: dict[str, Process] = {}
        self.recorder = Recorder(self._mails, self.wecom.sent)
        self.started_at = 0.0
        self.startup_pages: list[Page] = []  # paged while the stack started (should be none)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.time()
        self.smtp.start()
        self.wecom.start()
        self.exporter.start()
        self.recorder.start()
        self._write_configs()
        # Both instances at once, so neither counts the other's start-up as failed probes.
        self._start_together(self.mm.values())
        self._start_together(self.am.values(), timeout=30)
        self._start_together(self.prometheus.values(), timeout=30)

    def stop(self) -> None:
        """Kill every process, then stop the servers in this process; safe after a failed or
        partial start."""
        for group in (self.prometheus, self.am, self.mm):
            for process in group.values():
                process.kill()
        self.recorder.stop()
        self.exporter.stop()
        self.wecom.stop()
        self.smtp.stop()

    @staticmethod
    def _start_together(processes: Iterable[Process], timeout: float = 20.0) -> None:
        launched = [process.launch() for process in processes]
        with ThreadPoolExecutor(len(launched)) as pool:
            for future in [pool.submit(p.wait_ready, timeout) for p in launched]:
                future.result()

    def _write_configs(self) -> None:
        w = self.workdir
        test_rules = w / "e2e.rules.yml"
        test_rules.write_text(yaml.safe_dump(TEST_RULES, sort_keys=False))
        token = w / "monitor-manager.token"
        token.write_text(WEBHOOK_TOKEN + "\n")
        am_config = w / "alertmanager.yml"
        am_config.write_text(alertmanager_config(self.ports, token))
        # The instances run the code under test, whether or not the package is installed.
        env = {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            )
        }
        for name in INSTANCES:
            config = w / f"{name}.toml"
            config.write_text(
                mm_config(name, self.ports, self.wecom.fake.api_url, CORP_ID, SECRET, AGENT_ID)
            )
            port = self.ports.mm[name]
            self.mm[name] = Process(
                name,
                [sys.executable, "-m", "monitor_manager", "serve", "--config", str(config)],
                w,
                f"http://127.0.0.1:{port}/healthz",
                env={**env, "PYTHONUNBUFFERED": "1"},
            )
        for az in AZS:
            port, cluster = self.ports.alertmanager[az], self.ports.am_cluster[az]
            peers = [
                f"--cluster.peer=127.0.0.1:{p}"
                for other, p in self.ports.am_cluster.items()
                if other != az
            ]
            (w / f"am-{az}").mkdir()
            self.am[az] = Process(
                f"alertmanager-{az}",
                [
                    ALERTMANAGER_BIN,
                    f"--config.file={am_config}",
                    f"--storage.path={w / f'am-{az}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--web.external-url=http://127.0.0.1:{port}",
                    f"--cluster.listen-address=127.0.0.1:{cluster}",
                    *peers,
                    "--cluster.peer-timeout=1s",
                    # Gossip and settling in a loopback cluster take well under a second; the
                    # default 60 s settle timeout would hold back the first notification.
                    "--cluster.gossip-interval=100ms",
                    "--cluster.settle-timeout=3s",
                    "--cluster.pushpull-interval=5s",
                    "--cluster.reconnect-interval=2s",
                ],
                w,
                f"http://127.0.0.1:{port}/-/ready",
            )
        for az in AZS:
            port = self.ports.prometheus[az]
            config = w / f"prometheus-{az}.yml"
            config.write_text(prometheus_config(az, self.ports, test_rules))
            self.prometheus[az] = Process(
                f"prometheus-{az}",
                [
                    PROMETHEUS_BIN,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={w / f'prometheus-{az}-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--web.external-url=http://127.0.0.1:{port}",
                    "--rules.alert.resend-delay=1s",
                ],
                w,
                f"http://127.0.0.1:{port}/-/ready",
            )

    def all_processes(self) -> list[Process]:
        return [*self.prometheus.values(), *self.am.values(), *self.mm.values()]

    def logs(self) -> str:
        return "\n".join(p.logs() for p in self.all_processes())

    def heal(self) -> None:
        """Whatever an earlier scenario broke and did not restore: start it again."""
        self.smtp.start()
        self.set_condition(0)
        stopped = [p for p in self.all_processes() if not p.running]
        for process in stopped:
            process.start(30)

    # -- what the test does ----------------------------------------------------------------------
    def set_condition(self, value: float) -> None:
        self.exporter.value = value

    def mm_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.mm[name]}"

    def am_url(self, az: str) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager[az]}"

    def watchdog(self, name: str) -> dict[str, Any]:
        return dict(get_json(f"{self.mm_url(name)}/api/v1/watchdog"))

    def heartbeats(self, name: str) -> dict[str, dict[str, Any]]:
        return {h["name"]: h for h in self.watchdog(name)["heartbeats"]}

    def am_alerts(self, az: str) -> list[dict[str, Any]]:
        return list(get_json(f"{self.am_url(az)}/api/v2/alerts"))

    def am_position(self, az: str) -> int:
        """Alertmanager's position in its cluster (0 sends first)."""
        with urllib.request.urlopen(f"{self.am_url(az)}/metrics", timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("alertmanager_peer_position "):
                    return int(float(line.split()[1]))
        raise AssertionError(f"alertmanager-{az} exports no alertmanager_peer_position")

    def am_cluster_size(self, az: str) -> int:
        status = get_json(f"{self.am_url(az)}/api/v2/status")
        return len(status["cluster"].get("peers") or [])

    def notifications(self, name: str) -> list[dict[str, Any]]:
        return list(get_json(f"{self.mm_url(name)}/api/v1/notifications")["notifications"])

    def deliveries(self, name: str, since: float) -> list[dict[str, Any]]:
        """Instance `name`'s deliveries of notifications made since `since` (epoch seconds),
        each with its notification's contact group."""
        out = []
        for notification in self.notifications(name):
            created = dt.datetime.fromisoformat(notification["created_at"]).timestamp()
            if created >= since:
                out += [
                    {**d, "contact_group": notification["contact_group"]}
                    for d in notification["deliveries"]
                ]
        return out

    def _mails(self) -> list[tuple[EmailMessage, tuple[str, ...]]]:
        return [
            (m, e.rcpt_tos)
            for m, e in zip(list(self.smtp.messages), list(self.smtp.envelopes), strict=False)
        ]
