"""The `fake` provider: the `log` provider with a set latency and no log line per
message, for load tests and benchmarks.

`WA_FAKE_LATENCY` (seconds, default 0) is how long each send takes; delivered
messages still go to WA_LOG_OUTBOX, which is what tests and benchmarks count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wa_gateway import (
    Notification,
    Provider,
    ProviderConfig,
    ProviderConfigError,
    Receipt,
    hookimpl,
)

from .log import LogProvider
from .outbox import Outbox


class FakeProvider(LogProvider):
    name = "fake"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        raw = config.settings.get("WA_FAKE_LATENCY", "0") or "0"
        try:
            self.latency = float(raw)
        except ValueError:
            raise ProviderConfigError(f"WA_FAKE_LATENCY={raw!r} is not a number of seconds") from None

    async def send(self, message: Notification) -> Receipt:
        if self.latency:
            await asyncio.sleep(self.latency)
        self.outbox.write(Outbox.line(message, self.name))
        return Receipt(provider=self.name, provider_message_id=f"fake-{message.id}")


@hookimpl
def register_providers(register: Callable[[str, type[Provider]], None]) -> None:
    register("fake", FakeProvider)
