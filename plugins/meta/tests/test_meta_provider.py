"""The Meta provider against a fake Graph API that checks the exact wire format, and
its `messages` webhook against signed status reports.

Bodies follow Meta's documented shapes: the send answer of the text-messages doc and
the error syntax and codes of the Cloud API "Error codes" page; the 130429 and 131030
bodies are real ones (research/providers.md section 2.4). Throttling codes are
scripted with both HTTP 400 and 429, as Meta sends both. The status reports follow
Meta's webhook reference; the failed one (131026) and the sent one with conversation
and pricing are real payloads (restfb/restfb#1344, a public capture).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import CIMultiDict

from wa_gateway import (
    Notification,
    PermanentError,
    Provider,
    ProviderConfig,
    ProviderConfigError,
    ProviderReceipt,
    TransientError,
    WebhookRejected,
    WebhookRequest,
)
from wa_gateway.testing import (
    SAMPLE_CAPTION,
    SAMPLE_DOCUMENT_URL,
    SAMPLE_FILENAME,
    SAMPLE_IMAGE_URL,
    SAMPLE_PHONE,
    SAMPLE_TEXT,
    Answer,
    ErrorCase,
    FakeProviderApi,
    ProviderConformance,
    RecordedRequest,
    WebhookConformance,
    WebhookSample,
    WireRequest,
    closed_port,
    group_message,
    phone_message,
    sample_media,
)
from wa_gateway_meta import MetaProvider

ACCESS_TOKEN = "EAAJB7x0test0ACCESS0TOKEN0ZDZD"
PHONE_NUMBER_ID = "106540352242922"
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
APP_SECRET = "3f1c0e5b9a7d4e2f8c6b1a0d9e8f7c6b"
VERIFY_TOKEN = "verify-token-5c1e9b2a"
WEBHOOK_URL = "https://wa.example.com/webhooks/default"

SUCCESS = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "+6281234567890", "wa_id": "6281234567890"}],
    "messages": [{"id": WAMID}],
}

RATE_LIMIT_HIT = {
    "error": {
        "message": "(#130429) Rate limit hit",
        "type": "OAuthException",
        "code": 130429,
        "error_data": {
            "messaging_product": "whatsapp",
            "details": "Message failed to send because there were too many messages sent "
            "from this phone number in a short period of time",
        },
        "error_subcode": 2494055,
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
    }
}

NOT_IN_ALLOWED_LIST = {
    "error": {
        "message": "(#131030) Recipient phone number not in allowed list",
        "type": "OAuthException",
        "code": 131030,
        "error_data": {
            "messaging_product": "whatsapp",
            "details": "Recipient phone number not in allowed list: Add recipient phone number "
            "to recipient list and try again.",
        },
        "error_subcode": 2655007,
        "error_user_title": "Recipient phone number not in allowed list",
        "error_user_msg": "Add recipient phone number to recipient list and try again.",
        "fbtrace_id": "AI5Ob2z72R0JAUB5zOF-nao",
    }
}


def graph_error(status: int, code: int, title: str, details: str = "", **headers: str) -> Answer:
    """An answer in the Cloud API error syntax (v16.0+: no error_subcode)."""
    error = {
        "message": f"(#{code}) {title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or title},
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUvW",
    }
    return Answer(status, {"error": error}, headers)


RE_ENGAGEMENT = graph_error(
    400,
    131047,
    "Re-engagement message",
    "Message failed to send because more than 24 hours have passed since the customer last "
    "replied to this number.",
)
"""Meta's answer to free-form text outside the 24-hour window (error-codes page)."""

TEMPLATE_NAME = "permintaan_baru"
MESSAGES_PATH = f"/v23.0/{PHONE_NUMBER_ID}/messages"


def case(answer: Answer, **kwargs: object) -> ErrorCase:
    """An ErrorCase expecting the Graph error's own code."""
    code = str(answer.body["error"]["code"])
    kwargs.setdefault("id", f"{code}-http{answer.status}")
    return ErrorCase(answer, code=code, **kwargs)  # type: ignore[arg-type]


# -- status reports, as Meta posts them to the webhook ---------------------------------

SENT_TIME = datetime(2023, 10, 25, 10, 57, 27, tzinfo=UTC)


def status(state: str, wamid: str = WAMID, timestamp: str = "1698231447", **extra: Any) -> dict:
    return {
        "id": wamid,
        "status": state,
        "timestamp": timestamp,
        "recipient_id": "6281234567890",
        **extra,
    }


def notification(*statuses: dict, field: str = "messages", **value: Any) -> dict:
    """The envelope Meta wraps every `messages` webhook in."""
    if statuses:
        value["statuses"] = list(statuses)
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            **value,
                        },
                        "field": field,
                    }
                ],
            }
        ],
    }


UNDELIVERABLE = status(  # real: restfb/restfb#1344
    "failed",
    errors=[
        {
            "code": 131026,
            "title": "Receiver is incapable of receiving this message",
            "message": "Receiver is incapable of receiving this message",
            "error_data": {"details": "Message Undeliverable."},
        }
    ],
)
SENT_WITH_PRICING = status(
    "sent",
    conversation={
        "id": "a75d17ad06104c51166f948319b03c6a",
        "expiration_timestamp": "1750943820",
        "origin": {"type": "service"},
    },
    pricing={"billable": True, "pricing_model": "CBP", "category": "service"},
)
INCOMING_MESSAGE = {
    "contacts": [{"profile": {"name": "Budi"}, "wa_id": "6281234567890"}],
    "messages": [
        {
            "from": "6281234567890",
            "id": "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjBDMEY0",
            "timestamp": "1698231447",
            "type": "text",
            "text": {"body": "halo"},
        }
    ],
}


def meta_body(payload: Any) -> bytes:
    # Meta escapes non-ASCII characters; json.dumps does too (and so survives lone surrogates).
    return json.dumps(payload).encode("ascii")


def meta_signed(body: bytes, secret: str = APP_SECRET) -> WebhookRequest:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = CIMultiDict(
        {
            "Content-Type": "application/json",
            "User-Agent": "facebookexternalua",
            "X-Hub-Signature-256": signature,
        }
    )
    return WebhookRequest("POST", WEBHOOK_URL, headers, {}, body)


def handshake(**query: str) -> WebhookRequest:
    return WebhookRequest("GET", WEBHOOK_URL, {}, query, b"")


class TestMetaConformance(ProviderConformance, WebhookConformance):
    provider_name = "meta"
    success = Answer(200, SUCCESS)
    success_message_id = WAMID
    required_settings = ("WA_API_KEY", "META_PHONE_NUMBER_ID")
    secret_settings = ("META_APP_SECRET", "META_WEBHOOK_VERIFY_TOKEN")
    signature_header = "X-Hub-Signature-256"
    webhook_settings = ("META_APP_SECRET",)
    rejected_messages = (
        group_message(),  # a '…@g.us' id is no recipient of the Cloud API
        phone_message(text="x" * 4097),  # text.body holds at most 4096 characters
    )
    transient_cases = (
        case(Answer(400, RATE_LIMIT_HIT), message="(#130429) Rate limit hit"),
        case(Answer(429, RATE_LIMIT_HIT)),
        case(graph_error(400, 4, "Application request limit reached")),
        case(graph_error(429, 80007, "Rate limit issues")),
        case(graph_error(400, 131056, "(Business Account, Consumer Account) pair rate limit hit")),
        case(graph_error(400, 1, "An unknown error occurred")),
        case(graph_error(503, 2, "Service temporarily unavailable")),
        case(graph_error(500, 131000, "Something went wrong")),
        case(graph_error(503, 131016, "Service unavailable")),
        case(graph_error(503, 133004, "Server temporarily unavailable")),
        case(graph_error(400, 131057, "Business Account is in maintenance mode")),
        case(graph_error(500, 999999, "Undocumented server error"), id="unknown-code-http500"),
        case(
            graph_error(429, 130429, "Rate limit hit", **{"Retry-After": "7"}),
            retry_after=7,
            id="retry-after-header-is-kept",
        ),
        ErrorCase(
            Answer(502, "<html>Bad Gateway</html>"), code=None, ambiguous=False, id="http502-html"
        ),
        ErrorCase(
            Answer(200, {"messaging_product": "whatsapp"}),
            code=None,
            ambiguous=True,  # Meta may have accepted it: one call per attempt
            id="http200-without-wamid",
        ),
        ErrorCase(Answer(200, "<html>proxy</html>"), code=None, ambiguous=True, id="http200-html"),
    )
    permanent_cases = (
        case(graph_error(401, 190, "Error validating access token: Session has expired")),
        case(graph_error(401, 0, "AuthException")),
        case(
            graph_error(500, 3, "Capability or permissions issue"),
            id="3-http500-is-still-permanent",
        ),
        case(graph_error(403, 10, "Permission denied")),
        case(graph_error(403, 200, "Requires whatsapp_business_messaging permission")),
        case(graph_error(403, 299, "API permission")),
        case(graph_error(400, 100, "Invalid parameter")),
        case(graph_error(400, 131008, "Required parameter is missing")),
        case(graph_error(400, 131009, "Parameter value is not valid")),
        case(graph_error(400, 131021, "Recipient cannot be sender")),
        case(graph_error(400, 131051, "Unsupported message type")),
        case(graph_error(400, 131026, "Message undeliverable")),
        case(RE_ENGAGEMENT),
        case(graph_error(400, 131042, "Business eligibility payment issue")),
        case(graph_error(400, 131050, "User has stopped marketing messages")),
        case(graph_error(403, 368, "Temporarily blocked for policies violations")),
        case(graph_error(403, 131031, "Account has been locked")),
        case(
            graph_error(
                403, 130497, "Business account is restricted from messaging users in this country"
            )
        ),
        case(graph_error(400, 132000, "Number of parameters does not match")),
        case(graph_error(404, 132001, "Template name does not exist in the translation")),
        case(graph_error(400, 132016, "Template has been disabled")),
        case(graph_error(400, 133010, "Phone number not registered")),
        case(
            graph_error(429, 131048, "Spam rate limit hit"), id="131048-http429-spam-is-not-retried"
        ),
        case(
            Answer(400, NOT_IN_ALLOWED_LIST),
            message="Add recipient phone number",
            id="unknown-code-http400",
        ),
        ErrorCase(Answer(404, "<html>Not Found</html>"), code=None, id="http404-html"),
    )
    window_cases = (case(RE_ENGAGEMENT, message="more than 24 hours have passed"),)
    rejected_templates = (
        {"name": "Permintaan Baru", "language": "id", "params": []},  # capitals, a space
        {"name": "permintaan-baru", "language": "id"},  # a hyphen
        {"name": "", "language": "id"},
        {"name": "x" * 513, "language": "id"},  # over 512 characters
        {"language": "id", "params": ["{{ id }}"]},  # no name
        {"name": TEMPLATE_NAME, "params": ["{{ id }}"]},  # no language
        {"name": TEMPLATE_NAME, "language": "Indonesian"},
        {"name": TEMPLATE_NAME, "language": "en-US"},  # Meta writes en_US
        {"name": TEMPLATE_NAME, "language": "id", "params": "{{ id }}"},  # not a list
        {"name": TEMPLATE_NAME, "language": "id", "params": [42]},  # not a string
        {"name": TEMPLATE_NAME, "language": "id", "params": {"1": "{{ id }}"}},  # Twilio's shape
        {"name": TEMPLATE_NAME, "language": {"code": "id"}},  # the wire's shape
    )

    def make_config(self, api_url: str) -> ProviderConfig:
        # The real base URL ends in the API version; so does the fake's.
        return ProviderConfig(
            api_key=ACCESS_TOKEN,
            api_url=f"{api_url}/v23.0",
            settings={
                "META_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
                "META_APP_SECRET": APP_SECRET,
                "META_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
            },
        )

    def make_webhook_config(self) -> ProviderConfig:
        config = self.make_config(f"http://127.0.0.1:{closed_port()}")
        return dataclasses.replace(config, webhook_url=WEBHOOK_URL)

    def signed_request(self, provider: Provider, payload: Any) -> WebhookRequest:
        return meta_signed(payload if isinstance(payload, bytes) else meta_body(payload))

    def sample_payloads(self) -> list[WebhookSample]:
        return [
            WebhookSample(
                notification(status("delivered")),
                [ProviderReceipt(WAMID, "delivered", at=SENT_TIME)],
            ),
            WebhookSample(notification(status("read")), [ProviderReceipt(WAMID, "read")]),
            WebhookSample(
                notification(UNDELIVERABLE),
                [
                    ProviderReceipt(
                        WAMID,
                        "failed",
                        at=SENT_TIME,
                        code="131026",
                        message="Receiver is incapable of receiving this message: "
                        "Message Undeliverable.",
                    )
                ],
            ),
            WebhookSample(notification(SENT_WITH_PRICING), [ProviderReceipt(WAMID, "sent")]),
            WebhookSample(
                notification(
                    status("delivered", "wamid.first"),
                    status("deleted", "wamid.second"),
                    status("read", "wamid.third", timestamp="1698231500"),
                ),
                [
                    ProviderReceipt("wamid.first", "delivered"),
                    ProviderReceipt(
                        "wamid.third", "read", at=datetime(2023, 10, 25, 10, 58, 20, tzinfo=UTC)
                    ),
                ],
                id="batch-skipping-deleted",
            ),
            WebhookSample(notification(**INCOMING_MESSAGE), [], id="incoming-message-only"),
            WebhookSample(
                notification(status("read"), field="message_template_status_update"),
                [],
                id="another-field",
            ),
        ]

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        assert request.method == "POST"
        assert request.path == MESSAGES_PATH
        assert request.query == {}
        assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.content_type == "application/json"
        body = request.json()
        assert {k: body[k] for k in ("messaging_product", "recipient_type", "to")} == {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.target.address,
        }
        if message.media is None and not message.use_template:
            assert body == {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": message.target.address,
                "type": "text",
                "text": {"body": message.text},
            }

    # Meta, "Image messages" / "Document messages": `link`, an optional `caption`
    # (at most 1024 characters) and a document's optional `filename`.
    def expected_media_request(
        self, kind: str, target_kind: str, caption: str | None
    ) -> WireRequest:
        assert target_kind == "phone"
        if kind == "image":
            media: dict[str, str] = {"link": SAMPLE_IMAGE_URL}
        else:
            media = {"link": SAMPLE_DOCUMENT_URL, "filename": SAMPLE_FILENAME}
        if caption is not None:
            media["caption"] = caption
        return WireRequest(
            MESSAGES_PATH,
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": SAMPLE_PHONE,
                "type": kind,
                kind: media,
            },
        )

    def sample_template(self, params: Sequence[str]) -> dict[str, Any]:
        return {"name": TEMPLATE_NAME, "language": "id", "params": list(params)}

    # Meta, "Template messages": name, language.code, and the body's parameters as
    # {"type": "text", "text": …} in the order of {{1}}, {{2}} …
    def expected_template_request(self) -> WireRequest:
        return WireRequest(
            MESSAGES_PATH,
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": SAMPLE_PHONE,
                "type": "template",
                "template": {
                    "name": "permintaan_baru",
                    "language": {"code": "id"},
                    "components": [
                        {
                            "type": "body",
                            "parameters": [
                                {"type": "text", "text": "42"},
                                {"type": "text", "text": "Budi Śantoso 🙂"},
                                {"type": "text", "text": "Rp 2.500.000 — ✅ disetujui"},
                            ],
                        }
                    ],
                },
            },
        )

    async def test_utf8_text_arrives_byte_exact(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        await provider.send(phone_message())
        (request,) = api.requests
        assert request.json()["text"]["body"] == SAMPLE_TEXT
        assert json.dumps(SAMPLE_TEXT, ensure_ascii=False).encode("utf-8") in request.body

    async def test_to_is_e164_with_the_plus_sign(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        # Without '+' Meta prepends the business number's country code and can misdeliver.
        await provider.send(phone_message(address="+6281234567890"))
        (request,) = api.requests
        assert request.json()["to"] == "+6281234567890"

    async def test_receipt_keeps_the_message_status(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        held = {
            **SUCCESS,
            "messages": [{"id": WAMID, "message_status": "held_for_quality_assessment"}],
        }
        api.script(Answer(200, held))
        receipt = await provider.send(phone_message())
        assert (receipt.provider_message_id, receipt.provider_status) == (
            WAMID,
            "held_for_quality_assessment",
        )

    async def test_error_keeps_details_and_fbtrace_id_for_the_operator(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        api.script(Answer(400, NOT_IN_ALLOWED_LIST))
        with pytest.raises(PermanentError) as caught:
            await provider.send(phone_message())
        assert caught.value.provider_message == (
            "(#131030) Recipient phone number not in allowed list: Recipient phone number not in "
            "allowed list: Add recipient phone number to recipient list and try again. "
            "(fbtrace_id AI5Ob2z72R0JAUB5zOF-nao)"
        )

    async def test_template_without_params_has_no_components(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        template = {"name": "hello_world", "language": "en_US", "params": []}
        await provider.send(phone_message(templates={"meta": template}, use_template=True))
        assert api.requests[0].json()["template"] == {
            "name": "hello_world",
            "language": {"code": "en_US"},
        }

    async def test_template_goes_instead_of_the_text_and_the_media(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        template = {"name": TEMPLATE_NAME, "language": "id", "params": ["Sari 🌸"]}
        message = phone_message(
            media=sample_media("document", caption=SAMPLE_CAPTION),
            templates={"meta": template},
            use_template=True,
        )
        await provider.send(message)
        body = api.requests[0].json()
        assert (body["type"], set(body)) == (
            "template",
            {"messaging_product", "recipient_type", "to", "type", "template"},
        )
        assert '"text": "Sari 🌸"'.encode() in api.requests[0].body

    async def test_use_template_without_one_is_permanent_and_sends_nothing(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        message = phone_message(event="new_request", templates={"twilio": {}}, use_template=True)
        with pytest.raises(PermanentError, match="new_request"):
            await provider.send(message)
        assert api.requests == []

    async def test_document_without_caption_or_filename_sends_only_the_link(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        media = {"url": SAMPLE_DOCUMENT_URL, "kind": "document"}
        await provider.send(phone_message(text="", media=media))
        assert api.requests[0].json()["document"] == {"link": SAMPLE_DOCUMENT_URL}

    async def test_indonesian_caption_and_filename_arrive_byte_exact(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        caption = "🧾 Faktur PO-42 — dari Ibu Śri, dibayar lunas ✅"
        media = sample_media("document", caption=caption, filename="Faktur Śri 🧾.pdf")
        await provider.send(phone_message(text="", media=media))
        raw = api.requests[0].body
        assert f'"caption": "{caption}"'.encode() in raw
        assert '"filename": "Faktur Śri 🧾.pdf"'.encode() in raw

    async def test_throttling_is_transient_whatever_the_http_status(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        for status in (400, 429, 403):
            api.script(graph_error(status, 130429, "Rate limit hit"))
            with pytest.raises(TransientError):
                await provider.send(phone_message())

    # -- the webhook ---------------------------------------------------------------

    def test_handshake_with_the_verify_token_echoes_the_challenge(
        self, webhook_provider: MetaProvider
    ) -> None:
        reply = webhook_provider.handle_webhook(
            handshake(
                **{
                    "hub.mode": "subscribe",
                    "hub.challenge": "1158201444",
                    "hub.verify_token": VERIFY_TOKEN,
                }
            )
        )
        assert (reply.status, reply.text, reply.receipts) == (200, "1158201444", ())

    @pytest.mark.parametrize(
        ("query", "status"),
        [
            ({"hub.mode": "subscribe", "hub.verify_token": "guess"}, 403),
            ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN[:-1]}, 403),
            ({"hub.mode": "subscribe"}, 403),
            ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN}, 400),
            ({"hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"}, 400),
            ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}, 400),  # no challenge
        ],
        ids=["wrong-token", "token-prefix", "no-token", "other-mode", "no-mode", "no-challenge"],
    )
    def test_handshake_without_the_right_request_is_rejected(
        self, webhook_provider: MetaProvider, query: dict[str, str], status: int
    ) -> None:
        query = {"hub.challenge": "1158201444", **query} if status == 403 else query
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(handshake(**query))
        assert caught.value.status == status

    @pytest.mark.parametrize("challenge", ["", "\ud800", "\x00", "<b>hi</b> there", "9" * 300])
    def test_handshake_echoes_only_a_challenge_like_metas(
        self, webhook_provider: MetaProvider, challenge: str
    ) -> None:
        query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(handshake(**query, **{"hub.challenge": challenge}))
        assert caught.value.status == 400

    def test_handshake_without_a_verify_token_setting_is_403(self) -> None:
        settings = {"META_PHONE_NUMBER_ID": PHONE_NUMBER_ID, "META_APP_SECRET": APP_SECRET}
        provider = MetaProvider(ProviderConfig(api_key=ACCESS_TOKEN, settings=settings))
        with pytest.raises(WebhookRejected) as caught:
            provider.handle_webhook(
                handshake(**{"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": ""})
            )
        assert caught.value.status == 403

    def test_signature_with_another_secret_is_401(self, webhook_provider: MetaProvider) -> None:
        request = meta_signed(meta_body(notification(status("read"))), secret="another-app-secret")
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(request)
        assert caught.value.status == 401

    def test_signature_hex_digits_in_upper_case_are_accepted(
        self, webhook_provider: MetaProvider
    ) -> None:
        request = meta_signed(meta_body(notification(status("read"))))
        signature = request.headers["X-Hub-Signature-256"]
        upper = "sha256=" + signature.removeprefix("sha256=").upper()
        headers = {"x-hub-signature-256": upper}
        reply = webhook_provider.handle_webhook(dataclasses.replace(request, headers=headers))
        assert [r.status for r in reply.receipts] == ["read"]

    @pytest.mark.parametrize(
        "payload",
        [
            {"object": "page", "entry": []},
            {"object": "whatsapp_business_account"},
            {"object": "whatsapp_business_account", "entry": {}},
            notification(status("read", wamid="")),
            notification(status("read", wamid="wamid with spaces")),
            notification({"status": "read"}),
            notification({"id": WAMID, "status": 3}),
            notification("read"),
        ],
        ids=[
            "another-object",
            "no-entry",
            "entry-not-a-list",
            "empty-id",
            "id-with-spaces",
            "no-id",
            "status-not-a-string",
            "status-not-an-object",
        ],
    )
    def test_a_signed_body_of_another_shape_is_400(
        self, webhook_provider: MetaProvider, payload: object
    ) -> None:
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(meta_signed(meta_body(payload)))
        assert caught.value.status == 400

    def test_unreadable_details_are_dropped_not_the_receipt(
        self, webhook_provider: MetaProvider
    ) -> None:
        failed = status(
            "failed",
            timestamp="TIMESTAMP",  # as in Meta's own examples
            errors=[
                {"code": {"x": 1}, "title": 42, "message": "Rate limit hit\x00", "error_data": []}
            ],
        )
        reply = webhook_provider.handle_webhook(meta_signed(meta_body(notification(failed))))
        assert reply.receipts == (
            ProviderReceipt(WAMID, "failed", at=None, code=None, message="Rate limit hit"),
        )

    def test_failed_without_errors_has_no_code(self, webhook_provider: MetaProvider) -> None:
        reply = webhook_provider.handle_webhook(
            meta_signed(meta_body(notification(status("failed"))))
        )
        assert reply.receipts == (ProviderReceipt(WAMID, "failed", at=SENT_TIME),)

    def test_a_delivered_status_keeps_no_error(self, webhook_provider: MetaProvider) -> None:
        delivered = status("delivered", errors=UNDELIVERABLE["errors"])
        reply = webhook_provider.handle_webhook(meta_signed(meta_body(notification(delivered))))
        assert reply.receipts == (ProviderReceipt(WAMID, "delivered", at=SENT_TIME),)

    def test_post_answers_ok(self, webhook_provider: MetaProvider) -> None:
        reply = webhook_provider.handle_webhook(
            meta_signed(meta_body(notification(status("read"))))
        )
        assert (reply.status, reply.text) == (200, "ok")

    def test_other_methods_are_405(self, webhook_provider: MetaProvider) -> None:
        request = dataclasses.replace(meta_signed(b"{}"), method="PUT")
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(request)
        assert caught.value.status == 405


def meta_config(**settings: str) -> ProviderConfig:
    return ProviderConfig(
        api_key=ACCESS_TOKEN, settings={"META_PHONE_NUMBER_ID": PHONE_NUMBER_ID, **settings}
    )


def test_default_base_url_is_the_graph_api_v23() -> None:
    assert MetaProvider(meta_config()).base_url == "https://graph.facebook.com/v23.0"


def test_meta_api_version_selects_the_graph_api_version() -> None:
    provider = MetaProvider(meta_config(META_API_VERSION="v26.0"))
    assert provider.base_url == "https://graph.facebook.com/v26.0"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("META_API_VERSION", "23.0"),
        ("META_API_VERSION", "latest"),
        ("META_PHONE_NUMBER_ID", "+6281"),
    ],
)
def test_malformed_setting_stops_start_up_naming_it(setting: str, value: str) -> None:
    with pytest.raises(ProviderConfigError, match=setting):
        MetaProvider(meta_config(**{setting: value}))


def test_capabilities_exclude_groups_and_allow_80_messages_per_second() -> None:
    capabilities = MetaProvider.capabilities
    assert (capabilities.groups, capabilities.max_text_length, capabilities.send_rate) == (
        False,
        4096,
        80.0,
    )


def test_images_and_documents_take_captions_of_1024_characters() -> None:
    assert MetaProvider.capabilities.media == {"image": 1024, "document": 1024}


def test_131047_is_the_window_code() -> None:
    assert MetaProvider.window_codes == frozenset({"131047"})


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"name": "Permintaan Baru", "language": "id"}, "lowercase letters, digits and underscores"),
        ({"name": "permintaan_baru", "language": "en-US"}, "like 'id' or 'en_US'"),
        ({"name": "permintaan_baru", "language": "id", "params": [1]}, "list of strings"),
        ({"name": "permintaan_baru", "language": "id", "parameters": []}, "unknown keys parameters"),
    ],
    ids=["name", "language", "params", "unknown-key"],
)
def test_template_refusal_says_what_to_fix(spec: dict[str, Any], says: str) -> None:
    refusal = MetaProvider.template_refusal(spec)
    assert refusal is not None and says in refusal and "\n" not in refusal


@pytest.mark.parametrize("language", ["id", "en", "en_US", "pt_BR", "fil", "zh_HK"])
def test_template_languages_as_whatsapp_manager_lists_them(language: str) -> None:
    assert MetaProvider.template_refusal({"name": "permintaan_baru", "language": language}) is None


def test_only_a_verify_token_does_not_turn_the_webhook_on() -> None:
    provider = MetaProvider(meta_config(META_WEBHOOK_VERIFY_TOKEN=VERIFY_TOKEN))
    assert provider.accepts_webhooks is False
    with pytest.raises(WebhookRejected) as caught:
        provider.handle_webhook(meta_signed(meta_body(notification(status("read")))))
    assert caught.value.status == 404


def test_the_app_secret_turns_the_webhook_on() -> None:
    assert MetaProvider(meta_config(META_APP_SECRET=APP_SECRET)).accepts_webhooks is True
