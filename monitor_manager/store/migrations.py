"""The store's schema as numbered migrations (sqlite-utils), applied at every start.

Migrations are frozen once released: a change to the schema is a new one, so that every store,
however old, arrives at the same tables.
"""

from __future__ import annotations

import dataclasses
import json
import re

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("monitor_manager")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE alerts (
            fingerprint TEXT PRIMARY KEY,
            labels TEXT NOT NULL,
            annotations TEXT NOT NULL,
            status TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL,
            generator_url TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL
        );
        CREATE INDEX alerts_status ON alerts (status, updated_at);
        CREATE TABLE alert_groups (
            key TEXT PRIMARY KEY,
            contact_group TEXT NOT NULL,
            group_labels TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            next_flush_at REAL,
            last_notified_at REAL,
            last_flush_at REAL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE group_alerts (
            group_key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            notified TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (group_key, fingerprint)
        ) WITHOUT ROWID;
        CREATE INDEX group_alerts_fingerprint ON group_alerts (fingerprint);
        CREATE TABLE notifications (
            id INTEGER PRIMARY KEY,
            group_key TEXT,
            contact_group TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            subject TEXT NOT NULL DEFAULT '',
            message TEXT NOT NULL,
            digest_id INTEGER,
            created_at REAL NOT NULL
        );
        CREATE INDEX notifications_created ON notifications (created_at);
        CREATE INDEX notifications_digest ON notifications (digest_id);
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            notification_id INTEGER NOT NULL,
            channel TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            last_error TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            delivered_at REAL
        );
        CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
        CREATE INDEX deliveries_notification ON deliveries (notification_id);
        CREATE TABLE storm_windows (
            contact_group TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            count INTEGER NOT NULL,
            digest_id INTEGER
        );
        """
    )


@migrations()
def m002_watchdog(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE heartbeats (
            name TEXT PRIMARY KEY,
            last_seen REAL,
            via TEXT NOT NULL DEFAULT '',
            due_at REAL NOT NULL,
            state TEXT NOT NULL,
            missing_since REAL
        );
        CREATE TABLE alertmanagers (
            url TEXT PRIMARY KEY,
            last_seen REAL NOT NULL
        );
        CREATE TABLE probe (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL
        );
        """
    )


@migrations()
def m003_nflog(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE nflog (
            contact_group TEXT NOT NULL,
            group_key TEXT NOT NULL,
            channel TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            sent_at REAL NOT NULL,
            instance TEXT NOT NULL,
            PRIMARY KEY (contact_group, group_key, channel)
        );
        """
    )


@migrations()
def m004_drop_unused_indexes(db: sqlite_utils.Database) -> None:
    # Every read of these tables is by primary key or a full scan at start-up; each index
    # cost one more b-tree write per alert on the webhook's path.
    db.executescript(
        """
        DROP INDEX IF EXISTS alerts_status;
        DROP INDEX IF EXISTS group_alerts_fingerprint;
        """
    )


@migrations()
def m005_memberships_in_alert_rows(db: sqlite_utils.Database) -> None:
    # An alert's group memberships move into its own row: one b-tree write per alert on the
    # webhook's path instead of two.
    db.executescript(
        """
        ALTER TABLE alerts ADD COLUMN memberships TEXT NOT NULL DEFAULT '{}';
        UPDATE alerts SET memberships = (
            SELECT json_group_object(g.group_key, g.notified) FROM group_alerts g
            WHERE g.fingerprint = alerts.fingerprint)
        WHERE fingerprint IN (SELECT fingerprint FROM group_alerts);
        DROP TABLE group_alerts;
        """
    )


@migrations()
def m006_alerts_by_row_id(db: sqlite_utils.Database) -> None:
    # Rows are found by an id memory assigns in order, and the unique index on the random
    # fingerprint goes: with 200,000 alerts stored, every batch of new alerts dirtied most of
    # that index's pages. Memory is the single writer and keys alerts by fingerprint.
    db.executescript(
        """
        CREATE TABLE alerts_by_id (
            id INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            labels TEXT NOT NULL,
            annotations TEXT NOT NULL,
            status TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL,
            generator_url TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL,
            memberships TEXT NOT NULL DEFAULT '{}'
        );
        INSERT INTO alerts_by_id (fingerprint, labels, annotations, status, starts_at, ends_at,
            generator_url, source, updated_at, memberships)
        SELECT fingerprint, labels, annotations, status, starts_at, ends_at, generator_url,
            source, updated_at, memberships FROM alerts ORDER BY rowid;
        DROP TABLE alerts;
        ALTER TABLE alerts_by_id RENAME TO alerts;
        """
    )


@migrations()
def m007_deliveries_only_to(db: sqlite_utils.Database) -> None:
    # Recipients still owed a message that reached the others (SMTP 4xx for some of them).
    db.executescript("ALTER TABLE deliveries ADD COLUMN only_to TEXT NOT NULL DEFAULT '';")


@migrations()
def m008_notifications_by_group(db: sqlite_utils.Database) -> None:
    # A delivered message supersedes older ones of its alert group still waiting to retry.
    db.executescript("CREATE INDEX notifications_group ON notifications (group_key, id);")


@migrations()
def m009_channel_parts(db: sqlite_utils.Database) -> None:
    # How far a message sent in parts got, so a retry after a restart resumes there.
    db.executescript(
        """
        CREATE TABLE channel_parts (
            key TEXT PRIMARY KEY,
            done INTEGER NOT NULL,
            updated_at REAL NOT NULL
        );
        """
    )


@migrations()
def m010_unambiguous_identity(db: sqlite_utils.Database) -> None:
    # Fingerprints and group keys become hashes of a length-prefixed encoding (release 1 joined
    # with separators a value may contain, so two label sets could share an identity). Every
    # stored key is recomputed from the labels beside it; the notification log of release 1
    # becomes `nflog_v1`, which holds what release-1 peers report during a rolling upgrade.
    from monitor_manager.cluster.legacy_keys import fingerprint_v1, group_key_v1
    from monitor_manager.converge.alerts import fingerprint
    from monitor_manager.converge.convergence import group_key
    from monitor_manager.models import Message
    from monitor_manager.store.notifications import content_hash

    conn = db.conn
    keys: dict[str, str] = {}
    for old, contact_group, labels in conn.execute(
        "SELECT key, contact_group, group_labels FROM alert_groups"
    ).fetchall():
        keys[old] = group_key(contact_group, json.loads(labels))
    conn.executemany(
        "UPDATE alert_groups SET key = ? WHERE key = ?", [(new, old) for old, new in keys.items()]
    )
    rows = conn.execute("SELECT id, labels, memberships FROM alerts").fetchall()
    conn.executemany(
        "UPDATE alerts SET fingerprint = ?, memberships = ? WHERE id = ?",
        [
            (
                fingerprint(json.loads(labels)),
                json.dumps({keys[k]: v for k, v in json.loads(memberships).items() if k in keys}),
                row_id,
            )
            for row_id, labels, memberships in rows
        ],
    )

    def renamed(message: Message) -> Message:
        groups = []
        for g in message.groups:
            # Only hashed identities change; StoreFailing's fixed names stay.
            key = (
                group_key(g.contact_group, g.group_labels)
                if g.key == group_key_v1(g.contact_group, g.group_labels)
                else g.key
            )
            alerts = tuple(
                dataclasses.replace(a, fingerprint=fingerprint(a.labels))
                if a.fingerprint == fingerprint_v1(a.labels)
                else a
                for a in g.alerts
            )
            groups.append(dataclasses.replace(g, key=key, alerts=alerts))
        return dataclasses.replace(message, groups=tuple(groups))

    updates = []
    for row_id, text in conn.execute("SELECT id, message FROM notifications").fetchall():
        message = renamed(Message.from_json(json.loads(text)))
        key = message.groups[0].key if message.kind == "group" and message.groups else None
        updates.append((json.dumps(message.to_json()), content_hash(message), key, row_id))
    conn.executemany(
        "UPDATE notifications SET message = ?, content_hash = ?, "
        "group_key = CASE WHEN group_key IS NULL THEN NULL ELSE ? END WHERE id = ?",
        updates,
    )
    db.executescript(
        """
        ALTER TABLE nflog RENAME TO nflog_v1;
        CREATE TABLE nflog (
            contact_group TEXT NOT NULL,
            group_key TEXT NOT NULL,
            channel TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            sent_at REAL NOT NULL,
            instance TEXT NOT NULL,
            v1_group_key TEXT NOT NULL DEFAULT '',
            v1_content_hash TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (contact_group, group_key, channel)
        );
        """
    )


@migrations()
def m011_alerts_seen_at(db: sqlite_utils.Database) -> None:
    # When a sender last reported each alert, duplicates included: firing alerts nobody
    # re-sends for convergence.stale_after are closed as stale.
    db.executescript(
        """
        ALTER TABLE alerts ADD COLUMN seen_at REAL;
        UPDATE alerts SET seen_at = updated_at;
        """
    )


@migrations()
def m012_deliveries_superseded_by(db: sqlite_utils.Database) -> None:
    # Whether a row was written off for a newer message of its group is a column, no longer
    # read back from the human-readable note.
    db.executescript("ALTER TABLE deliveries ADD COLUMN superseded_by INTEGER;")
    conn = db.conn
    rows = conn.execute(
        "SELECT id, note FROM deliveries WHERE note LIKE '%with a newer state of the alert "
        "group went out first%'"
    ).fetchall()
    conn.executemany(
        "UPDATE deliveries SET superseded_by = ? WHERE id = ?",
        [
            (int(m.group(1)), row_id)
            for row_id, note in rows
            if (m := re.search(r"notification (\d+) with a newer state", note))
        ],
    )


@migrations()
def m013_acting_on_pages(db: sqlite_utils.Database) -> None:
    # Acknowledgements, silences, escalation steps taken (alert_groups.escalated), the keys
    # that sign acknowledge links, and the audit of every change people made. The shared
    # ones carry `updated_at` and `origin` (the instance that made the change): peers agree
    # on the newer one.
    db.executescript(
        """
        ALTER TABLE alert_groups ADD COLUMN first_notified_at REAL;
        ALTER TABLE alert_groups ADD COLUMN escalated INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE acks (
            group_key TEXT PRIMARY KEY,
            by TEXT NOT NULL,
            at REAL NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            via TEXT NOT NULL,
            withdrawn INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,
            origin TEXT NOT NULL
        );
        CREATE TABLE silences (
            id TEXT PRIMARY KEY,
            matchers TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            comment TEXT NOT NULL,
            updated_at REAL NOT NULL,
            origin TEXT NOT NULL
        );
        CREATE TABLE link_keys (
            kid TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            who TEXT NOT NULL,
            via TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            instance TEXT NOT NULL
        );
        CREATE INDEX audit_at ON audit (at);
        """
    )


@migrations()
def m014_alert_extras(db: sqlite_utils.Database) -> None:
    # What a sender adds to an alert beyond Alertmanager's fields (Grafana Alerting: links to
    # the dashboard, panel, silence and image, and the value string), as a JSON object.
    db.executescript("ALTER TABLE alerts ADD COLUMN extras TEXT NOT NULL DEFAULT '{}';")
