"""What `GET /notify/{id}` answers: the ledger's row and timeline, brought up to date by
the store's status.

The ledger is the status of record, but it is written in batches through RabbitMQ, so
for a moment after each change (longer while its database is down) it lags. The store
(Redis, or the process's memory) has the worker's latest status at once: when it is
ahead, its status shows. Without a ledger row yet (just queued, or the ledger off), the
answer is built from the store alone, with an empty timeline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .ledger.changes import RANK
from .models import DeliveryStatus


def status_answer(ledger: dict[str, Any] | None, store: DeliveryStatus | None) -> dict[str, Any] | None:
    """The answer, or None when neither knows the id. Times stay datetimes."""
    if ledger is None and store is None:
        return None
    if ledger is None:
        assert store is not None
        answer: dict[str, Any] = {
            "id": store.id, "status": store.status, "to": None, "channel": None,
            "provider": store.provider, "provider_message_id": store.provider_message_id,
            "attempts": store.attempts, "event": None, "created_at": None,
            "updated_at": store.updated_at,
            "error": {"code": None, "message": store.reason} if store.reason else None,
            "events": [],
        }
    else:
        answer = dict(ledger)
        if store is not None and _ahead(store, answer):
            answer.update(
                status=store.status,
                attempts=max(answer["attempts"], store.attempts),
                provider=store.provider or answer["provider"],
                provider_message_id=store.provider_message_id or answer["provider_message_id"],
                updated_at=store.updated_at or answer["updated_at"],
                error={"code": None, "message": store.reason} if store.reason else None,
            )
    # the first release's fields, kept for its callers
    fresh = store is not None and store.status == answer["status"]
    answer["next_try_at"] = store.next_try_at if fresh and store is not None else None
    answer["sent_at"] = _sent_at(answer, store if fresh else None)
    answer["reason"] = (answer["error"] or {}).get("message")
    return answer


def _ahead(store: DeliveryStatus, ledger: dict[str, Any]) -> bool:
    """Whether the store's status is newer: a higher rank, or a later retry (`retrying`
    follows itself, as in the ledger)."""
    if store.status == ledger["status"] == "retrying":
        return store.attempts > ledger["attempts"]
    return RANK[store.status] > RANK[ledger["status"]]


def _sent_at(answer: dict[str, Any], store: DeliveryStatus | None) -> datetime | None:
    if store is not None and store.sent_at is not None:
        return store.sent_at
    for event in answer.get("events", []):
        if event["status"] == "sent":
            return event["at"]
    return None
