"""A status change on its way to the ledger: the one message format of the `wa.ledger` queue.

Three kinds of message reach that queue, and each becomes a `StatusChange`:
- a copy of every notification the gateway publishes (the queue is bound to the work
  exchange with every channel's routing key, so the copy rides on the same publisher
  confirm as the 202): `queued`, with the notification's facts;
- the worker's changes (`retrying`, `sent`, `dead`), published with a confirm before the
  message they describe is acked, carrying the facts too;
- the providers' receipts (`delivered`, `read`, `failed`, and Meta's own `sent`), known
  only by the provider's message id.

Each change has a `key` that is the same however often it arrives (a redelivered message,
a provider retrying its webhook, a retry tier giving the message back to the work
exchange), so the writer records it once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import STATUSES

LEDGER_CHANGE_TYPE = "wa.status-change"
"""AMQP `type` of a StatusChange message; a message without it is a notification's copy."""

Status = Literal["queued", "retrying", "sent", "delivered", "read", "failed", "dead"]
assert set(Status.__args__) == set(STATUSES)  # type: ignore[attr-defined]

RANK: dict[str, int] = {
    "queued": 0, "retrying": 1, "dead": 2, "sent": 3, "delivered": 4, "read": 5, "failed": 5,
}
"""A status is applied only over a lower rank: it never moves backwards. `retrying` may
follow itself (a later attempt); `read` and `failed` are both final."""


class NotificationFacts(BaseModel):
    """What the ledger keeps about a notification besides its status: enough to create its
    row from any change, whichever arrives first."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    to: str
    channel: str
    target_kind: str
    target_address: str
    event: str | None = None
    created_at: datetime
    callback_url: str | None = None
    body: str | None = None
    """The queued message, when it has templates (to send one after a late refusal)."""


class StatusChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1
    key: str = Field(max_length=512)
    id: str | None = Field(default=None, description="The notification id; None for a receipt")
    status: Status
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    channel: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    attempt: int | None = None
    code: str | None = None
    message: str | None = None
    replay: bool = False
    """A dead letter replayed: `queued` again, over `dead`."""
    facts: NotificationFacts | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, body: bytes) -> StatusChange:
        return cls.model_validate_json(body)


def change_key(notification_id: str, status: str, attempt: int | None, generation: str = "") -> str:
    """The key of a worker's change: the same for every copy of the same attempt.
    `generation` tells the attempts of a replayed dead letter from the first ones'."""
    return f"{notification_id}:{status}:{attempt or 0}:{generation}"


def receipt_key(provider: str, provider_message_id: str, status: str) -> str:
    """A provider reports each status of a message once; a retried webhook repeats it."""
    return f"r:{provider}:{provider_message_id}:{status}"
