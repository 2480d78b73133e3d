"""Acknowledge links and reply codes: how a message lets people act on it.

Every firing message carries `{external_url}/ack/{token}`. The token names one alert group of
one contact group (its key) and the firing episode (when the group opened), and is signed
with HMAC-SHA256 by a key this service generated at its first start and keeps in the store
(never in the config). Peers exchange their keys over the authenticated peer protocol, so a
link from one instance's message works on any: a token says which key signed it (`kid`). The
token is the credential: the link works without a login. It stops working when its group
resolves (a later episode has a later opening time).

WeCom replies name a group by a short code (`ack 7KQ2M`): five characters of the group key's
hash, shown in every firing WeCom message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
from dataclasses import dataclass

from monitor_manager.store.writer import Statement

CODE_LETTERS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a phone, typed back
CODE_LENGTH = 5
MAX_TOKEN = 512


class LinkError(ValueError):
    """A token that is not ours, altered, or malformed (the page says so, with a 4xx)."""


@dataclass(frozen=True)
class LinkKey:
    kid: str
    key: bytes
    created_at: float


def short_code(group_key: str) -> str:
    digest = int.from_bytes(hashlib.blake2b(group_key.encode(), digest_size=8).digest(), "big")
    out = ""
    for _ in range(CODE_LENGTH):
        digest, i = divmod(digest, len(CODE_LETTERS))
        out += CODE_LETTERS[i]
    return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Links:
    """The keyring: our own key signs, every known key verifies."""

    def __init__(self) -> None:
        self.keys: dict[str, LinkKey] = {}
        self.own: LinkKey | None = None

    def sign(self, group_key: str, opened_at: float) -> str:
        assert self.own is not None, "no signing key: Links.load first"
        body = _b64(
            json.dumps(
                [self.own.kid, group_key, round(opened_at, 3)], separators=(",", ":")
            ).encode()
        )
        mac = hmac.new(self.own.key, body.encode(), hashlib.sha256).digest()[:16]
        return f"{body}.{_b64(mac)}"

    def verify(self, token: str) -> tuple[str, float]:
        """(group key, opening time) of a token we or a peer signed; LinkError otherwise."""
        if len(token) > MAX_TOKEN or token.count(".") != 1:
            raise LinkError("not an acknowledge link")
        body, mac = token.split(".")
        try:
            kid, group_key, opened_at = json.loads(_unb64(body))
            given = _unb64(mac)
        except (ValueError, TypeError):
            raise LinkError("not an acknowledge link") from None
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise LinkError("this link was not made by this service or its peers")
        expected = hmac.new(key.key, body.encode(), hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(expected, given):
            raise LinkError("this link was altered")
        if not isinstance(group_key, str) or not isinstance(opened_at, int | float):
            raise LinkError("not an acknowledge link")
        return group_key, float(opened_at)

    def add(self, key: LinkKey) -> list[Statement]:
        """A key learnt from a peer (or loaded); its row when it is new."""
        if key.kid in self.keys:
            return []
        self.keys[key.kid] = key
        return [
            (
                "INSERT OR IGNORE INTO link_keys (kid, key, created_at) VALUES (?, ?, ?)",
                (key.kid, _b64(key.key), key.created_at),
            )
        ]

    def load(self, conn: sqlite3.Connection, now: float, instance: str) -> None:
        """The stored keys; at the first start, a new key of our own, stored at once."""
        self.keys = {
            r[0]: LinkKey(r[0], _unb64(r[1]), r[2])
            for r in conn.execute("SELECT kid, key, created_at FROM link_keys")
        }
        own_prefix = f"{instance}:"
        ours = sorted(
            (k for k in self.keys.values() if k.kid.startswith(own_prefix)),
            key=lambda k: k.created_at,
        )
        if ours:
            self.own = ours[-1]
            return
        self.own = LinkKey(f"{own_prefix}{secrets.token_hex(4)}", secrets.token_bytes(32), now)
        for sql, params in self.add(self.own):
            conn.execute(sql, params)  # on the store thread, in a transaction of its own

    @staticmethod
    def key_wire(k: LinkKey) -> dict[str, object]:
        """A key as the peer protocol carries it (only ever to authenticated peers)."""
        return {"kid": k.kid, "key": _b64(k.key), "created_at": k.created_at}

    @staticmethod
    def parse_shared(item: object) -> LinkKey | None:
        if not isinstance(item, dict):
            return None
        kid, key, created = item.get("kid"), item.get("key"), item.get("created_at")
        if not (
            isinstance(kid, str)
            and 0 < len(kid) <= 300
            and isinstance(key, str)
            and isinstance(created, int | float)
        ):
            return None
        try:
            raw = _unb64(key)
        except ValueError:
            return None
        return LinkKey(kid, raw, float(created)) if len(raw) == 32 else None
