"""Logging: JSON lines for machines, readable lines on a terminal, secrets masked.

Every module logs with the standard library; structlog's ProcessorFormatter renders
those records, adds the notification id bound for the current task (the gateway
binds it per request, the worker per message) and masks what must not be logged:
API keys and tokens, and the middle digits of phone numbers.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from .redaction import Redactor

# 8-15 digits standing alone; not inside words, uuids (dash-joined) or group ids
_PHONE = re.compile(r"(?<![\w\-])(\+?\d{2,4})(\d{4,9})(\d{2})(?![\d\-]|@g\.us)")


def mask_phone_numbers(text: str) -> str:
    """'+6281234567890' -> '+628*******90': enough to recognise, not enough to call."""
    return _PHONE.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


class Masker:
    """A structlog processor that hides secrets and phone numbers in every string value.

    Secrets are masked as whole values only, and only values long enough to be secrets
    (see wa_gateway.redaction): a short `WA_API_KEY` never garbles ordinary words.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._redact = Redactor(secrets)
        self.secrets = self._redact.secrets

    def mask(self, text: str) -> str:
        return mask_phone_numbers(self._redact(text))

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = self.mask(value)
        return event_dict


CONNECTION_LOGGERS = ("aio_pika", "aiormq", "wa_gateway.broker", "wa_gateway.store")
"""Loggers that report RabbitMQ and Redis trouble as it happens (aiormq at ERROR): what a
process that runs on should show, and noise for a one-shot command, which reports the
trouble in its one error line."""


def configure_logging(
    *,
    verbose: bool = False,
    quiet: bool = False,
    json_output: bool | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """JSON when stderr is not a terminal (or when asked), console lines when it is.

    `quiet` (one-shot commands such as `dlq list`) shows warnings and errors only, and
    nothing of CONNECTION_LOGGERS unless `verbose`: the command's error says it all.
    """
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # tracebacks as text, so they are masked too
            Masker(secrets),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("aio_pika", "aiormq", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet and not verbose:
        for name in CONNECTION_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    else:  # a second call (tests) must not leave them silenced
        for name in CONNECTION_LOGGERS:
            if name.startswith("wa_gateway."):
                logging.getLogger(name).setLevel(logging.NOTSET)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server_log.filters):
        server_log.addFilter(MalformedRequests())


class MalformedRequests(logging.Filter):
    """aiohttp logs every malformed HTTP request (scanners, broken clients) at ERROR with
    a traceback; one WARNING line says all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            record.msg, record.args = "malformed HTTP request refused: %s", (first_line[:200],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_NOTIFICATION_ID = structlog.contextvars.bind_contextvars(notification_id=...)["notification_id"].var
"""structlog's own context variable for `notification_id` (created by that call; `...` is
its "unset", which merge_contextvars skips), set directly: it is set for every request
and every message."""


def bind_notification(notification_id: str) -> None:
    """Every log line of the current task from here on carries this id."""
    _NOTIFICATION_ID.set(notification_id)
