"""A status callback on its way to the calling app: the one message format of `wa.callbacks`.

The ledger writer makes one job per status change it applied to a notification that
has a callback URL, after the change is committed, and publishes it with a confirm
before it acks the change. The job carries the exact body to POST, so every retry
sends the same bytes under the same `webhook-id` (a receiver deduplicates on it), and
the callback sender (callback_sender.py) only signs and POSTs it.

The body is `{"type": "notification.<status>", "timestamp": ISO, "data": <the
notification as GET /notify/{id} answers it, without its events>}` (DESIGN.md
"Callbacks").
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .ledger.queries import json_default

CALLBACK_KIND = "callback"
"""`x-kind` of a callback job, in `wa.callbacks` and in `wa.dead`."""
_ID_NAMESPACE = uuid.UUID("6f1d3c1e-9a55-4b8e-a1f4-2f1bb0a7c2d1")


class CallbackJob(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1
    id: str
    """The Standard Webhooks `webhook-id`: the same for every try of this callback."""
    url: str
    notification_id: str
    status: str
    body: str
    """The JSON to POST, exactly (it is what the signature covers)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CallbackJob:
        return cls.model_validate_json(raw)


def make_job(change_key: str, url: str, status: str, at: datetime, data: dict[str, Any]) -> CallbackJob:
    """The callback of one applied change; `data` is the notification's summary."""
    body = json.dumps(
        {"type": f"notification.{status}", "timestamp": at.astimezone(UTC).isoformat(), "data": data},
        default=json_default, ensure_ascii=False, separators=(",", ":"),
    )
    return CallbackJob(
        id=f"msg_{uuid.uuid5(_ID_NAMESPACE, change_key).hex}",
        url=url,
        notification_id=str(data["id"]),
        status=status,
        body=body,
    )
