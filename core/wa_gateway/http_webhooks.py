"""`GET|POST /webhooks/{channel}`: the providers' receipts (delivered, read, failed).

No API key: the provider signs each request, and the channel's provider plugin
verifies it (`Provider.handle_webhook`). What it returns is recorded before the
provider gets its 200: each receipt is published to `wa.ledger` with a confirm, so a
200 means RabbitMQ has it; when RabbitMQ cannot take it the answer is a 503 and the
provider retries. Which notification a receipt is about (the provider's message id)
is the ledger writer's business: this handler never waits for the database.

Bad input is never a 500: a channel without webhooks (no secret set) is a 404, a body
over 64 KiB a 413, a bad signature a 401 and an unreadable body a 400, as the plugin says.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web
from multidict import CIMultiDict

from .api_errors import ApiError, unavailable
from .app_keys import SERVICES
from .broker import BrokerUnavailable, PublishUncertain
from .http_body import MAX_BODY, TOO_LARGE
from .ledger.changes import StatusChange, receipt_key
from .ledger_feed import LedgerFeed
from .provider import (
    RECEIPT_STATUSES,
    Provider,
    ProviderConfigError,
    ProviderReceipt,
    WebhookRejected,
    WebhookRequest,
)
from .services import Services

log = logging.getLogger(__name__)

BODY_TIMEOUT = 10.0


class WebhookProviders:
    """One provider per channel, made on first use, only to verify and read webhooks."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._providers: dict[str, Provider | None] = {}

    def get(self, channel: str) -> Provider | None:
        """The channel's provider if it takes webhooks, else None (a 404)."""
        sender = self.services.channels.senders.get(channel)
        if sender is None:
            return None
        if channel not in self._providers:
            provider = None
            try:
                provider = self.services.plugins.create(sender.provider, sender.config)
            except (ProviderConfigError, LookupError) as exc:
                log.warning("webhooks of channel %s are off: %s", channel, exc)
            self._providers[channel] = provider if provider is not None and provider.accepts_webhooks else None
        return self._providers[channel]

    async def close(self) -> None:
        for provider in self._providers.values():
            if provider is not None:
                await provider.close()


WEBHOOK_PROVIDERS = web.AppKey("webhook_providers", WebhookProviders)


async def webhook(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    channel = request.match_info["channel"]
    provider = request.app[WEBHOOK_PROVIDERS].get(channel)
    if provider is None:
        raise ApiError(404, "not_found", f"no webhook for channel {channel!r}")
    body = await _read_limited(request)
    try:
        reply = provider.handle_webhook(
            WebhookRequest(
                method=request.method,
                url=_public_url(services, request, channel),
                headers=CIMultiDict(request.headers),
                query=dict(request.query),
                body=body,
            )
        )
    except WebhookRejected as exc:
        log.warning("webhook of channel %s rejected (%d): %s", channel, exc.status, exc.detail)
        raise ApiError(exc.status, _code(exc.status), exc.detail) from None
    if reply.receipts:
        await _record(services, channel, provider.name, reply.receipts)
    return web.Response(status=reply.status, text=reply.text, content_type=reply.content_type)


def _clean(text: str) -> str:
    """What a database can store: no NUL, no lone surrogate (a plugin may pass them on
    from a hostile body; the conformance kit checks the plugins, this checks the rest)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _code(status: int) -> str:
    return {400: "invalid_body", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 415: "unsupported_media_type"}[status]


def _public_url(services: Services, request: web.Request, channel: str) -> str:
    """The URL the provider called and signed: GATEWAY_PUBLIC_URL + /webhooks/<channel>
    and the query (behind a proxy, the request's own URL has another scheme, host or
    path), else the request's own URL."""
    public = services.settings.webhook_url(channel)
    if public is None:
        return str(request.url)
    query = request.rel_url.raw_query_string
    return f"{public}?{query}" if query else public


async def _read_limited(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", TOO_LARGE)
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.content.iter_chunked(16384):
                size += len(chunk)
                if size > MAX_BODY:
                    raise ApiError(413, "body_too_large", TOO_LARGE)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - aiohttp's payload errors: a broken body is the client's
        raise ApiError(400, "invalid_body", f"the body could not be read ({type(exc).__name__})") from None
    return b"".join(chunks)


async def _record(services: Services, channel: str, provider: str, receipts: tuple[ProviderReceipt, ...]) -> None:
    feed = LedgerFeed(services.publisher, services.topology)
    if not feed.enabled:
        return  # no ledger: nothing keeps receipts (README "Receipts")
    changes = [
        StatusChange(
            key=receipt_key(provider, _clean(r.provider_message_id)[:255], r.status),
            status=r.status,  # type: ignore[arg-type]  # checked below: RECEIPT_STATUSES
            at=r.at or datetime.now(UTC),
            channel=channel,
            provider=provider,
            provider_message_id=_clean(r.provider_message_id)[:255],
            code=None if r.code is None else _clean(str(r.code))[:64],
            message=None if r.message is None else _clean(r.message)[:2000],
        )
        for r in receipts
        if r.status in RECEIPT_STATUSES and isinstance(r.provider_message_id, str) and _clean(r.provider_message_id)
    ]
    try:
        await asyncio.gather(*(feed.try_publish(change) for change in changes))
    except (BrokerUnavailable, PublishUncertain) as exc:
        raise unavailable(f"the receipt could not be recorded ({exc}); the provider should retry") from None
    for change in changes:
        services.metrics.receipts.labels(channel, change.status).inc()
