"""Typed keys for the state an application holds (no module-level singletons)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor_manager.act.wecom_reply import CallbackState
from monitor_manager.build import Core
from monitor_manager.channels.base import Channel
from monitor_manager.clock import Clock
from monitor_manager.cluster.ha import HighAvailability
from monitor_manager.config import Config
from monitor_manager.deliver.outbox import Outbox
from monitor_manager.deliver.parts_log import StoredPartsLog
from monitor_manager.deliver.render import Renderer
from monitor_manager.ingest.record import Recorder
from monitor_manager.metrics import Metrics
from monitor_manager.pipeline import Pipeline
from monitor_manager.store import Store
from monitor_manager.watch.peers import Peers

if TYPE_CHECKING:
    from monitor_manager.reload import Reloader  # it uses these keys

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey[Clock]("clock")
METRICS = web.AppKey("metrics", Metrics)
RENDERER = web.AppKey("renderer", Renderer)
STORE = web.AppKey("store", Store)
SESSION = web.AppKey("session", aiohttp.ClientSession)
CHANNELS = web.AppKey[dict[str, Channel]]("channels")
PIPELINE = web.AppKey("pipeline", Pipeline)
OUTBOX = web.AppKey("outbox", Outbox)
SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
PEERS = web.AppKey("peers", Peers)
HA = web.AppKey("ha", HighAvailability)
PARTS = web.AppKey("parts", StoredPartsLog)
CORE = web.AppKey("core", Core)
WECOM_CALLBACKS = web.AppKey("wecom_callbacks", CallbackState)
RELOADER: web.AppKey[Reloader] = web.AppKey("reloader")
RECORDER = web.AppKey("recorder", Recorder)
