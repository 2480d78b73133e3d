"""The WeCom API as both WeCom channels use it: byte limits, errcodes, one call.

WeCom measures content in UTF-8 bytes of the `content` string: 2048 for application text and
markdown, 2048 for robot text, 4096 for robot markdown. It answers HTTP 200 even on failure;
success is `errcode == 0` (`error_for` classifies the rest).
"""

from __future__ import annotations

from functools import partial

from monitor_manager.channels.base import ChannelError, redact
from monitor_manager.channels.http_json import call_json

# Application text/markdown and robot text; robot markdown allows twice as much.
APP_LIMIT = 2048
ROBOT_TEXT_LIMIT = 2048
ROBOT_MARKDOWN_LIMIT = 4096

# Tokens that expired or were invalidated early: refresh once and re-send (global error
# codes: developer.work.weixin.qq.com/document/path/90313).
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# System busy and the two frequency limits: worth retrying later. Everything else is a
# configuration or content error that the same request will hit again.
TRANSIENT_ERRORS = frozenset({-1, 45009, 45033})
# A 45009 block lasts as long as the window that was hit, at least a minute
# (developer.work.weixin.qq.com/document/path/90454).
FREQ_LIMIT_BACKOFF = 60.0

# Hints for the codes an operator will meet, so a failed delivery says what to fix.
_HINTS: dict[int, str] = {
    -1: "WeCom is busy",
    40001: "wrong corp_id/secret, secret reset, or application disabled",
    40003: "invalid user id",
    40013: "invalid corp_id",
    40014: "invalid access token",
    40056: "invalid agent_id",
    40058: "invalid parameter or content too long",
    41001: "access token missing",
    42001: "access token expired",
    44004: "empty content",
    45002: "content too long",
    45009: "API frequency limit hit",
    45033: "too many concurrent calls",
    48002: "API not authorised for this application",
    60020: "this server's IP is not in the application's trusted IP list (企业可信IP)",
    81013: "none of the recipients is a valid member in the application's visible range",
    82001: "no recipients",
    93000: "invalid robot webhook URL, or the robot was removed from its group",
    93004: "robot disabled",
    93008: "robot not in the group",
    301002: "access token belongs to another agent_id",
}


def error_for(errcode: int, errmsg: str, what: str, *secrets: str) -> ChannelError:
    """The ChannelError for a non-zero errcode, classified transient or permanent."""
    hint = _HINTS.get(errcode, "")
    detail = _short_errmsg(errmsg)
    reason = f"WeCom {what}: errcode {errcode}"
    reason += f" ({hint})" if hint else ""
    reason += f": {detail}" if detail else ""
    reason = redact(reason, *secrets)
    if errcode == 45009:
        return ChannelError(reason, retry_after=FREQ_LIMIT_BACKOFF)
    return ChannelError(reason, permanent=errcode not in TRANSIENT_ERRORS)


def _short_errmsg(errmsg: str) -> str:
    # Real errmsgs end in ", hint: [...], from ip: ..., more info at ..."; the head is the news.
    head = errmsg.split(", hint:")[0].strip()
    return head[:200]


def markdown_marker(index: int, total: int) -> str:
    """The "(2/3)" of a split markdown message, in WeCom's grey."""
    return f'<font color="comment">({index}/{total})</font>\n'


call_api = partial(call_json, service="WeCom")
"""One WeCom API call (`call_json` with WeCom named in its errors)."""
