"""Photos: decoded before they are stored, size-limited, stored once by SHA-256, scoped like their
event, and only while the event is open."""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import pytest

from tests.helpers import act, photo, report

PNG = photo("PNG", "a")
JPEG = photo("JPEG", "b")
WEBP = photo("WEBP", "c")
# Magic bytes and nothing behind them: what the type sniffing alone used to accept.
FAKE_PNG = b"\x89PNG\r\n\x1a\n"
FAKE_JPEG = b"\xff\xd8\xff\xe0" + b"\x10JFIF" + b"\x00" * 64
FAKE_WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64


@pytest.fixture
def setup(make_actor, categories):
    worker = make_actor("grid_worker", "g111")
    stranger = make_actor("grid_worker", "g212")
    return worker, stranger, report(worker)["id"]


def upload(actor, event_id, data: bytes, kind="before", name="photo.jpg"):
    return actor.post(f"/api/v1/events/{event_id}/attachments",
                      data={"file": (io.BytesIO(data), name), "kind": kind}, content_type="multipart/form-data")


@pytest.mark.parametrize(("data", "content_type"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")])
def test_images_are_accepted_by_content_and_stored_by_hash(app, setup, data, content_type):
    worker, _, eid = setup
    response = upload(worker, eid, data, name="whatever.txt")
    assert response.status_code == 201, response.json
    body = response.json
    assert body["content_type"] == content_type and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["kind"] == "before" and body["size_bytes"] == len(data)
    download = worker.get(f"/api/v1/events/{eid}/attachments/{body['id']}")
    assert download.status_code == 200 and download.data == data and download.mimetype == content_type
    assert [a["id"] for a in worker.get(f"/api/v1/events/{eid}/attachments").json] == [body["id"]]


def test_same_photo_twice_is_one_attachment(setup):
    worker, _, eid = setup
    first = upload(worker, eid, PNG)
    again = upload(worker, eid, PNG)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json["id"] == again.json["id"]
    assert upload(worker, eid, PNG, kind="after").status_code == 201


@pytest.mark.parametrize("data", [b"GIF89a" + b"\x00" * 20, b"%PDF-1.4 hello", b"<html>", b""])
def test_non_images_are_refused(setup, data):
    worker, _, eid = setup
    response = upload(worker, eid, data)
    assert response.status_code == 422
    assert worker.get(f"/api/v1/events/{eid}/attachments").json == []


def test_kind_must_be_before_or_after_and_file_is_required(setup):
    worker, _, eid = setup
    assert upload(worker, eid, PNG, kind="during").status_code == 422
    response = worker.post(f"/api/v1/events/{eid}/attachments", data={"kind": "before"}, content_type="multipart/form-data")
    assert response.status_code == 422 and "file" in response.json["errors"]["files"]


def test_oversize_photo_is_413(app, setup):
    worker, _, eid = setup
    app.config["MAX_ATTACHMENT_BYTES"] = 100
    response = upload(worker, eid, PNG + b"\x00" * 200)
    assert response.status_code == 413 and response.json["code"] == "payload_too_large"


def test_photos_of_an_event_out_of_scope_are_404(setup):
    worker, stranger, eid = setup
    attachment = upload(worker, eid, PNG).json
    assert upload(stranger, eid, JPEG).status_code == 404
    assert stranger.get(f"/api/v1/events/{eid}/attachments/{attachment['id']}").status_code == 404
    assert worker.get(f"/api/v1/events/{eid}/attachments/999999").status_code == 404


def stored_files(app) -> list[Path]:
    return [path for path in Path(app.config["UPLOAD_FOLDER"]).rglob("*") if path.is_file()]


@pytest.mark.parametrize("data", [FAKE_PNG, FAKE_PNG + b"\x00" * 64, FAKE_JPEG, FAKE_WEBP, PNG[:60], JPEG[: len(JPEG) // 2],
                                  WEBP[:-12]], ids=["png-header", "png-zeros", "jpeg-zeros", "webp-zeros", "png-cut",
                                                    "jpeg-cut", "webp-cut"])
def test_a_file_that_does_not_decode_is_refused_and_nothing_is_stored(app, setup, data):
    worker, _, eid = setup
    response = upload(worker, eid, data, name="photo.png")
    assert response.status_code == 422, response.json
    assert response.json["code"] == "invalid" and "图片" in response.json["message"]
    assert worker.get(f"/api/v1/events/{eid}/attachments").json == []
    assert stored_files(app) == []


def _png_claiming(width: int, height: int) -> bytes:
    """A one-pixel PNG whose header claims `width` × `height`: a decompression bomb's first bytes."""
    data = photo("PNG", "bomb", size=(1, 1))
    start = data.index(b"IHDR")
    header = struct.pack(">II", width, height) + data[start + 12:start + 17]
    chunk = b"IHDR" + header
    return data[:start] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[start + 21:]


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (60_000, 60_000)])
def test_an_image_with_too_many_pixels_is_refused_before_it_is_decoded(app, setup, width, height):
    worker, _, eid = setup
    response = upload(worker, eid, _png_claiming(width, height), name="bomb.png")
    assert response.status_code == 422, response.json
    assert "像素" in response.json["message"] and "像素" in response.json["errors"]["file"][0]
    assert stored_files(app) == []


def test_a_phone_sized_photo_is_accepted(setup):
    worker, _, eid = setup
    assert upload(worker, eid, photo("JPEG", "phone", size=(4000, 3000))).status_code == 201


@pytest.fixture
def ended(make_actor, setup):
    """The event of `setup` walked to each ended state by the district's supervisor; (state → event id)."""
    worker, _, first = setup
    supervisor, handler = make_actor("supervisor", "d"), make_actor("handler", "s1")
    ids = {"closed": first, **{state: report(worker)["id"] for state in ("rejected", "merged", "cancelled")}}
    target = report(worker)["id"]
    for action, body in [("register", {}), ("dispatch", {"handler_id": handler.user.id})]:
        assert act(supervisor, ids["closed"], action, **body).status_code == 200
    for actor, action in [(handler, "accept"), (handler, "resolve"), (supervisor, "verify")]:
        assert act(actor, ids["closed"], action, note="已处置").status_code == 200, action
    assert act(supervisor, ids["rejected"], "reject", note="不属于受理范围").status_code == 200
    assert act(supervisor, ids["merged"], "merge", into_event_id=target).status_code == 200
    assert act(supervisor, ids["cancelled"], "cancel", note="重复上报").status_code == 200
    return worker, supervisor, handler, ids


@pytest.mark.parametrize(("state", "label"), [("closed", "已结案"), ("rejected", "不予立案"), ("merged", "已合并"),
                                              ("cancelled", "已作废")])
def test_an_ended_event_takes_no_more_photos(app, ended, state, label):
    worker, supervisor, handler, ids = ended
    uploaders = [worker, supervisor] + ([handler] if state == "closed" else [])  # the handler saw it only once dispatched
    for actor in uploaders:
        for kind in ("before", "after"):
            response = upload(actor, ids[state], photo("PNG", f"{state}-{kind}"), kind=kind)
            assert response.status_code == 409, (actor.user.role, kind, response.json)
            assert response.json["code"] == "conflict" and label in response.json["message"]
    assert worker.get(f"/api/v1/events/{ids[state]}/attachments").json == []
    assert stored_files(app) == []


def test_a_reopened_event_takes_photos_again(ended):
    worker, supervisor, handler, ids = ended
    assert upload(handler, ids["closed"], PNG, kind="after").status_code == 409
    assert act(supervisor, ids["closed"], "reopen", note="市民回访不满意").status_code == 200
    assert upload(handler, ids["closed"], PNG, kind="after").status_code == 201
