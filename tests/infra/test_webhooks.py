"""Standard Webhooks signing, pure: the reference vector, rotation, tampering, time and header shape."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

import pytest

from grid_service.infra import webhooks
from tests.helpers import ROOT

# The test vector of the Standard Webhooks reference library (libraries/python/tests/test_webhooks.py).
REF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_TS = 1614265330
REF_BODY = b'{"test": 2432232314}'
REF_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
REF_NOW = datetime.fromtimestamp(REF_TS, tz=UTC)

# The worked example of docs/hotline.md: recomputed here, and the document must show these values.
DOC_SECRET = "whsec_Z3JpZC1zZXJ2aWNlLTEyMzQ1LWRlbW8tc2VjcmV0ISE="
DOC_ID = "msg_20260302_0001"
DOC_TS = 1772413200  # 2026-03-02T09:00:00+08:00
DOC_BODY = ('{"petition_number":"GD20260302000001","received_at":"2026-03-02T08:55:00+08:00",'
            '"channel":"phone","citizen_name":"张女士","citizen_phone":"13800001234",'
            '"content":"小区门口垃圾堆放三天无人清运","category_code":"HJ-01","urgency":"normal",'
            '"location":{"lat":40.005,"lon":110.005,"address":"测试街道1号"}}').encode()


def headers(signature: str, msg_id: str = REF_ID, ts: int | str = REF_TS) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_signs_exactly_like_the_reference_library():
    assert webhooks.sign(webhooks.secret_key(REF_SECRET), REF_ID, REF_TS, REF_BODY) == REF_SIGNATURE
    # The whsec_ prefix is optional when reading a secret.
    assert webhooks.secret_key(REF_SECRET) == webhooks.secret_key(REF_SECRET.removeprefix("whsec_"))


def test_reference_request_verifies_and_a_changed_byte_does_not():
    key = webhooks.secret_key(REF_SECRET)
    assert webhooks.verify(headers(REF_SIGNATURE), REF_BODY, [key], REF_NOW).msg_id == REF_ID
    for body in (REF_BODY + b" ", REF_BODY.replace(b"2", b"3"), b""):
        with pytest.raises(webhooks.SignatureError, match="no signature matches"):
            webhooks.verify(headers(REF_SIGNATURE), body, [key], REF_NOW)
    with pytest.raises(webhooks.SignatureError):
        webhooks.verify(headers(REF_SIGNATURE, msg_id="msg_other"), REF_BODY, [key], REF_NOW)


def test_one_valid_signature_among_several_is_enough_and_unknown_versions_are_skipped():
    key = webhooks.secret_key(REF_SECRET)
    many = f"v1a,{base64.b64encode(b'x' * 64).decode()} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc {REF_SIGNATURE}"
    assert webhooks.verify(headers(many), REF_BODY, [key], REF_NOW)


def test_either_key_of_a_rotation_verifies():
    old, new = webhooks.secret_key(webhooks.new_secret()), webhooks.secret_key(REF_SECRET)
    assert webhooks.verify(headers(REF_SIGNATURE), REF_BODY, [old, new], REF_NOW)
    with pytest.raises(webhooks.SignatureError):
        webhooks.verify(headers(REF_SIGNATURE), REF_BODY, [old], REF_NOW)


def test_sign_headers_signs_with_every_key_so_a_receiver_with_either_verifies():
    a, b = webhooks.secret_key(webhooks.new_secret()), webhooks.secret_key(webhooks.new_secret())
    sent = webhooks.sign_headers([a, b], "gs_1_1_ab", REF_NOW, b"{}")
    assert sent["webhook-timestamp"] == str(REF_TS) and len(sent["webhook-signature"].split(" ")) == 2
    for key in (a, b):
        assert webhooks.verify(sent, b"{}", [key], REF_NOW)


@pytest.mark.parametrize("offset", [-301, 301, -3600, 10**6])
def test_a_timestamp_more_than_five_minutes_away_is_refused(offset):
    key = webhooks.secret_key(REF_SECRET)
    with pytest.raises(webhooks.SignatureError, match="5 minutes"):
        webhooks.verify(headers(REF_SIGNATURE), REF_BODY, [key], REF_NOW + timedelta(seconds=offset))


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_timestamp_within_five_minutes_is_accepted(offset):
    assert webhooks.verify(headers(REF_SIGNATURE), REF_BODY, [webhooks.secret_key(REF_SECRET)], REF_NOW + timedelta(seconds=offset))


@pytest.mark.parametrize("bad", [
    {"webhook-id": ""}, {"webhook-timestamp": ""}, {"webhook-signature": ""},
    {"webhook-id": "msg.1"}, {"webhook-id": "msg 1"}, {"webhook-timestamp": "1614265330.5"},
    {"webhook-timestamp": "soon"}, {"webhook-signature": "v1,not-base64!"}, {"webhook-signature": "g0hM9SsE"},
])
def test_malformed_headers_are_refused(bad):
    with pytest.raises(webhooks.SignatureError):
        webhooks.verify(headers(REF_SIGNATURE) | bad, REF_BODY, [webhooks.secret_key(REF_SECRET)], REF_NOW)


def test_new_secrets_are_random_whsec_with_32_bytes():
    one, two = webhooks.new_secret(), webhooks.new_secret()
    assert one != two and one.startswith("whsec_") and len(webhooks.secret_key(one)) == 32
    with pytest.raises(ValueError):
        webhooks.secret_key("whsec_***")


def test_the_worked_example_in_the_docs_is_right():
    key = webhooks.secret_key(DOC_SECRET)
    expected = "v1," + base64.b64encode(hmac.new(key, f"{DOC_ID}.{DOC_TS}.".encode() + DOC_BODY, hashlib.sha256).digest()).decode()
    assert webhooks.sign(key, DOC_ID, DOC_TS, DOC_BODY) == expected
    doc = (ROOT / "docs" / "hotline.md").read_text(encoding="utf-8")
    for value in (DOC_SECRET, DOC_ID, str(DOC_TS), DOC_BODY.decode(), expected, key.hex()):
        assert value in doc, f"docs/hotline.md must show {value!r}"
    assert re.search(r"webhook-signature: " + re.escape(expected), doc)
