"""`make_console(services)`: the operator console, an aiohttp sub-application the gateway
mounts at /admin when GATEWAY_ADMIN_KEYS is set.

One middleware does what every console request needs: a session for every page but the
sign-in and the stylesheet, a CSRF token for every POST (checked before the handler
runs, so a refused request does nothing), the security headers on every answer, and
errors as HTML pages (a 4xx for anything a request can get wrong; a 500 only for a bug).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from ..services import Services
from . import views
from .auth import SESSION_COOKIE, Sessions, tokens_match
from .forms import BadInput, read_form
from .safety import Shown
from .stats import HourlyChart

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PUBLIC = {"sign_in", "sign_in_page", "static"}
"""Routes open without a session."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect
            response = web.Response(status=exc.status, headers={"Location": exc.headers.get("Location", "")})
        else:
            response = _error_page(request, exc.status, exc.reason, exc.headers)
    except views.PageError as exc:
        response = _error_page(request, exc.status, exc.message, exc.headers)
    except BadInput as exc:
        response = _error_page(request, 400, str(exc))
    except Exception:
        log.exception("console: unexpected error in %s %s", request.method, request.path)
        response = _error_page(request, 500, "Unexpected error; it has been logged.")
    response.headers.update(SECURITY_HEADERS)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name
    if route in PUBLIC:
        return await handler(request)
    session = request.app[views.CONSOLE].sessions.check(request.cookies.get(SESSION_COOKIE))
    if session is None:
        if request.method in ("GET", "HEAD"):
            return views.see_other(str(request.app.router["sign_in_page"].url_for()))
        raise views.PageError(403, "You are not signed in (or your session ended): sign in again.")
    request[views.SESSION] = session
    if request.method == "POST":
        form = await read_form(request)
        if not tokens_match(form.get("csrf"), session.csrf):
            log.warning("console: a POST to %s without a valid CSRF token refused", request.path)
            raise views.PageError(403, "This form's CSRF token is missing or wrong: nothing was done. "
                                       "Reload the page and try again.")
        request[views.FORM] = form
    return await handler(request)


def _error_page(request: web.Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    try:
        response = views.render(request, "error.html", status, message=message, code=status)
    except Exception:  # a template that cannot render must not hide the error itself
        log.exception("console: the error page could not be rendered")
        response = web.Response(status=status, text=f"{status}: {message}")
    for name in ("Retry-After", "Allow"):
        value = (headers or {}).get(name)
        if value:
            response.headers[name] = value
    return response


def make_console(services: Services) -> web.Application:
    """The console for `services`; the gateway mounts it at /admin (its paths assume so)."""
    app = web.Application(middlewares=[guard])
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        filters={"utc": views.utc},
    )
    console = app[views.CONSOLE] = views.Console(
        services=services, sessions=Sessions(services.settings.admin_keys), shown=Shown(services.settings),
        hourly=HourlyChart(services.ledger) if services.ledger is not None else None,
    )

    async def start_counting(app: web.Application) -> None:
        if console.hourly is not None:
            console.hourly.start()

    async def stop_counting(app: web.Application) -> None:
        if console.hourly is not None:
            await console.hourly.close()

    app.on_startup.append(start_counting)
    app.on_shutdown.append(stop_counting)  # before the ledger's engine is disposed of
    app.on_cleanup.append(stop_counting)
    router = app.router
    router.add_get("", _to_overview, name="root")
    router.add_get("/", views.overview, name="overview")
    router.add_get("/sign-in", views.sign_in_page, name="sign_in_page")
    router.add_post("/sign-in", views.sign_in, name="sign_in")
    router.add_post("/sign-out", views.sign_out, name="sign_out")
    router.add_get("/notifications", views.notifications, name="notifications")
    router.add_get("/notifications/{id}", views.notification, name="notification")
    router.add_get("/dead-letters", views.dead_letters, name="dead_letters")
    router.add_post("/dead-letters/replay", views.replay, name="replay")
    router.add_get("/dead-letters/purge", views.purge, name="purge_page")
    router.add_post("/dead-letters/purge", views.purge, name="purge")
    router.add_get("/channels", views.channels, name="channels")
    router.add_static("/static", HERE / "static", name="static")
    return app


async def _to_overview(request: web.Request) -> web.StreamResponse:
    return views.see_other(str(request.app.router["overview"].url_for()))
