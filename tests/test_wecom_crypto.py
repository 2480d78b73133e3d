"""WeCom callback encryption (monitor_manager.act.wecom_crypto) against WeCom's own examples."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor_manager.act.wecom_crypto import (
    MAX_BODY_BYTES,
    CallbackError,
    WecomCrypto,
    timestamp_fresh,
)
from wecom_callback_client import WecomCallbackClient

# The documented example (developer.work.weixin.qq.com 90930; Tencent's WXBizMsgCrypt samples).
TOKEN = "QDG6eK"
CORP_ID = "wx5823bf96d3bd56c7"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="

# The sample's POSTed message (Tencent's C# Sample.cs for WXBizMsgCrypt).
POST_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
POST_BODY = (
    b"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA["
    b"RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Qczc"
    b"dCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLj"
    b"vd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMn"
    b"vw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k"
    b"22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2Yoy"
    b"yH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"
)

TS, NONCE = "1409659589", "263014780"


@pytest.fixture
def crypto() -> WecomCrypto:
    return WecomCrypto(TOKEN, AES_KEY, CORP_ID)


def raw_ciphertext(plain: bytes) -> str:
    """AES-CBC of exactly `plain` with the example key: for hand-made malformed plaintexts."""
    key = base64.b64decode(AES_KEY + "=")
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def pkcs7_32(data: bytes) -> bytes:
    pad = 32 - len(data) % 32
    return data + bytes([pad]) * pad


def signed_body(crypto: WecomCrypto, encrypted: str) -> tuple[str, bytes]:
    """A well-signed outer XML around any Encrypt value, to reach the decryption checks."""
    body = f"<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>{encrypted}</Encrypt></xml>"
    return crypto.signature(TS, NONCE, encrypted), body.encode()


# -- the documented vectors ---------------------------------------------------------------------


def test_documented_url_verification_vector(crypto: WecomCrypto) -> None:
    assert crypto.signature(TS, NONCE, ECHOSTR) == "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    sig = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    assert crypto.verify_url(sig, TS, NONCE, ECHOSTR) == "1616140317555161061"


def test_documented_message_vector(crypto: WecomCrypto) -> None:
    fields = crypto.decrypt_message(POST_SIGNATURE, "1409659813", "1372623149", POST_BODY)
    assert fields == {
        "ToUserName": CORP_ID,
        "FromUserName": "mycreate",
        "CreateTime": "1409659813",
        "MsgType": "text",
        "Content": "hello",
        "MsgId": "4561255354251345929",
        "AgentID": "218",
    }


# -- the key --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [AES_KEY[:-1], AES_KEY + "A", "", AES_KEY[:-1] + "!", "é" * 43])
def test_bad_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ValueError, match="EncodingAESKey") as info:
        WecomCrypto(TOKEN, key, CORP_ID)
    assert not isinstance(info.value, CallbackError)
    if key:
        assert key not in str(info.value)


def test_empty_token_or_corp_id_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        WecomCrypto("", AES_KEY, CORP_ID)
    with pytest.raises(ValueError, match="corp id"):
        WecomCrypto(TOKEN, AES_KEY, "")


def test_repr_shows_no_secret(crypto: WecomCrypto) -> None:
    assert TOKEN not in repr(crypto) and AES_KEY not in repr(crypto)


# -- round trips ----------------------------------------------------------------------------------

# 16 + 4 + 26 + len(CORP_ID) = 64: already aligned, so a whole 32-byte block of padding.
ALIGNED = "x" * (64 - 20 - len(CORP_ID))


@pytest.mark.parametrize(
    "message", ["", "1616140317555161061", "确认 AB12 中文测试", "é" * 5000, ALIGNED, "a]]>b"]
)
def test_round_trip(crypto: WecomCrypto, message: str) -> None:
    encrypted = crypto.encrypt(message)
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert crypto.decrypt(encrypted) == message
    signature = crypto.signature(TS, NONCE, encrypted)
    assert crypto.verify_url(signature, TS, NONCE, encrypted) == message


def test_encrypt_is_random_unless_told(crypto: WecomCrypto) -> None:
    assert crypto.encrypt("x") != crypto.encrypt("x")
    fixed = b"0123456789abcdef"
    assert crypto.encrypt("x", nonce_bytes=fixed) == crypto.encrypt("x", nonce_bytes=fixed)
    with pytest.raises(ValueError):
        crypto.encrypt("x", nonce_bytes=b"short")


# -- every malformation is a CallbackError --------------------------------------------------------


def test_altered_signature(crypto: WecomCrypto) -> None:
    sig = crypto.signature(TS, NONCE, ECHOSTR)
    for bad in [sig[:-1] + "0", sig.upper(), "", "é" * 40, "\ud800"]:
        with pytest.raises(CallbackError, match="bad signature"):
            crypto.verify_url(bad, TS, NONCE, ECHOSTR)
    with pytest.raises(CallbackError, match="bad signature"):
        crypto.verify_url(sig, str(int(TS) + 1), NONCE, ECHOSTR)
    with pytest.raises(CallbackError, match="bad signature"):
        WecomCrypto("other", AES_KEY, CORP_ID).verify_url(sig, TS, NONCE, ECHOSTR)


def test_tampered_ciphertext(crypto: WecomCrypto) -> None:
    data = bytearray(base64.b64decode(crypto.encrypt("ack AB12")))
    for index in (0, 17, len(data) - 1):  # random part / length field / padding
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        encrypted = base64.b64encode(bytes(tampered)).decode()
        sig, body = signed_body(crypto, encrypted)
        with pytest.raises(CallbackError):
            crypto.decrypt_message(sig, TS, NONCE, body)
        with pytest.raises(CallbackError, match="bad signature"):  # unsigned: stops earlier
            crypto.decrypt_message(crypto.signature(TS, NONCE, ECHOSTR), TS, NONCE, body)


def test_wrong_corp_id(crypto: WecomCrypto) -> None:
    other = WecomCrypto(TOKEN, AES_KEY, "ww0000000000000000")
    encrypted = other.encrypt("hello")
    with pytest.raises(CallbackError, match="wrong receive id"):
        crypto.verify_url(crypto.signature(TS, NONCE, encrypted), TS, NONCE, encrypted)
    with pytest.raises(CallbackError, match="wrong receive id"):
        crypto.decrypt(raw_ciphertext(pkcs7_32(b"r" * 16 + b"\0\0\0\x01x" + CORP_ID[:-1].encode())))


@pytest.mark.parametrize(
    "plain",
    [
        b"r" * 16 + b"\0\0\0\x01x" + CORP_ID.encode() + b"\0" * 9,  # pad byte 0
        b"r" * 16 + b"\0\0\0\x01x" + CORP_ID.encode() + b"\x21" * 9,  # pad byte 33
        b"r" * 16 + b"\0\0\0\x01x" + CORP_ID.encode() + b"\x04" + b"\x09" * 8,  # mixed
        b"\x40" * 64,  # pad 64: beyond 32 even though the text is that long
    ],
)
def test_bad_padding(crypto: WecomCrypto, plain: bytes) -> None:
    assert len(plain) % 16 == 0
    with pytest.raises(CallbackError, match="bad padding"):
        crypto.decrypt(raw_ciphertext(plain))


@pytest.mark.parametrize(
    "encrypted", ["not base64!", "é" + ECHOSTR[1:], ECHOSTR[:-2], ECHOSTR + "\n", "\ud800"]
)
def test_bad_base64(crypto: WecomCrypto, encrypted: str) -> None:
    with pytest.raises(CallbackError, match="bad base64"):
        crypto.decrypt(encrypted)


@pytest.mark.parametrize(
    ("plain_or_cut", "reason"),
    [
        (b"", "bad ciphertext length"),
        (15, "bad ciphertext length"),
        (48, "bad padding"),  # whole blocks, but the padding was in the block cut off
        (pkcs7_32(b"r" * 19), "truncated"),  # no room for the 4-byte length
        (pkcs7_32(b"r" * 16 + b"\0\0\x01\0" + b"x" * 10), "bad length"),  # claims 256 bytes
        (pkcs7_32(b"r" * 16 + b"\0\0\0\x01\xff" + CORP_ID.encode()), "not utf-8"),
    ],
)
def test_truncated_or_inconsistent(
    crypto: WecomCrypto, plain_or_cut: bytes | int, reason: str
) -> None:
    if isinstance(plain_or_cut, int):
        data = base64.b64decode(crypto.encrypt("x" * 40))[:plain_or_cut]
        encrypted = base64.b64encode(data).decode()
    else:
        encrypted = raw_ciphertext(plain_or_cut) if plain_or_cut else ""
    with pytest.raises(CallbackError, match=reason):
        crypto.decrypt(encrypted)


def test_oversize_body(crypto: WecomCrypto) -> None:
    sig, body = signed_body(crypto, crypto.encrypt("<xml><a>1</a></xml>"))
    padded = body.replace(b"</xml>", b" " * (MAX_BODY_BYTES - len(body) + 1) + b"</xml>")
    assert len(padded) == MAX_BODY_BYTES + 1
    with pytest.raises(CallbackError, match="body too large"):
        crypto.decrypt_message(sig, TS, NONCE, padded)
    at_limit = body.replace(b"</xml>", b" " * (MAX_BODY_BYTES - len(body)) + b"</xml>")
    assert crypto.decrypt_message(sig, TS, NONCE, at_limit) == {"a": "1"}


@pytest.mark.parametrize(
    "body",
    [
        b'<!DOCTYPE xml [<!ENTITY e "x">]><xml><Encrypt>&e;</Encrypt></xml>',
        b'<!doctype xml SYSTEM "file:///etc/passwd"><xml><Encrypt>a</Encrypt></xml>',
        b'<xml><!ENTITY e "x"><Encrypt>a</Encrypt></xml>',
    ],
)
def test_dtd_bodies(crypto: WecomCrypto, body: bytes) -> None:
    with pytest.raises(CallbackError, match="DTD not allowed"):
        crypto.decrypt_message("x", TS, NONCE, body)


def test_parser_refuses_a_dtd_the_screen_missed() -> None:
    from monitor_manager.act.wecom_crypto import _parse_xml

    with pytest.raises(CallbackError, match="DTD not allowed"):
        _parse_xml(b'<!DOCTYPE xml [<!ENTITY e "x">]><xml><a>&e;</a></xml>', screen=False)


def test_utf16_body_cannot_hide_a_dtd(crypto: WecomCrypto) -> None:
    body = '<!DOCTYPE xml [<!ENTITY e "x">]><xml><Encrypt>&e;</Encrypt></xml>'.encode("utf-16")
    with pytest.raises(CallbackError, match="not utf-8"):
        crypto.decrypt_message("x", TS, NONCE, body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed XML"),
        (b"<xml><Encrypt>a</Encrypt>", "malformed XML"),
        (b"<other><Encrypt>a</Encrypt></other>", "malformed XML"),
        (b"<xml><ToUserName>a</ToUserName></xml>", "no Encrypt element"),
        (b"<xml><Encrypt></Encrypt></xml>", "no Encrypt element"),
        (b"<xml><Encrypt>\xff</Encrypt></xml>", "not utf-8"),
    ],
)
def test_malformed_outer_xml(crypto: WecomCrypto, body: bytes, reason: str) -> None:
    with pytest.raises(CallbackError, match=reason):
        crypto.decrypt_message("x", TS, NONCE, body)


def test_inner_message_must_be_xml(crypto: WecomCrypto) -> None:
    sig, body = signed_body(crypto, crypto.encrypt("not xml"))
    with pytest.raises(CallbackError, match="malformed XML"):
        crypto.decrypt_message(sig, TS, NONCE, body)
    inner = '<!DOCTYPE xml [<!ENTITY e "x">]><xml><Content>&e;</Content></xml>'
    sig, body = signed_body(crypto, crypto.encrypt(inner))
    with pytest.raises(CallbackError, match="DTD not allowed"):
        crypto.decrypt_message(sig, TS, NONCE, body)


def test_member_may_write_doctype_in_a_message(crypto: WecomCrypto) -> None:
    """Only the outer body is screened as text; a reply's own words are the member's."""
    client = WecomCallbackClient(TOKEN, AES_KEY, CORP_ID)
    post = client.message("zhangsan", 'ack AB12 <!DOCTYPE x [<!ENTITY e "y">]>')
    fields = crypto.decrypt_message(
        post.params["msg_signature"], post.params["timestamp"], post.params["nonce"], post.body
    )
    assert fields["Content"] == 'ack AB12 <!DOCTYPE x [<!ENTITY e "y">]>'


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_ciphertext_only_raises_callback_error(data: bytes) -> None:
    crypto = WecomCrypto(TOKEN, AES_KEY, CORP_ID)
    encrypted = base64.b64encode(data).decode()
    try:
        crypto.decrypt(encrypted)
    except CallbackError:
        pass
    sig, body = signed_body(crypto, encrypted)
    try:
        crypto.decrypt_message(sig, TS, NONCE, body)
    except CallbackError:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=100), body=st.binary(max_size=300))
def test_random_text_and_bodies_only_raise_callback_error(text: str, body: bytes) -> None:
    crypto = WecomCrypto(TOKEN, AES_KEY, CORP_ID)
    for call in (
        lambda: crypto.decrypt(text),
        lambda: crypto.verify_url(text, text, text, text),
        lambda: crypto.decrypt_message(text, TS, text, body),
    ):
        try:
            call()
        except CallbackError:
            pass


# -- passive replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Acknowledged AB12",
        "已确认 AB12：磁盘满",
        "",
        "x]]>y]]]>z<![CDATA[&amp;</Content>",
        "a\r\nb\rc",
    ],
)
def test_reply_parses_back(crypto: WecomCrypto, text: str) -> None:
    reply = crypto.encrypt_reply(text, "zhangsan", CORP_ID, "1409659900", "12345")
    outer = ET.fromstring(reply)
    assert [child.tag for child in outer] == ["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]
    assert outer.findtext("TimeStamp") == "1409659900" and outer.findtext("Nonce") == "12345"
    signature = outer.findtext("MsgSignature") or ""
    fields = crypto.decrypt_message(signature, "1409659900", "12345", reply)
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert fields == {
        "ToUserName": "zhangsan",
        "FromUserName": CORP_ID,
        "CreateTime": "1409659900",
        "MsgType": "text",
        "Content": expected,
    }
    # WeCom's side, read independently, agrees.
    assert WecomCallbackClient(TOKEN, AES_KEY, CORP_ID).read_reply(reply)["Content"] == expected


def test_reply_replaces_characters_xml_cannot_carry(crypto: WecomCrypto) -> None:
    reply = crypto.encrypt_reply("a\x00b\x1bc\ud800d\tok", "u", CORP_ID, "1", "2")
    sig = ET.fromstring(reply).findtext("MsgSignature") or ""
    assert crypto.decrypt_message(sig, "1", "2", reply)["Content"] == "a\ufffdb\ufffdc\ufffdd\tok"


@pytest.mark.parametrize(("timestamp", "nonce"), [("", "1"), ("1a", "1"), ("1", ""), ("1", "a]]>")])
def test_reply_refuses_odd_timestamp_or_nonce(
    crypto: WecomCrypto, timestamp: str, nonce: str
) -> None:
    with pytest.raises(ValueError):
        crypto.encrypt_reply("x", "u", CORP_ID, timestamp, nonce)


# -- replay guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "fresh"),
    [
        ("1000", True),
        ("700", True),
        ("1300", True),
        ("699", False),
        ("1301", False),
        ("", False),
        ("-5", False),
        ("+1000", False),
        (" 1000", False),
        ("1000.0", False),
        ("١٠٠٠", False),  # Arabic-Indic digits: int() would take them
        ("1" * 5000, False),
    ],
)
def test_timestamp_fresh(timestamp: str, fresh: bool) -> None:
    assert timestamp_fresh(timestamp, now=1000.0, window=300) is fresh


# -- the WeCom-side test client -------------------------------------------------------------------


def test_client_signs_like_the_documented_example() -> None:
    client = WecomCallbackClient(TOKEN, AES_KEY, CORP_ID)
    assert client.sign(TS, NONCE, ECHOSTR) == "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    assert client.decrypt(ECHOSTR) == "1616140317555161061"


def test_client_requests_are_accepted(crypto: WecomCrypto) -> None:
    client = WecomCallbackClient(TOKEN, AES_KEY, CORP_ID, agent_id="1000007")
    get = client.url_verification()
    query = dict(urllib.parse.parse_qsl(get.query_string(), strict_parsing=True))
    assert query == get.params
    assert crypto.verify_url(**query) == get.echo

    post = client.message("zhangsan", "确认 AB12 ]]> <b>", msg_id="42")
    assert post.params.keys() == {"msg_signature", "timestamp", "nonce"}
    fields = crypto.decrypt_message(
        post.params["msg_signature"], post.params["timestamp"], post.params["nonce"], post.body
    )
    assert fields == {
        "ToUserName": CORP_ID,
        "FromUserName": "zhangsan",
        "CreateTime": post.params["timestamp"],
        "MsgType": "text",
        "Content": "确认 AB12 ]]> <b>",
        "MsgId": "42",
        "AgentID": "1000007",
    }
    assert timestamp_fresh(post.params["timestamp"], now=float(post.params["timestamp"]))


def test_signature_is_sha1_of_sorted_parts(crypto: WecomCrypto) -> None:
    parts = sorted([TOKEN, "b", "a", "c"])
    assert crypto.signature("b", "a", "c") == hashlib.sha1("".join(parts).encode()).hexdigest()
