"""Photos: checked by content, size-limited, stored once by SHA-256, scoped like their event."""
from __future__ import annotations

import hashlib
import io

import pytest

from tests.helpers import report

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x10JFIF" + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64


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
