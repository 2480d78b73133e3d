"""Configs for the end-to-end stack, made from the examples users copy (rules/*.example.yml)
with only addresses and timers changed, so that the suite tests what we ship.

Timers (see rules/README.md and the Alertmanager reference §2.5):
- Prometheus evaluates and scrapes every second and re-sends every second
  (`--rules.alert.resend-delay=1s`): a firing alert's endsAt is 4 s ahead, so Alertmanager
  notices a dead Prometheus 4 s after its last send.
- Heartbeat route: group_wait 0s, group_interval 1s, repeat_interval 2s: an unchanged
  DeadMansSwitch arrives every (floor(2/1) + 1) × 1s = 3 s.
- While a webhook receiver is down, Alertmanager retries it until the flush deadline,
  max(group_interval, 10s) + position × peer_timeout, and the group's next flush waits for that:
  the heartbeat reaches the surviving instance only every ~11 s then. The heartbeat timeout is
  therefore 15 s (about five normal cadences), not the usual three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

RULES = Path(__file__).resolve().parents[2] / "rules"
PROMETHEUS_EXAMPLE = RULES / "prometheus.example.yml"
ALERTMANAGER_EXAMPLE = RULES / "alertmanager.example.yml"

HEARTBEAT_RECEIVER = "monitor-manager-heartbeat"
TEST_ALERT = "E2ETestAlert"
TEST_METRIC = "e2e_test_condition"
HEARTBEAT_CADENCE = 3.0  # seconds, from the heartbeat route below
HEARTBEAT_TIMEOUT = 15.0
PROMETHEUS_RESEND = 1.0  # --rules.alert.resend-delay and evaluation_interval
ENDS_AT_AHEAD = 4 * PROMETHEUS_RESEND  # how long Alertmanager keeps an alert of a dead source
AM_PEER_TIMEOUT = 1.0
MM_PEER_WAIT = 3.0  # longer than a fire-then-resolve cycle, see test 2b
MM_GROUP_WAIT = 1.0
MM_GROUP_INTERVAL = 1.0
MM_RETRY_MAX = 2.0  # [delivery] retry_max: a failed send is retried at least this often

WEBHOOK_TOKEN = "e2e-webhook-token-5b0d"
HA_TOKEN = "e2e-ha-token-91c2"

# Our test rule: fires while the exporter's gauge is above 0, for az1's Prometheus only (only
# it scrapes the exporter, as a per-AZ Prometheus scrapes only its own AZ). team=db routes it
# to contact group dba as well as to sre.
TEST_RULES = {
    "groups": [
        {
            "name": "e2e",
            "rules": [
                {
                    "alert": TEST_ALERT,
                    "expr": f"{TEST_METRIC} > 0",
                    "labels": {"severity": "critical", "team": "db"},
                    "annotations": {
                        "summary": "The end-to-end test condition is set",
                        "description": "Set and cleared by the test through its exporter.",
                    },
                }
            ],
        }
    ],
}


@dataclass(frozen=True)
class Ports:
    prometheus: dict[str, int]  # az -> web port
    alertmanager: dict[str, int]  # az -> web port
    am_cluster: dict[str, int]  # az -> cluster (gossip) port
    mm: dict[str, int]  # instance name -> port
    exporter: int
    smtp: int


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def prometheus_config(az: str, ports: Ports, test_rules: Path) -> str:
    """rules/prometheus.example.yml for Prometheus `az`, on loopback, with 1 s timers."""
    cfg = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    labels = cfg["global"]["external_labels"]
    assert set(labels) == {"az", "prometheus_replica"}, labels
    labels.update(az=az, prometheus_replica=f"prometheus-{az}")
    cfg["rule_files"] = [str(RULES / name) for name in cfg["rule_files"]] + [str(test_rules)]
    (alerting,) = cfg["alerting"]["alertmanagers"]
    (static,) = alerting["static_configs"]
    static["targets"] = [f"127.0.0.1:{port}" for port in ports.alertmanager.values()]
    (mm_job,) = [job for job in cfg["scrape_configs"] if job["job_name"] == "monitor-manager"]
    (mm_static,) = mm_job["static_configs"]
    mm_static["targets"] = [f"127.0.0.1:{port}" for port in ports.mm.values()]
    if az == "az1":
        cfg["scrape_configs"].append(
            {
                "job_name": "e2e-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{ports.exporter}"]}],
            }
        )
    return _dump(cfg)


def alertmanager_config(ports: Ports, token_file: Path) -> str:
    """rules/alertmanager.example.yml pointing at our instances, with second-scale timers."""
    cfg = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    route = cfg["route"]
    # Ordinary alerts: batched briefly; Monitor Manager does its own grouping and repeating.
    route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    heartbeat = route["routes"][0]
    assert heartbeat["receiver"] == HEARTBEAT_RECEIVER, heartbeat
    heartbeat.update(group_wait="0s", group_interval="1s", repeat_interval="2s")
    for receiver in cfg["receivers"]:
        for webhook in receiver["webhook_configs"]:
            # mm-az1.example.com -> our instance mm-az1
            instance = (urlsplit(webhook["url"]).hostname or "").split(".")[0]
            assert instance in ports.mm, (instance, webhook["url"])
            webhook["url"] = f"http://127.0.0.1:{ports.mm[instance]}/webhook/alertmanager"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            # These instances serve plain http; Alertmanager would refuse to start on the
            # example's CA file, absent here (tests/test_tls.py delivers over https).
            webhook["http_config"].pop("tls_config")
    return _dump(cfg)


def mm_config(
    instance: str, ports: Ports, wecom_api_url: str, corp_id: str, secret: str, agent_id: int
) -> str:
    """One Monitor Manager instance: both heartbeats, its peer, mail and WeCom, two groups."""
    peers = "".join(
        f'[[peers]]\nname = "{name}"\nurl = "http://127.0.0.1:{port}"\n'
        for name, port in ports.mm.items()
        if name != instance
    )
    heartbeats = "".join(
        f'[[watchdog.heartbeats]]\nname = "prometheus-{az}"\n'
        f'match = {{ alertname = "DeadMansSwitch", az = "{az}" }}\n'
        f'timeout = "{HEARTBEAT_TIMEOUT:g}s"\nresend_interval = "{HEARTBEAT_CADENCE:g}s"\n'
        for az in ports.prometheus
    )
    return f"""
[server]
listen = "127.0.0.1:{ports.mm[instance]}"
instance = "{instance}"
webhook_token = "{WEBHOOK_TOKEN}"

[storage]
path = "{instance}.db"

[convergence]
group_by = ["alertname", "cluster"]
group_wait = "{MM_GROUP_WAIT:g}s"
group_interval = "{MM_GROUP_INTERVAL:g}s"
repeat_interval = "1h"

[delivery]
retry_initial = "500ms"
retry_max = "{MM_RETRY_MAX:g}s"

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {ports.smtp}
tls = "none"
from = "Monitor Manager <alerts@example.com>"
timeout = "3s"

[channels.wecom]
type = "wechat"
api_url = "{wecom_api_url}"
corp_id = "{corp_id}"
agent_id = {agent_id}
secret = "{secret}"
timeout = "3s"

[[contact_groups]]
name = "sre"
channels = ["mail", "wecom"]
members = [
  {{ name = "Zhang San", email = "zhangsan@example.com", wechat = "zhangsan" }},
  {{ name = "Li Si", email = "lisi@example.com", wechat = "lisi" }},
]

[[contact_groups]]
name = "dba"
channels = ["mail", "wecom"]
members = [{{ name = "Wang Wu", email = "wangwu@example.com", wechat = "wangwu" }}]

[routing]
default_groups = ["sre"]

[[routes]]
match = {{ team = "db" }}
groups = ["dba"]
continue = true

[[routes]]
match_re = {{ severity = "critical|page" }}
groups = ["sre"]

[watchdog]
groups = ["sre"]
peer_interval = "500ms"
peer_timeout = "500ms"
peer_failures = 4

{heartbeats}
{peers}
[ha]
peer_wait = "{MM_PEER_WAIT:g}s"
token = "{HA_TOKEN}"
"""


# Who is who in the sinks.
GROUP_EMAILS = {
    "sre": frozenset({"zhangsan@example.com", "lisi@example.com"}),
    "dba": frozenset({"wangwu@example.com"}),
}
GROUP_WECHAT = {
    "sre": frozenset({"zhangsan", "lisi"}),
    "dba": frozenset({"wangwu"}),
}
