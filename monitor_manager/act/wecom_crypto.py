"""WeCom (企业微信) callback encryption: URL verification, message decryption, passive replies.

Written from WeCom's published protocol on developer.work.weixin.qq.com:
- /document/path/90930 (回调配置 / 加解密方案): AESKey = base64(EncodingAESKey + "="), 32 bytes;
  AES-256-CBC with IV = AESKey[:16]; PKCS#7 padding to a multiple of 32 bytes; plaintext =
  16 random bytes + 4-byte big-endian length + message + receive id (the corp id);
  msg_signature = sha1 hex of token, timestamp, nonce and the ciphertext, sorted and joined.
- /document/path/90238 (接收消息): the POSTed `<xml><ToUserName/><AgentID/><Encrypt/></xml>`.
- /document/path/90241 (被动回复消息格式): the reply
  `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.

Everything a caller gets from a bad request is a `CallbackError` with a short fixed reason, so the
HTTP handler can answer 4xx without echoing attacker-controlled or secret text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import xml.etree.ElementTree as ET

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CallbackError", "WecomCrypto", "timestamp_fresh"]

MAX_BODY_BYTES = 64 * 1024
_PAD_BLOCK = 32  # WeCom pads to 32 bytes, not AES's 16.
_RANDOM_LEN = 16
_HEADER_LEN = _RANDOM_LEN + 4
# XML 1.0 cannot carry these even inside CDATA: C0 controls but tab/newline, lone surrogates,
# U+FFFE/U+FFFF. "\r" is left to line-ending normalisation before this runs.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NONCE = re.compile(r"[0-9A-Za-z]{1,64}")


class CallbackError(ValueError):
    """A callback request that does not verify or does not parse; the reason is fixed text."""


class WecomCrypto:
    """One WeCom app's callback secrets: Token, EncodingAESKey and the receive id (corp id).

    Construction validates the key (for config checks); messages never include the secrets.
    """

    __slots__ = ("_token", "_key", "_receive_id")

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not token:
            raise ValueError("callback token must not be empty")
        if not receive_id:
            raise ValueError("receive id (corp id) must not be empty")
        if len(encoding_aes_key) != 43:
            raise ValueError("callback AES key (EncodingAESKey) must be 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("callback AES key (EncodingAESKey) is not valid base64") from None
        if len(key) != 32:  # pragma: no cover - 43 valid base64 chars + "=" is always 32 bytes
            raise ValueError("callback AES key (EncodingAESKey) must decode to 32 bytes")
        self._token = token
        self._key = key
        self._receive_id = receive_id.encode()

    def signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        """msg_signature: SHA-1 hex of token, timestamp, nonce and ciphertext, sorted, joined."""
        joined = "".join(sorted((self._token, timestamp, nonce, encrypted)))
        # surrogatepass: query strings may carry anything; this must hash, not raise.
        return hashlib.sha1(joined.encode("utf-8", "surrogatepass")).hexdigest()

    def _check_signature(self, msg_signature: str, timestamp: str, nonce: str, enc: str) -> None:
        expected = self.signature(timestamp, nonce, enc).encode()
        given = msg_signature.encode("utf-8", "replace")  # compare_digest takes ASCII str only
        if not hmac.compare_digest(expected, given):
            raise CallbackError("bad signature")

    def decrypt(self, encrypted_b64: str) -> str:
        """Decrypt one ciphertext and check its receive id. Verify the signature first:
        unauthenticated CBC must not be decrypted for an unverified sender (padding oracle)."""
        try:
            data = base64.b64decode(encrypted_b64.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise CallbackError("bad base64") from None
        if not data or len(data) % 16:
            raise CallbackError("bad ciphertext length")
        decryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= _PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CallbackError("bad padding")
        content = plain[:-pad]
        if len(content) < _HEADER_LEN:
            raise CallbackError("truncated")
        length = int.from_bytes(content[_RANDOM_LEN:_HEADER_LEN], "big")
        if _HEADER_LEN + length > len(content):
            raise CallbackError("bad length")
        message = content[_HEADER_LEN : _HEADER_LEN + length]
        if content[_HEADER_LEN + length :] != self._receive_id:
            raise CallbackError("wrong receive id")
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackError("not utf-8") from None

    def encrypt(self, message: str, nonce_bytes: bytes | None = None) -> str:
        """Encrypt a reply; `nonce_bytes` (16 random bytes) is only given by tests."""
        random = secrets.token_bytes(_RANDOM_LEN) if nonce_bytes is None else nonce_bytes
        if len(random) != _RANDOM_LEN:
            raise ValueError("nonce_bytes must be 16 bytes")
        body = message.encode("utf-8")
        plain = random + len(body).to_bytes(4, "big") + body + self._receive_id
        pad = _PAD_BLOCK - len(plain) % _PAD_BLOCK  # 1..32: a full block when already aligned
        plain += bytes([pad]) * pad
        encryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """URL verification (GET): the plaintext echo to answer with, as is."""
        self._check_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_message(
        self, msg_signature: str, timestamp: str, nonce: str, body_xml: bytes
    ) -> dict[str, str]:
        """A POSTed message: the inner XML's child elements as {tag: text}."""
        outer = _parse_xml(body_xml)
        encrypted = outer.findtext("Encrypt")
        if not encrypted:
            raise CallbackError("no Encrypt element")
        self._check_signature(msg_signature, timestamp, nonce, encrypted)
        inner = _parse_xml(self.decrypt(encrypted).encode("utf-8"), screen=False)
        fields: dict[str, str] = {}
        for child in inner:
            fields.setdefault(child.tag, child.text or "")  # first wins on a repeated tag
        return fields

    def encrypt_reply(
        self, text_content: str, to_user: str, from_user: str, timestamp: str, nonce: str
    ) -> bytes:
        """A passive text reply (the body of the 200 answer), encrypted and signed."""
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise ValueError("timestamp must be decimal digits")
        if not _NONCE.fullmatch(nonce):  # it is signed as is and must survive the XML unchanged
            raise ValueError("nonce must be 1-64 ASCII letters or digits")
        message = (
            f"<xml><ToUserName>{_cdata(to_user)}</ToUserName>"
            f"<FromUserName>{_cdata(from_user)}</FromUserName>"
            f"<CreateTime>{timestamp}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{_cdata(text_content)}</Content></xml>"
        )
        encrypted = self.encrypt(message)
        signature = self.signature(timestamp, nonce, encrypted)
        reply = (
            f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )
        return reply.encode("utf-8")


def timestamp_fresh(timestamp: str, now: float, window: float = 300) -> bool:
    """Replay guard: `timestamp` is decimal seconds within `window` of `now` either way."""
    # isascii: int() also takes other scripts' digits; the length cap keeps int() cheap.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    return abs(int(timestamp) - now) <= window


def _cdata(text: str) -> str:
    """Text as one or more CDATA sections: "]]>" is split across two, so any text survives."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # what any XML parser would do
    text = _XML_ILLEGAL.sub("\ufffd", text)
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


class _NoDtdBuilder(ET.TreeBuilder):
    """Refuses a DOCTYPE as the parser meets it: no entity can be declared, so none expands."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise CallbackError("DTD not allowed")


def _parse_xml(body: bytes, screen: bool = True) -> ET.Element:
    """Parse a small XML document that has no DTD.

    The outer body is also screened as text (it only ever holds base64); the decrypted message
    is not, since a member may well type "<!DOCTYPE" in a reply: there the parser's refusal is
    the guard. Decoding as UTF-8 and parsing the str means a declared encoding is ignored, so a
    UTF-16 body cannot hide a DOCTYPE from the screen.
    """
    if len(body) > MAX_BODY_BYTES:
        raise CallbackError("body too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CallbackError("not utf-8") from None
    upper = text.upper()
    if screen and ("<!DOCTYPE" in upper or "<!ENTITY" in upper):
        raise CallbackError("DTD not allowed")
    parser = ET.XMLParser(target=_NoDtdBuilder())
    try:
        parser.feed(text)
        root = parser.close()
    except CallbackError:
        raise  # the DOCTYPE refusal, before the broader ValueError below
    except (ET.ParseError, ValueError):
        raise CallbackError("malformed XML") from None
    if root.tag != "xml":
        raise CallbackError("malformed XML")
    return root
