"""What a console request may carry: a form body (urlencoded, UTF-8, a few short fields)
and the notifications page's search. Anything else is a BadInput, a 400 page: hostile
input is refused, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiMapping

from ..ledger.models import STATUSES
from ..ledger.queries import BadQuery, Filters, decode_cursor

MAX_FIELDS = 20
MAX_VALUE = 1024
MAX_SEARCH_VALUE = 255
PAGE_SIZE = 50


class BadInput(Exception):
    """Input the console refuses; the message says what is wrong (shown escaped)."""


async def read_form(request: web.Request) -> dict[str, str]:
    """The fields of a urlencoded form; a field given twice keeps its first value."""
    body = await request.read()  # bounded by the application's client_max_size (413)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the form is not a urlencoded UTF-8 form of a few fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if len(name) > 64 or len(value) > MAX_VALUE or "\x00" in value:
            raise BadInput("a form field is too long or holds a NUL character")
        fields.setdefault(name, value)
    return fields


def _text(query: MultiMapping[str], name: str) -> str | None:
    value = query.get(name, "").strip()
    if len(value) > MAX_SEARCH_VALUE or "\x00" in value:
        raise BadInput(f"{name} is too long")
    return value or None


def _time(query: MultiMapping[str], name: str) -> datetime | None:
    """A browser's datetime-local (`2026-11-28T08:00`, read as UTC) or an ISO time with a zone."""
    value = _text(query, name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise BadInput(f"{name} is not a time like 2026-11-28T08:00 (UTC)") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise BadInput(f"{name} is out of range") from None


def search(query: MultiMapping[str]) -> tuple[str | None, Filters]:
    """(the id searched for, or None; the list's filters) from the page's query string."""
    status = _text(query, "status")
    if status is not None and status not in STATUSES:
        raise BadInput(f"status must be one of {', '.join(STATUSES)}")
    since, until = _time(query, "since"), _time(query, "until")
    if since is not None and until is not None and since >= until:
        raise BadInput("since must be before until")
    try:
        filters = Filters(
            status=status, to=_text(query, "to"), channel=_text(query, "channel"),
            since=since, until=until, limit=PAGE_SIZE, cursor=_text(query, "cursor"),
        )
        if filters.cursor is not None and "\x00" in decode_cursor(filters.cursor)[1]:
            raise BadQuery("cursor is not one this gateway gave out")
    except BadQuery as exc:
        raise BadInput(str(exc)) from None
    return _text(query, "id"), filters
