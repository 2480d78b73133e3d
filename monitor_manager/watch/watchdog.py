"""Watching the watchers: heartbeats, channel failures, and the internal alerts they raise.

Internal alerts take the same road as Alertmanager's (dedup, alert groups, storm control, the
outbox, the channels, the templates); they only skip routing (they go to `watchdog.groups`)
and group_wait. Their labels name the thing that is broken and nothing about this instance,
so that instances in several AZs raise the *same* alert and HA can send it once.

Heartbeats: a firing alert matching `[[watchdog.heartbeats]].match` records "seen" (never a
notification of its own); `due_at = last_seen + timeout` is a stored column checked every
second, so a restart neither forgets a missing heartbeat nor pages for one seen just before.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from monitor_manager.clock import format_time, iso
from monitor_manager.config import Config, HeartbeatConfig
from monitor_manager.durations import format_duration
from monitor_manager.ingest.payload import INTERNAL_SOURCE, IncomingAlert
from monitor_manager.metrics import Metrics
from monitor_manager.store import Op

SOURCE_LABEL = INTERNAL_SOURCE
MAX_SOURCES = 64  # Alertmanagers remembered by externalURL (for the silent hop)
# The check runs every second: a longer gap means this instance itself did not run (stopped,
# suspended, starved), and heard nothing meanwhile, like an instance that was down.
PAUSED_AFTER = 10.0


def failing_channel(labels: dict[str, str]) -> str | None:
    """The channel an internal alert (ChannelFailing, DeliveryFailed) is about, if any: its
    page must go through the contact group's other channels."""
    if labels.get(SOURCE_LABEL[0]) == SOURCE_LABEL[1]:
        return labels.get("channel")
    return None


TEXTS = {
    "en": {
        "hb_summary": "Heartbeat {name} missing for {age}",
        "hop_never": "never seen since start-up",
        "hop_prometheus": "the Prometheus side is broken",
        "hop_alertmanager": "Alertmanager or the network is broken",
        "hb_never": "No heartbeat matching {match} has arrived since Monitor Manager started "
        "at {start}. Check that the DeadMansSwitch rule is loaded and that "
        "Alertmanager routes it to this webhook.",
        "hb_prometheus": "The last heartbeat came at {seen} through Alertmanager {via}, which "
        "still delivered other alerts at {other}: the Prometheus side is "
        "broken (rule evaluation, or Prometheus cannot reach Alertmanager).",
        "hb_alertmanager": "The last heartbeat came at {seen} through Alertmanager {via}, which "
        "has delivered nothing since: Alertmanager itself or the network "
        "between it and Monitor Manager is broken.",
        "hb_resolved": "Heartbeat {name} arrives again.",
        "unwatched_heartbeat": "Heartbeat {name} is no longer configured, so it is no longer "
        "watched: this alert is closed, not recovered.",
        "unwatched_peer": "Peer {name} is no longer configured, so it is no longer probed: "
        "this alert is closed, not recovered.",
        "failed_summary": "Deliveries through channel {channel} are failing for good",
        "failed_description": "A notification could not be delivered through {channel}: {error}",
        "failing_summary": "Channel {channel} has failed for {age}",
        "failing_description": "Every delivery through {channel} has failed since {since}; "
        "the last error: {error}",
        "store_summary": "Monitor Manager cannot write its store",
        "store_description": "The store has refused writes since {since}: {error}. Webhooks "
        "are answered 503 (Alertmanager retries).",
        "peer_summary": "Monitor Manager peer {peer} is down",
        "peering_summary": "High availability is off: ha.token is not set",
        "peering_description": "Peers are configured but ha.token is empty, so this instance "
        "neither tells nor asks its peers what was sent: it sends every "
        "page alone, and the peers may send the same pages too. Set the "
        "same ha.token on every instance.",
        "peer_description": "{failures} consecutive probes of {url}/healthz failed; "
        "the last error: {error}",
        "skew_summary": "The clock of peer {peer} is {offset} off this instance's",
        "skew_description": "Peer {peer} reports a time {offset} {direction} this instance's, "
        "more than ha.max_clock_skew ({limit}). Acknowledgements and silences changed on "
        "both sides are settled by their times (the newer wins): with clocks this far apart "
        "the older change may win. Synchronise the clocks (NTP/chrony).",
        "skew_ahead": "ahead of",
        "skew_behind": "behind",
    },
    "zh": {
        "hb_summary": "心跳 {name} 已中断 {age}",
        "hop_never": "启动以来从未收到",
        "hop_prometheus": "Prometheus 一侧故障",
        "hop_alertmanager": "Alertmanager 或网络故障",
        "hb_never": "自 Monitor Manager 于 {start} 启动以来，没有收到匹配 {match} 的心跳。"
        "请检查 DeadMansSwitch 规则是否加载，"
        "以及 Alertmanager 是否把它路由到本 webhook。",
        "hb_prometheus": "最后一次心跳于 {seen} 经 Alertmanager {via} 到达，该 Alertmanager "
        "在 {other} 仍在投递其他告警：Prometheus 一侧故障（规则评估，或 "
        "Prometheus 无法连接 Alertmanager）。",
        "hb_alertmanager": "最后一次心跳于 {seen} 经 Alertmanager {via} 到达，此后该 "
        "Alertmanager 再无任何投递：Alertmanager 本身或它到 Monitor Manager "
        "的网络故障。",
        "hb_resolved": "心跳 {name} 已恢复。",
        "unwatched_heartbeat": "心跳 {name} 已不在配置中，不再监视：此告警就此关闭，并非已恢复。",
        "unwatched_peer": "对端 {name} 已不在配置中，不再探测：此告警就此关闭，并非已恢复。",
        "failed_summary": "通道 {channel} 投递彻底失败",
        "failed_description": "一条通知无法通过 {channel} 投递：{error}",
        "failing_summary": "通道 {channel} 已连续失败 {age}",
        "failing_description": "自 {since} 起通过 {channel} 的投递全部失败；最后的错误：{error}",
        "store_summary": "Monitor Manager 无法写入存储",
        "store_description": "自 {since} 起存储拒绝写入：{error}。"
        "Webhook 返回 503（Alertmanager 会重试）。",
        "peer_summary": "Monitor Manager 对端 {peer} 宕机",
        "peering_summary": "高可用已关闭：未设置 ha.token",
        "peering_description": "已配置对端，但 ha.token 为空：本实例既不告诉对端、也不询问对端"
        "已发送了什么，会独自发送每条告警，对端也可能重复发送。"
        "请在每个实例上设置相同的 ha.token。",
        "peer_description": "连续 {failures} 次探测 {url}/healthz 失败；最后的错误：{error}",
        "skew_summary": "对端 {peer} 的时钟与本实例相差 {offset}",
        "skew_description": "对端 {peer} 报告的时间{direction}本实例 {offset}，超过 "
        "ha.max_clock_skew（{limit}）。两边修改的确认和静默按时间裁决（较新的生效），"
        "时钟相差这么多时，较旧的修改可能胜出。请同步时钟（NTP/chrony）。",
        "skew_ahead": "快于",
        "skew_behind": "慢于",
    },
}


def is_heartbeat(beat: HeartbeatConfig, labels: Mapping[str, str]) -> bool:
    """True when an alert with these labels is this heartbeat: every `match` label equal."""
    return all(labels.get(k) == v for k, v in beat.match.items())


def internal_alert(
    alertname: str,
    status: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    starts_at: float,
    ends_at: float | None = None,
) -> IncomingAlert:
    return IncomingAlert(
        status=status,
        labels=internal_labels(alertname, labels),
        annotations={"summary": summary, "description": description},
        starts_at=starts_at,
        ends_at=ends_at if status == "resolved" else None,
        generator_url="",
    )


@dataclass
class Heartbeat:
    config: HeartbeatConfig
    due_at: float
    last_seen: float | None = None
    via: str = ""
    state: str = "ok"  # "ok" | "missing"
    missing_since: float | None = None
    changed: bool = True  # not yet persisted

    def matches(self, labels: dict[str, str]) -> bool:
        return is_heartbeat(self.config, labels)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.config.name,
            "match": self.config.match,
            "timeout": format_duration(self.config.timeout),
            "last_seen": iso(self.last_seen),
            "via": self.via,
            "due_at": iso(self.due_at),
            "state": self.state,
            "missing_since": iso(self.missing_since),
        }


@dataclass
class ChannelHealth:
    failing_since: float | None = None
    last_error: str = ""
    failed_for_good: str = ""  # the error of the last delivery that failed for good


class Watchdog:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        is_firing: Callable[[dict[str, str]], bool],
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.is_firing = is_firing
        self.texts = TEXTS[config.templates.language]
        self.zone = config.templates.zone  # the messages' zone: these texts are messages too
        self.started_at = clock()
        self.heartbeats = [
            Heartbeat(h, self.started_at + h.timeout) for h in config.watchdog.heartbeats
        ]
        self.sources: dict[str, float] = {}  # Alertmanager externalURL -> last delivery
        self._sources_changed: set[str] = set()
        self._sources_forgotten: set[str] = set()
        self.channels: dict[str, ChannelHealth] = {}
        # Whether this instance ran is a fact of real time, not of the injected clock: a
        # replay or a test's clock jumps ahead while the process runs throughout.
        self.running: Callable[[], float] = time.monotonic
        self._last_check: float | None = None

    def _time(self, ts: float | None) -> str:
        return format_time(ts, self.zone) or "-"

    # -- heartbeats ------------------------------------------------------------------------------
    def observe(
        self, source: str, alerts: list[IncomingAlert], now: float
    ) -> tuple[list[IncomingAlert], int]:
        """Take the heartbeat alerts out of a payload; return the rest and how many were taken."""
        if source:
            self._heard_from(source, now)
        if not self.heartbeats:
            return alerts, 0
        rest: list[IncomingAlert] = []
        taken = 0
        for alert in alerts:
            beat = next((h for h in self.heartbeats if h.matches(alert.labels)), None)
            if beat is None:
                rest.append(alert)
                continue
            taken += 1
            if alert.status == "firing":  # a resolved heartbeat means its source went quiet
                beat.last_seen = now
                beat.via = source
                beat.due_at = now + beat.config.timeout
                beat.changed = True
        return rest, taken

    def _heard_from(self, source: str, now: float) -> None:
        self.sources[source] = now
        self._sources_changed.add(source)
        self._forget_oldest_sources()

    def _forget_oldest_sources(self) -> None:
        # Any sender can name any URL: the most recently heard MAX_SOURCES are kept.
        while len(self.sources) > MAX_SOURCES:
            oldest = min(self.sources, key=self.sources.__getitem__)
            del self.sources[oldest]
            self._sources_changed.discard(oldest)
            self._sources_forgotten.add(oldest)

    def check(self, now: float) -> list[IncomingAlert]:
        """Internal alerts whose state changed: fire what broke, resolve what recovered."""
        out: list[IncomingAlert] = []
        self._resumed(now, self.running())
        for beat in self.heartbeats:
            labels = {"heartbeat": beat.config.name}
            missing = now >= beat.due_at
            if missing and beat.state == "ok":
                beat.state, beat.missing_since, beat.changed = "missing", beat.due_at, True
            elif not missing and beat.state == "missing":
                beat.state, beat.missing_since, beat.changed = "ok", None, True
            firing = self.is_firing(internal_labels("HeartbeatMissing", labels))
            if beat.state == "missing" and not firing:
                out.append(self._heartbeat_missing(beat, now))
            elif beat.state == "ok" and firing:
                out.append(
                    internal_alert(
                        "HeartbeatMissing",
                        "resolved",
                        labels,
                        self.texts["hb_summary"].format(name=beat.config.name, age="-"),
                        self.texts["hb_resolved"].format(name=beat.config.name),
                        starts_at=beat.missing_since or now,
                        ends_at=beat.last_seen or now,
                    )
                )
        out += self._channel_alerts(now)
        out += self._peering_alerts(now)
        if self.metrics is not None:
            for beat in self.heartbeats:
                self.metrics.heartbeat_last_seen.labels(beat.config.name).set(beat.last_seen or 0)
                self.metrics.heartbeat_missing.labels(beat.config.name).set(beat.state == "missing")
        return out

    def unconfigured(self, subjects: Iterable[dict[str, str]], now: float) -> list[IncomingAlert]:
        """Internal alerts still firing about a heartbeat or a peer that a reload or restart
        removed from the config: closed (resolved, the text saying it was not a recovery),
        since nothing would ever resolve them and they would repeat for ever."""
        beats = {h.name for h in self.config.watchdog.heartbeats}
        peers = {p.name for p in self.config.peers}
        out = []
        for labels in subjects:
            if "heartbeat" in labels and labels["heartbeat"] not in beats:
                name, text = labels["heartbeat"], "unwatched_heartbeat"
            elif "peer" in labels and labels["peer"] not in peers:
                name, text = labels["peer"], "unwatched_peer"
            else:
                continue
            if not self.is_firing(labels):
                continue
            summary = self.texts[text].format(name=name)
            out.append(
                IncomingAlert(
                    status="resolved",
                    labels=dict(labels),
                    annotations={"summary": summary, "description": summary},
                    starts_at=now,
                    ends_at=now,
                    generator_url="",
                )
            )
        return out

    def _resumed(self, now: float, running: float) -> None:
        """After a gap in this instance's own running, heartbeats that were fine get a whole
        timeout from now, as after a restart: nothing could arrive while it did not run, and a
        heartbeat page then would blame a pipeline that worked (the peers page PeerDown for
        this instance if the gap was long). One already missing stays missing."""
        last, self._last_check = self._last_check, running
        if last is None or running - last <= PAUSED_AFTER:
            return
        for beat in self.heartbeats:
            if beat.state == "ok" and beat.due_at < now + beat.config.timeout:
                beat.due_at = now + beat.config.timeout
                beat.changed = True

    def _peering_alerts(self, now: float) -> list[IncomingAlert]:
        # Peers without ha.token: peering is off (this instance sends alone) until it is set.
        labels = {"instance": self.config.server.instance}
        off = bool(self.config.peers) and not self.config.ha.token
        firing = self.is_firing(internal_labels("PeeringDisabled", labels))
        t = self.texts
        if off and not firing:
            return [
                internal_alert(
                    "PeeringDisabled",
                    "firing",
                    labels,
                    t["peering_summary"],
                    t["peering_description"],
                    now,
                )
            ]
        if not off and firing:
            return [
                internal_alert(
                    "PeeringDisabled", "resolved", labels, t["peering_summary"], "", now, now
                )
            ]
        return []

    def _heartbeat_missing(self, beat: Heartbeat, now: float) -> IncomingAlert:
        t = self.texts
        age = format_duration(now - (beat.last_seen or self.started_at))
        if beat.last_seen is None:
            hop = "never"
            description = t["hb_never"].format(
                match=beat.config.match, start=self._time(self.started_at)
            )
        else:
            other = self.sources.get(beat.via, 0.0)
            hop = "prometheus" if other > beat.last_seen + 0.5 else "alertmanager"
            description = t[f"hb_{hop}"].format(
                seen=self._time(beat.last_seen), via=beat.via or "?", other=self._time(other)
            )
        # The hop goes into the summary too: short channels (WeCom) show only the summary.
        summary = t["hb_summary"].format(name=beat.config.name, age=age)
        return internal_alert(
            "HeartbeatMissing",
            "firing",
            {"heartbeat": beat.config.name},
            f"{summary}: {t[f'hop_{hop}']}",
            description,
            starts_at=beat.due_at,
        )

    # -- channels and the store --------------------------------------------------------------------
    def delivered(self, channel: str) -> None:
        health = self.channels.setdefault(channel, ChannelHealth())
        health.failing_since = None
        health.failed_for_good = ""

    def retrying(self, channel: str, error: str, now: float) -> None:
        health = self.channels.setdefault(channel, ChannelHealth())
        if health.failing_since is None:
            health.failing_since = now
        health.last_error = error

    def failed(self, channel: str, error: str, now: float) -> None:
        self.retrying(channel, error, now)
        self.channels[channel].failed_for_good = error

    def _channel_alerts(self, now: float) -> list[IncomingAlert]:
        out = []
        t = self.texts
        limit = self.config.watchdog.channel_failing_after
        for channel, health in self.channels.items():
            labels = {"channel": channel}
            failed = self.is_firing(internal_labels("DeliveryFailed", labels))
            if health.failed_for_good and not failed:
                out.append(
                    internal_alert(
                        "DeliveryFailed",
                        "firing",
                        labels,
                        t["failed_summary"].format(channel=channel),
                        t["failed_description"].format(
                            channel=channel, error=health.failed_for_good
                        ),
                        now,
                    )
                )
            elif health.failing_since is None and failed:
                out.append(
                    internal_alert(
                        "DeliveryFailed",
                        "resolved",
                        labels,
                        t["failed_summary"].format(channel=channel),
                        "",
                        now,
                        now,
                    )
                )
            failing = self.is_firing(internal_labels("ChannelFailing", labels))
            # A channel already paged as DeliveryFailed is not paged twice for the same trouble.
            too_long = (
                health.failing_since is not None
                and not health.failed_for_good
                and now - health.failing_since >= limit
            )
            if too_long and not failing:
                since = health.failing_since or now
                out.append(
                    internal_alert(
                        "ChannelFailing",
                        "firing",
                        labels,
                        t["failing_summary"].format(
                            channel=channel, age=format_duration(now - since)
                        ),
                        t["failing_description"].format(
                            channel=channel, since=self._time(since), error=health.last_error
                        ),
                        since,
                    )
                )
            elif health.failing_since is None and failing:
                out.append(
                    internal_alert(
                        "ChannelFailing",
                        "resolved",
                        labels,
                        t["failing_summary"].format(channel=channel, age="-"),
                        "",
                        now,
                        now,
                    )
                )
        return out

    # -- persistence -----------------------------------------------------------------------------
    def adopt(self, previous: Watchdog) -> None:
        """A reload, before `load`: what the watchdog it replaces knew and the store does not.
        Deadlines still count from the start of the process (a reload is no downtime), the
        channels' health goes on, and a channel no longer configured counts as recovered, so
        its ChannelFailing or DeliveryFailed resolves instead of firing for ever."""
        self.started_at = previous.started_at
        self.sources = dict(previous.sources)
        self._sources_changed = set(previous._sources_changed)
        self._sources_forgotten = set(previous._sources_forgotten)
        beats = {h.name for h in self.config.watchdog.heartbeats}
        for beat in previous.heartbeats:
            if beat.config.name not in beats and self.metrics is not None:
                for gauge in (self.metrics.heartbeat_last_seen, self.metrics.heartbeat_missing):
                    try:
                        gauge.remove(beat.config.name)
                    except KeyError:
                        pass
        configured = {c.name for c in self.config.channels}
        self.channels = {
            name: dataclasses.replace(health) if name in configured else ChannelHealth()
            for name, health in previous.channels.items()
        }

    def heartbeat_ops(self) -> list[Op]:
        """Heartbeat rows that changed: written with the webhook that changed them."""
        ops: list[Op] = []
        for beat in self.heartbeats:
            if beat.changed:
                beat.changed = False
                ops.append(
                    (
                        "INSERT OR REPLACE INTO heartbeats (name, last_seen, via, due_at, state, "
                        "missing_since) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            beat.config.name,
                            beat.last_seen,
                            beat.via,
                            beat.due_at,
                            beat.state,
                            beat.missing_since,
                        ),
                    )
                )
        return ops

    def ops(self) -> list[Op]:
        """Everything that changed, for the once-a-second job. When each Alertmanager was last
        heard from waits for it: writing it with every webhook would add a row to each commit."""
        ops = self.heartbeat_ops()
        for url in self._sources_changed:
            ops.append(
                (
                    "INSERT OR REPLACE INTO alertmanagers (url, last_seen) VALUES (?, ?)",
                    (url, self.sources[url]),
                )
            )
        ops += [
            ("DELETE FROM alertmanagers WHERE url = ?", (url,)) for url in self._sources_forgotten
        ]
        self._sources_changed.clear()
        self._sources_forgotten.clear()
        return ops

    def load(self, conn: sqlite3.Connection) -> None:
        self.heartbeats = [
            Heartbeat(h, self.started_at + h.timeout) for h in self.config.watchdog.heartbeats
        ]
        rows = {
            r[0]: r
            for r in conn.execute(
                "SELECT name, last_seen, via, due_at, state, missing_since FROM heartbeats"
            )
        }
        for beat in self.heartbeats:
            row = rows.get(beat.config.name)
            if row is None:
                continue  # never seen: counted from this start-up
            _, beat.last_seen, beat.via, due_at, beat.state, beat.missing_since = row
            if beat.state == "missing":
                beat.due_at = due_at  # still missing: not forgotten
            else:
                # Seen before the restart: wait for whichever is later, its own deadline or a
                # whole timeout from this start-up (Alertmanager could not reach us meanwhile).
                beat.due_at = max(due_at, self.started_at + beat.config.timeout)
            beat.changed = beat.due_at != due_at
        for url, last_seen in conn.execute("SELECT url, last_seen FROM alertmanagers"):
            if last_seen > self.sources.get(url, 0.0):  # memory may know a later one
                self.sources[url] = last_seen
        self._forget_oldest_sources()


def internal_labels(alertname: str, labels: dict[str, str]) -> dict[str, str]:
    """An internal alert's labels: they name the broken thing and nothing about this instance,
    so that instances in several AZs raise the *same* alert and HA sends it once."""
    return {
        "alertname": alertname,
        "severity": "critical",
        SOURCE_LABEL[0]: SOURCE_LABEL[1],
        **labels,
    }
