"""Plain values that cross module boundaries: what a channel is asked to send.

A `Message` is a snapshot taken when a notification is created; it is stored as JSON in the
notification row, so a delivery retried after a restart sends exactly what was decided.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

AlertStatus = Literal["firing", "resolved", "stale"]
"""An alert's state in a message; "stale" is a firing alert no sender re-sent for
`convergence.stale_after` (its `ends_at` is when it was last reported)."""
MessageKind = Literal["group", "digest", "test", "report"]
""""report" is the daily report (`[report]`, watch/report.py): no alert groups; its figures are
in `extra["report"]`."""


@dataclass(frozen=True, slots=True)
class Member:
    """A person of a contact group (`members = [...]` in the config) and their addresses, one
    field per kind of address; a channel kind names the one it uses (Channel.member_address).
    A new kind of address is one more field here."""

    name: str
    email: str = ""
    wechat: str = ""
    mobile: str = ""
    dingtalk: str = ""  # DingTalk user id (dingtalk_robot mentions; mobiles come from `mobile`)
    feishu: str = ""  # Feishu/Lark open id, "ou_..." (feishu_robot mentions)

    def addresses(self) -> tuple[str, ...]:
        """Every address the member has, of any kind."""
        return tuple(
            value for f in fields(self) if f.name != "name" if (value := getattr(self, f.name))
        )


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as it stood when the notification was decided. `links` and `value` are what
    a sender such as Grafana adds (ingest.payload.Extras): links by name ("dashboard",
    "panel", "silence", "image"; absolute http(s) URLs) and the values that made it fire."""

    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""
    links: dict[str, str] = field(default_factory=dict)
    value: str = ""


@dataclass(frozen=True, slots=True)
class GroupView:
    """One alert group in a message: its key, labels and alerts (firing first)."""

    key: str
    contact_group: str
    group_labels: dict[str, str]
    alerts: tuple[AlertView, ...]
    url: str = ""
    ack: dict[str, Any] | None = None  # {"by", "at", "comment", "via"} while acknowledged
    ack_url: str = ""  # the signed acknowledge link (firing groups)
    code: str = ""  # the short code a WeCom reply names the group by ("ack CODE")

    @property
    def firing(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status == "resolved"]

    @property
    def stale(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status == "stale"]

    @property
    def status(self) -> AlertStatus:
        return _worst(a.status for a in self.alerts)

    @property
    def common_labels(self) -> dict[str, str]:
        return _common(a.labels for a in self.alerts)

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common(a.annotations for a in self.alerts)

    @property
    def title(self) -> str:
        """Group label values, e.g. "HighLatency prod"; the alertname first."""
        labels = self.group_labels or self.common_labels
        values = [labels["alertname"]] if "alertname" in labels else []
        values += [v for k, v in sorted(labels.items()) if k != "alertname"]
        return " ".join(values) or self.key


@dataclass(frozen=True, slots=True)
class Message:
    """What a channel sends: one alert group change, or a digest standing for several."""

    id: int
    kind: MessageKind
    contact_group: str
    recipients: tuple[Member, ...]
    groups: tuple[GroupView, ...]
    created_at: float
    instance: str = ""
    external_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def thread_key(self) -> str:
        """Messages about the same alert group share this (email threading)."""
        if self.kind == "group" and self.groups:
            return self.groups[0].key
        return f"{self.kind}-{self.contact_group}"

    @property
    def status(self) -> AlertStatus:
        return _worst(g.status for g in self.groups)

    @property
    def firing_count(self) -> int:
        return sum(len(g.firing) for g in self.groups)

    @property
    def resolved_count(self) -> int:
        return sum(len(g.resolved) for g in self.groups)

    @property
    def stale_count(self) -> int:
        return sum(len(g.stale) for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        """What `dataclasses.asdict` gives, field for field, built directly: asdict deep-copies
        every label set, which took a quarter of replay's time. The dictionaries of labels and
        annotations are the message's own (frozen by convention): encode, do not mutate."""
        return {
            "id": self.id,
            "kind": self.kind,
            "contact_group": self.contact_group,
            "recipients": [_member_json(m) for m in self.recipients],
            "groups": [
                {
                    "key": g.key,
                    "contact_group": g.contact_group,
                    "group_labels": g.group_labels,
                    "alerts": [
                        {
                            "fingerprint": a.fingerprint,
                            "status": a.status,
                            "labels": a.labels,
                            "annotations": a.annotations,
                            "starts_at": a.starts_at,
                            "ends_at": a.ends_at,
                            "generator_url": a.generator_url,
                            "links": a.links,
                            "value": a.value,
                        }
                        for a in g.alerts
                    ],
                    "url": g.url,
                    "ack": g.ack,
                    "ack_url": g.ack_url,
                    "code": g.code,
                }
                for g in self.groups
            ],
            "created_at": self.created_at,
            "instance": self.instance,
            "external_url": self.external_url,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        groups = tuple(
            GroupView(
                key=g["key"],
                contact_group=g["contact_group"],
                group_labels=g["group_labels"],
                alerts=tuple(AlertView(**a) for a in g["alerts"]),
                url=g.get("url", ""),
                ack=g.get("ack"),
                ack_url=g.get("ack_url", ""),
                code=g.get("code", ""),
            )
            for g in data["groups"]
        )
        return cls(
            id=data["id"],
            kind=data["kind"],
            contact_group=data["contact_group"],
            recipients=tuple(Member(**m) for m in data["recipients"]),
            groups=groups,
            created_at=data["created_at"],
            instance=data.get("instance", ""),
            external_url=data.get("external_url", ""),
            extra=data.get("extra", {}),
        )


def map_text(message: Message, fn: Callable[[str], str]) -> Message:
    """A copy of the message with `fn` applied to every label and annotation name and value
    (of alerts and group labels), to each alert's value string and to who acknowledged it and
    why: the text that senders and people control (links are URLs, made safe where used). In a
    report, the alert names it counts are such values too."""

    def values(d: dict[str, str]) -> dict[str, str]:
        return {fn(k): fn(v) for k, v in d.items()}

    groups = tuple(
        replace(
            g,
            group_labels=values(g.group_labels),
            # who acknowledged and their comment: typed by people, as untrusted as labels
            ack={**g.ack, "by": fn(g.ack["by"]), "comment": fn(g.ack["comment"])}
            if g.ack
            else g.ack,
            alerts=tuple(
                replace(
                    a,
                    labels=values(a.labels),
                    annotations=values(a.annotations),
                    value=fn(a.value) if a.value else "",
                )
                for a in g.alerts
            ),
        )
        for g in message.groups
    )
    report = message.extra.get("report") if message.kind == "report" else None
    if isinstance(report, dict) and report.get("noisiest"):
        noisiest = [{**n, "name": fn(n["name"])} for n in report["noisiest"]]
        extra = {**message.extra, "report": {**report, "noisiest": noisiest}}
        return replace(message, groups=groups, extra=extra)
    return replace(message, groups=groups)


def _member_json(member: Member) -> dict[str, str]:
    return {f.name: getattr(member, f.name) for f in _MEMBER_FIELDS}


_MEMBER_FIELDS = fields(Member)


def _worst(statuses: Iterable[AlertStatus]) -> AlertStatus:
    """Firing if anything fires; else stale if anything went unreported; else resolved."""
    seen = set(statuses)
    return "firing" if "firing" in seen else "stale" if "stale" in seen else "resolved"


def _common(maps: Any) -> dict[str, str]:
    common: dict[str, str] | None = None
    for m in maps:
        if common is None:
            common = dict(m)
        else:
            common = {k: v for k, v in common.items() if m.get(k) == v}
    return common or {}
