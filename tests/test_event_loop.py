"""`serve` runs on uvloop where it is installed (faster per request, bench/README.md), and on
asyncio's own loop with MONITOR_MANAGER_EVENT_LOOP=asyncio or where uvloop is missing."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

from monitor_manager.cli import new_event_loop

uvloop = pytest.importorskip("uvloop")  # a dependency: installed wherever pip could build it


def test_serve_takes_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONITOR_MANAGER_EVENT_LOOP", raising=False)
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_when_asked_or_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_MANAGER_EVENT_LOOP", "asyncio")
    loop = new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()

    monkeypatch.delenv("MONITOR_MANAGER_EVENT_LOOP")
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    loop = new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
