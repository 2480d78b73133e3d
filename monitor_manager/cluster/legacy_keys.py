"""Release 1's identity encodings, kept for two jobs only.

Release 1 joined label names and values with U+00FF (and group labels with NUL), which a value
may contain: two label sets could share a fingerprint, two groups a key. Release 2 hashes a
length-prefixed encoding instead (`alerts.fingerprint`, `convergence.group_key`). These
functions remain so that:
- migration m010 can map stored release-1 group keys to their release-2 keys;
- a release-2 instance can tell a release-1 peer what it sent in words that peer compares
  (peer protocol version 1), and read what that peer sent: a rolling upgrade must not page
  twice. Release-2 peers compare release-2 keys and hashes (protocol version 2).
"""

from __future__ import annotations

import hashlib
import json

from monitor_manager.models import Message


def fingerprint_v1(labels: dict[str, str]) -> str:
    text = "\xff".join(f"{name}\xff{labels[name]}" for name in sorted(labels))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def group_key_v1(contact_group: str, group_labels: dict[str, str]) -> str:
    pairs = sorted(group_labels.items())
    text = contact_group + "\x00" + "\x00".join(f"{k}\xff{v}" for k, v in pairs)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def content_hash_v1(message: Message) -> str:
    """The content hash a release-1 instance computes for the same message."""
    states = sorted(
        (group_key_v1(g.contact_group, g.group_labels), fingerprint_v1(a.labels), a.status)
        for g in message.groups
        for a in g.alerts
    )
    return hashlib.blake2b(json.dumps(states).encode(), digest_size=16).hexdigest()


def log_key_v1(message: Message, log_key: str) -> str:
    """A notification log key ("digest", or an alert group's key) in release-1 words."""
    if message.kind == "group" and message.groups:
        group = message.groups[0]
        return group_key_v1(group.contact_group, group.group_labels)
    return log_key
