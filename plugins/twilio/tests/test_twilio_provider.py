"""The Twilio provider against a fake Twilio REST API that checks the exact wire format,
and its status callbacks against requests signed as Twilio signs them.

The success body is the Message resource of Twilio's OpenAPI spec
(twilio/twilio-oai:spec/json/twilio_api_v2010.json); error bodies use the REST error
shape `{code, message, more_info, status}` with the messages of twilio.com/docs/errors.
Status callbacks carry the fields of Twilio's "Track outbound message status" guide;
their signatures are computed here and checked against the official `twilio`
package's RequestValidator both ways.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from multidict import CIMultiDict, MultiDict
from twilio.request_validator import RequestValidator

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
    SAMPLE_IMAGE_URL,
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
from wa_gateway_twilio import TwilioProvider

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
SENDER = "whatsapp:+14155238886"
MESSAGE_SID = "SM0123456789abcdef0123456789abcdef"
WEBHOOK_URL = "https://wa.example.com/webhooks/default"
FORM = "application/x-www-form-urlencoded"

SUCCESS = {
    "account_sid": ACCOUNT_SID,
    "api_version": "2010-04-01",
    "body": SAMPLE_TEXT,
    "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
    "date_sent": None,
    "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
    "direction": "outbound-api",
    "error_code": None,
    "error_message": None,
    "from": SENDER,
    "messaging_service_sid": None,
    "num_media": "0",
    "num_segments": "1",
    "price": None,
    "price_unit": None,
    "sid": MESSAGE_SID,
    "status": "queued",
    "subresource_uris": {
        "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{MESSAGE_SID}/Media.json"
    },
    "to": "whatsapp:+6281234567890",
    "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{MESSAGE_SID}.json",
}


def twilio_error(status: int, code: int, message: str, **headers: str) -> Answer:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Answer(status, body, headers)


OUTSIDE_THE_WINDOW = twilio_error(
    400,
    63016,
    "Failed to send freeform message because you are outside the allowed window. If you are "
    "using WhatsApp, please use a Message Template.",
)
CONTENT_SID = "HXb5b62575e6e4ff6129ad7c8efe1f983e"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


def case(answer: Answer, **kwargs: object) -> ErrorCase:
    """An ErrorCase expecting the Twilio error's own code."""
    code = str(answer.body["code"])
    kwargs.setdefault("id", f"{code}-http{answer.status}")
    return ErrorCase(answer, code=code, **kwargs)  # type: ignore[arg-type]


# -- status callbacks, as Twilio posts them ------------------------------------------


def callback(status: str, sid: str = MESSAGE_SID, **extra: str) -> dict[str, str]:
    """The form of a WhatsApp message's status callback."""
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "ChannelPrefix": "whatsapp",
        "ChannelToAddress": "+62812345XXXX",
        "From": SENDER,
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": "whatsapp:+6281234567890",
        **extra,
    }


def twilio_signature(url: str, params: Iterable[tuple[str, str]], token: str = AUTH_TOKEN) -> str:
    """Twilio's algorithm, written out here: the URL, then each name and value sorted."""
    pairs = sorted(set(params))
    signed = url + "".join(name + value for name, value in pairs)
    digest = hmac.new(token.encode(), signed.encode("utf-8", "surrogatepass"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode()


def form_body(payload: Any) -> bytes:
    return urlencode(payload, doseq=True, errors="surrogatepass").encode("ascii")


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """What can be read of a body as a form (nothing when it is not ASCII)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return []
    return parse_qsl(text, keep_blank_values=True, errors="surrogateescape")


def twilio_signed(body: bytes, url: str = WEBHOOK_URL, token: str = AUTH_TOKEN) -> WebhookRequest:
    headers = CIMultiDict(
        {
            "Content-Type": FORM,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": "1f3b7a02-5d6c-4e8f-9a1b-2c3d4e5f6a7b",
            "X-Twilio-Signature": twilio_signature(url, form_pairs(body), token),
        }
    )
    return WebhookRequest("POST", url, headers, {}, body)


class TestTwilioConformance(ProviderConformance, WebhookConformance):
    provider_name = "twilio"
    success = Answer(201, SUCCESS)
    success_message_id = MESSAGE_SID
    required_settings = ("WA_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_FROM")
    signature_header = "X-Twilio-Signature"
    webhook_settings = ("WA_API_KEY",)  # the auth token signs the callbacks
    rejected_messages = (
        group_message(),  # no WhatsApp groups through Twilio
        phone_message(text="x" * 1601),  # error 21617: Body holds at most 1600 characters
    )
    transient_cases = (
        case(twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "2"}), retry_after=2),
        case(twilio_error(500, 20500, "An internal server error has occurred")),
        case(twilio_error(503, 20503, "Service unavailable")),
        ErrorCase(
            Answer(502, "<html>Bad Gateway</html>"), code=None, ambiguous=False, id="http502-html"
        ),
        ErrorCase(
            Answer(201, {"status": "queued"}), code=None, ambiguous=True, id="http201-without-sid"
        ),
    )
    permanent_cases = (
        case(
            twilio_error(
                400, 21211, "The 'To' number whatsapp:+6281234567890 is not a valid phone number."
            ),
            message="https://www.twilio.com/docs/errors/21211",
        ),
        case(twilio_error(401, 20003, "Authenticate")),
        case(twilio_error(403, 20403, "Forbidden")),
        case(twilio_error(400, 21614, "'To' number is not a valid mobile number")),
        case(
            twilio_error(
                400,
                21606,
                "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account",
            )
        ),
        case(
            twilio_error(400, 21601, "Phone number is not a valid SMS-capable inbound phone number")
        ),
        case(
            twilio_error(
                400, 63007, "Twilio could not find a Channel with the specified From address"
            )
        ),
        case(twilio_error(400, 21602, "Message body is required.")),
        case(
            twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        ),
        case(
            twilio_error(
                400,
                21608,
                "The number is unverified. Trial accounts may only send messages to verified numbers.",
            )
        ),
        case(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")),
        case(OUTSIDE_THE_WINDOW),
        case(twilio_error(400, 63003, "Channel could not find To address")),
        case(twilio_error(400, 63024, "Invalid message recipient")),
        case(twilio_error(400, 21999, "An undocumented client error"), id="unknown-code-http400"),
        case(twilio_error(503, 21211, "Invalid 'To'"), id="21211-http503-code-decides"),
    )
    window_cases = (case(OUTSIDE_THE_WINDOW, message="outside the allowed window"),)
    rejected_templates = (
        {"content_sid": "HX123", "variables": {"1": "{{ id }}"}},  # too short
        {"content_sid": "MG" + "0" * 32},  # a Messaging Service, not content
        {"content_sid": CONTENT_SID.upper().replace("HX", "hx")},  # 'HX' in capitals
        {"content_sid": f" {CONTENT_SID}"},
        {"variables": {"1": "{{ id }}"}},  # no content_sid
        {"content_sid": CONTENT_SID, "variables": {"1": "{{ id }}", "3": "{{ requester }}"}},
        {"content_sid": CONTENT_SID, "variables": {"2": "{{ requester }}", "1": "{{ id }}"}},
        {"content_sid": CONTENT_SID, "variables": {"0": "{{ id }}"}},
        {"content_sid": CONTENT_SID, "variables": {"id": "{{ id }}"}},
        {"content_sid": CONTENT_SID, "variables": {"1": 42}},
        {"content_sid": CONTENT_SID, "variables": ["{{ id }}"]},  # Meta's shape
        {"content_sid": CONTENT_SID, "params": ["{{ id }}"]},
    )

    def make_config(self, api_url: str) -> ProviderConfig:
        return ProviderConfig(
            api_key=AUTH_TOKEN,
            api_url=api_url,
            settings={"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_FROM": SENDER},
            webhook_url=WEBHOOK_URL,
        )

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        assert request.method == "POST"
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        assert request.query == {}
        scheme, _, credentials = request.headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(credentials).decode() == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
        assert request.content_type == "application/x-www-form-urlencoded"
        form = request.form()
        assert {k: form[k] for k in ("From", "To", "StatusCallback")} == {
            "From": SENDER,
            "To": f"whatsapp:{message.target.address}",
            "StatusCallback": WEBHOOK_URL,
        }
        if message.media is None and not message.use_template:
            assert form == {
                "From": SENDER,
                "To": f"whatsapp:{message.target.address}",
                "Body": message.text,
                "StatusCallback": WEBHOOK_URL,
            }

    # Twilio, "Guidance on WhatsApp Media Messages": MediaUrl, the Body an image's
    # caption; a document goes without text (no caption or filename over WhatsApp).
    def expected_media_request(
        self, kind: str, target_kind: str, caption: str | None
    ) -> WireRequest:
        assert target_kind == "phone"
        form = {
            "From": SENDER,
            "To": "whatsapp:+6281234567890",
            "MediaUrl": SAMPLE_IMAGE_URL if kind == "image" else SAMPLE_DOCUMENT_URL,
            "StatusCallback": WEBHOOK_URL,
        }
        if caption is not None:
            form["Body"] = caption
        return WireRequest(MESSAGES_PATH, form, FORM)

    def sample_template(self, params: Sequence[str]) -> dict[str, Any]:
        variables = {str(n): param for n, param in enumerate(params, start=1)}
        return {"content_sid": CONTENT_SID, "variables": variables}

    # Twilio, "Send templates created with the Content Template Builder": ContentSid,
    # and ContentVariables, a JSON string of the placeholders' values; no Body.
    def expected_template_request(self) -> WireRequest:
        return WireRequest(
            MESSAGES_PATH,
            {
                "From": SENDER,
                "To": "whatsapp:+6281234567890",
                "ContentSid": CONTENT_SID,
                "ContentVariables": '{"1":"42","2":"Budi Śantoso 🙂","3":"Rp 2.500.000 — ✅ disetujui"}',
                "StatusCallback": WEBHOOK_URL,
            },
            FORM,
        )

    def make_webhook_config(self) -> ProviderConfig:
        return self.make_config(f"http://127.0.0.1:{closed_port()}")

    def signed_request(self, provider: Provider, payload: Any) -> WebhookRequest:
        return twilio_signed(payload if isinstance(payload, bytes) else form_body(payload))

    def sample_payloads(self) -> list[WebhookSample]:
        return [
            WebhookSample(callback("delivered"), [ProviderReceipt(MESSAGE_SID, "delivered")]),
            WebhookSample(callback("read"), [ProviderReceipt(MESSAGE_SID, "read")]),
            WebhookSample(
                callback("failed", ErrorCode="63016", ErrorMessage="Outside messaging window"),
                [ProviderReceipt(MESSAGE_SID, "failed", code="63016", message="Outside")],
            ),
            WebhookSample(
                callback("undelivered", ErrorCode="63024"),
                [ProviderReceipt(MESSAGE_SID, "failed", code="63024")],
                id="undelivered-is-failed",
            ),
            WebhookSample(callback("sent"), [ProviderReceipt(MESSAGE_SID, "sent")]),
            WebhookSample(callback("queued"), [], id="queued-is-no-receipt"),
            WebhookSample(callback("sending"), [], id="sending-is-no-receipt"),
        ]

    # -- StatusCallback ------------------------------------------------------------

    async def test_status_callback_is_sent_only_with_a_webhook_url(
        self, api: FakeProviderApi
    ) -> None:
        config = dataclasses.replace(self.make_config(api.url), webhook_url=None)
        provider = TwilioProvider(config)
        try:
            await provider.send(phone_message())
        finally:
            await provider.close()
        (request,) = api.requests
        assert set(request.form()) == {"From", "To", "Body"}

    async def test_status_callback_is_the_channels_webhook_url(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        await provider.send(phone_message())
        (request,) = api.requests
        assert request.form()["StatusCallback"] == WEBHOOK_URL

    # -- the webhook ---------------------------------------------------------------

    def test_the_official_validator_accepts_our_signatures(self) -> None:
        validator = RequestValidator(AUTH_TOKEN)
        for sample in self.sample_payloads():
            request = twilio_signed(form_body(sample.payload))
            signature = request.headers["X-Twilio-Signature"]
            assert validator.validate(WEBHOOK_URL, sample.payload, signature), sample.test_id

    @pytest.mark.parametrize(
        "url",
        [
            WEBHOOK_URL,
            f"{WEBHOOK_URL}?source=twilio&n=1",
            "http://203.0.113.7:8080/webhooks/people",
        ],
        ids=["public-url", "with-a-query", "own-address-and-port"],
    )
    def test_a_signature_the_official_validator_computes_is_accepted(
        self, webhook_provider: TwilioProvider, url: str
    ) -> None:
        params = callback(
            "failed", ErrorCode="63016", ErrorMessage="Fuera de la ventana 😀 & más = sí"
        )
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        headers = {"Content-Type": FORM, "X-Twilio-Signature": signature}
        request = WebhookRequest("POST", url, headers, {}, form_body(params))
        (receipt,) = webhook_provider.handle_webhook(request).receipts
        assert (receipt.status, receipt.code, receipt.message) == (
            "failed",
            "63016",
            "Fuera de la ventana 😀 & más = sí",
        )

    def test_repeated_fields_are_signed_as_the_official_validator_signs_them(
        self, webhook_provider: TwilioProvider
    ) -> None:
        pairs = [*callback("read").items(), ("MediaUrl", "b"), ("MediaUrl", "a"), ("MediaUrl", "a")]
        signature = RequestValidator(AUTH_TOKEN).compute_signature(WEBHOOK_URL, MultiDict(pairs))
        assert signature == twilio_signature(WEBHOOK_URL, pairs)
        headers = {"Content-Type": FORM, "X-Twilio-Signature": signature}
        request = WebhookRequest("POST", WEBHOOK_URL, headers, {}, form_body(pairs))
        assert [r.status for r in webhook_provider.handle_webhook(request).receipts] == ["read"]

    @pytest.mark.parametrize(
        ("signed_url", "called_url"),
        [
            ("https://wa.example.com:443/webhooks/default", WEBHOOK_URL),
            (WEBHOOK_URL, "https://wa.example.com:443/webhooks/default"),
            (
                "http://wa.example.com/webhooks/default",
                "http://wa.example.com:8080/webhooks/default",
            ),
        ],
        ids=["signed-with-default-port", "called-with-default-port", "signed-without-port"],
    )
    def test_the_port_is_checked_with_and_without_as_twilio_signs_either(
        self, webhook_provider: TwilioProvider, signed_url: str, called_url: str
    ) -> None:
        body = form_body(callback("delivered"))
        request = twilio_signed(body, url=signed_url)
        request = dataclasses.replace(request, url=called_url)
        assert [r.status for r in webhook_provider.handle_webhook(request).receipts] == [
            "delivered"
        ]

    @pytest.mark.parametrize(
        "request_change",
        [
            {"url": "https://wa.example.com/webhooks/other"},
            {"url": "http://wa.example.com/webhooks/default"},  # the scheme is signed
            {"url": "https://other.example.com/webhooks/default"},
        ],
        ids=["another-path", "another-scheme", "another-host"],
    )
    def test_a_signature_for_another_url_is_401(
        self, webhook_provider: TwilioProvider, request_change: dict[str, str]
    ) -> None:
        request = dataclasses.replace(twilio_signed(form_body(callback("read"))), **request_change)
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(request)
        assert caught.value.status == 401

    def test_a_signature_with_another_auth_token_is_401(
        self, webhook_provider: TwilioProvider
    ) -> None:
        request = twilio_signed(form_body(callback("read")), token="0" * 32)
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(request)
        assert caught.value.status == 401

    @pytest.mark.parametrize(
        ("change", "status"),
        [
            ({"method": "GET"}, 405),
            ({"headers": {"Content-Type": "application/json"}}, 415),
            ({"headers": {}}, 415),
        ],
        ids=["get", "json", "no-content-type"],
    )
    def test_what_is_no_status_callback_is_rejected(
        self, webhook_provider: TwilioProvider, change: dict[str, Any], status: int
    ) -> None:
        request = dataclasses.replace(twilio_signed(form_body(callback("read"))), **change)
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(request)
        assert caught.value.status == status

    @pytest.mark.parametrize(
        "params",
        [
            {k: v for k, v in callback("read").items() if k != "MessageSid"},
            {k: v for k, v in callback("read").items() if k != "MessageStatus"},
            callback("read", sid="SM123"),
            callback("read", sid=""),
            [*callback("read").items(), ("MessageStatus", "failed")],
        ],
        ids=["no-sid", "no-status", "short-sid", "empty-sid", "two-statuses"],
    )
    def test_a_signed_form_without_one_sid_and_status_is_400(
        self, webhook_provider: TwilioProvider, params: Any
    ) -> None:
        with pytest.raises(WebhookRejected) as caught:
            webhook_provider.handle_webhook(twilio_signed(form_body(params)))
        assert caught.value.status == 400

    def test_the_form_may_name_its_charset(self, webhook_provider: TwilioProvider) -> None:
        request = twilio_signed(form_body(callback("delivered")))
        headers = {**request.headers, "Content-Type": f"{FORM}; charset=UTF-8"}
        reply = webhook_provider.handle_webhook(dataclasses.replace(request, headers=headers))
        assert [r.status for r in reply.receipts] == ["delivered"]

    def test_a_delivered_status_keeps_no_error_code(self, webhook_provider: TwilioProvider) -> None:
        request = twilio_signed(form_body(callback("delivered", ErrorCode="30008")))
        reply = webhook_provider.handle_webhook(request)
        assert reply.receipts == (ProviderReceipt(MESSAGE_SID, "delivered"),)

    async def test_utf8_text_arrives_byte_exact(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        await provider.send(phone_message())
        (request,) = api.requests
        assert request.form()["Body"] == SAMPLE_TEXT
        assert urlencode({"Body": SAMPLE_TEXT}, encoding="utf-8").encode("ascii") in request.body

    async def test_receipt_keeps_the_sid_and_status(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        receipt = await provider.send(phone_message())
        assert (receipt.provider_message_id, receipt.provider_status) == (MESSAGE_SID, "queued")

    async def test_too_many_requests_keeps_code_and_retry_after(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        api.script(twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "5"}))
        with pytest.raises(TransientError) as caught:
            await provider.send(phone_message())
        error = caught.value
        assert (error.provider_status, error.provider_code, error.retry_after) == (
            429,
            "20429",
            5.0,
        )

    async def test_retry_after_as_an_http_date_becomes_seconds(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        in_a_minute = datetime.now(UTC) + timedelta(seconds=60)
        header = {"Retry-After": format_datetime(in_a_minute, usegmt=True)}
        api.script(twilio_error(429, 20429, "Too Many Requests", **header))
        with pytest.raises(TransientError) as caught:
            await provider.send(phone_message())
        assert caught.value.retry_after == pytest.approx(60, abs=2)

    async def test_http_429_without_a_body_is_transient(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        api.script(Answer(429, None))
        with pytest.raises(TransientError):
            await provider.send(phone_message())

    async def test_outside_the_window_is_permanent(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        api.script(twilio_error(400, 63016, "Failed to send freeform message"))
        with pytest.raises(PermanentError, match="Failed to send freeform message"):
            await provider.send(phone_message())

    async def test_content_variables_are_utf8_json_percent_encoded(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        variables = {"1": "PO-42", "2": "Ibu Śri 🌸", "3": 'kata "setuju"'}
        template = {"content_sid": CONTENT_SID, "variables": variables}
        await provider.send(phone_message(templates={"twilio": template}, use_template=True))
        (request,) = api.requests
        sent = request.form()["ContentVariables"]
        assert sent == '{"1":"PO-42","2":"Ibu Śri 🌸","3":"kata \\"setuju\\""}'
        assert json.loads(sent) == variables
        assert urlencode({"ContentVariables": sent}).encode("ascii") in request.body
        assert "Body" not in request.form() and "MediaUrl" not in request.form()

    async def test_template_without_variables_sends_only_the_content_sid(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        template = {"content_sid": CONTENT_SID}
        await provider.send(phone_message(templates={"twilio": template}, use_template=True))
        assert api.requests[0].form() == {
            "From": SENDER,
            "To": "whatsapp:+6281234567890",
            "ContentSid": CONTENT_SID,
            "StatusCallback": WEBHOOK_URL,
        }

    async def test_use_template_without_one_is_permanent_and_sends_nothing(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        message = phone_message(event="new_request", templates={"meta": {}}, use_template=True)
        with pytest.raises(PermanentError, match="new_request"):
            await provider.send(message)
        assert api.requests == []

    async def test_indonesian_caption_arrives_as_the_body_of_an_image(
        self, provider: TwilioProvider, api: FakeProviderApi
    ) -> None:
        caption = "📷 Barang PO-42 sudah tiba di gudang Śurabaya ✅"
        await provider.send(phone_message(text="", media=sample_media("image", caption=caption)))
        (request,) = api.requests
        assert request.form()["Body"] == caption
        assert urlencode({"Body": caption}).encode("ascii") in request.body

    async def test_media_without_callback_url_has_no_status_callback(
        self, api: FakeProviderApi
    ) -> None:
        config = dataclasses.replace(self.make_config(api.url), webhook_url=None)
        provider = TwilioProvider(config)
        try:
            await provider.send(phone_message(text="", media=sample_media("document")))
        finally:
            await provider.close()
        assert api.requests[0].form() == {
            "From": SENDER,
            "To": "whatsapp:+6281234567890",
            "MediaUrl": SAMPLE_DOCUMENT_URL,
        }


def twilio_config(**settings: str) -> ProviderConfig:
    base = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_FROM": SENDER}
    return ProviderConfig(api_key=AUTH_TOKEN, settings={**base, **settings})


@pytest.mark.parametrize("sender", ["whatsapp:+14155238886", "+14155238886"])
def test_twilio_from_is_accepted_with_or_without_the_channel_prefix(sender: str) -> None:
    assert TwilioProvider(twilio_config(TWILIO_FROM=sender)).sender == "whatsapp:+14155238886"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_ACCOUNT_SID", "SK0123456789abcdef0123456789abcdef"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdeg"),
        ("TWILIO_FROM", "14155238886"),
        ("TWILIO_FROM", "whatsapp:+1 415 523 8886"),
    ],
)
def test_malformed_setting_stops_start_up_naming_it(setting: str, value: str) -> None:
    with pytest.raises(ProviderConfigError, match=setting):
        TwilioProvider(twilio_config(**{setting: value}))


def test_default_base_url_is_twilios_api() -> None:
    assert TwilioProvider(twilio_config()).base_url == "https://api.twilio.com"


def test_capabilities_exclude_groups_and_cap_text_at_1600() -> None:
    capabilities = TwilioProvider.capabilities
    assert (capabilities.groups, capabilities.max_text_length, capabilities.send_rate) == (
        False,
        1600,
        10.0,
    )


def test_an_image_takes_a_1600_character_caption_and_a_document_none() -> None:
    capabilities = TwilioProvider.capabilities
    assert capabilities.media == {"image": 1600, "document": 0}
    assert capabilities.refusal("phone", SAMPLE_CAPTION, "document") == (
        "sends a document without text (no caption)"
    )


def test_63016_is_the_window_code() -> None:
    assert TwilioProvider.window_codes == frozenset({"63016"})


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"content_sid": "HX1"}, "'HX' and 32 hex digits"),
        ({"content_sid": CONTENT_SID, "variables": {"1": "a", "3": "b"}}, "must be '1', '2', in that order"),
        ({"content_sid": CONTENT_SID, "variables": {"1": 1}}, "variable '1' must be a string"),
        ({"content_sid": CONTENT_SID, "variables": "x"}, "must be a table"),
        ({"content_sid": CONTENT_SID, "vars": {}}, "unknown keys vars"),
    ],
    ids=["sid", "not-consecutive", "not-a-string", "not-a-table", "unknown-key"],
)
def test_template_refusal_says_what_to_fix(spec: dict[str, Any], says: str) -> None:
    refusal = TwilioProvider.template_refusal(spec)
    assert refusal is not None and says in refusal and "\n" not in refusal
