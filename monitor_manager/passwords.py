"""Console passwords: scrypt hashes in one documented text form, and their verification.

The form, produced by `monitor-manager hash-password`:

    scrypt$N$r$p$SALT$HASH

N (a power of two), r and p are scrypt's cost parameters in decimal; SALT and HASH are
base64 (standard alphabet, padding optional). HASH is 32 bytes of `hashlib.scrypt(password,
salt=SALT, n=N, r=r, p=p, dklen=32)`. The defaults (N=2**15, r=8, p=1: 32 MiB and about
0.1 s per check) follow the scrypt paper's interactive-login figures.

A `[[console.users]]` password is either such a hash or, read from the environment as
`"${NAME}"`, the password itself; `check-config` refuses one written in clear in the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

PREFIX = "scrypt$"
N, R, P = 2**15, 8, 1
DKLEN = 32
SALT_BYTES = 16
# The ranges a stored hash may use: wide enough for any sane choice, narrow enough that a
# config cannot make one login cost gigabytes or minutes.
N_RANGE = (2**10, 2**20)
R_RANGE = (1, 32)
P_RANGE = (1, 16)
MAX_COST = 2**27  # 128 * N * r bytes: at most 128 MiB of memory per check
MAX_MEMORY = 2 * MAX_COST  # hashlib.scrypt's maxmem, with room for OpenSSL's own

_B64 = r"([A-Za-z0-9+/]+=*)"
_FORM = re.compile(rf"scrypt\$(\d{{1,8}})\$(\d{{1,3}})\$(\d{{1,3}})\${_B64}\${_B64}")


class PasswordHashError(ValueError):
    """A value that starts like a scrypt hash but is not a valid one (says what is wrong)."""


def is_hash(value: str) -> bool:
    """Whether `value` is meant as a hash (it starts `scrypt$`), valid or not."""
    return value.startswith(PREFIX)


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"{PREFIX}{n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_hash(value: str) -> tuple[int, int, int, bytes, bytes]:
    """(N, r, p, salt, hash) of a stored hash; PasswordHashError naming what is wrong."""
    m = _FORM.fullmatch(value)
    if not m:
        raise PasswordHashError(
            "not a scrypt hash of the form scrypt$N$r$p$SALT$HASH "
            "(make one with `monitor-manager hash-password`)"
        )
    n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if n & (n - 1) or not N_RANGE[0] <= n <= N_RANGE[1]:
        raise PasswordHashError(f"N must be a power of two from {N_RANGE[0]} to {N_RANGE[1]}")
    if not R_RANGE[0] <= r <= R_RANGE[1] or not P_RANGE[0] <= p <= P_RANGE[1]:
        raise PasswordHashError(f"r must be 1 to {R_RANGE[1]} and p 1 to {P_RANGE[1]}")
    if n >= 2 ** (16 * r):  # scrypt's own bound: N < 2^(128 r / 8)
        raise PasswordHashError("N must be below 2^(16 r)")
    if 128 * n * r > MAX_COST:
        raise PasswordHashError("N and r ask for more than 128 MiB of memory (128 * N * r)")
    try:
        salt, digest = _unb64(m.group(4)), _unb64(m.group(5))
    except (binascii.Error, ValueError):
        raise PasswordHashError("SALT and HASH must be base64") from None
    if len(salt) < 8:
        raise PasswordHashError("the salt must be at least 8 bytes")
    if len(digest) != DKLEN:
        raise PasswordHashError(f"the hash must be {DKLEN} bytes")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`: a scrypt hash, or else the password itself (a
    value read from the environment). Slow on purpose for a hash (run it off the event loop);
    constant-time comparison either way. A malformed hash matches nothing."""
    if is_hash(stored):
        try:
            n, r, p, salt, digest = parse_hash(stored)
        except PasswordHashError:
            return False
        return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)
    # Compare digests, so the time taken does not depend on where the strings differ or on
    # their lengths.
    given = hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest()
    expected = hashlib.sha256(stored.encode("utf-8", "surrogateescape")).digest()
    return bool(stored) and hmac.compare_digest(given, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogateescape"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=DKLEN,
        maxmem=MAX_MEMORY,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
