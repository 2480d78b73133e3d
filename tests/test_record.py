"""`[server] record`: every accepted webhook payload as a JSON line, off the webhook's path,
bounded and rotated, never failing a webhook."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from builders import T0, alert_json, make_config, payload
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.clock import ManualClock, iso
from monitor_manager.config import ConfigError, parse_config
from monitor_manager.ingest.record import Recorder, RecordError, parse_line, record_line
from monitor_manager.metrics import Metrics

WEBHOOK = "/webhook/alertmanager"
JSON_TYPE = {"Content-Type": "application/json"}


def recorded_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def record_results(metrics: Metrics) -> dict[str, float]:
    return {
        result: metrics.registry.get_sample_value(
            "monitor_manager_record_payloads_total", {"result": result}
        )
        or 0.0
        for result in ("written", "failed")
    }


@pytest.fixture
async def recording(
    tmp_path: Path, aiohttp_client: Any
) -> AsyncIterator[tuple[TestClient, ManualClock, Path]]:
    path = tmp_path / "webhooks.jsonl"
    config = make_config(tmp_path, server={"record": str(path)})
    clock = ManualClock(T0)
    app = create_app(config, clock=clock, scheduler=False)
    client = await aiohttp_client(app)
    yield client, clock, path
    await client.close()


async def test_accepted_payloads_are_recorded_as_received_with_the_time_taken(
    recording: tuple[TestClient, ManualClock, Path],
) -> None:
    client, clock, path = recording
    first = payload(alert_json("DiskFull", instance="db1", mount="磁盘 /data"))
    response = await client.post(WEBHOOK, data=json.dumps(first), headers=JSON_TYPE)
    assert response.status == 200
    clock.advance(12.5)
    # Pretty-printed over several lines and gzipped: recorded on one line all the same.
    second = payload(alert_json("DiskFull", "resolved", ends=T0 + 10, instance="db1"))
    body = gzip.compress(json.dumps(second, indent=2).encode())
    response = await client.post(
        WEBHOOK, data=body, headers={**JSON_TYPE, "Content-Encoding": "gzip"}
    )
    assert response.status == 200
    clock.advance(1)
    # Refused payloads leave no line: a 400 and a 401-free 415.
    assert (await client.post(WEBHOOK, data=b'{"version": "3"}', headers=JSON_TYPE)).status == 400
    assert (await client.post(WEBHOOK, data=b"{}", headers={"Content-Type": "text/plain"})).status
    # A duplicate is accepted (200): it is recorded, replay needs it to judge as live did.
    response = await client.post(WEBHOOK, data=json.dumps(second), headers=JSON_TYPE)
    assert (await response.json())["duplicates"] == 1

    await client.app[keys.RECORDER].flush()
    lines = recorded_lines(path)
    assert [line["at"] for line in lines] == [iso(T0), iso(T0 + 12.5), iso(T0 + 13.5)]
    assert [line["payload"] for line in lines] == [first, second, second]
    assert record_results(client.app[keys.METRICS]) == {"written": 3, "failed": 0}
    assert all(
        parse_line(text)[0] == at
        for text, at in zip(path.read_bytes().splitlines(), (T0, T0 + 12.5, T0 + 13.5), strict=True)
    )


async def test_what_waits_is_written_at_shutdown(tmp_path: Path, aiohttp_client: Any) -> None:
    path = tmp_path / "rec.jsonl"
    app = create_app(
        make_config(tmp_path, server={"record": str(path)}), clock=ManualClock(T0), scheduler=False
    )
    client = await aiohttp_client(app)
    for i in range(5):
        body = payload(alert_json("Load", instance=f"web{i}"))
        assert (await client.post(WEBHOOK, json=body)).status == 200
    await client.close()  # cleanup: the recorder writes what waits before it stops
    assert len(recorded_lines(path)) == 5


async def test_a_write_error_is_counted_and_never_fails_the_webhook(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    path = tmp_path / "gone" / "rec.jsonl"  # the directory was removed after check-config
    metrics = Metrics()
    app = create_app(
        make_config(tmp_path, server={"record": str(path)}),
        clock=ManualClock(T0),
        scheduler=False,
        metrics=metrics,
    )
    client = await aiohttp_client(app)
    try:
        for i in range(3):
            response = await client.post(WEBHOOK, json=payload(alert_json("X", instance=str(i))))
            assert response.status == 200
        await app[keys.RECORDER].flush()
        assert record_results(metrics) == {"written": 0, "failed": 3}
        # The directory comes back: recording resumes.
        path.parent.mkdir()
        assert (await client.post(WEBHOOK, json=payload(alert_json("Y")))).status == 200
        await app[keys.RECORDER].flush()
        assert record_results(metrics) == {"written": 1, "failed": 3}
        assert len(recorded_lines(path)) == 1
    finally:
        await client.close()


async def test_the_file_rotates_once_it_would_pass_its_size(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    metrics = Metrics()
    recorder = Recorder(str(path), 1000, ManualClock(T0), metrics)
    recorder.start()
    body = json.dumps(payload(alert_json("Rotate"))).encode()
    line = len(record_line(T0, body, None))
    for i in range(25):
        recorder.record(T0 + i, body, None)
        if i % 7 == 0:
            await recorder.flush()
    await recorder.close()
    current, rotated = path.stat().st_size, Path(f"{path}.1").stat().st_size
    assert current <= 1000 and rotated <= 1000
    assert rotated > 1000 - line  # filled as far as whole lines go
    # Nothing older than the last rotation is kept; what is kept is whole lines, in order.
    kept = recorded_lines(Path(f"{path}.1")) + recorded_lines(path)
    assert [parse_line(json.dumps(e))[0] for e in kept] == [
        T0 + i for i in range(25 - len(kept), 25)
    ]
    assert record_results(metrics) == {"written": 25, "failed": 0}


async def test_a_payload_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(str(path), 500, ManualClock(T0), Metrics())
    recorder.start()
    small = b'{"version":"4"}'
    big = json.dumps({"version": "4", "pad": "x" * 2000}).encode()
    for body in (small, big, small):
        recorder.record(T0, body, None)
    await recorder.close()
    assert [len(recorded_lines(p)) for p in (Path(f"{path}.1"), path)] == [1, 1]
    assert recorded_lines(Path(f"{path}.1"))[0]["payload"]["pad"] == "x" * 2000


def test_recording_lines_that_cannot_be_read_say_why() -> None:
    for text, why in (
        ("nope", "not JSON"),
        ('{"payload": {}}', "expected"),
        ('{"at": "yesterday", "payload": {}}', "at:"),
    ):
        with pytest.raises(RecordError, match=why):
            parse_line(text)


def test_record_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"record": "/nonexistent-dir/rec.jsonl", "record_max_bytes": 1000}})
    problems = "\n".join(caught.value.problems)
    assert 'server.record: directory "/nonexistent-dir" does not exist' in problems
    assert "server.record_max_bytes: must be at least 1048576" in problems
