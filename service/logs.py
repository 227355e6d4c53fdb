"""Structured logs: ``--log-format json`` prints one JSON object per line (for log shippers)."""

from __future__ import annotations

import json
import logging
import os


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "pid"}`` plus ``exc`` when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(log_format: str = "text", level: str | int | None = None) -> None:
    """Configure the root handler; level from ``VADNET_LOG_LEVEL`` (default INFO for servers)."""
    level = level or os.environ.get("VADNET_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    formatter = (
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    )
    for handler in root.handlers:
        handler.setFormatter(formatter)
    logging.getLogger("vadnet").setLevel(level)
