"""Console access in the config: `[[console.users]]`, password hashes, the warnings of
check-config, and the `hash-password` command."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib

import pytest

from monitor_manager.config import ConfigError, config_warnings, console_access, parse_config
from monitor_manager.passwords import (
    PasswordHashError,
    hash_password,
    parse_hash,
    verify_password,
)

FAST = {"n": 2**10, "r": 8, "p": 1}  # cheap parameters: the tests check logic, not cost


def parse(text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_config(tomllib.loads(textwrap.dedent(text)), "test.toml", env=env or {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value.problems


def test_a_hash_verifies_its_own_password_and_no_other() -> None:
    stored = hash_password("correct horse", **FAST)

    assert stored.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)


def test_a_password_from_the_environment_is_compared_as_it_is() -> None:
    assert verify_password("s3cret", "s3cret")
    assert not verify_password("s3cre", "s3cret")
    assert not verify_password("", "")  # an empty password never logs anyone in


@pytest.mark.parametrize(
    "value, says",
    [
        ("scrypt$abc", "not a scrypt hash"),
        ("scrypt$1000$8$1$AAAAAAAAAAAA$" + "A" * 43, "power of two"),
        ("scrypt$1048576$8$1$AAAAAAAAAAAA$" + "A" * 43, "128 MiB"),
        ("scrypt$65536$1$1$AAAAAAAAAAAA$" + "A" * 43, "below 2^(16 r)"),
        ("scrypt$1024$8$1$AAAA$" + "A" * 43, "salt"),
        ("scrypt$1024$8$1$AAAAAAAAAAAA$AAAA", "32 bytes"),
    ],
)
def test_a_malformed_hash_says_what_is_wrong_and_matches_nothing(value: str, says: str) -> None:
    with pytest.raises(PasswordHashError, match=re.escape(says)):
        parse_hash(value)
    assert not verify_password("", value)


def test_users_with_a_hash_and_with_an_environment_password_load() -> None:
    stored = hash_password("pw", **FAST)
    cfg = parse(
        f"""
        [console]
        session_lifetime = "1h"
        [[console.users]]
        name = "zhangsan"
        password = "{stored}"
        [[console.users]]
        name = "lisi"
        password = "${{MM_PW}}"
        """,
        env={"MM_PW": "from-env"},
    )

    assert [u.name for u in cfg.console.users] == ["zhangsan", "lisi"]
    assert cfg.console.session_lifetime == 3600.0
    assert "from-env" not in repr(cfg) and stored not in repr(cfg)
    assert console_access(cfg) == "login"


def test_a_password_written_in_clear_is_refused_without_being_quoted() -> None:
    problems = problems_of('[[console.users]]\nname = "a"\npassword = "hunter2-in-clear"')

    assert [p.split(":")[0] for p in problems] == ["console.users[0].password"]
    assert "hunter2" not in problems[0]
    assert "hash-password" in problems[0]


def test_bad_users_are_reported_at_their_key_paths() -> None:
    problems = problems_of(
        """
        [[console.users]]
        name = "a"
        password = "scrypt$1$2"
        [[console.users]]
        name = "a"
        password = "${PW}"
        [[console.users]]
        name = ""
        password = "${EMPTY}"
        """,
        env={"PW": "x", "EMPTY": ""},
    )

    assert sorted(p.split(": ")[0] for p in problems) == [
        "console.users[0].password",
        "console.users[1].name",
        "console.users[2].name",
        "console.users[2].password",
    ]


@pytest.mark.parametrize(
    "listen, users, access",
    [
        ("127.0.0.1:9095", False, "open"),
        ("[::1]:9095", False, "open"),
        ("localhost:9095", False, "open"),
        ("0.0.0.0:9095", False, "closed"),
        ("10.0.0.5:9095", False, "closed"),
        ("0.0.0.0:9095", True, "login"),
        ("127.0.0.1:9095", True, "login"),
    ],
)
def test_console_access_follows_users_and_the_listen_address(
    listen: str, users: bool, access: str
) -> None:
    text = f'[server]\nlisten = "{listen}"\nwebhook_token = "t"\n'
    if users:
        text += '[[console.users]]\nname = "a"\npassword = "${PW}"\n'
    assert console_access(parse(text, env={"PW": "x"})) == access


def test_check_config_warns_of_a_closed_console_and_of_passwords_in_clear_text() -> None:
    closed = parse('[server]\nlisten = "0.0.0.0:9095"\nwebhook_token = "t"')
    plain = parse(
        '[server]\nlisten = "0.0.0.0:9095"\nwebhook_token = "t"\n'
        '[[console.users]]\nname = "a"\npassword = "${PW}"',
        env={"PW": "x"},
    )
    behind_tls = parse(
        '[server]\nlisten = "0.0.0.0:9095"\nwebhook_token = "t"\n'
        'external_url = "https://mm.example.com"\n'
        '[[console.users]]\nname = "a"\npassword = "${PW}"',
        env={"PW": "x"},
    )

    (closed_warning, _) = config_warnings(closed)  # and plain http: tests/test_tls.py
    assert closed_warning.startswith("console.users: none configured while listening on 0.0.0.0")
    assert "paging work as usual" in closed_warning
    (plain_warning,) = config_warnings(plain)
    assert plain_warning.startswith("server.listen: 0.0.0.0 over plain http")
    assert "console passwords and session cookies cross the network in clear text" in (
        plain_warning
    )
    assert config_warnings(behind_tls) == []


def test_hash_password_prints_a_hash_of_the_line_on_stdin() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor_manager", "hash-password"],
        input="pässword\n",
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    stored = done.stdout.strip()
    assert verify_password("pässword", stored)
    assert parse_hash(stored)[:3] == (2**15, 8, 1)
