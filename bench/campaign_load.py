"""The campaign's load: incidents that fire, grow, resolve and flap, and a storm of alert groups,
sent two ways, each logged as it is decided (`changes.jsonl`, the checker's truth):

- through both Alertmanagers (`POST /api/v2/alerts`, as Prometheus does): every state change at
  once, and every alert re-sent on a fixed cadence while it fires (and for a while after it
  resolved), so that an Alertmanager restarted by a fault learns the current state again, as
  it would from Prometheus;
- straight to every instance's webhook (as an Alertmanager does): one payload per alert group
  and instance, retried for that instance until it answers 200 (an Alertmanager retries a 5xx
  or a timeout, and re-sends the group at its next flush while it failed).

Everything is bounded: incidents start only while the load runs, every incident ends within
its planned steps, and `finish()` resolves whatever still fires.

Acknowledgements and silences (SPEC section 8) are not generated yet: see ACKS_AND_SILENCES.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

Status = Literal["firing", "resolved"]
Source = Literal["am", "direct"]

WEBHOOK_TOKEN = "campaign-webhook-token-3f1a"  # campaign_stack.WEBHOOK_TOKEN
DIRECT_URL = "http://direct-alertmanager.campaign.invalid:9093"  # the "third Alertmanager"
RESEND_EVERY = 5.0  # seconds: how often firing alerts are re-sent to the Alertmanagers
ENDS_AHEAD = 60.0  # endsAt of a firing alert sent to an Alertmanager, from now
RESOLVED_RESEND_FOR = 30.0  # resolved alerts are re-sent this long (Prometheus: 15 minutes)
MAX_ALERTS_PER_INCIDENT = 6
POST_TIMEOUT = 3.0

# ACKS_AND_SILENCES: when acknowledgements and silences land (SPEC section 8), the load adds
# actions here: POST/DELETE /api/v1/alert-groups/{key}/ack on a random instance while an
# incident fires, and `amtool --alertmanager.url=http://MM silence add|expire` (and POST
# /api/v2/silences) for some incidents. Each action goes into changes.jsonl as
# {"kind": "ack" | "unack" | "silence" | "expire", ...} so that the checker can apply the
# promises of section 8 (an acknowledged group does not repeat, a silenced alert is not paged,
# its resolution still is when its firing was, the peers agree). Nothing generates them yet.


def rfc3339(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's: FNV-1a 64 over sorted label names and values, each followed by 0xff."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                h ^= byte
                h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass
class Alert:
    aid: str
    labels: dict[str, str]
    source: Source
    contact_group: str
    status: Status = "resolved"
    starts_at: float = 0.0
    ends_at: float | None = None
    episode: int = 0  # firing episodes so far; messages name it in the summary

    @property
    def summary(self) -> str:
        """The summary annotation: the alert, its episode and the state it was sent in, so
        that the checker can place every listing of the alert in its history."""
        return f"{self.aid} #{self.episode} {self.status}"

    @property
    def title(self) -> str:
        """The alert group's title as messages show it: alertname, then cluster."""
        return f"{self.labels['alertname']} {self.labels['cluster']}"

    def for_alertmanager(self, now: float) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "annotations": {"summary": self.summary},
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at if self.ends_at is not None else now + ENDS_AHEAD),
            "generatorURL": "",
        }

    def for_webhook(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "labels": self.labels,
            "annotations": {"summary": self.summary},
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at) if self.ends_at is not None else "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": fingerprint(self.labels),
        }


@dataclass
class DirectTarget:
    """One instance's webhook as the direct sender sees it: what it still owes it."""

    name: str
    url: str
    owed: dict[str, dict[str, Any]] = field(default_factory=dict)  # aid -> alert JSON
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    posts: int = 0
    failures: int = 0


class Load:
    def __init__(
        self,
        rng: random.Random,
        changes_log: Path,
        alertmanagers: list[str],
        instances: dict[str, str],
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rng = rng
        self.log = open(changes_log, "a", encoding="utf-8")  # closed in close()
        self.alertmanagers = alertmanagers
        self.direct = {
            name: DirectTarget(name, f"{url}/webhook/alertmanager")
            for name, url in instances.items()
        }
        self.session = session
        self.clock = clock
        self.alerts: dict[str, Alert] = {}
        self.recently_resolved: dict[str, float] = {}  # aid -> when (re-sent for a while)
        self.incidents = 0
        self.changes = 0
        self.am_posts = 0
        self.am_failures = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the senders
        self._scenarios: set[asyncio.Task[None]] = set()  # incidents and storms
        self._running = True

    # -- changes -------------------------------------------------------------------------------
    async def change(self, alerts: list[Alert], status: Status, note: str = "") -> None:
        """Alerts change state now: logged, then sent both ways."""
        now = self.clock()
        for alert in alerts:
            if status == "firing":
                # A new firing episode starts after the last one ended (else it is stale).
                alert.starts_at = max(now, (alert.ends_at or 0.0) + 0.001)
                alert.ends_at = None
                alert.episode += 1
            else:
                alert.ends_at = now
                self.recently_resolved[alert.aid] = now
            alert.status = status
            self.alerts[alert.aid] = alert
            self.changes += 1
            record = {
                "t": now,
                "aid": alert.aid,
                "title": alert.title,
                "cg": alert.contact_group,
                "status": status,
                "starts_at": alert.starts_at,
                "episode": alert.episode,
                "src": alert.source,
                "note": note,
            }
            self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        by_source: dict[Source, list[Alert]] = {"am": [], "direct": []}
        for alert in alerts:
            by_source[alert.source].append(alert)
        if by_source["am"]:
            await self._to_alertmanagers(by_source["am"])
        for alert in by_source["direct"]:
            for target in self.direct.values():
                target.owed[alert.aid] = alert.for_webhook()
                target.wake.set()

    async def _to_alertmanagers(self, alerts: list[Alert]) -> None:
        now = self.clock()
        body = [a.for_alertmanager(now) for a in alerts]
        await asyncio.gather(*(self._post_am(url, body) for url in self.alertmanagers))

    async def _post_am(self, url: str, body: list[dict[str, Any]]) -> None:
        for chunk in range(0, len(body), 500):
            self.am_posts += 1
            try:
                async with self.session.post(
                    f"{url}/api/v2/alerts",
                    json=body[chunk : chunk + 500],
                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT),
                ) as response:
                    if response.status != 200:
                        self.am_failures += 1
            except (aiohttp.ClientError, TimeoutError):
                self.am_failures += 1  # a dead Alertmanager: Prometheus just goes on

    # -- background senders ----------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._resend_loop())
        for target in self.direct.values():
            self._spawn(self._direct_loop(target))

    def _spawn(self, coro: Any, tasks: set[asyncio.Task[None]] | None = None) -> None:
        into = self._tasks if tasks is None else tasks
        task = asyncio.create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)

    async def _resend_loop(self) -> None:
        """As Prometheus: every RESEND_EVERY the firing alerts (endsAt ahead) and recently
        resolved ones, to every Alertmanager."""
        while self._running:
            await asyncio.sleep(RESEND_EVERY)
            now = self.clock()
            for aid, at in list(self.recently_resolved.items()):
                if now - at > RESOLVED_RESEND_FOR:
                    del self.recently_resolved[aid]
            alerts = [
                a
                for a in self.alerts.values()
                if a.source == "am" and (a.status == "firing" or a.aid in self.recently_resolved)
            ]
            if alerts:
                await self._to_alertmanagers(alerts)

    async def _direct_loop(self, target: DirectTarget) -> None:
        """As an Alertmanager webhook: what the instance has not taken yet, one payload per
        alert group, until it answers 200."""
        while self._running or target.owed:
            await target.wake.wait()
            target.wake.clear()
            if not target.owed:
                continue
            groups: dict[str, dict[str, dict[str, Any]]] = {}
            for aid, alert in list(target.owed.items()):
                title = f"{alert['labels']['alertname']} {alert['labels']['cluster']}"
                groups.setdefault(title, {})[aid] = alert
            failed = False
            for title, alerts in groups.items():
                if not await self._post_direct(target, title, list(alerts.values())):
                    failed = True
                    continue
                for aid, sent in alerts.items():
                    if target.owed.get(aid) is sent:  # not changed meanwhile
                        del target.owed[aid]
            if failed:
                await asyncio.sleep(1.0)  # Alertmanager's backoff starts at 0.5 s
                target.wake.set()
            elif target.owed:
                target.wake.set()

    async def _post_direct(
        self, target: DirectTarget, title: str, alerts: list[dict[str, Any]]
    ) -> bool:
        alertname, cluster = title.split(" ", 1)
        firing = any(a["status"] == "firing" for a in alerts)
        payload = {
            "version": "4",
            "status": "firing" if firing else "resolved",
            "receiver": "campaign-direct",
            "groupKey": f'{{}}:{{alertname="{alertname}", cluster="{cluster}"}}',
            "groupLabels": {"alertname": alertname, "cluster": cluster},
            "commonLabels": {"alertname": alertname, "cluster": cluster},
            "commonAnnotations": {},
            "externalURL": DIRECT_URL,
            "truncatedAlerts": 0,
            "alerts": alerts,
        }
        target.posts += 1
        try:
            async with self.session.post(
                target.url,
                json=payload,
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT),
            ) as response:
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if not ok:
            target.failures += 1
        return ok

    # -- scenarios -------------------------------------------------------------------------------
    def new_incident(self, until: float) -> None:
        self._spawn(self._incident(self.incidents + 1, until), self._scenarios)
        self.incidents += 1

    def start_storm(self, groups: int, hold: float) -> None:
        self._spawn(self.storm(groups, hold), self._scenarios)

    async def _incident(self, number: int, until: float) -> None:
        """One incident: fires with 1-3 alerts, then 2-8 steps apart by a settled wait (12-45 s)
        or a quick one (0.5-3 s: Alertmanager and the service may well never show it), each
        growing, resolving, flapping or re-firing an alert; at the end everything resolves."""
        rng = self.rng
        name = f"Inc{number:04d}"
        cluster = rng.choice(("prod", "stage", "dr"))
        team = rng.choice(("sre", "sre", "db"))
        source: Source = "direct" if rng.random() < 0.35 else "am"
        cg = "dba" if team == "db" else "sre"

        def make(j: int) -> Alert:
            aid = f"I{number:04d}-{j}"
            labels = {
                "alertname": name,
                "cluster": cluster,
                "team": team,
                "severity": rng.choice(("critical", "warning")),
                "instance": f"host-{number % 97}-{j}",
                "aid": aid,
            }
            return Alert(aid, labels, source, cg)

        alerts = [make(j) for j in range(1, rng.randint(1, 3) + 1)]
        await self.change(alerts, "firing", "incident starts")
        for _ in range(rng.randint(2, 8)):
            await self._pause(rng.uniform(0.5, 3.0) if rng.random() < 0.35 else rng.uniform(12, 45))
            if self.clock() >= until:
                break
            firing = [a for a in alerts if a.status == "firing"]
            resolved = [a for a in alerts if a.status == "resolved"]
            roll = rng.random()
            if roll < 0.35 and len(alerts) < MAX_ALERTS_PER_INCIDENT:
                alerts.append(make(len(alerts) + 1))
                await self.change([alerts[-1]], "firing", "grows")
            elif roll < 0.55 and len(firing) > 1:
                await self.change([rng.choice(firing)], "resolved", "one resolves")
            elif roll < 0.8 and firing:
                victim = rng.choice(firing)
                await self.change([victim], "resolved", "flaps")
                await self._pause(
                    rng.uniform(0.5, 3.0) if rng.random() < 0.6 else rng.uniform(12, 30)
                )
                await self.change([victim], "firing", "flaps back")
            elif resolved:
                await self.change([rng.choice(resolved)], "firing", "fires again")
        await self._pause(rng.uniform(12, 40))
        still = [a for a in alerts if a.status == "firing"]
        if still:
            await self.change(still, "resolved", "incident ends")

    async def storm(self, groups: int, hold: float) -> None:
        """`groups` alert groups at once (one alert each, through the Alertmanagers), all
        resolved `hold` seconds later."""
        alerts = [
            Alert(
                f"S{i:04d}",
                {
                    "alertname": "CampaignStorm",
                    "cluster": f"s{i:04d}",
                    "team": "sre",
                    "severity": "warning",
                    "instance": f"node-{i}",
                    "aid": f"S{i:04d}",
                },
                "am",
                "sre",
            )
            for i in range(groups)
        ]
        await self.change(alerts, "firing", "storm")
        await self._pause(hold)
        await self.change(alerts, "resolved", "storm ends")

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def finish(self) -> None:
        """Resolve everything still firing (incidents cut short by the end of the load)."""
        for task in list(self._scenarios):
            task.cancel()
        await asyncio.gather(*self._scenarios, return_exceptions=True)
        still = [a for a in self.alerts.values() if a.status == "firing"]
        if still:
            await self.change(still, "resolved", "load ends")

    async def drained(self, timeout: float) -> bool:
        """Until every instance took what the direct sender owes it (or `timeout`)."""
        deadline = self.clock() + timeout
        while any(t.owed for t in self.direct.values()) and self.clock() < deadline:
            for target in self.direct.values():
                target.wake.set()
            await asyncio.sleep(0.5)
        return not any(t.owed for t in self.direct.values())

    async def close(self) -> None:
        self._running = False
        for task in [*self._tasks, *self._scenarios]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._scenarios, return_exceptions=True)
        self.log.close()

    def stats(self) -> dict[str, Any]:
        return {
            "incidents": self.incidents,
            "changes": self.changes,
            "alertmanager_posts": self.am_posts,
            "alertmanager_post_failures": self.am_failures,
            "direct_posts": {t.name: t.posts for t in self.direct.values()},
            "direct_failures": {t.name: t.failures for t in self.direct.values()},
        }
