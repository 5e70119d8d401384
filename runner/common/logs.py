"""Logging: JSON lines in Jobs (machines read them), readable text on a terminal.

Every record of the worker carries the tile id (``tile`` field / ``[x017y156]`` prefix).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from runner.common.errors import redact_credentials

LOGGER = "gmrun"
_STD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and k not in doc and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exc"] = redact_credentials(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        tile = getattr(record, "tile", None)
        head = f"{datetime.fromtimestamp(record.created):%H:%M:%S} {record.levelname:<7}"
        return f"{head} [{tile}] {record.getMessage()}" if tile else f"{head} {record.getMessage()}"


def _redact(record: logging.LogRecord) -> bool:
    """Handler filter: no SAS token signature (``runner.worker.signing``) and no credentials
    written into a URL (``s3://KEY:SECRET@bucket``) reach a log line."""
    from runner.worker.signing import redact_tokens

    text = record.getMessage()
    clean = redact_credentials(redact_tokens(text) if "sig" in text.lower() else text)
    if clean != text:
        record.msg, record.args = clean, None
    return True


def setup(fmt: Literal["json", "text", "auto"] = "auto", level: int = logging.INFO) -> None:
    """Configure the ``gmrun`` logger on stderr; ``auto`` = text on a terminal, else JSON.

    Other libraries' warnings and errors (odc-stac's read failures, …) go through the same
    handler, so a Job's stderr stays JSON lines; every line is scrubbed of SAS token signatures."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_redact)
    log = logging.getLogger(LOGGER)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


#: The worker's logger: every record carries the tile id (:func:`tile_logger`).
TileLog = logging.LoggerAdapter[logging.Logger]


def tile_logger(tile: object) -> TileLog:
    """A logger whose records all carry ``tile``."""

    class _Adapter(logging.LoggerAdapter[logging.Logger]):
        def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
            kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
            return msg, kwargs

    return _Adapter(logging.getLogger(LOGGER), {"tile": str(tile)})
