"""What the service's /metrics exports, read from the code, and the metric names a PromQL
expression selects. Shared by the checks of rules/ and of deploy/grafana-dashboard.json."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from monitor_manager.metrics import Metrics

TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported_series() -> dict[str, set[str]]:
    """Every series name a service's registry exports, with its label names: the
    monitor_manager_* metrics (also labelled ones that have no series yet) and the
    process_*/python_* ones prometheus-client's collectors add."""
    metrics = Metrics()
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            for suffix in _SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                out.setdefault(family.name + suffix, set()).update(set(metric._labelnames) | extra)
    return out


_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (enough PromQL for our rules and dashboard)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", expr)  # numbers (1e3 is no name)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in _PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names
