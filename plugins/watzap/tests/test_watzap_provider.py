"""The Watzap provider against a fake Watzap API that checks the exact wire format.

Answer bodies are Watzap's own: the docs' success body and response-code table
(ay4t/php-watzap-id:docs/README.md) and the observed 1005 body
(CRM-PBM/CRM-Backend:TROUBLESHOOTING-WATZAP.md). The docs give no body for
1002-1004/1006, so those reuse the 1005 shape.
"""

from __future__ import annotations

import json

import pytest

from wa_gateway import Notification, PermanentError, ProviderConfig, Receipt, TransientError
from wa_gateway.testing import (
    MEDIA_URLS,
    SAMPLE_GROUP,
    SAMPLE_TEXT,
    Answer,
    ErrorCase,
    FakeProviderApi,
    ProviderConformance,
    RecordedRequest,
    WireRequest,
    group_message,
    phone_message,
    sample_media,
)
from wa_gateway_watzap import WatzapProvider

API_KEY = "WZ-API-KEY-8f14e45fceea167a"
NUMBER_KEY = "WZ-NUMBER-KEY-c9f0f895fb98"

SUCCESS = {"status": "200", "message": "Successfully", "ack": "successfully"}


def watzap_error(status: str | int, message: str) -> dict[str, object]:
    return {"status": status, "message": message, "ack": "fatal_error"}


INSTANCE_NOT_STARTED = {
    "status": "1005",
    "message": "WhatsApp Instance Not Started",
    "ack": "fatal_error",
    "wa_number": "628996901370",
}


class TestWatzapConformance(ProviderConformance):
    provider_name = "watzap"
    success = Answer(200, SUCCESS)
    success_message_id = None  # Watzap's answer carries no message id
    required_settings = ("WA_API_KEY", "WATZAP_NUMBER_KEY")
    secret_settings = ("WATZAP_NUMBER_KEY",)
    transient_cases = (
        ErrorCase(
            Answer(200, INSTANCE_NOT_STARTED),
            code="1005",
            message="WhatsApp Instance Not Started",
            retry_after=300,
            id="1005-instance-not-started-waits-minutes",
        ),
        ErrorCase(
            Answer(200, watzap_error("1006", "Other Error")),
            code="1006",
            message="Other Error",
            ambiguous=False,  # Watzap's own error code: it did not accept the message
        ),
        ErrorCase(Answer(200, watzap_error(1006, "Other Error")), code="1006", id="numeric-1006"),
        ErrorCase(
            Answer(200, watzap_error("1999", "Undocumented")), code="1999", id="unknown-code"
        ),
        ErrorCase(
            Answer(200, {"message": "Successfully"}),
            code=None,
            ambiguous=True,
            id="json-without-status",
        ),
        ErrorCase(
            Answer(200, "<html>Maintenance</html>"), code=None, ambiguous=True, id="non-json-200"
        ),
        ErrorCase(
            Answer(502, "<html><h1>502 Bad Gateway</h1></html>"),
            code=None,
            message="502 Bad Gateway",
            id="http-502-html",
        ),
        ErrorCase(
            Answer(429, watzap_error("1002", "Too Many Requests"), {"Retry-After": "30"}),
            code=None,
            retry_after=30,
            id="http-429-retry-after-even-with-a-body-code",
        ),
    )
    permanent_cases = (
        ErrorCase(
            Answer(200, watzap_error("1002", "Invalid API Key")),
            code="1002",
            message="Invalid API Key",
        ),
        ErrorCase(Answer(200, watzap_error("1003", "Invalid Number Key")), code="1003"),
        ErrorCase(Answer(200, watzap_error(1004, "Pairing Failed, Access Denied")), code="1004"),
    )

    def make_config(self, api_url: str) -> ProviderConfig:
        return ProviderConfig(
            api_key=API_KEY, api_url=api_url, settings={"WATZAP_NUMBER_KEY": NUMBER_KEY}
        )

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        assert request.method == "POST"
        assert request.content_type == "application/json"
        assert "Authorization" not in request.headers, "Watzap's keys travel in the body only"
        assert request.query == {}
        if message.media is not None:
            return  # the kit compares it with expected_media_request
        if message.target.kind == "group":
            assert request.path == "/send_message_group"
            recipient = {"group_id": message.target.address}
        else:
            assert request.path == "/send_message"
            recipient = {"phone_no": message.target.address.removeprefix("+")}
        assert request.json() == {
            "api_key": API_KEY,
            "number_key": NUMBER_KEY,
            **recipient,
            "message": message.text,
        }

    # Watzap's API docs (ay4t/php-watzap-id:docs/README.md): send_image_url /
    # send_image_group take url, message (the caption) and separate_caption ("0": the
    # caption on the picture); send_file_url / send_file_group take only the url.
    def expected_media_request(
        self, kind: str, target_kind: str, caption: str | None
    ) -> WireRequest:
        keys = {"api_key": API_KEY, "number_key": NUMBER_KEY}
        if target_kind == "group":
            recipient = {"group_id": "120363195657916590@g.us"}
        else:
            recipient = {"phone_no": "6281234567890"}
        if kind == "image":
            endpoint = "/send_image_group" if target_kind == "group" else "/send_image_url"
            content = {"url": MEDIA_URLS["image"], "message": caption or "", "separate_caption": "0"}
        else:
            endpoint = "/send_file_group" if target_kind == "group" else "/send_file_url"
            content = {"url": MEDIA_URLS["document"]}
        return WireRequest(endpoint, {**keys, **recipient, **content})

    async def test_image_without_caption_sends_an_empty_message(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        await provider.send(group_message(text="", media=sample_media("image")))
        assert api.requests[0].path == "/send_image_group"
        assert api.requests[0].json()["message"] == ""

    async def test_file_carries_no_filename_and_no_text(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        await provider.send(phone_message(text="", media=sample_media("document")))
        assert set(api.requests[0].json()) == {"api_key", "number_key", "phone_no", "url"}

    async def test_indonesian_caption_reaches_a_group_byte_exact(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        caption = "📷 Foto barang PO-42 — diterima Pak Śuharto ✅\nGudang 2"
        await provider.send(group_message(text=caption, media=sample_media("image")))
        (request,) = api.requests
        assert request.json()["message"] == caption
        assert json.dumps(caption, ensure_ascii=False).encode("utf-8") in request.body

    @pytest.mark.parametrize("message", [phone_message(), group_message()], ids=["phone", "group"])
    async def test_utf8_text_arrives_byte_exact(
        self, provider: WatzapProvider, api: FakeProviderApi, message: Notification
    ) -> None:
        await provider.send(message)
        (request,) = api.requests
        assert request.json()["message"] == SAMPLE_TEXT
        assert json.dumps(SAMPLE_TEXT, ensure_ascii=False).encode("utf-8") in request.body

    async def test_phone_number_goes_as_digits_with_country_code(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        await provider.send(phone_message("+6281234567890"))
        assert api.requests[0].json()["phone_no"] == "6281234567890"

    async def test_group_goes_to_the_group_endpoint_with_its_jid(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        receipt = await provider.send(group_message(SAMPLE_GROUP))
        assert receipt == Receipt(provider="watzap", provider_status="successfully")
        assert api.requests[0].path == "/send_message_group"
        assert api.requests[0].json()["group_id"] == SAMPLE_GROUP

    async def test_numeric_status_200_is_success(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        api.script(Answer(200, {**SUCCESS, "status": 200}))
        receipt = await provider.send(phone_message())
        assert receipt.provider_message_id is None
        assert receipt.provider_status == "successfully"

    async def test_an_answer_echoing_the_keys_is_redacted(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        api.script(
            Answer(200, watzap_error("1003", f"Invalid Number Key {NUMBER_KEY} ({API_KEY})"))
        )
        with pytest.raises(PermanentError) as caught:
            await provider.send(phone_message())
        assert caught.value.provider_message == "Invalid Number Key *** (***)"

    async def test_1005_waits_minutes_even_without_retry_after(
        self, provider: WatzapProvider, api: FakeProviderApi
    ) -> None:
        api.script(Answer(200, INSTANCE_NOT_STARTED))
        with pytest.raises(TransientError) as caught:
            await provider.send(phone_message())
        assert caught.value.retry_after is not None and caught.value.retry_after >= 60


def test_default_base_url_is_watzaps_v1_api() -> None:
    config = ProviderConfig(api_key=API_KEY, settings={"WATZAP_NUMBER_KEY": NUMBER_KEY})
    assert WatzapProvider(config).base_url == "https://api.watzap.id/v1"


def test_wa_api_url_replaces_the_base_url() -> None:
    config = ProviderConfig(
        api_key=API_KEY,
        api_url="http://watzap.test/v1/",
        settings={"WATZAP_NUMBER_KEY": NUMBER_KEY},
    )
    assert WatzapProvider(config).base_url == "http://watzap.test/v1"


def test_images_take_a_caption_and_files_none_and_there_are_no_templates() -> None:
    assert WatzapProvider.capabilities.media == {"image": 4096, "document": 0}
    assert WatzapProvider.window_codes == frozenset()
    refusal = WatzapProvider.template_refusal({"name": "permintaan_baru"})
    assert refusal == "provider 'watzap' sends no templates"


def test_capabilities_allow_groups_at_one_message_per_second() -> None:
    capabilities = WatzapProvider.capabilities
    assert (capabilities.groups, capabilities.max_text_length, capabilities.send_rate) == (
        True,
        4096,
        1.0,
    )
