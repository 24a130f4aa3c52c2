"""What a notification's copy in `wa.ledger` becomes: its `queued` change, at the time the
copy was queued, never at the time the writer happens to read it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from wa_gateway.ledger_writer import (
    TEMPLATE_AFTER,
    TEMPLATE_GENERATION,
    TEMPLATE_QUEUED_AT,
    read_change,
)
from wa_gateway.models import Notification, Target
from wa_gateway.publisher import REPLAYED_AT

CREATED = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def copy(headers: dict) -> SimpleNamespace:
    notification = Notification(
        id="n-1", to="budi", target=Target(kind="phone", address="+6281234567890"),
        text="Permintaan #42 🚚", created_at=CREATED,
    )
    return SimpleNamespace(headers=headers, body=notification.to_bytes(), message_id="n-1")


def test_the_gateways_copy_is_queued_when_it_was_accepted() -> None:
    change = read_change(copy({}))
    assert (change.status, change.at, change.message) == ("queued", CREATED, None)


def test_a_replayed_copy_is_queued_when_it_was_replayed() -> None:
    change = read_change(copy({REPLAYED_AT: "2026-11-28T10:00:00+00:00"}))
    assert change.at == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert change.message == "replayed from the dead-letter queue"


def test_a_template_sent_after_a_late_refusal_is_queued_when_the_writer_queued_it() -> None:
    """Not when the writer reads its own copy: by then the worker may have sent the template,
    and the timeline would list `sent` before its `queued`."""
    queued_at = "2026-11-28T11:00:00.250000+00:00"
    change = read_change(copy({REPLAYED_AT: TEMPLATE_GENERATION, TEMPLATE_AFTER: "131047",
                               TEMPLATE_QUEUED_AT: queued_at.encode()}))
    assert change.at == datetime.fromisoformat(queued_at)
    assert change.message == "the text was refused outside the 24-hour window (131047): sending the template"
