"""Calling a chat platform's JSON API (WeCom, DingTalk, Feishu): one request, classified.

Transport errors, timeouts, non-200 answers and bodies that are not the expected JSON object
are transient ChannelErrors; reasons are redacted and chain no exception, because aiohttp's
exceptions can carry the request URL with its token or key.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from monitor_manager.channels.base import ChannelError, redact

_MAX_BODY = 64 * 1024


async def call_json(
    session: aiohttp.ClientSession | None,
    method: str,
    url: str,
    *,
    service: str,
    what: str,
    timeout: float,
    secrets: tuple[str, ...],
    params: dict[str, str] | None = None,
    payload: dict[str, Any] | None = None,
    code_field: str = "errcode",
    coded_errors: bool = False,
) -> dict[str, Any]:
    """One call of a chat platform's JSON API (`service` names it in errors); the decoded
    body, whose `code_field` (an integer) the caller still has to check: these platforms
    answer HTTP 200 even on failure.

    With `coded_errors`, a non-200 answer whose body carries a non-zero `code_field` is
    returned too, for the caller to classify by its code (Feishu answers its frequency limit
    with HTTP 400 and code 9499).

    Transport errors, timeouts, other non-200 answers and bodies that are not a JSON object
    raise a transient ChannelError. Reasons are redacted and chain no exception, because
    aiohttp's exceptions can carry the request URL with its token or key.
    """
    if session is None:
        raise ChannelError(f"{service} {what}: no HTTP session", permanent=True)
    data = None
    headers = {}
    if payload is not None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    try:
        async with session.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            status = resp.status
            raw = await _read_capped(resp)
    except TimeoutError:
        raise ChannelError(f"{service} {what}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        reason = redact(f"{service} {what}: {type(exc).__name__}: {exc}", *secrets)
        raise ChannelError(reason) from None
    snippet = raw[:200].decode("utf-8", "replace").strip()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    coded = isinstance(body, dict) and isinstance(body.get(code_field), int)
    if status != 200 and not (coded_errors and coded and body[code_field] != 0):
        raise ChannelError(redact(f"{service} {what}: HTTP {status}: {snippet}", *secrets))
    if not coded:
        raise ChannelError(redact(f"{service} {what}: unexpected answer: {snippet}", *secrets))
    assert isinstance(body, dict)
    return body


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    # Answers are small; a wrong URL must not make us buffer a whole web page.
    body = bytearray()
    while len(body) < _MAX_BODY:
        chunk = await resp.content.read(_MAX_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
