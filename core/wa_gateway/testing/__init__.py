"""Test kit for provider plugins: a scriptable fake provider API and a conformance suite.

A provider author subclasses `ProviderConformance` in their own tests and gets the
checks every provider must pass: it registers through its entry point, declares
capabilities that refuse what its API rejects, returns a receipt, classifies errors,
gives up within its timeout and releases its connections. `FakeProviderApi` stands in
for the provider's API on 127.0.0.1 and records every request, so a test can assert
the exact wire format. A provider that takes receipts webhooks subclasses
`WebhookConformance` too: no webhook without its secret, the receipts of signed
samples, 401 for what is not signed, and no crash on hostile input.

- `fake_api`: `FakeProviderApi`, `Answer`, `RecordedRequest`, `NEVER`, `closed_port`;
- `conformance`: `ProviderConformance`, `ErrorCase`, `WebhookConformance`,
  `WebhookSample`, `HOSTILE_BODIES`;
- `messages`: `SAMPLE_TEXT`, `SAMPLE_PHONE`, `SAMPLE_GROUP`, `phone_message`,
  `group_message`.

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
from .messages import SAMPLE_GROUP, SAMPLE_PHONE, SAMPLE_TEXT, group_message, phone_message

__all__ = [
    "HOSTILE_BODIES",
    "NEVER",
    "SAMPLE_GROUP",
    "SAMPLE_PHONE",
    "SAMPLE_TEXT",
    "Answer",
    "ErrorCase",
    "FakeProviderApi",
    "ProviderConformance",
    "RecordedRequest",
    "WebhookConformance",
    "WebhookSample",
    "closed_port",
    "group_message",
    "phone_message",
]
