"""The service's human-readable log: one line per record, stamped in the configured zone."""
from __future__ import annotations

import logging
import os
from datetime import datetime
from zoneinfo import ZoneInfo


class ZonedFormatter(logging.Formatter):
    """Log lines stamped in the service's zone, with its offset: `2026-12-03 18:04:53+08:00 INFO …`."""

    def __init__(self, fmt: str, zone: ZoneInfo) -> None:
        super().__init__(fmt)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return datetime.fromtimestamp(record.created, self.zone).isoformat(sep=" ", timespec="seconds")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(zone: ZoneInfo) -> None:
    """The human-readable log on stderr, unless the process has configured logging already."""
    handler = logging.StreamHandler()
    handler.setFormatter(ZonedFormatter(LOG_FORMAT, zone))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), handlers=[handler])
