"""`GET /notify/{id}` and `GET /notifications`: the ledger, read over HTTP.

A database that does not answer is a 503 with Retry-After for the list; a single
notification is then answered from the store's status when it has one (without its
timeline), so a caller polling for `sent` is not stopped by a database outage.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from functools import partial
from typing import Any

from aiohttp import web

from .api_errors import ApiError, unavailable
from .app_keys import SERVICES
from .ledger.engine import DATABASE_ERRORS, first_line
from .ledger.queries import (
    MAX_LIMIT,
    BadQuery,
    Filters,
    get_notification,
    json_default,
    list_notifications,
)
from .status_view import status_answer
from .store import StoreUnavailable

log = logging.getLogger(__name__)

dumps = partial(json.dumps, default=json_default, ensure_ascii=False)


async def get_notify(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    notification_id = request.match_info["id"]
    ledger_row = None
    ledger_down = False
    if services.ledger is not None:
        try:
            ledger_row = await get_notification(services.ledger, notification_id)
        except DATABASE_ERRORS as exc:
            ledger_down = True
            log.warning("GET /notify: the ledger database does not answer (%s)", first_line(exc))
    try:
        stored = await services.store.get_status(notification_id)
    except StoreUnavailable:
        if ledger_row is None:
            raise  # 503 from the middleware: neither can say
        stored = None
    answer = status_answer(ledger_row, stored)
    if answer is None:
        if ledger_down:
            raise unavailable("the ledger database does not answer; try again")
        raise ApiError(404, "not_found", f"no notification with id {notification_id!r}")
    return web.json_response(answer, dumps=dumps)


async def get_notifications(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if services.ledger is None:
        raise ApiError(404, "ledger_off", "the ledger is off (WA_LEDGER=false): there is no list")
    filters = _filters(request.query)
    try:
        page = await list_notifications(services.ledger, filters)
    except BadQuery as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None
    except DATABASE_ERRORS as exc:
        log.warning("GET /notifications: the ledger database does not answer (%s)", first_line(exc))
        raise unavailable("the ledger database does not answer; try again") from None
    return web.json_response(
        {"notifications": page.notifications, "next_cursor": page.next_cursor}, dumps=dumps
    )


_KNOWN = {"status", "to", "channel", "since", "until", "limit", "cursor"}


def _filters(query: Any) -> Filters:
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(_KNOWN))}")
    for name in query:
        if len(query.getall(name)) > 1:
            raise ApiError(400, "invalid_query", f"{name!r} is given more than once")
    try:
        return Filters(
            status=query.get("status") or None,
            to=(query.get("to") or None),
            channel=query.get("channel") or None,
            since=_time(query, "since"),
            until=_time(query, "until"),
            limit=_limit(query.get("limit")),
            cursor=query.get("cursor") or None,
        )
    except BadQuery as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None


def _time(query: Any, name: str) -> datetime | None:
    value = query.get(name)
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} is not an ISO 8601 time like 2026-11-28T08:00:00Z") from None
    if when.tzinfo is None:
        raise ApiError(400, "invalid_query", f"{name} needs a time zone (Z or +07:00)")
    return when


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return 50
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ApiError(400, "invalid_query", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)
