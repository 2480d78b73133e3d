"""The fault campaign's stack on loopback, started and stopped by process id:

    load ──POST /api/v2/alerts──> Alertmanager am1 ─┐ (one gossip cluster)
      │    (as Prometheus would)  Alertmanager am2 ─┼─webhook─> mm-az1 ─┐
      │                                             │           mm-az2 ─┼─> SMTP sink
      └──POST /webhook/alertmanager (as an Alertmanager) ─────> mm-az3 ─┘   fake WeCom
    Prometheus (DeadMansSwitch, the service's own rules) ──> am1, am2; scrapes mm-az1..3

Three service instances (one per "AZ", peered with ha.token), two peered Alertmanagers and one
Prometheus from the Debian packages, the SMTP sink and the fake WeCom API in this process
(threads with their own event loops). Configs are made from the examples users copy
(rules/*.example.yml) through the end-to-end suite's helpers, with campaign timers.

The instances' output goes through a pipe to their log files, not straight to a file: the
StoreFailing fault limits an instance's file size (RLIMIT_FSIZE), which would also stop it
writing its own log (see campaign_faults.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO / "tests" / "e2e", REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from e2e_configs import Ports, alertmanager_config, prometheus_config  # noqa: E402
from e2e_processes import Process, http_ok  # noqa: E402
from e2e_stack import ALERTMANAGER_BIN, PROMETHEUS_BIN, WeComThread, free_port  # noqa: E402

from fake_wecom import AGENT_ID, CORP_ID, SECRET  # noqa: E402
from smtp_server import SMTPTestServer  # noqa: E402

INSTANCES = ("mm-az1", "mm-az2", "mm-az3")
ALERTMANAGERS = ("am1", "am2")
PROMETHEUS_AZ = "campaign"  # the external label az of the one Prometheus
WEBHOOK_TOKEN = "campaign-webhook-token-3f1a"
HA_TOKEN = "campaign-ha-token-77c0"
DBA_ROBOT_KEY = "c0ffee00-dba0-4d3e-a1f0-6c2b9e7d4a13"

# Who is who in the sinks (the checker maps recipients to contact groups with these).
MEMBERS: dict[str, dict[str, tuple[str, ...]]] = {
    "sre": {"emails": ("zhangsan@example.com", "lisi@example.com"), "wechat": ("zhangsan", "lisi")},
    "dba": {"emails": ("wangwu@example.com",), "wechat": ("wangwu",)},
}
CHANNELS = {"sre": ("mail", "wecom"), "dba": ("mail", "dba-robot")}
WATCHDOG_GROUP = "sre"


@dataclass(frozen=True)
class Timers:
    """The service's timers in the campaign (seconds); the checker derives its bounds from
    them, so they live in one place."""

    group_wait: float = 2.0
    group_interval: float = 5.0
    # Short enough that long incidents repeat: an acknowledged or silenced one must not.
    repeat_interval: float = 120.0
    storm_threshold: int = 20
    storm_window: float = 10.0
    retry_initial: float = 1.0
    retry_max: float = 10.0
    peer_interval: float = 2.0
    peer_timeout: float = 3.0  # the default: a busy instance answers a probe late, not never
    peer_failures: int = 3
    peer_wait: float = 3.0
    heartbeat_timeout: float = 30.0
    heartbeat_cadence: float = 3.0  # Alertmanager's heartbeat route: 1s interval, 2s repeat
    channel_failing_after: float = 30.0
    store_failing_after: float = 15.0
    max_alerts: int = 50  # alerts listed in full per group: every alert of an incident

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def mm_config(instance: str, ports: dict[str, int], smtp: int, wecom_url: str, t: Timers) -> str:
    peers = "".join(
        f'[[peers]]\nname = "{name}"\nurl = "http://127.0.0.1:{port}"\n'
        for name, port in ports.items()
        if name != instance
    )
    sre, dba = MEMBERS["sre"], MEMBERS["dba"]
    return f"""
[server]
listen = "127.0.0.1:{ports[instance]}"
instance = "{instance}"
webhook_token = "{WEBHOOK_TOKEN}"

[storage]
path = "mm.db"

[convergence]
group_by = ["alertname", "cluster"]
group_wait = "{t.group_wait:g}s"
group_interval = "{t.group_interval:g}s"
repeat_interval = "{t.repeat_interval:g}s"

[storm]
threshold = {t.storm_threshold}
window = "{t.storm_window:g}s"

[delivery]
retry_initial = "{t.retry_initial:g}s"
retry_max = "{t.retry_max:g}s"

[templates]
max_alerts = {t.max_alerts}

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "Monitor Manager <alerts@example.com>"
timeout = "15s"

[channels.wecom]
type = "wechat"
api_url = "{wecom_url}/cgi-bin/"
corp_id = "{CORP_ID}"
agent_id = {AGENT_ID}
secret = "{SECRET}"
timeout = "5s"

[channels.dba-robot]
type = "wechat_robot"
webhook_url = "{wecom_url}/cgi-bin/webhook/send?key={DBA_ROBOT_KEY}"
timeout = "5s"

[[contact_groups]]
name = "sre"
channels = ["mail", "wecom"]
members = [
  {{ name = "Zhang San", email = "{sre["emails"][0]}", wechat = "{sre["wechat"][0]}" }},
  {{ name = "Li Si", email = "{sre["emails"][1]}", wechat = "{sre["wechat"][1]}" }},
]

[[contact_groups]]
name = "dba"
channels = ["mail", "dba-robot"]
members = [{{ name = "Wang Wu", email = "{dba["emails"][0]}", wechat = "{dba["wechat"][0]}" }}]

[routing]
default_groups = ["sre"]

[[routes]]
match = {{ team = "db" }}
groups = ["dba"]

[watchdog]
groups = ["{WATCHDOG_GROUP}"]
peer_interval = "{t.peer_interval:g}s"
peer_timeout = "{t.peer_timeout:g}s"
peer_failures = {t.peer_failures}
channel_failing_after = "{t.channel_failing_after:g}s"
store_failing_after = "{t.store_failing_after:g}s"

[[watchdog.heartbeats]]
name = "prometheus"
match = {{ alertname = "DeadMansSwitch", az = "{PROMETHEUS_AZ}" }}
timeout = "{t.heartbeat_timeout:g}s"
resend_interval = "{t.heartbeat_cadence:g}s"

{peers}
[ha]
peer_wait = "{t.peer_wait:g}s"
token = "{HA_TOKEN}"
"""


def am_config(ports: Ports, token_file: Path) -> str:
    """The e2e suite's Alertmanager config (rules/alertmanager.example.yml with second-scale
    timers), with a webhook to every instance: the example lists two."""
    cfg = yaml.safe_load(alertmanager_config(ports, token_file))
    for receiver in cfg["receivers"]:
        hooks = receiver["webhook_configs"]
        have = {h["url"] for h in hooks}
        for port in ports.mm.values():
            url = f"http://127.0.0.1:{port}/webhook/alertmanager"
            if url not in have:
                hooks.append({**hooks[0], "url": url})
    return yaml.safe_dump(cfg, sort_keys=False)


# -- the sinks ---------------------------------------------------------------------------------


class MailSink(SMTPTestServer):
    """The SMTP sink: every mail it accepts, with its arrival time, in memory and as one JSON
    line each in `log` (for `campaign.py --check`)."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = log
        self.mails: list[dict[str, Any]] = []

    def _record(self, envelope: Any, session: Any, tls: bool) -> None:
        super()._record(envelope, session, tls)
        with self._lock:
            mail: EmailMessage = self.messages[-1]
            body = mail.get_body(("plain",))
            text = body.get_content() if body is not None else ""  # type: ignore[attr-defined]
            record = {
                "t": time.time(),
                "rcpt": sorted(r.lower() for r in envelope.rcpt_tos),
                "subject": str(mail["Subject"]),
                "text": text,
                "message_id": str(mail["Message-ID"] or ""),
            }
            self.mails.append(record)
            # The parsed messages are not needed: keep memory flat over a long run.
            self.messages.clear()
            self.envelopes.clear()
            with open(self.log, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")


class WeComSink(WeComThread):
    """The fake WeCom API (application messages and the dba group's robot) on its own loop."""

    def __init__(self) -> None:
        super().__init__()
        self.fake.add_robot(DBA_ROBOT_KEY)

    def call(self, fn: Any, *args: Any) -> None:
        """Run a switch of the fake on its loop (it is not thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for a in list(self.fake.accepted):
            out.append(
                {
                    "t": a.at,
                    "endpoint": a.endpoint,
                    "touser": sorted(a.touser),
                    "robot_key": a.robot_key,
                    "content": a.content,
                    "truncated": a.truncated,
                    "dropped_for": list(a.dropped_for),
                }
            )
        return out


# -- processes ---------------------------------------------------------------------------------


class PipedProcess(Process):
    """A process whose output a thread copies to its log: its own writes then never touch the
    file system (an instance whose file size is limited to 0 still logs)."""

    def launch(self) -> PipedProcess:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        pipe = self.proc.stdout
        assert pipe is not None
        threading.Thread(target=_copy, args=(pipe, self.log), daemon=True).start()
        from e2e_processes import _LIVE

        _LIVE.add(self)
        return self


def _copy(pipe: Any, log: Path) -> None:
    with open(log, "ab") as out:
        for line in iter(pipe.readline, b""):
            out.write(line)
            out.flush()
    pipe.close()


@dataclass
class Instance:
    name: str
    port: int
    process: PipedProcess
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def ready(self) -> bool:
        return http_ok(f"{self.url}/readyz")


class Stack:
    def __init__(self, workdir: Path, timers: Timers) -> None:
        self.workdir = workdir
        self.timers = timers
        self.mail = MailSink(workdir / "mail.jsonl")
        self.mail.port = free_port()  # stopped and started again by a fault: must stay ours
        self.wecom = WeComSink()
        mm_ports = {name: free_port() for name in INSTANCES}
        self.ports = Ports(
            prometheus={PROMETHEUS_AZ: free_port()},
            alertmanager={am: free_port() for am in ALERTMANAGERS},
            am_cluster={am: free_port() for am in ALERTMANAGERS},
            mm=mm_ports,
            exporter=0,
            smtp=self.mail.port,
        )
        self.instances: dict[str, Instance] = {}
        self.alertmanagers: dict[str, Process] = {}
        self.prometheus: Process | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.mail.start()
        self.wecom.start()
        self._write_configs()
        for instance in self.instances.values():
            instance.process.launch()
        for instance in self.instances.values():
            instance.process.wait_ready(60, instance.ready)
        for am in self.alertmanagers.values():
            am.launch()
        for am in self.alertmanagers.values():
            am.wait_ready(60)
        assert self.prometheus is not None
        self.prometheus.start(60)

    def stop(self) -> None:
        """Kill every process by its PID (a stopped one too), then the sinks."""
        for process in self.processes():
            try:
                process.kill()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {process.name}: {exc}", file=sys.stderr)
        self.wecom.stop()
        self.mail.stop()

    def processes(self) -> list[Process]:
        out: list[Process] = [i.process for i in self.instances.values()]
        out += list(self.alertmanagers.values())
        if self.prometheus is not None:
            out.append(self.prometheus)
        return out

    def _write_configs(self) -> None:
        w = self.workdir
        empty_rules = w / "no-test-rules.yml"
        empty_rules.write_text("groups: []\n")
        token = w / "monitor-manager.token"
        token.write_text(WEBHOOK_TOKEN + "\n")
        am_yml = w / "alertmanager.yml"
        am_yml.write_text(am_config(self.ports, token))
        env = {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",
        }
        for name in INSTANCES:
            home = w / name
            home.mkdir(parents=True, exist_ok=True)
            config = home / "mm.toml"
            config.write_text(
                mm_config(name, self.ports.mm, self.mail.port, self.wecom.fake.url, self.timers)
            )
            process = PipedProcess(
                name,
                [sys.executable, "-m", "monitor_manager", "serve", "--config", str(config)],
                home,
                f"http://127.0.0.1:{self.ports.mm[name]}/readyz",
                env=env,
            )
            self.instances[name] = Instance(name, self.ports.mm[name], process, home)
        for am in ALERTMANAGERS:
            port, cluster = self.ports.alertmanager[am], self.ports.am_cluster[am]
            peers = [
                f"--cluster.peer=127.0.0.1:{p}"
                for other, p in self.ports.am_cluster.items()
                if other != am
            ]
            (w / am).mkdir(exist_ok=True)
            self.alertmanagers[am] = Process(
                am,
                [
                    ALERTMANAGER_BIN,
                    f"--config.file={am_yml}",
                    f"--storage.path={w / am}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--web.external-url=http://127.0.0.1:{port}",
                    f"--cluster.listen-address=127.0.0.1:{cluster}",
                    *peers,
                    "--cluster.peer-timeout=1s",
                    "--cluster.gossip-interval=100ms",
                    "--cluster.settle-timeout=3s",
                    "--cluster.pushpull-interval=5s",
                    "--cluster.reconnect-interval=2s",
                    "--log.level=warn",
                ],
                w,
                f"http://127.0.0.1:{port}/-/ready",
            )
        port = self.ports.prometheus[PROMETHEUS_AZ]
        prom_yml = w / "prometheus.yml"
        prom_yml.write_text(prometheus_config(PROMETHEUS_AZ, self.ports, empty_rules))
        self.prometheus = Process(
            "prometheus",
            [
                PROMETHEUS_BIN,
                f"--config.file={prom_yml}",
                f"--storage.tsdb.path={w / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.external-url=http://127.0.0.1:{port}",
                "--rules.alert.resend-delay=1s",
                "--log.level=warn",
            ],
            w,
            f"http://127.0.0.1:{port}/-/ready",
        )

    # -- views -----------------------------------------------------------------------------------
    def am_url(self, am: str) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager[am]}"

    def heartbeats_ok(self) -> bool:
        """Every running instance has seen the heartbeat and holds it ok."""
        for instance in self.instances.values():
            try:
                with urllib.request.urlopen(f"{instance.url}/api/v1/watchdog", timeout=2) as r:
                    beats = json.loads(r.read())["heartbeats"]
            except OSError:
                return False
            if not beats or not all(b["last_seen"] and b["state"] == "ok" for b in beats):
                return False
        return True

    def logs_tail(self, chars: int = 2000) -> str:
        return "\n".join(p.logs()[-chars:] for p in self.processes())
