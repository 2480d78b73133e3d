"""Dedup: an alert's identity, and what an incoming alert changes about a known one.

Identity is the label set minus `convergence.ignore_labels`, so the same alert from two
Prometheus replicas or two Alertmanagers is one alert. Receiving the status an alert already
has is a duplicate whatever startsAt the sender computed; a firing alert that starts before its
last resolution ended is a lagging sender's echo (stale) and changes nothing either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from json.encoder import encode_basestring

from monitor_manager.ingest.payload import IncomingAlert


def identity_labels(labels: dict[str, str], ignore: frozenset[str]) -> dict[str, str]:
    for name in ignore:  # a few names: cheaper than building an intersection per alert
        if name in labels:
            return {k: v for k, v in labels.items() if k not in ignore}
    return labels


def fingerprint(labels: dict[str, str]) -> str:
    """The alert's identity: a hash of its label pairs in name order, each name and value
    prefixed by its length, so no two label sets share an encoding (a value may hold any
    character, the separators of release 1 included)."""
    return hashlib.blake2b(encode_pairs(sorted(labels.items())).encode(), digest_size=8).hexdigest()


def encode_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{len(k)}:{k}{len(v)}:{v}" for k, v in pairs)


@dataclass(slots=True)
class Alert:
    """What memory keeps of an alert: enough to deduplicate, classify and group it.

    Labels, annotations, generatorURL and source live only in the store's row: a message
    reads them from there when it is built (on the store thread), so 200,000 alerts cost a
    few hundred bytes each in memory. The row is found by its id, which memory assigns in
    order: the store keeps no index on the (random) fingerprint, so a new alert is appended
    to the table instead of dirtying a page of a large index."""

    fingerprint: str
    id: int  # the store's row id: rows are written and read by it, never by fingerprint
    status: str
    starts_at: float
    ends_at: float | None
    # Keys of the alert groups it is in; a tuple (one shared `()` when none) costs less than
    # a list, and it rarely changes.
    groups: tuple[str, ...] = ()
    # When a sender last reported it, duplicates included (written at most hourly): a firing
    # alert nobody re-sends for convergence.stale_after is closed as stale.
    seen_at: float = 0.0


def to_json(mapping: dict[str, str]) -> str:
    """Labels or annotations as the row stores them: the bytes of `json.dumps(mapping,
    ensure_ascii=False, separators=(",", ":"))` for a str -> str map (payload.py lets nothing
    else through), built from the C string encoder directly, at half the cost of the
    encoder's generic walk: two of these per new alert were a sixth of ingest's CPU."""
    return "{" + ",".join([f"{_string(k)}:{_string(v)}" for k, v in mapping.items()]) + "}"


_string = encode_basestring


class Change(Enum):
    NEW = "new"
    FIRED = "fired"  # a new firing episode of a known alert
    RESOLVED = "resolved"
    DUPLICATE = "duplicate"


def classify(known: Alert | None, incoming: IncomingAlert) -> Change:
    if known is None:
        return Change.NEW
    if known.status == incoming.status:
        return Change.DUPLICATE
    if incoming.status == "firing":
        if known.ends_at is not None and incoming.starts_at <= known.ends_at:
            return Change.DUPLICATE  # a lagging echo: this episode already ended
        return Change.FIRED  # a new episode, or reported again after it went stale
    if incoming.ends_at is not None and incoming.ends_at < known.starts_at:
        return Change.DUPLICATE  # the resolution of an earlier episode
    return Change.RESOLVED
