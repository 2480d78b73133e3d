"""Acknowledge link tokens: signed by this instance's key, verified by any key it knows (its
own and its peers'), refused when altered, forged or malformed; the key survives restarts."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from monitor_manager.act.links import (
    CODE_LENGTH,
    CODE_LETTERS,
    LinkError,
    LinkKey,
    Links,
    short_code,
)
from monitor_manager.store.migrations import migrations

KEY = "0123456789abcdef"
OPENED = 1_800_000_000.125


def keyring(tmp_path: Path, instance: str = "mm-a") -> tuple[Links, sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / f"{instance}.db", isolation_level=None)
    migrations.apply(sqlite_utils.Database(conn))
    links = Links()
    links.load(conn, OPENED, instance)
    return links, conn


def test_a_token_names_its_group_and_episode(tmp_path: Path) -> None:
    links, _ = keyring(tmp_path)
    assert links.verify(links.sign(KEY, OPENED)) == (KEY, OPENED)


def flip(text: str, at: int) -> str:
    swapped = "A" if text[at] != "A" else "B"
    return text[:at] + swapped + text[at + 1 :]


def test_an_altered_token_is_refused(tmp_path: Path) -> None:
    links, _ = keyring(tmp_path)
    token = links.sign(KEY, OPENED)
    body, mac = token.split(".")
    for bad in (flip(body, 5), f"{body}.{flip(mac, 3)}", body, token + "x", "", "a.b.c"):
        with pytest.raises(LinkError):
            links.verify(bad)


def test_a_token_naming_another_group_with_a_reused_signature_is_refused(tmp_path: Path) -> None:
    links, _ = keyring(tmp_path)
    body, mac = links.sign(KEY, OPENED).split(".")
    kid, _, opened = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    other = base64.urlsafe_b64encode(json.dumps([kid, "fedcba9876543210", opened]).encode())
    with pytest.raises(LinkError):
        links.verify(other.decode().rstrip("=") + "." + mac)


def test_a_token_from_an_unknown_key_is_refused_until_the_peer_key_is_known(
    tmp_path: Path,
) -> None:
    a, _ = keyring(tmp_path, "mm-a")
    b, _ = keyring(tmp_path, "mm-b")
    token = b.sign(KEY, OPENED)
    with pytest.raises(LinkError):
        a.verify(token)
    assert b.own is not None
    a.add(LinkKey(b.own.kid, b.own.key, b.own.created_at))
    assert a.verify(token) == (KEY, OPENED)
    assert a.own is not None and a.own.kid.startswith("mm-a:")  # still signs with its own


def test_the_key_is_made_once_and_kept_across_restarts(tmp_path: Path) -> None:
    first, conn = keyring(tmp_path)
    token = first.sign(KEY, OPENED)
    again = Links()
    again.load(conn, OPENED + 100, "mm-a")
    assert again.own == first.own
    assert again.verify(token) == (KEY, OPENED)
    (count,) = conn.execute("SELECT COUNT(*) FROM link_keys").fetchone()
    assert count == 1


def test_short_codes_are_stable_readable_and_spread() -> None:
    code = short_code(KEY)
    assert code == short_code(KEY) and len(code) == CODE_LENGTH
    assert set(code) <= set(CODE_LETTERS)
    codes = {short_code(f"{i:016x}") for i in range(2000)}
    assert len(codes) > 1990  # collisions are rare among open groups
