"""Photos of events: decoded before they are stored (JPEG, PNG, WebP), stored once per SHA-256."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, UnidentifiedImageError
from sqlalchemy.orm import Session

from ..auth.models import User
from ..infra.db import MAX_ID
from ..infra.errors import Conflict, DomainError, Invalid, NotFound
from .models import Attachment, Event
from .states import FINAL_STATES, STATE_LABELS

logger = logging.getLogger(__name__)

KINDS = ("before", "after")
# Pillow's format names of the accepted images and the type each is served with.
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# As many pixels as a phone camera's full-resolution photo (48–50 MP; 200 MP sensors save 12–50 MP by
# default) and far fewer than a decompression bomb packs into a few kilobytes. A JPEG is decoded at
# 1/8 scale (a few MB); a PNG or WebP this large takes up to 200 MB while it is checked.
MAX_PIXELS = 50_000_000


class TooLarge(DomainError):
    status, code = 413, "payload_too_large"


def sniff_image(head: bytes) -> str | None:
    """The image type from the file's magic bytes, or None when it is not an accepted image."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> str:
    """The content type of a JPEG, PNG or WebP image that decodes completely, else Invalid (422).

    The size in the header is checked before any pixel is decoded, so a decompression bomb costs
    nothing; a JPEG is decoded at 1/8 scale (every byte of it is still read and checked).
    """
    not_an_image = Invalid("不是可识别的 JPEG、PNG 或 WebP 图片", {"file": ["文件无法解码为 JPEG、PNG 或 WebP 图片"]})
    if sniff_image(data[:16]) is None:
        raise not_an_image
    with warnings.catch_warnings():
        # Pillow warns (and past twice its limit refuses) on huge images; the limit here is our own.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise _too_many_pixels(width, height, max_pixels)
                if image.format == "JPEG":
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
                return FORMATS[image.format]
        except Image.DecompressionBombError:
            raise Invalid("图片像素过多，疑似压缩炸弹", {"file": [f"像素总数不能超过 {max_pixels:,}"]}) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            # Truncated or corrupt data, or a header without image data.
            logger.info("photo refused: it does not decode (%s)", exc)
            raise not_an_image from None


def _too_many_pixels(width: int, height: int, max_pixels: int) -> Invalid:
    return Invalid(f"图片像素过多（{width}×{height}），疑似压缩炸弹",
                   {"file": [f"像素总数不能超过 {max_pixels:,}，请压缩后再上传"]})


def blob_path(root: str | Path, sha256: str) -> Path:
    return Path(root) / sha256[:2] / sha256[2:4] / sha256


def store_blob(root: str | Path, data: bytes) -> str:
    """Write `data` under its SHA-256 (atomically, once) and return the digest."""
    digest = hashlib.sha256(data).hexdigest()
    target = blob_path(root, digest)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return digest


def add_attachment(session: Session, event: Event, uploader: User, *, data: bytes, kind: str,
                   root: str | Path, max_bytes: int, now: datetime,
                   max_pixels: int = MAX_PIXELS) -> tuple[Attachment, bool]:
    """Attach a photo to an open event; (attachment, created). The same photo twice is one row.

    An ended event (closed, rejected, merged, cancelled) takes no more photos (409): reopen it first.
    """
    if kind not in KINDS:
        raise Invalid("未知的照片类型", {"kind": ["应为 before 或 after"]})
    if event.state in FINAL_STATES:
        label = STATE_LABELS.get(event.state, event.state)
        raise Conflict(f"事件{label}，不能再上传照片", {"state": [f"“{label}”的事件不接受照片"]})
    if not data:
        raise Invalid("文件为空", {"file": ["不能为空"]})
    if len(data) > max_bytes:
        raise TooLarge(f"照片超过 {max_bytes} 字节", {"file": [f"最多 {max_bytes} 字节"]})
    content_type = decode_image(data, max_pixels=max_pixels)
    digest = store_blob(root, data)
    existing = session.scalar(sa.select(Attachment).where(
        Attachment.event_id == event.id, Attachment.sha256 == digest, Attachment.kind == kind))
    if existing is not None:
        return existing, False
    attachment = Attachment(event_id=event.id, sha256=digest, content_type=content_type, size_bytes=len(data),
                            kind=kind, uploaded_by_id=uploader.id, created_at=now)
    session.add(attachment)
    session.flush()
    return attachment, True


def list_attachments(session: Session, event: Event) -> list[Attachment]:
    return list(session.scalars(sa.select(Attachment).where(Attachment.event_id == event.id).order_by(Attachment.id)))


def get_attachment(session: Session, event: Event, attachment_id: int) -> Attachment:
    if not 0 < attachment_id <= MAX_ID:
        raise NotFound(f"未找到附件 {attachment_id}")
    attachment = session.scalar(sa.select(Attachment).where(Attachment.id == attachment_id, Attachment.event_id == event.id))
    if attachment is None:
        raise NotFound(f"未找到附件 {attachment_id}")
    return attachment
