"""Structured logging (structlog): JSON lines or readable console lines, never a secret.

Every event passes a redaction step right before rendering, over the message, every string value
(nested ones too) and exception text, so no caller can leak a credential by logging it. Standard
library logging (trio-websocket, psycopg) goes through the same processors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

from bridge.domain.redaction import Redactor

REDACTOR = Redactor()
"""The process's secrets; the CLI registers every configured credential here at start."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _redact_value(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, Mapping):
        return {key: _redact_value(item, redactor) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(item, redactor) for item in value]
    if isinstance(value, BaseException):
        return redactor.redact(f"{type(value).__name__}: {value}")
    return value


def redaction_processor(redactor: Redactor) -> structlog.types.Processor:
    def redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {key: _redact_value(value, redactor) for key, value in event.items()}

    return redact


def _json_renderer(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(
    *,
    format: Literal["json", "console"] = "console",
    level: str = "info",
    redactor: Redactor | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's root logger; calling again reconfigures."""
    redactor = redactor or REDACTOR
    out = stream or sys.stderr
    threshold = _LEVELS.get(level, logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redaction_processor(redactor),
    ]
    renderer: structlog.types.Processor = (
        _json_renderer if format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(),
                structlog.processors.format_exc_info,
                redaction_processor(redactor),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_bridge", False)]:
        root.removeHandler(old)
    handler._bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(threshold, logging.WARNING))


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger; ``context`` (feed=…, table=…) is bound to every line it writes."""
    return structlog.get_logger(name, **context)
