"""apply_changes, the ledger writer's database half, on a real SQLite file (tmp_path):
a notification's whole life and its timeline; the same changes in any order, or twice,
end the same; late changes are recorded and not applied; a `failed` receipt after the
provider accepted the message is handed back once; receipts resolved by the provider's
message id (or handed back unresolved); a replayed dead letter; over-long strings
clipped; Indonesian text and emoji kept exactly; one batch of 500 changes.

The helpers at the top (`Life`, `worker`, `receipt`, `state`) are shared with
tests/integration/test_ledger_apply_postgres.py, which runs the same life on PostgreSQL.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from wa_gateway.ledger.apply import LIMITS, apply_changes
from wa_gateway.ledger.changes import (
    NotificationFacts,
    Status,
    StatusChange,
    change_key,
    receipt_key,
)
from wa_gateway.ledger.models import NotificationEvent, NotificationRecord
from wa_gateway.ledger.schema import open_ledger
from wa_gateway.provider import LateFailure

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LOGISTIC = "120363195657916590@g.us"
INDONESIAN = (
    "Pesan gagal dikirim: sudah lebih dari 24 jam sejak balasan terakhir 😢🙏 "
    "— penerima tidak dapat dihubungi (coba templat «stok_menipis») 🇮🇩"
)


ROW_KEYS = ("id", "channel", "provider", "to", "target_kind", "target_address", "event", "status",
            "provider_message_id", "attempts", "error_code", "error_message", "created_at", "updated_at")
"""The columns of `notifications` these tests look at."""


def nid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def facts(created_at: datetime = T0, *, to: str = "logistic", channel: str = "groups") -> NotificationFacts:
    kind, address = ("group", LOGISTIC) if to == "logistic" else ("person", to)
    return NotificationFacts(to=to, channel=channel, target_kind=kind, target_address=address,
                             event="stock_low", created_at=created_at)


def worker(notification_id: str, status: Status, at: datetime, attempt: int | None = None, *,
           fact: NotificationFacts | None = None, generation: str = "", **fields: Any) -> StatusChange:
    """A worker's (or the gateway's `queued`) change, keyed as ledger_feed keys it."""
    fact = fact or facts()
    return StatusChange(key=change_key(notification_id, status, attempt, generation), id=notification_id,
                        status=status, at=at, channel=fact.channel, attempt=attempt, facts=fact, **fields)


def receipt(provider: str, message_id: str, status: Status, at: datetime, **fields: Any) -> StatusChange:
    """A provider's receipt, as http_webhooks makes it: known only by the provider's id."""
    return StatusChange(key=receipt_key(provider, message_id, status), provider=provider,
                        provider_message_id=message_id, status=status, at=at, channel="groups",
                        **fields)


@dataclass(frozen=True)
class Life:
    """queued → retrying(1) → retrying(2) → sent(3) → delivered → read, one notification."""

    notification_id: str
    start: datetime = T0
    provider: str = "watzap"

    @property
    def message_id(self) -> str:
        return f"wz-{self.notification_id}"

    def changes(self) -> list[StatusChange]:
        n, at, fact = self.notification_id, self.start, facts(self.start)
        return [
            worker(n, "queued", at, 0, fact=fact),
            worker(n, "retrying", at + timedelta(seconds=5), 1, fact=fact, provider=self.provider,
                   code="503", message="upstream unavailable"),
            worker(n, "retrying", at + timedelta(seconds=35), 2, fact=fact, provider=self.provider,
                   code="504", message="upstream timed out"),
            worker(n, "sent", at + timedelta(seconds=95), 3, fact=fact, provider=self.provider,
                   provider_message_id=self.message_id),
            receipt(self.provider, self.message_id, "delivered", at + timedelta(seconds=97)),
            receipt(self.provider, self.message_id, "read", at + timedelta(seconds=120)),
        ]


@dataclass(frozen=True)
class State:
    row: dict[str, Any] | None
    events: list[dict[str, Any]]

    @property
    def timeline(self) -> list[str]:
        return [e["status"] for e in self.events]

    def event_set(self, *, timed: bool = True) -> set[tuple[Any, ...]]:
        if not timed:
            return {(e["status"], e["attempt"], e["key"], e["code"], e["message"]) for e in self.events}
        return {(e["status"], e["at"], e["attempt"], e["key"], e["code"], e["message"]) for e in self.events}


def changes_at(changes: Sequence[StatusChange], status: str) -> datetime:
    [at] = [c.at for c in changes if c.status == status]
    return at


async def state(engine: AsyncEngine, notification_id: str) -> State:
    """The notification's row and its events (oldest first), read straight from the tables."""
    async with engine.connect() as connection:
        row = (await connection.execute(
            select(NotificationRecord.__table__).where(NotificationRecord.id == notification_id)
        )).mappings().one_or_none()
        events = (await connection.execute(
            select(NotificationEvent.__table__)
            .where(NotificationEvent.notification_id == notification_id)
            .order_by(NotificationEvent.at, NotificationEvent.id)
        )).mappings().all()
    return State(None if row is None else dict(row), [dict(e) for e in events])


async def event_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(NotificationEvent))).scalar_one()


async def apply_until_resolved(engine: AsyncEngine, batches: Sequence[Sequence[StatusChange]]) -> int:
    """Apply each batch, then the receipts handed back unresolved, as the ledger writer
    does with its orphans, until none is left; the number recorded."""
    recorded = 0
    orphans: list[StatusChange] = []
    for batch in batches:
        applied = await apply_changes(engine, [*orphans, *batch])
        recorded += applied.recorded
        orphans = [[*orphans, *batch][i] for i in applied.unresolved]
    for _ in range(5):
        if not orphans:
            break
        applied = await apply_changes(engine, orphans)
        recorded += applied.recorded
        orphans = [orphans[i] for i in applied.unresolved]
    assert orphans == []
    return recorded


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as engine:
        yield engine


async def test_a_whole_life_gives_its_timeline_and_ends_read(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    changes = life.changes()
    expected_rows = [  # (status, attempts, error code) after each change
        ("queued", 0, None), ("retrying", 1, "503"), ("retrying", 2, "504"),
        ("sent", 3, None), ("delivered", 3, None), ("read", 3, None),
    ]

    for change, (status, attempts, code) in zip(changes, expected_rows, strict=True):
        applied = await apply_changes(engine, [change])
        assert (applied.recorded, applied.unresolved, applied.failures) == (1, [], [])
        row = (await state(engine, life.notification_id)).row
        assert row is not None
        assert (row["status"], row["attempts"], row["error_code"]) == (status, attempts, code)
        assert row["updated_at"] == change.at

    done = await state(engine, life.notification_id)
    assert done.timeline == ["queued", "retrying", "retrying", "sent", "delivered", "read"]
    assert [e["attempt"] for e in done.events] == [0, 1, 2, 3, None, None]
    assert [e["at"] for e in done.events] == [c.at for c in changes]
    assert [e["code"] for e in done.events] == [None, "503", "504", None, None, None]
    assert [e["key"] for e in done.events] == [c.key for c in changes]
    assert done.row is not None
    assert {k: done.row[k] for k in ROW_KEYS} == {
        "id": life.notification_id, "channel": "groups", "provider": "watzap", "to": "logistic",
        "target_kind": "group", "target_address": LOGISTIC, "event": "stock_low", "status": "read",
        "provider_message_id": life.message_id, "attempts": 3, "error_code": None,
        "error_message": None, "created_at": T0, "updated_at": T0 + timedelta(seconds=120),
    }


async def test_a_retrying_row_shows_its_latest_error(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    await apply_changes(engine, life.changes()[:3])
    row = (await state(engine, life.notification_id)).row
    assert row is not None
    assert (row["status"], row["attempts"], row["provider"]) == ("retrying", 2, "watzap")
    assert (row["error_code"], row["error_message"]) == ("504", "upstream timed out")


ORDERS = [*range(8), "reversed"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("batching", ["one_by_one", "one_batch"])
async def test_any_order_of_the_same_changes_ends_the_same(
    engine: AsyncEngine, order: int | str, batching: str
) -> None:
    reference = Life(nid(1))
    await apply_until_resolved(engine, [[c] for c in reference.changes()])
    expected = await state(engine, reference.notification_id)

    life = Life(nid(2))  # the same changes about another notification
    changes = life.changes()
    if order == "reversed":
        changes.reverse()
    else:
        random.Random(order).shuffle(changes)
    batches = [[c] for c in changes] if batching == "one_by_one" else [changes]
    recorded = await apply_until_resolved(engine, batches)

    got = await state(engine, life.notification_id)
    assert recorded == 6
    assert got.row is not None and expected.row is not None
    assert got.row == {**expected.row, "id": life.notification_id, "provider_message_id": life.message_id}
    assert got.row["status"] == "read" and got.row["attempts"] == 3
    assert len(got.events) == 6
    assert got.event_set(timed=False) == {
        (status, attempt, key.replace(reference.notification_id, life.notification_id), code, message)
        for status, attempt, key, code, message in expected.event_set(timed=False)
    }
    # the worker's changes keep their times; a receipt is never put before its own time
    # nor before the `sent` it follows (cef4981 moves a receipt up to the notification's
    # latest change when it arrives, so a receipt's time depends on what came first)
    own = {c.key: c.at for c in changes}
    for e in got.events:
        if e["key"].startswith("r:"):
            assert own[e["key"]] <= e["at"] <= changes_at(changes, "read")
        else:
            assert e["at"] == own[e["key"]]


async def test_every_change_delivered_twice_is_recorded_once(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    changes = life.changes()

    first = [await apply_changes(engine, [c]) for c in changes]
    again = [await apply_changes(engine, [c]) for c in changes]

    assert [a.recorded for a in first] == [1] * 6
    assert [a.recorded for a in again] == [0] * 6
    assert all(a.unresolved == [] and a.failures == [] for a in again)
    done = await state(engine, life.notification_id)
    assert len(done.events) == 6 and done.row is not None and done.row["status"] == "read"
    assert done.row["updated_at"] == changes[-1].at  # nothing re-applied

    twice_in_one_batch = Life(nid(2)).changes()
    applied = await apply_changes(engine, twice_in_one_batch + twice_in_one_batch)
    assert (applied.recorded, applied.unresolved) == (6, [])
    assert len((await state(engine, nid(2))).events) == 6
    assert await event_count(engine) == 12


async def test_a_late_delivered_after_read_is_in_the_timeline_and_not_applied(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    queued, _, _, sent, delivered, read = life.changes()
    await apply_changes(engine, [queued, sent, read])

    applied = await apply_changes(engine, [delivered])

    assert (applied.recorded, applied.failures) == (1, [])
    done = await state(engine, life.notification_id)
    assert sorted(done.timeline) == ["delivered", "queued", "read", "sent"]
    [late] = [e for e in done.events if e["status"] == "delivered"]
    assert late["at"] >= delivered.at
    assert done.row is not None
    assert (done.row["status"], done.row["updated_at"]) == ("read", read.at)


async def test_failed_after_read_is_recorded_not_applied_and_not_a_late_failure(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    await apply_changes(engine, life.changes())
    failed = receipt("watzap", life.message_id, "failed", T0 + timedelta(minutes=5),
                     code="131047", message="re-engagement window closed")

    applied = await apply_changes(engine, [failed])

    assert (applied.recorded, applied.failures) == (1, [])
    done = await state(engine, life.notification_id)
    assert done.timeline[-1] == "failed"
    assert done.row is not None
    assert (done.row["status"], done.row["error_code"], done.row["error_message"]) == ("read", None, None)


async def test_failed_after_delivered_is_applied_and_handed_back_once(engine: AsyncEngine) -> None:
    fact = facts(to="+6281234567890", channel="people")
    n = nid(1)
    await apply_changes(engine, [
        worker(n, "queued", T0, 0, fact=fact),
        worker(n, "sent", T0 + timedelta(seconds=1), 1, fact=fact, provider="meta",
               provider_message_id="wamid.HBgN"),
        receipt("meta", "wamid.HBgN", "delivered", T0 + timedelta(seconds=2)),
    ])
    failed = receipt("meta", "wamid.HBgN", "failed", T0 + timedelta(seconds=30),
                     code="131047", message=INDONESIAN)

    applied = await apply_changes(engine, [failed, failed])  # twice in the batch: once

    assert applied.recorded == 1
    assert applied.failures == [LateFailure(
        notification_id=n, channel="people", provider="meta", provider_message_id="wamid.HBgN",
        code="131047", message=INDONESIAN,
    )]
    done = await state(engine, n)
    assert done.row is not None
    assert (done.row["status"], done.row["error_code"]) == ("failed", "131047")
    assert done.row["error_message"] == INDONESIAN
    assert done.row["updated_at"] == failed.at

    again = await apply_changes(engine, [failed])  # the provider retried its webhook
    assert (again.recorded, again.failures, again.unresolved) == (0, [], [])
    assert (await state(engine, n)).timeline == ["queued", "sent", "delivered", "failed"]


async def test_failed_after_sent_in_the_same_batch_is_handed_back(engine: AsyncEngine) -> None:
    n = nid(1)
    applied = await apply_changes(engine, [
        worker(n, "queued", T0, 0),
        worker(n, "sent", T0 + timedelta(seconds=1), 1, provider="watzap", provider_message_id="wz-9"),
        receipt("watzap", "wz-9", "failed", T0 + timedelta(seconds=3), code="invalid_number"),
        receipt("watzap", "wz-9", "delivered", T0 + timedelta(seconds=4)),  # after failed: late
    ])
    assert applied.recorded == 4 and applied.unresolved == []
    assert [(f.notification_id, f.provider_message_id, f.code, f.message) for f in applied.failures] == [
        (n, "wz-9", "invalid_number", None)
    ]
    row = (await state(engine, n)).row
    assert row is not None and row["status"] == "failed"


async def test_a_receipt_for_an_unknown_message_is_handed_back_and_records_nothing(
    engine: AsyncEngine,
) -> None:
    life = Life(nid(1))
    queued, _, _, sent, _, _ = life.changes()
    stranger = receipt("watzap", "wz-not-ours", "delivered", T0)
    other_provider = receipt("meta", life.message_id, "delivered", T0)  # same id, other provider

    applied = await apply_changes(engine, [queued, stranger, sent, other_provider])

    assert applied.unresolved == [1, 3]
    assert applied.recorded == 2
    assert await event_count(engine) == 2
    row = (await state(engine, life.notification_id)).row
    assert row is not None and row["status"] == "sent"

    alone = await apply_changes(engine, [stranger])
    assert (alone.recorded, alone.unresolved, alone.failures) == (0, [0], [])
    assert await event_count(engine) == 2


async def test_a_receipt_after_the_sent_in_the_same_batch_resolves(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    queued, _, _, sent, delivered, read = life.changes()

    applied = await apply_changes(engine, [queued, sent, delivered, read])

    assert (applied.recorded, applied.unresolved) == (4, [])
    done = await state(engine, life.notification_id)
    assert done.timeline == ["queued", "sent", "delivered", "read"]
    assert done.row is not None and done.row["status"] == "read"

    before = Life(nid(2)).changes()
    # a receipt before the `sent` that names its id: not yet known, handed back
    applied = await apply_changes(engine, [before[0], before[4], before[3]])
    assert applied.unresolved == [1]
    retried = await apply_changes(engine, [before[4]])
    assert (retried.recorded, retried.unresolved) == (1, [])
    row = (await state(engine, nid(2))).row
    assert row is not None and row["status"] == "delivered"


async def test_a_receipt_resolves_to_the_newest_notification_with_that_id(engine: AsyncEngine) -> None:
    old, new = nid(1), nid(2)
    await apply_changes(engine, [
        worker(old, "sent", T0, 1, fact=facts(T0), provider="watzap", provider_message_id="wz-reused"),
        worker(new, "sent", T0 + timedelta(days=1), 1, fact=facts(T0 + timedelta(days=1)),
               provider="watzap", provider_message_id="wz-reused"),
    ])
    await apply_changes(engine, [receipt("watzap", "wz-reused", "delivered", T0 + timedelta(days=1, seconds=2))])
    assert (await state(engine, old)).row["status"] == "sent"  # type: ignore[index]
    assert (await state(engine, new)).row["status"] == "delivered"  # type: ignore[index]


async def test_a_replayed_dead_letter_is_queued_again_and_then_sent(engine: AsyncEngine) -> None:
    n = nid(1)
    await apply_changes(engine, [
        worker(n, "queued", T0, 0),
        worker(n, "retrying", T0 + timedelta(seconds=5), 1, provider="watzap", code="503", message="down"),
        worker(n, "dead", T0 + timedelta(seconds=35), 2, provider="watzap", code="invalid_key",
               message="the API key was refused"),
    ])
    dead = (await state(engine, n)).row
    assert dead is not None
    assert (dead["status"], dead["error_code"]) == ("dead", "invalid_key")

    generation = "2026-03-03T09:00:00+00:00"
    copy = worker(n, "queued", T0 + timedelta(days=1), 0)  # a copy without replay: a new key, late
    copy = copy.model_copy(update={"key": change_key(n, "queued", 0, "not-a-replay")})
    assert (await apply_changes(engine, [copy])).recorded == 1
    assert (await state(engine, n)).row["status"] == "dead"  # type: ignore[index]

    replayed = worker(n, "queued", T0 + timedelta(days=1), 0, generation=generation, replay=True,
                      message="replayed from the dead-letter queue")
    applied = await apply_changes(engine, [replayed])
    assert applied.recorded == 1
    row = (await state(engine, n)).row
    assert row is not None
    assert (row["status"], row["error_code"], row["error_message"]) == ("queued", None, None)
    assert row["updated_at"] == replayed.at

    sent = worker(n, "sent", T0 + timedelta(days=1, seconds=1), 1, generation=generation,
                  provider="watzap", provider_message_id="wz-again")
    await apply_changes(engine, [sent])
    done = await state(engine, n)
    assert done.row is not None
    assert (done.row["status"], done.row["attempts"], done.row["provider_message_id"]) == ("sent", 1, "wz-again")
    assert done.timeline == ["queued", "retrying", "dead", "queued", "queued", "sent"]

    # a replay over anything but `dead` changes nothing
    again = worker(n, "queued", T0 + timedelta(days=2), 0, generation="later", replay=True)
    await apply_changes(engine, [again])
    assert (await state(engine, n)).row["status"] == "sent"  # type: ignore[index]


async def test_dead_then_sent_applies(engine: AsyncEngine) -> None:
    n = nid(1)
    await apply_changes(engine, [worker(n, "queued", T0, 0), worker(n, "dead", T0 + timedelta(seconds=9), 1,
                                                                     provider="watzap", code="x", message="y")])
    await apply_changes(engine, [worker(n, "sent", T0 + timedelta(seconds=10), 1, provider="watzap",
                                        provider_message_id="wz-late")])
    row = (await state(engine, n)).row
    assert row is not None
    assert (row["status"], row["provider_message_id"], row["error_code"]) == ("sent", "wz-late", None)
    # and `dead` never comes back over `sent`
    await apply_changes(engine, [worker(n, "dead", T0 + timedelta(seconds=11), 2, provider="watzap")])
    assert (await state(engine, n)).row["status"] == "sent"  # type: ignore[index]


async def test_a_first_change_without_facts_cannot_create_the_row(engine: AsyncEngine) -> None:
    n = nid(1)
    bare = StatusChange(key=change_key(n, "sent", 1), id=n, status="sent", at=T0)
    applied = await apply_changes(engine, [bare])
    assert (applied.recorded, applied.unresolved) == (0, [0])
    assert (await state(engine, n)).row is None


async def test_over_long_strings_are_clipped_not_refused(engine: AsyncEngine) -> None:
    n = nid(1)
    long_code, long_message, long_id = "C" * 500, "m" * 100 * 1024, "wamid." + "x" * 994
    assert len(long_id) == 1000
    fact = NotificationFacts(to="t" * 1000, channel="c" * 300, target_kind="group" * 10,
                             target_address="a" * 1000, event="e" * 500, created_at=T0)
    applied = await apply_changes(engine, [
        worker(n, "queued", T0, 0, fact=fact),
        worker(n, "retrying", T0 + timedelta(seconds=5), 1, fact=fact, provider="p" * 300,
               code=long_code, message=long_message),
    ])
    assert applied.recorded == 2
    retrying = await state(engine, n)
    assert retrying.row is not None
    assert retrying.row["error_code"] == long_code[: LIMITS["code"]]
    assert retrying.row["error_message"] == long_message[: LIMITS["message"]]
    assert retrying.row["provider"] == "p" * LIMITS["provider"]
    assert (len(retrying.row["to"]), len(retrying.row["channel"]), len(retrying.row["target_address"]),
            len(retrying.row["event"])) == (255, 64, 255, 128)
    assert len(retrying.row["target_kind"]) == 16
    assert (len(retrying.events[1]["code"]), len(retrying.events[1]["message"])) == (64, 2000)

    sent = worker(n, "sent", T0 + timedelta(seconds=9), 2, fact=fact, provider="meta",
                  provider_message_id=long_id)
    # the webhook clips the provider's id to 255 (http_webhooks): that receipt finds the
    # notification in the same batch as the `sent`, and in a later one
    delivered = receipt("meta", long_id[:255], "delivered", T0 + timedelta(seconds=10))
    applied = await apply_changes(engine, [sent, delivered])
    assert (applied.recorded, applied.unresolved) == (2, [])
    read = receipt("meta", long_id[:255], "read", T0 + timedelta(seconds=11))
    assert (await apply_changes(engine, [read])).unresolved == []
    done = await state(engine, n)
    assert done.row is not None
    assert (done.row["status"], done.row["provider_message_id"]) == ("read", long_id[:255])


async def test_a_receipt_with_an_over_long_id_finds_its_notification_in_a_later_batch(
    engine: AsyncEngine,
) -> None:
    n, long_id = nid(1), "SM" + "9" * 398
    await apply_changes(engine, [worker(n, "sent", T0, 1, provider="twilio", provider_message_id=long_id)])
    applied = await apply_changes(engine, [receipt("twilio", long_id, "delivered", T0 + timedelta(seconds=2))])
    assert (applied.recorded, applied.unresolved) == (1, [])
    assert (await state(engine, n)).row["status"] == "delivered"  # type: ignore[index]


async def test_indonesian_text_and_emoji_arrive_byte_exact(engine: AsyncEngine) -> None:
    n = nid(1)
    fact = facts(to="Budi Śantoso 👷", channel="people")
    await apply_changes(engine, [
        worker(n, "queued", T0, 0, fact=fact),
        worker(n, "sent", T0 + timedelta(seconds=1), 1, fact=fact, provider="meta",
               provider_message_id="wamid.ü🙂"),
    ])
    failed = receipt("meta", "wamid.ü🙂", "failed", T0 + timedelta(seconds=5),
                     code="131047", message=INDONESIAN)
    applied = await apply_changes(engine, [failed])

    [failure] = applied.failures
    assert failure.message == INDONESIAN
    done = await state(engine, n)
    assert done.row is not None
    assert done.row["error_message"].encode("utf-8") == INDONESIAN.encode("utf-8")
    assert done.events[-1]["message"].encode("utf-8") == INDONESIAN.encode("utf-8")
    assert done.row["to"] == "Budi Śantoso 👷"
    assert done.row["provider_message_id"] == "wamid.ü🙂"


async def test_one_batch_of_500_changes_over_250_notifications(engine: AsyncEngine) -> None:
    changes: list[StatusChange] = []
    for i in range(250):
        n, at = nid(i), T0 + timedelta(seconds=i)
        changes += [worker(n, "queued", at, 0, fact=facts(at)),
                    worker(n, "sent", at + timedelta(seconds=1), 1, fact=facts(at), provider="watzap",
                           provider_message_id=f"wz-{i}")]

    applied = await apply_changes(engine, changes)

    assert (applied.recorded, applied.unresolved, applied.failures) == (500, [], [])
    async with engine.connect() as connection:
        statuses = (await connection.execute(
            select(NotificationRecord.status, func.count()).group_by(NotificationRecord.status)
        )).all()
    assert statuses == [("sent", 250)]
    assert await event_count(engine) == 500

    receipts = [receipt("watzap", f"wz-{i}", status, T0 + timedelta(minutes=10))
                for i in range(250) for status in ("delivered", "read")]
    applied = await apply_changes(engine, receipts)
    assert (applied.recorded, applied.unresolved) == (500, [])
    assert (await state(engine, nid(249))).row["status"] == "read"  # type: ignore[index]
