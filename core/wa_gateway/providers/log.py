"""The `log` provider: "delivers" by logging one line per message (JSON off a terminal).

It lets anyone run the whole pipeline with no credentials; with WA_LOG_OUTBOX set it
also appends the line to that file, which is what the end-to-end tests read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from wa_gateway import Capabilities, Notification, Provider, ProviderConfig, Receipt, hookimpl

from .outbox import Outbox

log = logging.getLogger("wa_gateway.outbox")


class LogProvider(Provider):
    name = "log"
    capabilities = Capabilities(groups=True, max_text_length=4096, send_rate=float("inf"))

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.outbox = Outbox(config.settings.get("WA_LOG_OUTBOX"))

    async def send(self, message: Notification) -> Receipt:
        record = Outbox.record(message, self.name)
        # The fields become the log record's own (structlog's ExtraAdder): one JSON
        # line with "event": "delivered", not JSON inside a string.
        log.info("delivered", extra=record)
        self.outbox.write(Outbox.dumps(record))
        return Receipt(provider=self.name, provider_message_id=f"log-{message.id}")

    async def close(self) -> None:
        self.outbox.close()


@hookimpl
def register_providers(register: Callable[[str, type[Provider]], None]) -> None:
    register("log", LogProvider)
