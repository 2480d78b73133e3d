"""deploy/grafana-dashboard.json: every query returns data from a real Prometheus scraping
real instances.

The end-to-end test starts two peered instances (so the peer and HA panels have something to
show) and a real Prometheus scraping both every second on loopback, with
rules/monitor-manager.rules.yml loaded. It posts alerts to both, as every Alertmanager does,
with a heartbeat among them; a console channel delivers (one instance sends, the other sees
its peer's push and suppresses). After two scrapes it evaluates every panel's query through
Prometheus's HTTP API, Grafana's variables substituted, and fails naming each query that
returned nothing. The other tests here are fast checks of the JSON against the code.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_processes import Process
from e2e_stack import PROMETHEUS_BIN, free_port, get_json, wait_until

from builders import alert_json, payload
from exported_metrics import exported_series, metric_names
from processes import ServeProcess, http

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
RULES = REPO / "rules" / "monitor-manager.rules.yml"

# Metrics the dashboard shows that the service does not export yet (a panel may come before
# the feature that feeds it). Once exported, remove them from this set:
# test_dashboard_uses_only_metrics_the_service_exports fails as a reminder.
NOT_YET_EXPORTED: set[str] = set()

JOB = "monitor-manager"  # the scrape job of rules/prometheus.example.yml
SCRAPE_INTERVAL = 1.0
HA_TOKEN = "e2e-dashboard-ha-token"
NAMES = ("mm-a", "mm-b")
QUERY_DEADLINE = 15.0  # seconds to let late series appear before the queries fail

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "%(me)s"
[storage]
path = "%(me)s.db"
[convergence]
group_by = ["alertname"]
group_wait = "500ms"
group_interval = "1s"
[channels.console]
type = "console"
[[contact_groups]]
name = "ops"
channels = ["console"]
[routing]
default_groups = ["ops"]
[watchdog]
groups = ["ops"]
peer_interval = "500ms"
peer_timeout = "500ms"
peer_failures = 6
[[watchdog.heartbeats]]
name = "prometheus-e2e"
match = { alertname = "DeadMansSwitch" }
timeout = "1m"
resend_interval = "20s"
[ha]
peer_wait = "1s"
token = "%(token)s"
[[peers]]
name = "%(peer)s"
url = "http://127.0.0.1:%(peer_port)d"
"""


# ---------------------------------------------------------------------------- the JSON


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels() -> list[dict[str, Any]]:
    out = []
    for panel in _dashboard()["panels"]:
        out.append(panel)
        out += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return [p for p in out if p["type"] != "row"]


def _targets() -> list[tuple[str, str]]:
    """(panel title and refId, expr) of every query."""
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in _panels() for t in p["targets"]]


def _variable_queries() -> dict[str, str]:
    out = {}
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out[variable["name"]] = query["query"] if isinstance(query, dict) else query
    return out


def _label_values(query: str) -> tuple[str, str]:
    """label_values(SELECTOR, LABEL) -> (SELECTOR, LABEL)."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    assert match, f"not a label_values() query: {query}"
    return match.group(1), match.group(2)


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "monitor-manager" and dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_uses_only_metrics_the_service_exports() -> None:
    queries = [expr for _, expr in _targets()]
    queries += [_label_values(q)[0] for q in _variable_queries().values()]
    used = set().union(*(metric_names(q) for q in queries))
    unknown = used - set(exported_series()) - {"up"}
    now_exported = NOT_YET_EXPORTED - unknown
    assert not now_exported, (
        f"the service exports {sorted(now_exported)} now: remove them from NOT_YET_EXPORTED"
    )
    assert unknown == NOT_YET_EXPORTED, (
        f"the dashboard queries metrics the service does not export: "
        f"{sorted(unknown - NOT_YET_EXPORTED)}"
    )


def test_dashboard_shows_every_metric_of_the_service() -> None:
    # A new monitor_manager_* metric gets a panel (a histogram through its _bucket series).
    used = set().union(*(metric_names(expr) for _, expr in _targets()))
    families = {
        name
        for name in exported_series()
        if name.startswith("monitor_manager_") and not name.endswith(("_created", "_sum", "_count"))
    }
    assert not families - used, f"no panel shows {sorted(families - used)}"


# ---------------------------------------------------------------------------- end to end


def _substitute(expr: str, instances: list[str]) -> str:
    """What Grafana sends for our variables: $__rate_interval is at least four scrape
    intervals (1m is what a 15s scrape interval gives), a multi-value $instance a regex of the
    values escaped, its backslashes doubled inside the PromQL string, as Grafana does."""
    values = {
        "__rate_interval": "1m",
        "__interval": "15s",
        "__range": "5m",
        "job": JOB,
        "instance": "|".join(re.escape(i).replace("\\", "\\\\") for i in instances),
    }
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = get_json(url, timeout=5)
    except urllib.error.HTTPError as exc:  # 400 or 422: Prometheus says what is wrong
        raise AssertionError(f"Prometheus refused {expr}: {exc.read().decode()}") from exc
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (a NaN-only panel shows no data either)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


def _prometheus_config(targets: list[str]) -> str:
    return yaml.safe_dump(
        {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL:g}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL:g}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL:g}s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": targets}],
                }
            ],
        },
        sort_keys=False,
    )


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[str, list[ServeProcess]]]:
    """Two peered instances and a Prometheus scraping them; yields (Prometheus URL, instances)."""
    if shutil.which(PROMETHEUS_BIN) is None:
        pytest.fail(
            f"{PROMETHEUS_BIN} is missing: install the Debian package prometheus "
            "(scripts/test.sh does)",
            pytrace=False,
        )
    ports = {name: free_port() for name in NAMES}
    instances = []
    for me, peer in (NAMES, NAMES[::-1]):
        text = CONFIG % {"me": me, "token": HA_TOKEN, "peer": peer, "peer_port": ports[peer]}
        instances.append(ServeProcess(tmp_path, text, name=me, port=ports[me]))
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(_prometheus_config([f"127.0.0.1:{p}" for p in ports.values()]))
    prometheus = Process(
        "prometheus",
        [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path,
        f"http://127.0.0.1:{port}/-/ready",
    )
    try:
        for instance in instances:
            instance.launch()
        for instance in instances:
            instance.wait_healthy()
        prometheus.start(30)
        yield f"http://127.0.0.1:{port}", instances
    finally:
        prometheus.kill()
        for instance in instances:
            instance.stop()


def _settled(instance: ServeProcess) -> bool:
    """Something was delivered (or suppressed as a peer's) and nothing waits in the outbox."""

    def count(state: str) -> int:
        status, body = http("GET", f"{instance.url}/api/v1/notifications?state={state}")
        assert status == 200, body
        return len(body["notifications"])

    return count("delivered") >= 3 and not any(count(s) for s in ("pending", "sending", "retrying"))


def _scraped_since(prometheus: str, since: float, targets: int) -> bool:
    active = get_json(f"{prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
    stamps = [dt_seconds(t["lastScrape"]) for t in active if t["health"] == "up"]
    # A last scrape more than one interval after `since`: the one before it was after, too.
    return len(stamps) == targets and min(stamps) > since + SCRAPE_INTERVAL * 1.5


def dt_seconds(rfc3339: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, Z or an offset) as Unix seconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()


@pytest.mark.e2e
@pytest.mark.slow
def test_every_dashboard_query_returns_data_from_a_scraped_instance(
    scraped: tuple[str, list[ServeProcess]],
) -> None:
    started = time.monotonic()
    prometheus, instances = scraped
    # Counters must have a sample from before the traffic, or rate() sees no increase.
    wait_until(
        "Prometheus scraped both instances once",
        lambda: _scraped_since(prometheus, 0.0, len(instances)),
        15,
    )
    now = time.time()
    alerts = [
        alert_json(name, starts=now - 60, cluster="e2e", severity="warning")
        for name in ("DiskFull", "HighLatency", "QueueStuck")
    ]
    heartbeat = alert_json("DeadMansSwitch", starts=now - 60, severity="none")
    for instance in instances:  # as every Alertmanager sends to every instance
        for body in (payload(*alerts, heartbeat), payload(*alerts)):  # the second: duplicates
            status, answer = http("POST", f"{instance.url}/webhook/alertmanager", body)
            assert status == 200, answer
    for instance in instances:
        instance.wait_for(
            lambda i=instance: _settled(i), timeout=20, what=f"{instance.name}: deliveries settled"
        )
    settled_at = time.time()
    wait_until(
        "two scrapes of both instances after the traffic",
        lambda: _scraped_since(prometheus, settled_at, len(instances)),
        15,
        lambda: "\n".join(i.logs() for i in instances),
    )

    addresses = [f"127.0.0.1:{i.port}" for i in instances]
    queries = {
        title: _substitute(expr, addresses)
        for title, expr in _targets()
        if not metric_names(expr) & NOT_YET_EXPORTED
    }
    for name, query in _variable_queries().items():
        selector, label = _label_values(query)
        queries[f"variable ${name}"] = f"count by ({label}) ({_substitute(selector, addresses)})"
    skipped = len(_targets()) + len(_variable_queries()) - len(queries)
    assert skipped == sum(1 for _, e in _targets() if metric_names(e) & NOT_YET_EXPORTED)

    deadline, rounds = time.monotonic() + QUERY_DEADLINE, 0
    while True:
        rounds += 1
        empty = {
            title: expr
            for title, expr in queries.items()
            if not _has_data(_query(prometheus, expr))
        }
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(SCRAPE_INTERVAL)
    report = "\n".join(f"  {title}: {expr}" for title, expr in empty.items())
    print(
        f"{len(queries)} queries evaluated in {rounds} round(s) ({skipped} skipped as "
        f"NOT_YET_EXPORTED), {time.monotonic() - started:.1f}s after the stack was up"
    )
    assert not empty, (
        f"{len(empty)} of {len(queries)} dashboard queries returned no data:\n{report}"
    )

    # The alert rules load and evaluate on these metrics, and every metric they use exists.
    rules = [
        rule
        for group in get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        for rule in group["rules"]
    ]
    assert rules and all(r["health"] == "ok" for r in rules), rules
    rule_metrics = set().union(*(metric_names(r["query"]) for r in rules)) - {"up"}
    missing = {m for m in rule_metrics if not _query(prometheus, f'count({{__name__="{m}"}})')}
    assert not missing, f"rules/monitor-manager.rules.yml uses metrics not scraped: {missing}"
