"""Request bodies: strict UTF-8 JSON, bounded in size and in time.

Every JSON endpoint reads its body here, so the rules hold everywhere (SPEC section 12):
- only `application/json` (charset UTF-8 if one is named), and only the content codings
  identity, gzip and deflate, which are decompressed here with a bound on the output (the
  server runs with aiohttp's own decompression off, so an unknown coding is our 415 and not
  the parser's plain-text 400);
- the body, compressed and decompressed, within the size limit (413), and complete within
  `BODY_TIMEOUT` seconds (408): a client that stalls holds nothing for long;
- strict UTF-8, no byte order mark, no lone surrogate anywhere (a JSON escape can spell one,
  and no UTF-8 store or channel accepts it), nesting within Python's recursion limit (400).
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from typing import Any

from aiohttp import ClientResponse, StreamReader, web

BODY_TIMEOUT = 30.0  # seconds for the whole body to arrive
SERVER_ARGS: dict[str, Any] = {"auto_decompress": False}
"""Handler arguments for every server that runs the app (serve and the tests alike)."""

_CODINGS = {
    "": None,
    "identity": None,
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
# Only a text that spells a surrogate escape can decode to a lone surrogate: the walk over
# every string runs only then (Go's encoder, Alertmanager's, writes non-ASCII as UTF-8).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # keys shown in a field path


class BodyError(Exception):
    """The body cannot be taken; `status` is the answer (400, 408, 413, 415)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


async def read_json(request: web.Request, limit: int, timeout: float | None = None) -> Any:
    """The request's JSON body, or BodyError."""
    data, _ = await read_json_body(request, limit, timeout)
    return data


async def read_json_body(
    request: web.Request, limit: int, timeout: float | None = None
) -> tuple[Any, bytes]:
    """The request's JSON body decoded, and its bytes (decompressed): (data, body); or
    BodyError. The webhook records the bytes as they came (`[server] record`)."""
    if request.content_type != "application/json":
        raise BodyError(
            415, f"expected Content-Type application/json, got {request.content_type[:100]}"
        )
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BodyError(415, f"JSON bodies must be UTF-8, not {charset[:40]}")
    body = await read_body(request, limit, timeout)
    return decode_json(body), body


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, decompressed, at most `limit` bytes, within `timeout` seconds."""
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in _CODINGS:
        raise BodyError(
            415, f"Content-Encoding {coding[:40]!r} is not supported (use gzip, deflate or none)"
        )
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, f"body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(BODY_TIMEOUT if timeout is None else timeout):
            raw = await read_limited(request.content, limit)
    except TimeoutError:
        raise BodyError(408, "the body did not arrive in time") from None
    except (web.HTTPException, ConnectionError):
        raise
    except Exception as exc:
        raise BodyError(400, f"unreadable body: {type(exc).__name__}") from None
    if raw is None:
        raise BodyError(413, f"body is larger than {limit} bytes")
    wbits = _CODINGS[coding]
    return raw if wbits is None else _decompress(raw, wbits, limit)


async def read_limited(stream: StreamReader, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` (chunked bodies included)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(min(limit + 1 - size, 1 << 20))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _decompress(raw: bytes, wbits: int, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(raw, limit + 1)
        if len(out) > limit or decompressor.unconsumed_tail:
            raise BodyError(413, f"body is larger than {limit} bytes once decompressed")
        out += decompressor.flush()
    except zlib.error:
        raise BodyError(400, "the body is not valid for its Content-Encoding") from None
    if not decompressor.eof or len(out) > limit:
        raise BodyError(400, "the compressed body is incomplete")
    if decompressor.unused_data:
        raise BodyError(400, "bytes follow the compressed body")
    return out


async def read_answer(response: ClientResponse, limit: int = 1 << 20) -> Any:
    """A peer's JSON answer, read as strictly as a request (a peer URL may be anyone's)."""
    body = await read_limited(response.content, limit)
    if body is None:
        raise BodyError(413, f"answer larger than {limit} bytes")
    return decode_json(body)


def decode_json(body: bytes) -> Any:
    """Strict UTF-8 JSON, or BodyError(400)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(
            400, f"the body is not UTF-8 ({_guess_encoding(body)}); JSON bodies must be UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        raise BodyError(400, "the body starts with a byte order mark; JSON must not")
    try:
        data = json.loads(text)
    except RecursionError:
        raise BodyError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, integers too long to convert
        raise BodyError(400, f"malformed JSON: {str(exc)[:200]}") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(data)
    return data


def _check_strings(data: Any) -> None:
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, path)  # a bad key is named by its object
                stack.append((item, f"{path}.{key}" if _NAME.fullmatch(key) else path))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(
            400, "a string is not valid Unicode (a lone surrogate)", path.lstrip(".") or None
        ) from None


def _guess_encoding(body: bytes) -> str:
    if body.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "it looks like UTF-32"
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it looks like UTF-16"
    return "invalid byte sequence"
