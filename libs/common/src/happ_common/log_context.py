"""Which message a log line concerns, on every line, in every service.

A handler binds the message it works on (``message_context``); every line
logged inside, by our code or a library's, then carries ``channel_id``,
``conversation_id`` (the sender's id, as in the admin API) and ``message_id``
(the user's message; ``reply_id`` where a reply is concerned). With
``HAPP_LOG_FORMAT=json`` each line is one JSON object, so one message can be
followed across the four services' logs with a single filter on ``message_id``.

The context lives in a ``ContextVar``: each pipeline handler and each request
runs in its own task, so concurrent messages never see each other's fields.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

FIELDS = ("channel_id", "conversation_id", "message_id", "reply_id")

_context: ContextVar[dict[str, str]] = ContextVar("happ_log_context", default={})  # noqa: B039 - never mutated


@contextmanager
def message_context(
    *,
    channel_id: str | None = None,
    conversation_id: str | None = None,
    message_id: str | None = None,
    reply_id: str | None = None,
) -> Iterator[None]:
    """Bind these fields (added to any already bound) until the block ends."""
    token = _context.set(_context.get())
    try:
        bind_message(
            channel_id=channel_id,
            conversation_id=conversation_id,
            message_id=message_id,
            reply_id=reply_id,
        )
        yield
    finally:
        _context.reset(token)


@contextmanager
def message_scope() -> Iterator[None]:
    """A fresh binding for one record or request: what ``bind_message`` adds inside
    is gone after, and lines logged after a handler raised still carry it."""
    token = _context.set({})
    try:
        yield
    finally:
        _context.reset(token)


def bind_message(
    *,
    channel_id: str | None = None,
    conversation_id: str | None = None,
    message_id: str | None = None,
    reply_id: str | None = None,
) -> None:
    """Add these fields to the current scope (``message_scope``) until it ends."""
    given = {
        "channel_id": channel_id,
        "conversation_id": conversation_id,
        "message_id": message_id,
        "reply_id": reply_id,
    }
    _context.set({**_context.get(), **{k: v for k, v in given.items() if v}})


def bound() -> dict[str, str]:
    return _context.get()


class _ContextFilter(logging.Filter):
    """Puts the bound fields on the record, so either formatter can show them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.happ_context = _context.get()
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context: dict[str, str] = getattr(record, "happ_context", {})
        if not context:
            return line
        return line + " " + " ".join(f"{k}={v}" for k, v in context.items())


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "happ_context", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_handler(service: str, fmt: Literal["text", "json"]) -> logging.Handler:
    """A stderr handler that shows the bound fields in ``fmt``."""
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter(service))
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    return handler
