"""A malicious client for the benchmark's hostile section: bad bodies, bounded in time and count.

    python bench/hostile_client.py URL SECONDS [--max N] [--concurrency C]

Sends, `concurrency` at a time, round robin: UTF-16 and UTF-32 bodies, lone surrogates,
broken gzip, deep nesting, a body over the size limit, and bodies that stall (a partial body
held open for a second, then dropped). Only to 127.0.0.1. Prints one JSON line with the counts
of answers by status when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp

WEBHOOK = "/webhook/alertmanager"


def _bodies() -> list[tuple[bytes, dict[str, str]]]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "Hostile", "instance": "x"},
        "annotations": {"summary": "bad"},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    doc = {"version": "4", "status": "firing", "alerts": [alert] * 20}
    text = json.dumps(doc)
    plain = {"Content-Type": "application/json"}
    return [
        (text.encode("utf-16"), plain),
        (text.encode("utf-32"), plain),
        (text.replace('"bad"', '"bad\\ud800"').encode(), plain),
        (text.replace('"x"', '"x\\udfff"').encode(), plain),
        (gzip.compress(text.encode())[:-9] + b"garbage!!", {**plain, "Content-Encoding": "gzip"}),
        (b'{"version": "4", "alerts": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", plain),
        (b'{"version": "4", "alerts": [' + b" " * 5_000_000 + b"]}", plain),  # over 4 MiB
    ]


async def _stall(host: str, port: int) -> str:
    """A body that stops arriving: held for a second, then dropped."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: bench\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"version'
    )
    await writer.drain()
    await asyncio.sleep(1.0)
    writer.close()
    return "stalled"


async def run(url: str, seconds: float, most: int, concurrency: int) -> Counter[str]:
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "::1", "localhost"), "loopback only"
    bodies = _bodies()
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    sent = 0

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal sent
        i = n
        while time.monotonic() < deadline and sent < most:
            sent += 1
            i += 1
            try:
                if i % (len(bodies) + 1) == len(bodies):
                    counts[await _stall(parts.hostname or "127.0.0.1", parts.port or 80)] += 1
                    continue
                body, headers = bodies[i % (len(bodies) + 1)]
                async with session.post(url + WEBHOOK, data=body, headers=headers) as response:
                    await response.read()
                    counts[str(response.status)] += 1
            except (aiohttp.ClientError, OSError) as exc:
                counts[type(exc).__name__] += 1

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        await asyncio.gather(*(worker(session, n) for n in range(concurrency)))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--max", type=int, default=200_000, help="requests at most")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    counts = asyncio.run(run(args.url, args.seconds, args.max, args.concurrency))
    print(json.dumps(dict(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
