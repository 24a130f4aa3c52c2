"""The Twilio provider against a fake Twilio REST API that checks the exact wire format.

The success body is the Message resource of Twilio's OpenAPI spec
(twilio/twilio-oai:spec/json/twilio_api_v2010.json); error bodies use the REST error
shape `{code, message, more_info, status}` with the messages of twilio.com/docs/errors.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlencode

import pytest

from wa_gateway import (
    Notification,
    PermanentError,
    ProviderConfig,
    ProviderConfigError,
    TransientError,
)
from wa_gateway.testing import (
    SAMPLE_TEXT,
    Answer,
    ErrorCase,
    FakeProviderApi,
    ProviderConformance,
    RecordedRequest,
    group_message,
    phone_message,
)
from wa_gateway_twilio import TwilioProvider

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
SENDER = "whatsapp:+14155238886"
MESSAGE_SID = "SM0123456789abcdef0123456789abcdef"

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


def case(answer: Answer, **kwargs: object) -> ErrorCase:
    """An ErrorCase expecting the Twilio error's own code."""
    code = str(answer.body["code"])
    kwargs.setdefault("id", f"{code}-http{answer.status}")
    return ErrorCase(answer, code=code, **kwargs)  # type: ignore[arg-type]


class TestTwilioConformance(ProviderConformance):
    provider_name = "twilio"
    success = Answer(201, SUCCESS)
    success_message_id = MESSAGE_SID
    required_settings = ("WA_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_FROM")
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
        case(
            twilio_error(
                400,
                63016,
                "Failed to send freeform message because you are outside the allowed window. If you are using WhatsApp, please use a Message Template.",
            )
        ),
        case(twilio_error(400, 63003, "Channel could not find To address")),
        case(twilio_error(400, 63024, "Invalid message recipient")),
        case(twilio_error(400, 21999, "An undocumented client error"), id="unknown-code-http400"),
        case(twilio_error(503, 21211, "Invalid 'To'"), id="21211-http503-code-decides"),
    )

    def make_config(self, api_url: str) -> ProviderConfig:
        return ProviderConfig(
            api_key=AUTH_TOKEN,
            api_url=api_url,
            settings={"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_FROM": SENDER},
        )

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        assert request.method == "POST"
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        assert request.query == {}
        scheme, _, credentials = request.headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(credentials).decode() == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
        assert request.content_type == "application/x-www-form-urlencoded"
        assert request.form() == {
            "From": SENDER,
            "To": f"whatsapp:{message.target.address}",
            "Body": message.text,
        }

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
