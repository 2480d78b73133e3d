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

And what people do to pages (SPEC section 8), each logged in `changes.jsonl` with a "kind":
some incidents are acknowledged (`POST /api/v1/alert-groups/{key}/ack` on a random instance)
and some of those acknowledgements withdrawn (`DELETE`); some are silenced, before they fire or
while they fire, by the real `amtool silence add` or `POST /api/v2/silences` on a random
instance, and some of those silences expired (`amtool silence expire`, `DELETE
/api/v2/silence/{id}`). An action whose request failed (a stopped instance, a read-only store)
is logged as not ok: it may still have taken effect, and the checker reads it so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from monitor_manager.converge.convergence import group_key  # noqa: E402

Status = Literal["firing", "resolved"]
Source = Literal["am", "direct"]

WEBHOOK_TOKEN = "campaign-webhook-token-3f1a"  # campaign_stack.WEBHOOK_TOKEN
DIRECT_URL = "http://direct-alertmanager.campaign.invalid:9093"  # the "third Alertmanager"
RESEND_EVERY = 5.0  # seconds: how often firing alerts are re-sent to the Alertmanagers
ENDS_AHEAD = 60.0  # endsAt of a firing alert sent to an Alertmanager, from now
RESOLVED_RESEND_FOR = 30.0  # resolved alerts are re-sent this long (Prometheus: 15 minutes)
MAX_ALERTS_PER_INCIDENT = 6
POST_TIMEOUT = 3.0

ACTION_TIMEOUT = 10.0  # seconds for one action's request (amtool's --timeout too)
ACK_SHARE = 0.3  # incidents acknowledged while they fire
UNACK_SHARE = 0.3  # acknowledgements withdrawn later
SILENCE_BEFORE = 0.08  # incidents silenced before they fire
SILENCE_WHILE = 0.08  # incidents silenced while they fire
EXPIRE_SHARE = 0.6  # silences expired while their incident still runs
SILENCE_FOR = "15m"  # a silence's duration: past any incident, so only an expiry ends it early
GROUP_BY = ("alertname", "cluster")  # campaign_stack's [convergence] group_by
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


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
        self.instances = instances
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
        self.actions: dict[str, int] = {}  # "ack ok", "silence failed", ... -> how many
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
        roll = rng.random()
        silence_id = None
        if roll < SILENCE_BEFORE:
            silence_id = await self.silence(name)
        await self.change(alerts, "firing", "incident starts")
        title = alerts[0].title
        if roll >= 1 - ACK_SHARE:
            self._spawn(self._acknowledge(title, cg, alerts, until), self._scenarios)
        elif SILENCE_BEFORE <= roll < SILENCE_BEFORE + SILENCE_WHILE:
            self._spawn(self._silence_while(name, alerts, until), self._scenarios)
        if silence_id is not None and rng.random() < EXPIRE_SHARE:
            self._spawn(self._expire_later(silence_id, alerts, until), self._scenarios)
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

    # -- what people do --------------------------------------------------------------------------
    async def _acknowledge(self, title: str, cg: str, alerts: list[Alert], until: float) -> None:
        """Someone acknowledges the incident's group while it fires; some withdraw it later."""
        await self._pause(self.rng.uniform(3, 40))
        if self.clock() >= until or not any(a.status == "firing" for a in alerts):
            return
        key = group_key(cg, dict(zip(GROUP_BY, title.split(" ", 1), strict=True)))
        await self._ack_request("ack", "POST", title, cg, key, {"by": "Zhang San"})
        if self.rng.random() >= UNACK_SHARE:
            return
        await self._pause(self.rng.uniform(20, 90))
        if self.clock() < until and any(a.status == "firing" for a in alerts):
            await self._ack_request("unack", "DELETE", title, cg, key, {"by": "Li Si"})

    async def _ack_request(
        self, kind: str, method: str, title: str, cg: str, key: str, body: dict[str, Any]
    ) -> None:
        instance, url = self.rng.choice(sorted(self.instances.items()))
        sent = self.clock()
        status = 0
        try:
            async with self.session.request(
                method,
                f"{url}/api/v1/alert-groups/{key}/ack",
                json=body,
                timeout=aiohttp.ClientTimeout(total=ACTION_TIMEOUT),
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        self._record(
            {"kind": kind, "t": sent, "done": self.clock(), "ok": status == 200, "status": status}
            | {"title": title, "cg": cg, "key": key, "instance": instance}
        )

    async def _silence_while(self, name: str, alerts: list[Alert], until: float) -> None:
        await self._pause(self.rng.uniform(3, 30))
        if self.clock() >= until or not any(a.status == "firing" for a in alerts):
            return
        silence_id = await self.silence(name)
        if silence_id is not None and self.rng.random() < EXPIRE_SHARE:
            await self._expire_later(silence_id, alerts, until)

    async def _expire_later(self, silence_id: str, alerts: list[Alert], until: float) -> None:
        await self._pause(self.rng.uniform(15, 60))
        if self.clock() < until and any(a.status == "firing" for a in alerts):
            await self.expire(silence_id)

    async def silence(self, alertname: str) -> str | None:
        """A silence of every alert of the incident, through amtool or the API: its id (None
        when the request failed; it may still have been made)."""
        instance, url = self.rng.choice(sorted(self.instances.items()))
        via = "amtool" if self.rng.random() < 0.5 else "api"
        sent = self.clock()
        silence_id = None
        if via == "amtool":
            code, out = await self._amtool(
                url,
                "silence",
                "add",
                f"alertname={alertname}",
                f"--duration={SILENCE_FOR}",
                "--author=campaign",
                "--comment=fault campaign",
            )
            silence_id = out.strip() if code == 0 and out.strip() else None
        else:
            body = {
                "matchers": [{"name": "alertname", "value": alertname, "isRegex": False}],
                "startsAt": rfc3339(sent),
                "endsAt": rfc3339(sent + 15 * 60),
                "createdBy": "campaign",
                "comment": "fault campaign",
            }
            answer = await self._json_request("POST", f"{url}/api/v2/silences", body)
            if isinstance(answer, dict) and isinstance(answer.get("silenceID"), str):
                silence_id = answer["silenceID"]
        self._record(
            {"kind": "silence", "t": sent, "done": self.clock(), "ok": silence_id is not None}
            | {"id": silence_id, "alertname": alertname, "ends_at": sent + 15 * 60}
            | {"instance": instance, "via": via}
        )
        return silence_id

    async def expire(self, silence_id: str) -> None:
        instance, url = self.rng.choice(sorted(self.instances.items()))
        via = "amtool" if self.rng.random() < 0.5 else "api"
        sent = self.clock()
        if via == "amtool":
            code, _ = await self._amtool(url, "silence", "expire", silence_id)
            ok = code == 0
        else:
            answer = await self._json_request("DELETE", f"{url}/api/v2/silence/{silence_id}")
            ok = answer is not None
        self._record(
            {"kind": "expire", "t": sent, "done": self.clock(), "ok": ok, "id": silence_id}
            | {"instance": instance, "via": via}
        )

    async def _amtool(self, url: str, *args: str) -> tuple[int, str]:
        """The real amtool against an instance: (exit code, stdout); -1 when it hung."""
        proc = await asyncio.create_subprocess_exec(
            AMTOOL,
            f"--alertmanager.url={url}",
            f"--timeout={ACTION_TIMEOUT:g}s",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), ACTION_TIMEOUT + 5)
        except TimeoutError:
            proc.kill()  # the amtool this load started, by its process
            await proc.wait()
            return -1, ""
        return proc.returncode if proc.returncode is not None else -1, out.decode()

    async def _json_request(self, method: str, url: str, body: Any = None) -> Any:
        """The answer's JSON on a 200 (True when it has none), None otherwise."""
        try:
            async with self.session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=ACTION_TIMEOUT)
            ) as response:
                if response.status != 200:
                    return None
                text = await response.text()
                return json.loads(text) if text.strip() else True
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    def _record(self, record: dict[str, Any]) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        what = f"{record['kind']} {'ok' if record['ok'] else 'failed'}"
        self.actions[what] = self.actions.get(what, 0) + 1

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
            "actions": dict(sorted(self.actions.items())),
        }
