"""HTTP: `/callback/wecom/{channel}`, where WeCom delivers what members send to the app.

The app's 接收消息 (receive messages) setting points here; only `wechat` channels with
`callback_token` and `callback_aes_key` answer, every other name is a 404. GET is WeCom's
URL verification (the decrypted `echostr`, as is); POST is a message, answered with an
encrypted passive reply (act/wecom_reply.py decides what it says and whether it acknowledges).

The signature is the credential: a request that does not verify, does not decrypt to this
corp id and agent, or is dated more than 5 minutes from now is answered 4xx with a fixed
reason and changes nothing, nor grows memory. A verified message whose change could not be
saved still gets a reply (try again), never a 500: WeCom would show the member nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiohttp import web

from monitor_manager import keys
from monitor_manager.act.actions import ActionError, Actor
from monitor_manager.act.wecom_crypto import (
    MAX_BODY_BYTES,
    CallbackError,
    WecomCrypto,
    timestamp_fresh,
)
from monitor_manager.act.wecom_reply import (
    RETRY_WAIT,
    Acknowledge,
    CallbackState,
    Say,
    acknowledged,
    already,
    decide,
    say,
)
from monitor_manager.channels.wechat import WechatSettings
from monitor_manager.store import StoreError
from monitor_manager.web.bodies import BodyError, read_body

log = logging.getLogger(__name__)

PATH = "/callback/wecom/{channel}"
# Reasons that say the request is not WeCom's (403); any other CallbackError is a malformed
# request (400).
_FORBIDDEN = {"bad signature", "wrong receive id"}


def _text(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason, content_type="text/plain")


def _app(request: web.Request) -> tuple[WecomCrypto, WechatSettings]:
    app = request.app[keys.WECOM_CALLBACKS].apps.get(request.match_info["channel"])
    if app is None:
        raise web.HTTPNotFound(reason="no WeCom application channel takes replies here")
    return app


def _signed_query(request: web.Request, *names: str) -> list[str] | web.Response:
    """The query parameters, present and fresh; or the 4xx answer."""
    values = [request.query.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        return _text(400, f"missing query parameter {missing[0]}")
    if not timestamp_fresh(values[1], request.app[keys.CLOCK]()):
        return _text(403, "stale timestamp")  # a replay, or a clock to fix
    return values


def _refused(channel: str, exc: CallbackError) -> web.Response:
    status = 403 if str(exc) in _FORBIDDEN else 400
    log.info("WeCom callback for %s refused (%d): %s", channel, status, exc)
    return _text(status, str(exc))


async def verify_url(request: web.Request) -> web.Response:
    crypto, _ = _app(request)
    query = _signed_query(request, "msg_signature", "timestamp", "nonce", "echostr")
    if isinstance(query, web.Response):
        return query
    signature, timestamp, nonce, echostr = query
    # Base64 carries "+", which a query string that was not percent-encoded turns into " ".
    echostr = echostr.replace(" ", "+")
    try:
        echo = crypto.verify_url(signature, timestamp, nonce, echostr)
    except CallbackError as exc:
        return _refused(request.match_info["channel"], exc)
    return web.Response(text=echo, content_type="text/plain")  # as is: no quotes, no newline


async def receive(request: web.Request) -> web.Response:
    channel = request.match_info["channel"]
    crypto, settings = _app(request)
    query = _signed_query(request, "msg_signature", "timestamp", "nonce")
    if isinstance(query, web.Response):
        return query
    signature, timestamp, nonce = query
    try:
        body = await read_body(request, MAX_BODY_BYTES)
        fields = crypto.decrypt_message(signature, timestamp, nonce, body)
    except BodyError as exc:
        return _text(exc.status, exc.message)
    except CallbackError as exc:
        return _refused(channel, exc)
    agent = fields.get("AgentID", "")
    if agent and agent != str(settings.agent_id):
        # Another app of the corp with the same Token and key: not this channel's members.
        log.info("WeCom callback for %s refused (403): agent %s", channel, agent[:20])
        return _text(403, "wrong agent")
    answer = await _answer(request, channel, fields)
    if answer is None:
        return web.Response(status=200)  # an empty 200: WeCom sends nothing back
    reply = crypto.encrypt_reply(
        answer,
        to_user=fields.get("FromUserName", ""),
        from_user=settings.corp_id,
        timestamp=str(int(request.app[keys.CLOCK]())),
        nonce=str(secrets.randbelow(10**10)),
    )
    return web.Response(body=reply, content_type="text/xml", charset="utf-8")


async def _answer(request: web.Request, channel: str, fields: dict[str, str]) -> str | None:
    """The answer to one verified message; a MsgId seen before is answered as it was then,
    without acting again (WeCom's retries, or a replay within the timestamp window)."""
    msg_id = fields.get("MsgId", "")
    if not msg_id:
        return (await _act(request, channel, fields))[0]
    recent = request.app[keys.WECOM_CALLBACKS].recent
    key = (channel, msg_id)
    pending = recent.get(key)
    if pending is not None:
        try:
            return await asyncio.wait_for(asyncio.shield(pending), RETRY_WAIT)
        except TimeoutError:
            return None  # the first request is still at it; its answer stands
    future = recent.start(key)
    answer: str | None = None
    done = False
    try:
        answer, done = await _act(request, channel, fields)
    finally:
        if not done:
            recent.forget(key)  # nothing changed: a retry may try again
        recent.settle(future, answer)
    return answer


async def _act(
    request: web.Request, channel: str, fields: dict[str, str]
) -> tuple[str | None, bool]:
    """(the answer, whether the message was dealt with for good)."""
    core = request.app[keys.CORE]
    language = core.config.templates.language
    try:
        await core.pipeline.load()
        decision = decide(fields, channel, core.config, core.pipeline.convergence)
        if not isinstance(decision, Acknowledge):
            return _said(decision, language), True
        actor = Actor(decision.member, "wecom")
        try:
            ack, new = await core.actions.acknowledge(decision.key, actor, decision.comment)
        except ActionError:  # it resolved between the decision and the change
            return say("resolved", language, code=decision.code, what=decision.what), True
    except StoreError as exc:
        log.warning("WeCom reply on %s not acted on: the store cannot commit (%s)", channel, exc)
        return say("store_failed", language), False
    if not new:  # acknowledged meanwhile, by someone else
        known = already(decision.code, decision.what, ack.by, ack.at, core.config)
        return _said(known, language), True
    log.info("alert group %s acknowledged by %s via WeCom", decision.key, decision.member)
    return acknowledged(decision, language), True


def _said(decision: Say | None, language: str) -> str | None:
    return None if decision is None else say(decision.what, language, **decision.params)


def setup_wecom_callback(app: web.Application) -> None:
    app[keys.WECOM_CALLBACKS] = CallbackState.from_config(app[keys.CONFIG], app[keys.CLOCK])
    app.router.add_get(PATH, verify_url)
    app.router.add_post(PATH, receive)
