"""Prometheus metrics, all named `monitor_manager_*`, in a registry of their own.

Tests get a fresh registry each; label sets for every configured channel are created at zero so
that a rate() over them works from the first scrape.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

RESULTS = ("delivered", "failed", "retried")
PING_RESULTS = ("ok", "failed", "withheld")
RECORD_RESULTS = ("written", "failed")


# The ways a person acknowledges (converge.acks.VIAS less the automatic ones).
ACK_VIAS = ("api", "link", "wecom", "console")


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, channels: Iterable[str] = ()
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        r = registry
        self.alerts_received = Counter(
            "monitor_manager_alerts_received_total",
            "Alerts received in webhook payloads, by their status.",
            ["status"],
            registry=r,
        )
        self.alerts_duplicate = Counter(
            "monitor_manager_alerts_duplicate_total",
            "Received alerts whose state was already known (nothing changed).",
            registry=r,
        )
        self.alerts_rejected = Counter(
            "monitor_manager_alerts_rejected_total",
            "Received alerts dropped (internal_identity: claimed an internal alert's identity) "
            "or stored with their times clamped (future_time: dated beyond now plus a skew).",
            ["reason"],
            registry=r,
        )
        self.alerts_stale = Counter(
            "monitor_manager_alerts_stale_total",
            "Firing alerts closed as stale: no sender re-sent them for convergence.stale_after.",
            registry=r,
        )
        self.acks = Counter(
            "monitor_manager_acks_total",
            "Acknowledgements made on this instance, by how: " + ", ".join(ACK_VIAS) + ".",
            ["via"],
            registry=r,
        )
        self.silences_active = Gauge(
            "monitor_manager_silences_active", "Silences in effect now.", registry=r
        )
        self.escalations = Counter(
            "monitor_manager_escalation_steps_total",
            "Escalation steps taken (one per contact group told).",
            registry=r,
        )
        self.suppressed = Counter(
            "monitor_manager_notifications_suppressed_total",
            "Repeats and escalation steps not sent because the group was acknowledged.",
            registry=r,
        )
        self.webhook_requests = Counter(
            "monitor_manager_webhook_requests_total",
            "Webhook requests by HTTP response code and sender (alertmanager, grafana).",
            ["code", "source"],
            registry=r,
        )
        self.notifications = Counter(
            "monitor_manager_notifications_total",
            "Delivery attempts by channel and result (delivered, failed for good, retried).",
            ["channel", "result"],
            registry=r,
        )
        self.notifications_decided = Counter(
            "monitor_manager_notifications_decided_total",
            "Notifications decided (one per alert group change, digest or merge).",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "monitor_manager_outbox_pending", "Deliveries not yet delivered or failed.", registry=r
        )
        self.outbox_oldest = Gauge(
            "monitor_manager_outbox_oldest_pending_seconds",
            "Age of the oldest delivery not yet delivered or failed.",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "monitor_manager_delivery_latency_seconds",
            "Time from a notification's decision to its delivery, by channel.",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.store_commit_failures = Counter(
            "monitor_manager_store_commit_failures_total",
            "Store transactions that could not commit.",
            registry=r,
        )
        self.alert_groups_open = Gauge(
            "monitor_manager_alert_groups_open", "Alert groups with alerts in them.", registry=r
        )
        self.heartbeat_last_seen = Gauge(
            "monitor_manager_heartbeat_last_seen_timestamp_seconds",
            "When the heartbeat last arrived (Unix time; 0 never).",
            ["heartbeat"],
            registry=r,
        )
        self.heartbeat_missing = Gauge(
            "monitor_manager_heartbeat_missing",
            "1 while the heartbeat is missing.",
            ["heartbeat"],
            registry=r,
        )
        self.peer_up = Gauge(
            "monitor_manager_peer_up",
            "0 once peer_failures probes in a row failed.",
            ["peer"],
            registry=r,
        )
        self.peer_probe_duration = Gauge(
            "monitor_manager_peer_probe_duration_seconds",
            "Duration of the last probe of the peer's /healthz.",
            ["peer"],
            registry=r,
        )
        self.ha_position = Gauge(
            "monitor_manager_ha_position",
            "This instance's position among the reachable instances (0 sends first).",
            registry=r,
        )
        self.ha_suppressed = Counter(
            "monitor_manager_ha_suppressed_total",
            "Deliveries not sent because a peer had already sent the same content.",
            registry=r,
        )
        self.ha_rejected = Counter(
            "monitor_manager_ha_nflog_rejected_total",
            "Notification log entries from peers dropped: unknown instance, contact group or "
            "channel, or dated beyond now plus ha.max_clock_skew.",
            registry=r,
        )
        self.ha_pushes = Counter(
            "monitor_manager_ha_nflog_pushes_total",
            "Notification log pushes to peers, by peer and result.",
            ["peer", "result"],
            registry=r,
        )
        self.ha_pulls = Counter(
            "monitor_manager_ha_nflog_pulls_total",
            "Notification log pulls from peers, by peer and result.",
            ["peer", "result"],
            registry=r,
        )
        self.watchdog_pings = Counter(
            "monitor_manager_watchdog_pings_total",
            "GETs of watchdog.ping_url by result: ok (a 2xx answer), failed (an error, a timeout "
            "or another status), withheld (not sent: the service is not ready, so the outside "
            "monitor pages).",
            ["result"],
            registry=r,
        )
        # Alertmanager's names for the same facts, so existing dashboards and alert rules work.
        self.config_reload_ok = Gauge(
            "monitor_manager_config_last_reload_successful",
            "1 when the last config load (start-up or reload) succeeded, 0 when the last reload "
            "was refused and the service kept the previous config.",
            registry=r,
        )
        self.config_reload_at = Gauge(
            "monitor_manager_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully, at start-up or by a reload (Unix time).",
            registry=r,
        )
        self.record_payloads = Counter(
            "monitor_manager_record_payloads_total",
            "Accepted webhook payloads for the recording ([server] record) by result: written, "
            "or failed (a write error, or too much waiting for a slow disk; the webhook was "
            "accepted all the same).",
            ["result"],
            registry=r,
        )
        for status in ("firing", "resolved"):
            self.alerts_received.labels(status)
        for reason in ("internal_identity", "future_time"):
            self.alerts_rejected.labels(reason)
        for result in PING_RESULTS:
            self.watchdog_pings.labels(result)
        for via in ACK_VIAS:
            self.acks.labels(via)
        for result in RECORD_RESULTS:
            self.record_payloads.labels(result)
        self.add_channels(channels)

    def add_channels(self, channels: Iterable[str]) -> None:
        """Series at zero for these channels (at start, and for channels a reload adds)."""
        for channel in channels:
            for result in RESULTS:
                self.notifications.labels(channel, result)
            self.delivery_latency.labels(channel)
