"""Photos of events: checked by content (JPEG, PNG, WebP), stored once per SHA-256."""
from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.models import User
from ..infra.db import MAX_ID
from ..infra.errors import DomainError, Invalid, NotFound
from .models import Attachment, Event

KINDS = ("before", "after")


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
                   root: str | Path, max_bytes: int, now: datetime) -> tuple[Attachment, bool]:
    """Attach a photo to an event; (attachment, created). The same photo twice is one row."""
    if kind not in KINDS:
        raise Invalid("未知的照片类型", {"kind": ["应为 before 或 after"]})
    if not data:
        raise Invalid("文件为空", {"file": ["不能为空"]})
    if len(data) > max_bytes:
        raise TooLarge(f"照片超过 {max_bytes} 字节", {"file": [f"最多 {max_bytes} 字节"]})
    content_type = sniff_image(data[:16])
    if content_type is None:
        raise Invalid("不是 JPEG、PNG 或 WebP 图片", {"file": ["应为 JPEG、PNG 或 WebP 图片"]})
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
