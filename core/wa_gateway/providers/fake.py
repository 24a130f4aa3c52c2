"""The `fake` provider: a stand-in with a set latency, for load tests and benchmarks.

`WA_FAKE_LATENCY` (seconds, default 0) is how long each send takes; delivered
messages go to WA_LOG_OUTBOX like the `log` provider's, without logging each one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..hookspecs import hookimpl
from ..models import Notification
from ..provider import Capabilities, Provider, ProviderConfig, ProviderConfigError, Receipt
from .outbox import Outbox


class FakeProvider(Provider):
    name = "fake"
    capabilities = Capabilities(groups=True, max_text_length=4096, send_rate=float("inf"))

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        raw = config.settings.get("WA_FAKE_LATENCY", "0") or "0"
        try:
            self.latency = float(raw)
        except ValueError:
            raise ProviderConfigError(f"WA_FAKE_LATENCY={raw!r} is not a number of seconds") from None
        self.outbox = Outbox(config.settings.get("WA_LOG_OUTBOX"))

    async def send(self, message: Notification) -> Receipt:
        if self.latency:
            await asyncio.sleep(self.latency)
        self.outbox.write(Outbox.line(message, self.name))
        return Receipt(provider=self.name, provider_message_id=f"fake-{message.id}")

    async def close(self) -> None:
        self.outbox.close()


@hookimpl
def register_providers(register: Any) -> None:
    register("fake", FakeProvider)
