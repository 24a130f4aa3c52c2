"""The console's pages and actions. Each handler reads through the services the gateway
already holds (the ledger's engine, the broker, the store) and renders a template;
everything shown passes through `Shown` (masking) and Jinja2's autoescape.

Dead letters are shown by dead_queue.peek and moved by wa-gateway dlq's own functions,
one at a time per process (each read takes the queue's messages for a moment: two at once
would each see a part).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp_jinja2
from aiohttp import web

from ..broker import CONNECTION_ERRORS, BrokerUnavailable
from ..channels import describe_pace, shown_url
from ..commands import dlq
from ..errors import UserError
from ..ledger.engine import DATABASE_ERRORS, first_line
from ..ledger.models import STATUSES
from ..ledger.queries import BadQuery, get_notification, list_notifications
from ..services import Services
from .auth import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_FORM_SECONDS,
    Session,
    Sessions,
    SignInLimiter,
    tokens_match,
)
from .dead_queue import peek
from .forms import BadInput, read_form, search
from .ledger_reads import last_errors
from .live import breakers, queue_depths
from .safety import Shown
from .stats import CHART_STATUSES, HourlyChart, chart

log = logging.getLogger(__name__)

DLQ_TIMEOUT = 20.0
"""Seconds a dead-letter read or move may take before the page says so."""


@dataclass
class Console:
    """What the console's handlers share (one per application)."""

    services: Services
    sessions: Sessions
    shown: Shown
    hourly: HourlyChart | None = None
    """The overview's counts (None with the ledger off)."""
    limiter: SignInLimiter = field(default_factory=SignInLimiter)
    dead_letters_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def secure_cookies(self, request: web.Request) -> bool:
        """Cookies only over https: the request came over TLS, or through the https
        address of GATEWAY_PUBLIC_URL (a TLS proxy in front). A request to the gateway's
        own http address (an operator on the machine) gets cookies it can send back."""
        if request.secure:
            return True
        public = self.services.settings.gateway_public_url
        if not public or not public.startswith("https://"):
            return False
        return (request.host or "").split(":")[0].lower() == (urlsplit(public).hostname or "")


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("console_session", Session)
FORM = web.RequestKey("console_form", dict)
"""The POSTed form, read (and its CSRF token checked) by the middleware."""


class PageError(Exception):
    """A page that cannot be shown as asked: rendered as error.html with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    session = request.get(SESSION)
    context.setdefault("csrf", session.csrf if session is not None else "")
    context["signed_in"] = session is not None
    context["css"] = str(request.app.router["static"].url_for(filename="console.css"))
    context["path"] = request.path
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def see_other(location: str) -> web.Response:
    """A redirect after a POST (or to the sign-in): the browser GETs `location`."""
    return web.Response(status=303, headers={"Location": location})


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def _ledger(request: web.Request) -> Any:
    engine = _console(request).services.ledger
    if engine is None:
        raise PageError(404, "The ledger is off (WA_LEDGER=false): there are no notifications to show.")
    return engine


# --- signing in and out -------------------------------------------------------------


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    if console.sessions.check(request.cookies.get(SESSION_COOKIE)) is not None:
        return see_other(_url(request, "overview"))
    return _sign_in_form(request, console)


def _sign_in_form(request: web.Request, console: Console, status: int = 200, error: str | None = None,
                  headers: dict[str, str] | None = None) -> web.Response:
    nonce = console.sessions.sign_in_nonce()
    response = render(request, "sign_in.html", status, error=error, csrf=console.sessions.sign_in_token(nonce))
    response.headers.update(headers or {})
    response.set_cookie(
        SIGN_IN_COOKIE, nonce, max_age=SIGN_IN_FORM_SECONDS, path="/admin", httponly=True,
        samesite="Strict", secure=console.secure_cookies(request),
    )
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    client = request.remote or "unknown"
    wait = console.limiter.wait(client)
    if wait:
        return _sign_in_form(
            request, console, 429, f"Too many failed sign-ins from your address: try again in {wait} s.",
            {"Retry-After": str(wait)},
        )
    form = await read_form(request)
    nonce = request.cookies.get(SIGN_IN_COOKIE, "")
    if not nonce or len(nonce) > 64 or not tokens_match(form.get("csrf"), console.sessions.sign_in_token(nonce)):
        return _sign_in_form(request, console, 403, "The sign-in form expired or did not come from this "
                             "console (its CSRF token is missing or wrong): sign in again.")
    key = console.sessions.matching_key(form.get("key", ""))
    if key is None:
        console.limiter.failed(client)
        log.warning("console: a sign-in with a wrong admin key from %s", client)
        return _sign_in_form(request, console, 401, "That is not an admin key (GATEWAY_ADMIN_KEYS).")
    response = see_other(_url(request, "overview"))
    response.set_cookie(
        SESSION_COOKIE, console.sessions.issue(key), max_age=console.sessions.lifetime, path="/admin",
        httponly=True, samesite="Strict", secure=console.secure_cookies(request),
    )
    response.del_cookie(SIGN_IN_COOKIE, path="/admin")
    log.info("console: signed in from %s", client)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    response = see_other(_url(request, "sign_in_page"))
    response.del_cookie(SESSION_COOKIE, path="/admin")
    return response


# --- overview ---------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    services = console.services
    depths, states = await asyncio.gather(queue_depths(services), breakers(services))
    counts, counts_why = None, None
    if console.hourly is None:
        counts_why = "the ledger is off (WA_LEDGER=false)"
    else:
        try:
            counts = await console.hourly.counts()
        except DATABASE_ERRORS as exc:
            counts_why = f"the ledger database does not answer ({console.shown(first_line(exc))})"
    return render(
        request, "overview.html", depths=depths, breakers=states, dead_queue=services.topology.dead,
        counts=counts, counts_why=counts_why, chart=chart(counts) if counts else None,
        statuses=CHART_STATUSES, channels=services.channels.senders,
    )


# --- notifications ----------------------------------------------------------------


async def notifications(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    engine = _ledger(request)
    context: dict[str, Any] = {
        "query": {name: request.query.get(name, "") for name in ("id", "status", "channel", "to", "since", "until")},
        "statuses": STATUSES, "channels": list(console.services.channels.senders),
        "following": None,
    }
    try:
        wanted, filters = search(request.query)
    except BadInput as exc:
        return render(request, "notifications.html", 400, error=str(exc), rows=[], **context)
    try:
        if wanted is not None:
            if await get_notification(engine, wanted) is not None:
                return see_other(_url(request, "notification", id=wanted))
            return render(request, "notifications.html", 404, rows=[],
                          error=f"No notification with id {wanted!r} in the ledger.", **context)
        page = await list_notifications(engine, filters)
    except BadQuery as exc:
        return render(request, "notifications.html", 400, error=str(exc), rows=[], **context)
    except DATABASE_ERRORS as exc:
        raise _database_down(console, exc) from None
    following = None
    if page.next_cursor is not None:
        kept = {name: value for name, value in request.query.items() if name != "cursor" and value}
        following = f"{request.path}?{urlencode({**kept, 'cursor': page.next_cursor})}"
    rows = [console.shown.notification(n) for n in page.notifications]
    context["following"] = following
    return render(request, "notifications.html", rows=rows, error=None, **context)


async def notification(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    engine = _ledger(request)
    wanted = request.match_info["id"]
    found = None
    if len(wanted) <= 64 and "\x00" not in wanted:  # PostgreSQL refuses a NUL in a text
        try:
            found = await get_notification(engine, wanted)
        except DATABASE_ERRORS as exc:
            raise _database_down(console, exc) from None
    if found is None:
        raise PageError(404, f"No notification with id {wanted[:64]!r} in the ledger.")
    return render(request, "notification.html", n=console.shown.notification(found))


def _database_down(console: Console, exc: BaseException) -> PageError:
    log.warning("console: the ledger database does not answer (%s)", first_line(exc))
    return PageError(503, f"The ledger database does not answer ({console.shown(first_line(exc))}); "
                          "try again in a moment.", {"Retry-After": "5"})


# --- dead letters -----------------------------------------------------------------


@dataclass(frozen=True)
class DeadRow:
    id: str
    target: str | None
    channel: str
    kind: str
    attempts: int
    first_failed_at: str
    reason: str | None
    code: str | None


async def dead_letters(request: web.Request) -> web.StreamResponse:
    notice = _notice(request)
    return await _dead_letters_page(request, notice=notice)


def _notice(request: web.Request) -> str | None:
    """What the last action did, from its redirect's query (numbers only: no text from
    the address bar is ever shown)."""
    query = request.query
    for name, verb in (("replayed", "Replayed"), ("purged", "Purged")):
        value = query.get(name, "")
        if value.isdigit() and len(value) < 10:
            count = int(value)
            text = f"{verb} {count} dead letter{'' if count == 1 else 's'}."
            if name == "replayed":
                text += " Each goes back to its channel's queue; the worker sends it again."
            if query.get("missing") == "1":
                text = "Nothing replayed: that dead letter is no longer in the queue (replayed or purged already)."
            return text
    return None


async def _dead_letters_page(request: web.Request, *, status: int = 200, notice: str | None = None,
                             error: str | None = None) -> web.Response:
    console = _console(request)
    services = console.services
    letters = await _dlq(console, peek(services))
    shown = console.shown
    rows = [
        DeadRow(
            id=p.message.id, target=shown(p.message.target), channel=p.message.channel,
            kind="callback" if getattr(p.message, "callback", False) else "notification",
            attempts=p.message.attempts, first_failed_at=p.message.first_failed_at,
            reason=shown(p.message.reason), code=shown(p.provider_code),
        )
        for p in letters.shown
    ]
    return render(request, "dead_letters.html", status, rows=rows, total=letters.total,
                  queue=services.topology.dead, notice=notice, error=error)


async def _dlq(console: Console, work: Any) -> Any:
    """Read or move dead letters (`peek`, or one of wa-gateway dlq's functions): one at a
    time, within DLQ_TIMEOUT; a broker that is not connected, or is lost meanwhile, is a
    503 page (what was not confirmed moved stays in the queue)."""
    services = console.services
    if not services.broker.connected:
        work.close()
        raise PageError(503, f"RabbitMQ is not connected ({services.broker.failure or 'connecting'}); "
                             "the dead letters cannot be read now.", {"Retry-After": "5"})
    async with console.dead_letters_lock:
        try:
            return await asyncio.wait_for(work, DLQ_TIMEOUT)
        except TimeoutError:
            raise PageError(503, f"RabbitMQ did not finish within {DLQ_TIMEOUT:g} s; nothing more was "
                                 "moved. Try again.", {"Retry-After": "5"}) from None
        except (BrokerUnavailable, *CONNECTION_ERRORS) as exc:
            log.warning("console: RabbitMQ failed while reading or moving dead letters: %s", exc)
            raise PageError(503, "RabbitMQ went away while reading or moving the dead letters; what "
                                 "was not moved is still in the queue. Try again.", {"Retry-After": "5"}) from None


async def replay(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    form = request[FORM]
    if form.get("all") == "1":
        ids = None
    else:
        wanted = form.get("id", "").strip()
        if not wanted or len(wanted) > 255:
            raise PageError(400, "Say which dead letter to replay (its id), or replay all.")
        ids = {wanted}
    try:
        done = await _dlq(console, dlq.replay(console.services, ids, dry_run=False))
    except UserError as exc:  # some stay dead: their channel is gone; the others went back
        return await _dead_letters_page(request, status=409, error=console.shown(str(exc)))
    log.info("console: replayed %d dead letter(s)", len(done))
    query = {"replayed": str(len(done))}
    if ids is not None and not done:
        query["missing"] = "1"
    return see_other(f"{_url(request, 'dead_letters')}?{urlencode(query)}")


async def purge(request: web.Request) -> web.StreamResponse:
    """Without `confirm=yes`: the confirmation page (nothing is deleted). With it: purge."""
    console = _console(request)
    form = request.get(FORM) or {}
    if request.method != "POST" or form.get("confirm") != "yes":
        depths = await queue_depths(console.services)
        count = next((q.ready for q in depths.queues if q.name == console.services.topology.dead), None)
        return render(request, "purge.html", queue=console.services.topology.dead, count=count)
    purged = await _dlq(console, dlq.purge(console.services))
    log.warning("console: purged %d dead letter(s)", purged)
    return see_other(f"{_url(request, 'dead_letters')}?{urlencode({'purged': str(purged)})}")


# --- channels ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRow:
    name: str
    provider: str
    fallback: str | None
    queue: str | None
    pacing: str
    api_key: str
    api_url: str
    breaker_state: str
    breaker_detail: str
    last_error: Any


async def channels(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    services = console.services
    states = await breakers(services)
    errors: dict[str, Any] = {}
    errors_why = None
    if services.ledger is None:
        errors_why = "the ledger is off (WA_LEDGER=false): only the breakers tell"
    else:
        try:
            errors = await last_errors(services.ledger, services.channels.senders)
        except DATABASE_ERRORS as exc:
            errors_why = f"the ledger database does not answer ({first_line(exc)})"
    rows = []
    for name, sender in services.channels.senders.items():
        error = errors.get(name)
        rows.append(ChannelRow(
            name=name, provider=sender.provider, fallback=sender.fallback,
            queue=services.topology.work_queue(name) if sender.queue else None,
            pacing=_pacing(services, name),
            api_key=f"{'set' if sender.config.api_key else 'not set'} ({sender.config.api_key_variable})",
            api_url=shown_url(sender.config.api_url),
            breaker_state=states[name].state, breaker_detail=states[name].detail,
            last_error=None if error is None else {
                "at": error.at, "status": error.status,
                "code": console.shown(error.code), "message": console.shown(error.message),
            },
        ))
    return render(request, "channels.html", rows=rows, errors_why=console.shown(errors_why))


def _pacing(services: Services, name: str) -> str:
    sender = services.channels.channel(name)
    return describe_pace(*sender.pace(
        services.settings.wa_send_rate, services.channel_capabilities[name].send_rate,
        legacy=services.channels.legacy,
    ))


def _url(request: web.Request, name: str, **parts: str) -> str:
    return str(request.app.router[name].url_for(**parts))


def utc(value: datetime | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
