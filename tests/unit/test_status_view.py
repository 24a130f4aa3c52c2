"""status_answer: GET /notify/{id}'s answer from the ledger's row (get_notification's
dict) and the store's DeliveryStatus, whichever knows more; the first release's
fields (next_try_at, sent_at, reason) kept beside the new ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from wa_gateway.models import DeliveryStatus
from wa_gateway.status_view import status_answer

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ID = "00000000-0000-4000-8000-000000000001"
ANSWER_KEYS = {
    "id", "status", "to", "channel", "provider", "provider_message_id", "attempts", "event",
    "created_at", "updated_at", "error", "events", "next_try_at", "sent_at", "reason",
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(status: str, seconds: float, **fields: Any) -> dict[str, Any]:
    return {"at": at(seconds), "status": status, "channel": "groups", "provider": fields.get("provider"),
            "code": fields.get("code"), "message": fields.get("message"), "attempt": fields.get("attempt")}


def ledger_row(status: str, *, attempts: int = 0, events: list[dict[str, Any]] | None = None,
               error: dict[str, Any] | None = None, provider: str | None = None,
               provider_message_id: str | None = None, updated: float = 0) -> dict[str, Any]:
    """What queries.get_notification answers."""
    return {
        "id": ID, "status": status, "to": "logistic", "channel": "groups", "provider": provider,
        "provider_message_id": provider_message_id, "attempts": attempts, "event": "stock_low",
        "created_at": T0, "updated_at": at(updated), "error": error,
        "events": events if events is not None else [event("queued", 0, attempt=0)],
    }


def test_neither_knows_the_id() -> None:
    assert status_answer(None, None) is None


def test_the_ledger_alone() -> None:
    row = ledger_row(
        "delivered", attempts=1, provider="watzap", provider_message_id="wz-1", updated=3,
        events=[event("queued", 0, attempt=0), event("sent", 1, provider="watzap", attempt=1),
                event("delivered", 3, provider="watzap")],
    )

    answer = status_answer(row, None)

    assert answer is not None
    assert set(answer) == ANSWER_KEYS
    assert {k: answer[k] for k in row} == row  # every ledger field as it was
    assert answer["next_try_at"] is None
    assert answer["sent_at"] == at(1)  # from the timeline's `sent`
    assert answer["reason"] is None
    assert row["status"] == "delivered" and "sent_at" not in row  # the ledger's dict is not changed


def test_the_ledger_alone_with_an_error_gives_the_reason() -> None:
    row = ledger_row("failed", attempts=1, error={"code": "131047", "message": "window closed"},
                     events=[event("queued", 0), event("sent", 1), event("failed", 9, code="131047")])
    answer = status_answer(row, None)
    assert answer is not None
    assert answer["reason"] == "window closed"
    assert answer["error"] == {"code": "131047", "message": "window closed"}
    assert answer["sent_at"] == at(1)


def test_the_ledger_alone_never_sent_has_no_sent_at() -> None:
    answer = status_answer(ledger_row("queued"), None)
    assert answer is not None
    assert (answer["sent_at"], answer["next_try_at"], answer["reason"]) == (None, None, None)


def test_the_store_alone_has_an_empty_timeline() -> None:
    store = DeliveryStatus(id=ID, status="retrying", attempts=2, next_try_at=at(60), provider="watzap",
                           reason="upstream unavailable", updated_at=at(30))

    answer = status_answer(None, store)

    assert answer == {
        "id": ID, "status": "retrying", "to": None, "channel": None, "provider": "watzap",
        "provider_message_id": None, "attempts": 2, "event": None, "created_at": None,
        "updated_at": at(30), "error": {"code": None, "message": "upstream unavailable"},
        "events": [], "next_try_at": at(60), "sent_at": None, "reason": "upstream unavailable",
    }


def test_the_store_alone_sent() -> None:
    store = DeliveryStatus(id=ID, status="sent", attempts=1, provider="meta",
                           provider_message_id="wamid.1", sent_at=at(2), updated_at=at(2))
    answer = status_answer(None, store)
    assert answer is not None
    assert (answer["status"], answer["events"], answer["error"], answer["reason"]) == ("sent", [], None, None)
    assert (answer["sent_at"], answer["provider_message_id"], answer["next_try_at"]) == (at(2), "wamid.1", None)


def test_the_store_ahead_of_the_ledger_shows_the_store_status() -> None:
    row = ledger_row("retrying", attempts=1, provider="watzap", updated=5,
                     error={"code": "503", "message": "upstream unavailable"},
                     events=[event("queued", 0), event("retrying", 5, code="503", attempt=1)])
    store = DeliveryStatus(id=ID, status="sent", attempts=2, provider="watzap",
                           provider_message_id="wz-1", sent_at=at(40), updated_at=at(40))

    answer = status_answer(row, store)

    assert answer is not None
    assert (answer["status"], answer["attempts"]) == ("sent", 2)
    assert (answer["provider"], answer["provider_message_id"]) == ("watzap", "wz-1")
    assert answer["updated_at"] == at(40)
    assert (answer["error"], answer["reason"]) == (None, None)  # the ledger's retry error is over
    assert answer["sent_at"] == at(40)
    assert answer["events"] == row["events"]  # the timeline is the ledger's
    assert (answer["to"], answer["channel"], answer["created_at"]) == ("logistic", "groups", T0)


def test_the_store_ahead_keeps_the_larger_attempts_and_the_ledger_provider_when_it_has_none() -> None:
    row = ledger_row("queued", attempts=3, provider="watzap", provider_message_id=None, updated=1)
    store = DeliveryStatus(id=ID, status="dead", attempts=2, reason="the API key was refused")

    answer = status_answer(row, store)

    assert answer is not None
    assert (answer["status"], answer["attempts"], answer["provider"]) == ("dead", 3, "watzap")
    assert answer["updated_at"] == at(1)  # the store has none: the ledger's stays
    assert answer["error"] == {"code": None, "message": "the API key was refused"}
    assert answer["reason"] == "the API key was refused"


def test_the_store_retrying_ahead_of_a_queued_ledger_gives_next_try_at() -> None:
    row = ledger_row("queued")
    store = DeliveryStatus(id=ID, status="retrying", attempts=1, next_try_at=at(30),
                           reason="timeout", updated_at=at(5))
    answer = status_answer(row, store)
    assert answer is not None
    assert (answer["status"], answer["next_try_at"], answer["reason"]) == ("retrying", at(30), "timeout")
    assert answer["sent_at"] is None


def test_the_ledger_ahead_of_the_store_keeps_the_ledger_status() -> None:
    row = ledger_row(
        "read", attempts=1, provider="meta", provider_message_id="wamid.1", updated=30,
        events=[event("queued", 0), event("sent", 1, attempt=1), event("delivered", 2), event("read", 30)],
    )
    store = DeliveryStatus(id=ID, status="sent", attempts=1, provider="meta",
                           provider_message_id="wamid.1", sent_at=at(1.5), updated_at=at(1.5))

    answer = status_answer(row, store)

    assert answer is not None
    assert {k: answer[k] for k in row} == row
    assert answer["next_try_at"] is None
    assert answer["sent_at"] == at(1)  # the store is not current: the timeline's `sent`


def test_the_ledger_ahead_with_a_stale_retrying_store_gives_no_next_try_at() -> None:
    row = ledger_row("sent", attempts=2, events=[event("queued", 0), event("sent", 50, attempt=2)])
    store = DeliveryStatus(id=ID, status="retrying", attempts=1, next_try_at=at(60), reason="timeout")
    answer = status_answer(row, store)
    assert answer is not None
    assert (answer["status"], answer["attempts"], answer["next_try_at"]) == ("sent", 2, None)
    assert (answer["reason"], answer["sent_at"]) == (None, at(50))


def test_the_same_status_in_both_takes_the_store_compat_fields() -> None:
    row = ledger_row("sent", attempts=1, provider="meta", provider_message_id="wamid.1",
                     events=[event("queued", 0), event("sent", 1, attempt=1)])
    store = DeliveryStatus(id=ID, status="sent", attempts=1, provider="meta",
                           provider_message_id="wamid.1", sent_at=at(1.25))
    answer = status_answer(row, store)
    assert answer is not None
    assert answer["status"] == "sent"
    assert answer["sent_at"] == at(1.25)  # the store's own, to the microsecond

    retrying = ledger_row("retrying", attempts=1, error={"code": "503", "message": "down"})
    later = DeliveryStatus(id=ID, status="retrying", attempts=1, next_try_at=at(90), reason="down")
    answer = status_answer(retrying, later)
    assert answer is not None
    assert (answer["status"], answer["next_try_at"], answer["reason"]) == ("retrying", at(90), "down")


def test_a_later_retry_in_the_store_is_ahead_of_an_earlier_one_in_the_ledger() -> None:
    """`retrying` follows itself (a later attempt; ledger RANK): while the ledger still has
    attempt 1, the store's attempt 2 shows, with its own reason and next try, not a mix."""
    row = ledger_row("retrying", attempts=1, provider="watzap", updated=5,
                     error={"code": "503", "message": "upstream unavailable"},
                     events=[event("queued", 0), event("retrying", 5, code="503", attempt=1)])
    store = DeliveryStatus(id=ID, status="retrying", attempts=2, next_try_at=at(95), provider="watzap",
                           reason="upstream timed out", updated_at=at(35))

    answer = status_answer(row, store)

    assert answer is not None
    assert (answer["status"], answer["attempts"], answer["updated_at"]) == ("retrying", 2, at(35))
    assert (answer["reason"], answer["next_try_at"]) == ("upstream timed out", at(95))
    assert answer["error"] == {"code": None, "message": "upstream timed out"}

    # and an older retry in the store than in the ledger changes nothing
    stale = DeliveryStatus(id=ID, status="retrying", attempts=1, next_try_at=at(30), reason="old")
    newer_row = ledger_row("retrying", attempts=2, error={"code": "504", "message": "upstream timed out"})
    answer = status_answer(newer_row, stale)
    assert answer is not None
    assert (answer["attempts"], answer["reason"]) == (2, "upstream timed out")
