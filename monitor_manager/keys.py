"""Typed keys for the state an application holds (no module-level singletons)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:

    pass

CONFIG = web.AppKey("config", "Config")
CLOCK = web.AppKey("clock", "Clock")
METRICS = web.AppKey("metrics", "Metrics")
RENDERER = web.AppKey("renderer", "Renderer")
STORE = web.AppKey("store", "Store")
SESSION = web.AppKey("session", aiohttp.ClientSession)
CHANNELS = web.AppKey("channels", "dict[str, Channel]")
PIPELINE = web.AppKey("pipeline", "Pipeline")
OUTBOX = web.AppKey("outbox", "Outbox")
SCHEDULER = web.AppKey("scheduler", "AsyncIOScheduler")
