"""Shared fixtures. Helper modules (smtp_server, fake_wecom, ...) live beside this file."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from monitor_manager.bodies import SERVER_ARGS  # noqa: E402


@pytest.fixture
def aiohttp_client(aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    """pytest-aiohttp's client factory, serving apps with the handler arguments `serve` uses
    (aiohttp's own decompression off: the app reads gzip bodies itself, bounded)."""

    async def go(param: Any, *, server_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> Any:
        if server_kwargs is not None or not hasattr(param, "start_server"):
            server_kwargs = {**SERVER_ARGS, **(server_kwargs or {})}
            return await aiohttp_client(param, server_kwargs=server_kwargs, **kwargs)
        return await aiohttp_client(param, **kwargs)

    return go
