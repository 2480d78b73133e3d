"""WeCom's side of the callback (接收消息), for tests: what WeCom sends to a callback URL.

Written from the published protocol (developer.work.weixin.qq.com document paths 90930, 90238,
90241), deliberately not on top of monitor_manager.act.wecom_crypto, so a test that the
service accepts these requests checks two independent readings of the documentation.

    client = WecomCallbackClient(token, encoding_aes_key, corp_id)
    get = client.url_verification()         # get.params -> GET query; expect get.echo back
    post = client.message("zhangsan", "ack AB12")  # post.params -> query, post.body -> body
    reply = client.read_reply(answer_body)  # a passive reply, checked and decrypted
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


@dataclass(frozen=True)
class CallbackRequest:
    """Query parameters (msg_signature, timestamp, nonce[, echostr]) and the POST body."""

    params: dict[str, str]
    body: bytes = b""
    echo: str = ""  # URL verification: the plaintext the service must answer with

    def query_string(self) -> str:
        """Url-encoded as WeCom sends it ("+" as %2B, "/" as %2F, "=" as %3D)."""
        return urllib.parse.urlencode(self.params)


class WecomCallbackClient:
    """One WeCom app as WeCom sees it: its Token, EncodingAESKey, corp id and agent id."""

    def __init__(
        self, token: str, encoding_aes_key: str, corp_id: str, agent_id: str = "1000002"
    ) -> None:
        self.token = token
        self.key = base64.b64decode(encoding_aes_key + "=")
        self.corp_id = corp_id
        self.agent_id = agent_id

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        joined = "".join(sorted([self.token, timestamp, nonce, encrypted]))
        return hashlib.sha1(joined.encode()).hexdigest()

    def encrypt(self, message: str) -> str:
        raw = message.encode()
        plain = secrets.token_bytes(16) + len(raw).to_bytes(4, "big") + raw + self.corp_id.encode()
        pad = 32 - len(plain) % 32
        plain += bytes([pad]) * pad
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(plain) + enc.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        plain = dec.update(base64.b64decode(encrypted)) + dec.finalize()
        plain = plain[: -plain[-1]]
        length = int.from_bytes(plain[16:20], "big")
        assert plain[20 + length :] == self.corp_id.encode(), "reply for another corp id"
        return plain[20 : 20 + length].decode()

    def url_verification(
        self, echo: str | None = None, timestamp: str | None = None, nonce: str | None = None
    ) -> CallbackRequest:
        """The GET WeCom sends when the URL is saved; the answer must be `echo`, exactly."""
        echo = echo if echo is not None else str(secrets.randbelow(10**19))
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        echostr = self.encrypt(echo)
        params = {
            "msg_signature": self.sign(timestamp, nonce, echostr),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }
        return CallbackRequest(params=params, echo=echo)

    def message(
        self,
        from_user: str,
        content: str,
        msg_id: str | None = None,
        timestamp: str | None = None,
        nonce: str | None = None,
    ) -> CallbackRequest:
        """A member's text message to the app, as the POST WeCom sends."""
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        msg_id = msg_id or str(secrets.randbelow(10**19))
        inner = (
            f"<xml><ToUserName>{_cdata(self.corp_id)}</ToUserName>"
            f"<FromUserName>{_cdata(from_user)}</FromUserName>"
            f"<CreateTime>{timestamp}</CreateTime>"
            "<MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{_cdata(content)}</Content>"
            f"<MsgId>{msg_id}</MsgId>"
            f"<AgentID>{self.agent_id}</AgentID></xml>"
        )
        encrypted = self.encrypt(inner)
        body = (
            f"<xml><ToUserName>{_cdata(self.corp_id)}</ToUserName>"
            f"<AgentID>{_cdata(self.agent_id)}</AgentID>"
            f"<Encrypt>{_cdata(encrypted)}</Encrypt></xml>"
        ).encode()
        params = {
            "msg_signature": self.sign(timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        return CallbackRequest(params=params, body=body)

    def read_reply(self, body: bytes) -> dict[str, str]:
        """Check a passive reply's signature as WeCom would, and return its message's fields."""
        outer = ET.fromstring(body)
        encrypted = outer.findtext("Encrypt") or ""
        timestamp = outer.findtext("TimeStamp") or ""
        nonce = outer.findtext("Nonce") or ""
        assert outer.findtext("MsgSignature") == self.sign(timestamp, nonce, encrypted), "bad sig"
        return {child.tag: child.text or "" for child in ET.fromstring(self.decrypt(encrypted))}


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
