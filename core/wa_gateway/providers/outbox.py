"""An append-only JSON-lines file of delivered messages (WA_LOG_OUTBOX)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from wa_gateway import Notification


class Outbox:
    """Appends one line per message and flushes it before the send counts as done."""

    def __init__(self, path: str | None) -> None:
        self._file: TextIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the provider

    @staticmethod
    def record(message: Notification, provider: str) -> dict[str, str]:
        """The fields of one delivered message, as the outbox file and the log line show them."""
        return {
            "id": message.id,
            "to": message.to,
            "target": message.target.address,
            "text": message.text,
            "provider": provider,
            "time": datetime.now(UTC).isoformat(),
        }

    @staticmethod
    def line(message: Notification, provider: str) -> str:
        return Outbox.dumps(Outbox.record(message, provider))

    @staticmethod
    def dumps(record: dict[str, str]) -> str:
        return json.dumps(record, ensure_ascii=False)

    def write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
