"""The files under rules/: checked by the real promtool and amtool, and by their structure.

promtool (Debian package `prometheus`) and amtool (`prometheus-alertmanager`) are required:
a missing tool fails these tests rather than skipping them, so a machine without them
cannot report the rules as checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exported_metrics import TARGET_LABELS, exported_series, metric_names

RULES = Path(__file__).resolve().parent.parent / "rules"
DEADMANSSWITCH_RULES = RULES / "deadmansswitch.rules.yml"
MONITOR_MANAGER_RULES = RULES / "monitor-manager.rules.yml"
ALERTMANAGER_EXAMPLE = RULES / "alertmanager.example.yml"
PROMETHEUS_EXAMPLE = RULES / "prometheus.example.yml"
README = RULES / "README.md"

HEARTBEAT_RECEIVER = "monitor-manager-heartbeat"
NORMAL_RECEIVER = "monitor-manager"
WEBHOOK_PATH = "/webhook/alertmanager"
TOOL_TIMEOUT = 30.0


# ---------------------------------------------------------------------------- helpers


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"{tool} is not installed: install the Debian packages prometheus (promtool) and "
            f"prometheus-alertmanager (amtool) to check the files under rules/",
            pytrace=False,
        )
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(duration: str) -> float:
    """Prometheus/Alertmanager duration ("1m", "30s", "1h30m", "0s") in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def _heartbeat_cadence(group_interval: float, repeat_interval: float) -> float:
    """How often Alertmanager re-sends an unchanged group (its dispatcher flushes a group
    every group_interval).

    repeat_interval is only checked on group_interval ticks, against a send stamped just
    after the previous tick, so the first tick strictly later than repeat_interval sends.
    """
    return (repeat_interval // group_interval + 1) * group_interval


def _match(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not found in {text!r}"
    return found


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alertmanager() -> dict[str, Any]:
    config: dict[str, Any] = _load(ALERTMANAGER_EXAMPLE)
    return config


def _receiver(name: str) -> dict[str, Any]:
    receivers = {r["name"]: r for r in _alertmanager()["receivers"]}
    assert name in receivers, f"receiver {name!r} missing; have {sorted(receivers)}"
    return receivers[name]


def _heartbeat_route() -> dict[str, Any]:
    routes = _alertmanager()["route"].get("routes", [])
    assert routes, "the root route has no child routes"
    first: dict[str, Any] = routes[0]
    return first


def _matchers(route: dict[str, Any]) -> set[str]:
    """A route's equality matchers as 'name=value', whichever syntax the config uses."""
    found = {f"{k}={v}" for k, v in route.get("match", {}).items()}
    for matcher in route.get("matchers", []):
        name, op, value = _match(r"^\s*(\w+)\s*(=~|!=|!~|=)\s*(.*?)\s*$", matcher).groups()
        found.add(f"{name}{op}{value.strip(chr(34))}")
    return found


# ---------------------------------------------------------------------------- real tools


@pytest.mark.parametrize(
    "rule_file", [DEADMANSSWITCH_RULES, MONITOR_MANAGER_RULES], ids=lambda p: p.name
)
def test_rule_file_passes_promtool_check_rules(rule_file: Path) -> None:
    promtool = _require("promtool")
    _assert_ok(_run([promtool, "check", "rules", "--lint-fatal", str(rule_file)], cwd=RULES))


def test_prometheus_example_passes_promtool_check_config_from_any_directory(
    tmp_path: Path,
) -> None:
    # Run from elsewhere: rule_files must resolve against the config file's own directory.
    promtool = _require("promtool")
    result = _run([promtool, "check", "config", str(PROMETHEUS_EXAMPLE)], cwd=tmp_path)
    _assert_ok(result)
    assert "2 rule files found" in result.stdout


def test_alertmanager_example_passes_amtool_check_config(tmp_path: Path) -> None:
    # amtool 0.25 does not open credentials_file while checking, so the example is checked
    # as shipped, pointing at /etc/alertmanager/monitor-manager.token.
    amtool = _require("amtool")
    result = _run([amtool, "check-config", str(ALERTMANAGER_EXAMPLE)], cwd=tmp_path)
    _assert_ok(result)
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["alertname=DeadMansSwitch", "az=az1", "prometheus_replica=prometheus-az1"],
            HEARTBEAT_RECEIVER,
        ),
        (["alertname=DeadMansSwitch", "az=az2", "severity=none"], HEARTBEAT_RECEIVER),
        (["alertname=MonitorManagerDown", "severity=critical"], NORMAL_RECEIVER),
        (["alertname=HighLatency", "cluster=prod"], NORMAL_RECEIVER),
    ],
    ids=["heartbeat-az1", "heartbeat-az2", "own-alert", "ordinary-alert"],
)
def test_alertmanager_routes_an_alert_to_exactly_one_receiver(
    labels: list[str], receiver: str, tmp_path: Path
) -> None:
    amtool = _require("amtool")
    result = _run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_EXAMPLE}",
            f"--verify.receivers={receiver}",
            *labels,
        ],
        cwd=tmp_path,
    )
    _assert_ok(result)
    assert result.stdout.split() == [receiver]


@pytest.mark.parametrize("unit_test", ["deadmansswitch_test.yml", "monitor-manager_test.yml"])
def test_rule_unit_tests_pass_promtool_test_rules(unit_test: str) -> None:
    promtool = _require("promtool")
    result = _run([promtool, "test", "rules", unit_test], cwd=RULES / "tests")
    _assert_ok(result)
    assert "SUCCESS" in result.stdout


# ---------------------------------------------------------------------------- rule files


def test_deadmansswitch_always_fires_with_severity_none() -> None:
    (rule,) = _rules(DEADMANSSWITCH_RULES)
    assert rule["alert"] == "DeadMansSwitch"
    assert rule["expr"].strip() == "vector(1)"
    assert "for" not in rule
    assert rule["labels"] == {"severity": "none"}
    assert {"summary", "description"} <= set(rule["annotations"])


def test_every_monitor_manager_alert_has_a_severity_and_templated_annotations() -> None:
    rules = _rules(MONITOR_MANAGER_RULES)
    assert {rule["alert"] for rule in rules} == {
        "MonitorManagerDown",
        "MonitorManagerOutboxBacklog",
        "MonitorManagerOutboxStale",
        "MonitorManagerDeliveryFailures",
        "MonitorManagerWebhookErrors",
        "MonitorManagerConfigReloadFailed",
        "MonitorManagerCertificateExpiresSoon",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description"} <= set(annotations), rule["alert"]
        assert "$labels.instance" in annotations["description"], rule["alert"]


def test_monitor_manager_rules_use_only_its_own_metrics_and_up() -> None:
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules(MONITOR_MANAGER_RULES)))
    assert "up" in used
    strangers = {name for name in used if name != "up" and not name.startswith("monitor_manager_")}
    assert not strangers, f"metrics outside the contract: {sorted(strangers)}"


def test_every_metric_the_rules_use_is_listed_in_the_contract_comment() -> None:
    text = MONITOR_MANAGER_RULES.read_text(encoding="utf-8")
    header = text[: text.index("groups:")]
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules(MONITOR_MANAGER_RULES)))
    missing = {name for name in used if not re.search(rf"^#\s+{name}\{{", header, re.M)}
    assert not missing, f"metrics used but not listed at the top of the file: {sorted(missing)}"


def test_monitor_manager_rules_use_metrics_and_labels_the_service_exports() -> None:
    # The metric contract above is only as good as the code behind it: every name used is
    # exported by monitor_manager/metrics.py, and every {{ $labels.X }} an annotation prints is
    # a label the expression's result carries (an aggregation keeps only its `by` labels).
    exported = exported_series()
    for rule in _rules(MONITOR_MANAGER_RULES):
        used = metric_names(rule["expr"]) - {"up"}
        unknown = used - set(exported)
        assert not unknown, f"{rule['alert']}: not exported by the service: {sorted(unknown)}"
        available = TARGET_LABELS.union(*(exported[name] for name in used))
        by = re.search(r"\bby\s*\(([^)]*)\)", rule["expr"])
        if by:
            available &= {label.strip() for label in by.group(1).split(",")}
        text = " ".join(rule["annotations"].values())
        printed = set(re.findall(r"\$labels\.(\w+)", text))
        assert printed <= available, (
            f"{rule['alert']}: annotations print labels its result lacks: "
            f"{sorted(printed - available)} (has {sorted(available)})"
        )


def test_metric_name_extraction_ignores_functions_labels_and_keywords() -> None:
    expr = 'sum by (job, instance) (rate(foo_total{code=~"5..", x="up"}[5m])) > 0 and on() bar'
    assert metric_names(expr) == {"foo_total", "bar"}


# ---------------------------------------------------------------------------- Alertmanager


def test_heartbeat_route_comes_first_and_matches_only_deadmansswitch() -> None:
    route = _heartbeat_route()
    assert _matchers(route) == {"alertname=DeadMansSwitch"}
    assert route["receiver"] == HEARTBEAT_RECEIVER
    assert route.get("continue", False) is False


def test_heartbeat_route_groups_each_source_alone_and_repeats_every_minute() -> None:
    route = _heartbeat_route()
    assert route["group_by"] == ["..."]
    assert _seconds(route["group_wait"]) == 0
    assert _seconds(route["repeat_interval"]) <= 60
    assert _seconds(route["group_interval"]) <= 60


def test_root_route_sends_everything_else_to_monitor_manager_with_normal_timings() -> None:
    root = _alertmanager()["route"]
    assert root["receiver"] == NORMAL_RECEIVER
    assert root["group_by"] == ["alertname", "cluster"]
    assert [_seconds(root[k]) for k in ("group_wait", "group_interval", "repeat_interval")] == [
        30,
        300,
        4 * 3600,
    ]


def test_heartbeat_receiver_never_sends_resolved_and_the_normal_one_always_does() -> None:
    heartbeat = _receiver(HEARTBEAT_RECEIVER)["webhook_configs"]
    normal = _receiver(NORMAL_RECEIVER)["webhook_configs"]
    assert [c["send_resolved"] for c in heartbeat] == [False] * len(heartbeat)
    assert [c["send_resolved"] for c in normal] == [True] * len(normal)


def test_every_receiver_sends_to_every_monitor_manager_instance() -> None:
    receivers = _alertmanager()["receivers"]
    url_sets = {r["name"]: {c["url"] for c in r["webhook_configs"]} for r in receivers}
    expected = url_sets[NORMAL_RECEIVER]
    assert len(expected) >= 2, "one Monitor Manager per AZ: at least two URLs"
    assert all(url.endswith(WEBHOOK_PATH) for url in expected), expected
    for name, urls in url_sets.items():
        assert urls == expected, f"receiver {name} differs: {sorted(urls ^ expected)}"
    for receiver in receivers:
        assert len(receiver["webhook_configs"]) == len(expected), receiver["name"]


def test_every_webhook_authenticates_with_a_bearer_token_file() -> None:
    for receiver in _alertmanager()["receivers"]:
        for webhook in receiver["webhook_configs"]:
            authorization = webhook["http_config"]["authorization"]
            assert authorization.get("type", "Bearer") == "Bearer"
            assert authorization["credentials_file"] == "/etc/alertmanager/monitor-manager.token"


def test_recommended_heartbeat_timeout_allows_three_missed_heartbeats() -> None:
    route = _heartbeat_route()
    cadence = _heartbeat_cadence(
        _seconds(route["group_interval"]), _seconds(route["repeat_interval"])
    )
    timeouts = re.findall(r'timeout = "(\w+)"', README.read_text(encoding="utf-8"))
    assert timeouts, "README recommends no [[watchdog.heartbeats]] timeout"
    for timeout in timeouts:
        assert _seconds(timeout) >= 3 * cadence, f"{timeout} < 3 x {cadence}s cadence"


def test_heartbeat_cadence_follows_alertmanager_timer_rules() -> None:
    assert _heartbeat_cadence(60, 60) == 120  # exact multiple: one tick later
    assert _heartbeat_cadence(300, 300) == 600  # alertmanager#676
    assert _heartbeat_cadence(900, 1200) == 1800  # alertmanager#2647
    assert _heartbeat_cadence(3, 9) == 12  # observed on 0.25
    assert _heartbeat_cadence(60, 30) == 60  # repeat below group_interval


# ---------------------------------------------------------------------------- Prometheus


def test_prometheus_example_labels_its_source_and_loads_both_rule_files() -> None:
    config = _load(PROMETHEUS_EXAMPLE)
    assert {"az", "prometheus_replica"} <= set(config["global"]["external_labels"])
    assert {RULES / f for f in config["rule_files"]} == {
        DEADMANSSWITCH_RULES,
        MONITOR_MANAGER_RULES,
    }


def test_prometheus_example_sends_to_every_alertmanager() -> None:
    (alertmanagers,) = _load(PROMETHEUS_EXAMPLE)["alerting"]["alertmanagers"]
    targets = [t for sc in alertmanagers["static_configs"] for t in sc["targets"]]
    assert len(set(targets)) >= 2


def test_prometheus_example_scrapes_every_instance_under_the_job_the_rules_expect() -> None:
    jobs = {job["job_name"]: job for job in _load(PROMETHEUS_EXAMPLE)["scrape_configs"]}
    (down,) = [r for r in _rules(MONITOR_MANAGER_RULES) if r["alert"] == "MonitorManagerDown"]
    job_name = _match(r'job="([^"]+)"', down["expr"]).group(1)
    assert job_name in jobs
    job = jobs[job_name]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    webhook_hosts = {
        _match(r"^https?://([^/]+)", c["url"]).group(1)
        for c in _receiver(NORMAL_RECEIVER)["webhook_configs"]
    }
    assert targets == webhook_hosts
