"""Test kit for provider plugins: a scriptable fake provider API and a conformance suite.

A provider author subclasses `ProviderConformance` in their own tests and gets the
checks every provider must pass: it registers through its entry point, declares
capabilities that refuse what its API rejects, returns a receipt, classifies errors,
gives up within its timeout and releases its connections; it sends the media kinds
and templates it declares exactly as written down (`WireRequest`), and its "outside
the 24-hour window" codes lead to the template. `FakeProviderApi` stands in for the
provider's API on 127.0.0.1 and records every request, so a test can assert the exact
wire format. A provider that takes receipts webhooks subclasses `WebhookConformance`
too: no webhook without its secret, the receipts of signed samples, 401 for what is
not signed, and no crash on hostile input.

- `fake_api`: `FakeProviderApi`, `Answer`, `RecordedRequest`, `NEVER`, `closed_port`;
- `conformance`: `ProviderConformance`, `ErrorCase`, `WebhookConformance`,
  `WebhookSample`, `HOSTILE_BODIES`;
- `wire`: `WireRequest`, `check_wire`, `check_texts_arrive_exactly`;
- `messages`: `SAMPLE_TEXT`, `SAMPLE_PHONE`, `SAMPLE_GROUP`, `SAMPLE_CAPTION`,
  `SAMPLE_IMAGE_URL`, `SAMPLE_DOCUMENT_URL`, `SAMPLE_FILENAME`, `SAMPLE_TEMPLATE_PARAMS`,
  `MEDIA_URLS`, `sample_media`, `phone_message`, `group_message`.

Import them from `wa_gateway.testing`. Needs pytest and pytest-asyncio
(pytest-aiohttp brings both).
"""

from .conformance import (
    HOSTILE_BODIES,
    ErrorCase,
    ProviderConformance,
    WebhookConformance,
    WebhookSample,
)
from .fake_api import NEVER, Answer, FakeProviderApi, RecordedRequest, closed_port
from .messages import (
    MEDIA_URLS,
    SAMPLE_CAPTION,
    SAMPLE_DOCUMENT_URL,
    SAMPLE_FILENAME,
    SAMPLE_GROUP,
    SAMPLE_IMAGE_URL,
    SAMPLE_PHONE,
    SAMPLE_TEMPLATE_PARAMS,
    SAMPLE_TEXT,
    group_message,
    phone_message,
    sample_media,
)
from .wire import WireRequest, check_texts_arrive_exactly, check_wire

__all__ = [
    "HOSTILE_BODIES",
    "MEDIA_URLS",
    "NEVER",
    "SAMPLE_CAPTION",
    "SAMPLE_DOCUMENT_URL",
    "SAMPLE_FILENAME",
    "SAMPLE_GROUP",
    "SAMPLE_IMAGE_URL",
    "SAMPLE_PHONE",
    "SAMPLE_TEMPLATE_PARAMS",
    "SAMPLE_TEXT",
    "Answer",
    "ErrorCase",
    "FakeProviderApi",
    "ProviderConformance",
    "RecordedRequest",
    "WebhookConformance",
    "WebhookSample",
    "WireRequest",
    "check_texts_arrive_exactly",
    "check_wire",
    "closed_port",
    "group_message",
    "phone_message",
    "sample_media",
]
