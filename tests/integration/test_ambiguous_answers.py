"""An answer that may mean "accepted" is tried once per attempt, never in quick bursts.

A 2xx without the provider's message id (a proxy's HTML page, JSON without
`messages[].id`), or a timeout after the request went out, may hide a message the
provider accepted: every quick in-process retry could be one more copy on the
recipient's phone. Such errors are `TransientError(ambiguous=True)`: the worker
retries them only through its retry tiers, one provider call per attempt.
"""

from __future__ import annotations

import asyncio

import pytest

from wa_gateway import (
    Capabilities,
    HttpProvider,
    Notification,
    ProviderConfig,
    Receipt,
    TransientError,
)
from wa_gateway.services import Services
from wa_gateway.testing import NEVER, Answer, FakeProviderApi, closed_port, phone_message

from ..conftest import get_all, queue_size, wait_for

PHONE_NUMBER_ID = "106540352242922"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
PLUGIN_ENV = {
    "meta": {"META_PHONE_NUMBER_ID": PHONE_NUMBER_ID},
    "twilio": {"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_FROM": "whatsapp:+14155238886"},
    "watzap": {"WATZAP_NUMBER_KEY": "number-key-0123456789"},
}


class BareHttpProvider(HttpProvider):
    """The least an HttpProvider plugin does: one request, a receipt on {"id"}."""

    name = "bare"
    capabilities = Capabilities(groups=False, max_text_length=4096, send_rate=100.0)
    transient_codes = frozenset({"busy", "slow"})

    async def send(self, message: Notification) -> Receipt:
        answer = await self.request("POST", f"{self.base_url}/messages", json={"text": message.text})
        body = answer.json_object()
        if answer.ok and body.get("id"):
            return Receipt(provider=self.name, provider_message_id=str(body["id"]))
        raise self.failure(answer, body.get("error"), code=body.get("code"))


async def _error_for(answer: Answer, **config: float) -> TransientError:
    async with FakeProviderApi(answer) as api:
        provider = BareHttpProvider(ProviderConfig(api_key="k", api_url=api.url, **config))
        try:
            with pytest.raises(TransientError) as caught:
                await provider.send(phone_message())
        finally:
            await provider.close()
    return caught.value


@pytest.mark.parametrize(
    "answer",
    [Answer(200, "<html>proxy login</html>"), Answer(200, {"status": "queued"}), Answer(202, None)],
    ids=["html", "json-without-id", "empty-202"],
)
async def test_a_2xx_without_the_providers_answer_is_ambiguous(answer):
    error = await _error_for(answer)
    assert error.ambiguous
    assert "may have accepted" in str(error)


@pytest.mark.parametrize(
    "answer",
    [
        Answer(503, "<html>down</html>"),
        Answer(429, {"code": "slow", "error": "slow down"}),
        Answer(200, {"code": "busy", "error": "try later"}),  # the provider's own error code
    ],
    ids=["503", "429", "2xx-with-an-error-code"],
)
async def test_an_answer_that_says_no_is_not_ambiguous(answer):
    error = await _error_for(answer)
    assert not error.ambiguous


async def test_a_timeout_after_the_request_went_out_is_ambiguous():
    error = await _error_for(Answer(delay=NEVER), total_timeout=0.3)
    assert error.ambiguous


async def test_a_connection_cut_after_the_request_went_out_is_ambiguous():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request arrived: hang up unanswered
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        error = await _send_error(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    finally:
        server.close()
        await server.wait_closed()
    assert error.ambiguous
    assert "may have accepted" in str(error)


async def test_a_refused_connection_is_not_ambiguous():
    error = await _send_error(f"http://127.0.0.1:{closed_port()}")
    assert not error.ambiguous


async def _send_error(api_url: str) -> TransientError:
    provider = BareHttpProvider(ProviderConfig(api_key="k", api_url=api_url))
    try:
        with pytest.raises(TransientError) as caught:
            await provider.send(phone_message())
    finally:
        await provider.close()
    return caught.value



async def _deliver_once(name, answer, make_settings, aiohttp_client, start_worker, amqp, plugins):
    """POST one notification with WA_RETRY_DELAYS of two short tiers while the provider's
    API answers `answer` to everything; returns (provider calls, the dead letter)."""
    from wa_gateway.gateway import make_app

    async with FakeProviderApi(default=answer) as api:
        settings = make_settings(
            wa_provider=name, wa_api_key="secret-token-0123456789", wa_api_url=api.url,
            wa_allow_raw_targets=True, wa_retry_delays=[0.1, 0.2], wa_breaker_threshold=100,
            raw_env=PLUGIN_ENV[name],
        )
        services = Services(settings, plugins)
        client = await aiohttp_client(make_app(services))
        await services.broker.wait_connected(timeout=10)
        worker = await start_worker(services)

        response = await client.post("/notify", json={"to": "+6281234567890", "text": "hi"})
        assert response.status == 202, await response.text()

        dead_queue = f"{settings.wa_queue_prefix}.dead"
        await wait_for(lambda: queue_size(amqp, dead_queue), timeout=20)
        [dead] = await get_all(amqp, dead_queue)
        await worker.stop(timeout=2)
        return len(api.requests), dead


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("meta", Answer(200, "<html><body>Sign in to the proxy</body></html>")),
        ("meta", Answer(200, {"messaging_product": "whatsapp", "messages": []})),
        ("twilio", Answer(201, {"status": "queued"})),
        ("watzap", Answer(200, "<html>Maintenance</html>")),
    ],
    ids=["meta-html-200", "meta-json-without-wamid", "twilio-201-without-sid", "watzap-html-200"],
)
async def test_a_2xx_without_message_id_is_one_call_per_attempt(
    name, answer, make_settings, aiohttp_client, start_worker, amqp, installed_plugins
):
    calls, dead = await _deliver_once(
        name, answer, make_settings, aiohttp_client, start_worker, amqp, installed_plugins
    )

    assert calls == 3  # the first attempt and one per retry tier: no quick tries
    assert dead.headers["x-attempts"] == 3
    assert dead.headers["x-error"].startswith("retries exhausted after 3 attempts")


async def test_a_503_still_gets_quick_tries_in_every_attempt(
    make_settings, aiohttp_client, start_worker, amqp, installed_plugins
):
    calls, dead = await _deliver_once(
        "meta", Answer(503, "<html>Service Unavailable</html>"),
        make_settings, aiohttp_client, start_worker, amqp, installed_plugins,
    )

    assert calls == 9  # 3 attempts x 3 quick tries
    assert dead.headers["x-attempts"] == 3
