"""Fixtures for every test (the fixture modules smtp_server, fake_wecom, fake_dingtalk and
fake_feishu load as plugins: see the repository's conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor_manager.web.bodies import SERVER_ARGS


@pytest.fixture
def aiohttp_client(aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    """pytest-aiohttp's client factory, serving apps with the handler arguments `serve` uses
    (aiohttp's own decompression off: the app reads gzip bodies itself, bounded)."""

    async def go(param: Any, **kwargs: Any) -> Any:
        if isinstance(param, web.Application):
            # aiohttp's TestServer passes handler arguments only through start_server().
            server = TestServer(param)
            await server.start_server(**SERVER_ARGS)
            param = server
        return await aiohttp_client(param, **kwargs)

    return go
