"""The Meta provider against a fake Graph API that checks the exact wire format.

Bodies follow Meta's documented shapes: the send answer of the text-messages doc and
the error syntax and codes of the Cloud API "Error codes" page; the 130429 and 131030
bodies are real ones (research/providers.md section 2.4). Throttling codes are
scripted with both HTTP 400 and 429, as Meta sends both.
"""

from __future__ import annotations

import json

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
from wa_gateway_meta import MetaProvider

ACCESS_TOKEN = "EAAJB7x0test0ACCESS0TOKEN0ZDZD"
PHONE_NUMBER_ID = "106540352242922"
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"

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


def case(answer: Answer, **kwargs: object) -> ErrorCase:
    """An ErrorCase expecting the Graph error's own code."""
    code = str(answer.body["error"]["code"])
    kwargs.setdefault("id", f"{code}-http{answer.status}")
    return ErrorCase(answer, code=code, **kwargs)  # type: ignore[arg-type]


class TestMetaConformance(ProviderConformance):
    provider_name = "meta"
    success = Answer(200, SUCCESS)
    success_message_id = WAMID
    required_settings = ("WA_API_KEY", "META_PHONE_NUMBER_ID")
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
        case(
            graph_error(
                400,
                131047,
                "Re-engagement message",
                "More than 24 hours have passed since the recipient last replied",
            )
        ),
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

    def make_config(self, api_url: str) -> ProviderConfig:
        # The real base URL ends in the API version; so does the fake's.
        return ProviderConfig(
            api_key=ACCESS_TOKEN,
            api_url=f"{api_url}/v23.0",
            settings={"META_PHONE_NUMBER_ID": PHONE_NUMBER_ID},
        )

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        assert request.method == "POST"
        assert request.path == f"/v23.0/{PHONE_NUMBER_ID}/messages"
        assert request.query == {}
        assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.content_type == "application/json"
        assert request.json() == {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.target.address,
            "type": "text",
            "text": {"body": message.text},
        }

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

    async def test_throttling_is_transient_whatever_the_http_status(
        self, provider: MetaProvider, api: FakeProviderApi
    ) -> None:
        for status in (400, 429, 403):
            api.script(graph_error(status, 130429, "Rate limit hit"))
            with pytest.raises(TransientError):
                await provider.send(phone_message())


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
