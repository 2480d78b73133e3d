"""The statements that record pipeline decisions: one builder per row kind."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from monitor_manager.models import Message
from monitor_manager.store import Op

if TYPE_CHECKING:
    from monitor_manager.alerts import Alert
    from monitor_manager.convergence import Group


def content_hash(message: Message) -> str:
    """The same alert groups with the same alert states: equal across instances."""
    states = sorted((g.key, a.fingerprint, a.status) for g in message.groups for a in g.alerts)
    return hashlib.blake2b(json.dumps(states).encode(), digest_size=16).hexdigest()


def insert_alert(alert: Alert, memberships: str) -> Op:
    return (
        "INSERT INTO alerts (fingerprint, labels, annotations, status, starts_at, ends_at, "
        "generator_url, source, updated_at, memberships) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (alert.fingerprint, alert.labels_json, alert.annotations_json, alert.status,
         alert.starts_at, alert.ends_at, alert.generator_url, alert.source, alert.updated_at,
         memberships),
    )


def upsert_alert(alert: Alert, memberships: str) -> Op:
    return (
        "INSERT INTO alerts (fingerprint, labels, annotations, status, starts_at, ends_at, "
        "generator_url, source, updated_at, memberships) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (fingerprint) DO UPDATE SET annotations = excluded.annotations, "
        "status = excluded.status, starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
        "generator_url = excluded.generator_url, source = excluded.source, "
        "updated_at = excluded.updated_at, memberships = excluded.memberships",
        (alert.fingerprint, alert.labels_json, alert.annotations_json, alert.status,
         alert.starts_at, alert.ends_at, alert.generator_url, alert.source, alert.updated_at,
         memberships),
    )


def upsert_group(group: Group, now: float, state: str = "open") -> Op:
    return (
        "INSERT INTO alert_groups (key, contact_group, group_labels, state, created_at, "
        "next_flush_at, last_notified_at, last_flush_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "state = excluded.state, created_at = excluded.created_at, "
        "next_flush_at = excluded.next_flush_at, last_notified_at = excluded.last_notified_at, "
        "last_flush_at = excluded.last_flush_at, updated_at = excluded.updated_at",
        (group.key, group.contact_group, json.dumps(group.group_labels), state, group.created_at,
         group.next_flush_at, group.last_notified_at, group.last_flush_at, now),
    )


def insert_notification(message: Message, group_key: str | None, digest_id: int | None) -> Op:
    return (
        "INSERT INTO notifications (id, group_key, contact_group, kind, status, content_hash, "
        "message, digest_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message.id, group_key, message.contact_group, message.kind, message.status,
         content_hash(message), json.dumps(message.to_json()), digest_id, message.created_at),
    )
