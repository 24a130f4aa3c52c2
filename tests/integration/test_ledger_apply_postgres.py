"""apply_changes and the queries on the real PostgreSQL (asyncpg), in a database of the
test's own (conftest's postgres_url), migrated by `upgrade`:

- several writers at once (separate connections, as several worker processes are) over
  the same notifications, with their changes interleaved, always end in the
  highest-ranked status, record each change once, and never fail;
- the PostgreSQL paths of the writer (INSERT … ON CONFLICT DO NOTHING, RETURNING, the
  executemany UPDATE) on a whole life, receipts resolved or handed back, a late failure,
  a batch of 500, and strings over the columns' widths (which PostgreSQL, unlike SQLite,
  enforces);
- the list's cursor over rows of the same instant (timestamptz, to the microsecond).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.test_ledger_apply import (
    INDONESIAN,
    LOGISTIC,
    ROW_KEYS,
    T0,
    Life,
    apply_until_resolved,
    event_count,
    facts,
    nid,
    receipt,
    state,
    worker,
)
from wa_gateway.ledger.apply import LIMITS, Applied, apply_changes
from wa_gateway.ledger.changes import NotificationFacts, StatusChange
from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import NotificationEvent, NotificationRecord
from wa_gateway.ledger.queries import Filters, get_notification, list_notifications
from wa_gateway.ledger.schema import open_ledger, upgrade
from wa_gateway.provider import LateFailure

ROUNDS = 50
PER_ROUND = 4
"""Notifications per round: enough for two writers to take their rows in opposite orders."""


@pytest.fixture
async def ledger_url(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine, postgres_url)
    finally:
        await engine.dispose()
    return postgres_url


@pytest.fixture
async def engine(ledger_url: str) -> AsyncIterator[AsyncEngine]:
    async with open_ledger(ledger_url) as engine:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"
        yield engine


@pytest.fixture
async def writers(ledger_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Four engines, each with its own pool: four writers, as four worker processes."""
    engines = [create_engine(ledger_url) for _ in range(4)]
    try:
        yield engines
    finally:
        for engine in engines:
            await engine.dispose()


async def test_concurrent_writers_end_in_the_highest_status_with_each_change_once(
    writers: list[AsyncEngine],
) -> None:
    """Each round: 2 * PER_ROUND notifications, half of them already sent (their rows
    committed), half new. Four writers at once: the gateway's copies and the worker's
    changes, the same redelivered in the opposite order, the `delivered` receipts, the
    `read` receipts in the opposite order."""
    rng = random.Random(12)
    expected_keys: set[str] = set()
    for round_ in range(ROUNDS):
        lives = [Life(str(uuid.UUID(int=rng.getrandbits(128), version=4)), T0 + timedelta(minutes=round_))
                 for _ in range(2 * PER_ROUND)]
        per_life = {life: life.changes() for life in lives}  # queued, r1, r2, sent, delivered, read
        known, new = lives[:PER_ROUND], lives[PER_ROUND:]
        before = await apply_changes(writers[0], [c for life in known for c in (per_life[life][0], per_life[life][3])])
        assert before.recorded == 2 * PER_ROUND
        worker_changes = [per_life[life][1] for life in known]  # a late retry: recorded, not applied
        worker_changes += [c for life in new for c in (per_life[life][0], per_life[life][3])]
        batches = [
            worker_changes,
            list(reversed(worker_changes)),
            [per_life[life][4] for life in lives],
            [per_life[life][5] for life in reversed(lives)],
        ]
        for batch in batches:
            if rng.random() < 0.3:
                rng.shuffle(batch)
        keys = {c.key for changes in per_life.values() for c in (changes[0], changes[3], changes[4], changes[5])}
        keys |= {c.key for c in worker_changes}
        expected_keys |= keys

        results = await asyncio.gather(
            *(apply_changes(engine, batch) for engine, batch in zip(writers, batches, strict=True)),
            return_exceptions=True,
        )

        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], f"round {round_}: {errors!r}"
        applied: list[Applied] = results  # type: ignore[assignment]
        # receipts that raced the `sent` come back unresolved: the writer tries them again
        orphans = [batches[w][i] for w, a in enumerate(applied) for i in a.unresolved]
        assert all(o.id is None for o in orphans), "only receipts can be unresolved here"
        assert not any(o.provider_message_id in {life.message_id for life in known} for o in orphans)
        recorded = before.recorded + sum(a.recorded for a in applied)
        if orphans:
            recorded += await apply_until_resolved(writers[0], [orphans])
        assert recorded == len(keys), f"round {round_}: recorded {recorded} of {len(keys)}"
        assert all(a.failures == [] for a in applied)

        for life in lives:
            done = await state(writers[0], life.notification_id)
            assert done.row is not None
            assert done.row["status"] == "read", f"round {round_}: {done.row}"
            assert (done.row["attempts"], done.row["provider_message_id"]) == (3, life.message_id)
            assert done.row["updated_at"] == per_life[life][5].at
            assert len(done.events) == len({e["key"] for e in done.events})

    async with writers[0].connect() as connection:
        keys = (await connection.execute(select(NotificationEvent.key))).scalars().all()
        notifications = (await connection.execute(select(func.count()).select_from(NotificationRecord))).scalar()
    assert len(keys) == len(set(keys)) == len(expected_keys) == (4 * 2 + 1) * PER_ROUND * ROUNDS
    assert set(keys) == expected_keys
    assert notifications == 2 * PER_ROUND * ROUNDS


async def test_concurrent_writers_of_the_whole_life_and_late_failures(writers: list[AsyncEngine]) -> None:
    """Four writers each given every change of the same notifications, shuffled
    differently (RabbitMQ redelivering to whichever worker): recorded once in all, and a
    late `failed` handed back by exactly one writer."""
    rng = random.Random(7)
    for round_ in range(10):
        lives = [Life(nid(1000 * round_ + i), T0 + timedelta(hours=round_), provider="meta") for i in range(PER_ROUND)]
        changes = [c for life in lives for c in life.changes()[:5]]  # up to delivered
        failures = [receipt("meta", life.message_id, "failed", T0 + timedelta(hours=round_, minutes=5),
                            code="131026", message=INDONESIAN) for life in lives]
        batches = []
        for _ in writers:
            batch = changes + failures
            rng.shuffle(batch)
            batches.append(batch)

        results = await asyncio.gather(
            *(apply_until_resolved_returning(engine, batch) for engine, batch in zip(writers, batches, strict=True)),
            return_exceptions=True,
        )

        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], f"round {round_}: {errors!r}"
        recorded = sum(r[0] for r in results)  # type: ignore[index]
        late = [f for r in results for f in r[1]]  # type: ignore[index]
        assert recorded == 6 * PER_ROUND
        # each `failed` is applied once (over `sent` or `delivered`, whichever is there),
        # by whichever writer records it first: handed back exactly once in all
        assert sorted(f.notification_id for f in late) == sorted(life.notification_id for life in lives)
        for life in lives:
            done = await state(writers[0], life.notification_id)
            assert done.row is not None and done.row["status"] == "failed"
            assert len(done.events) == 6


async def apply_until_resolved_returning(engine: AsyncEngine, batch: list[StatusChange]) -> tuple[int, list[LateFailure]]:
    """One writer: the batch, then its orphans until none is left (as the ledger writer)."""
    recorded, failures = 0, []
    for _ in range(100):
        applied = await apply_changes(engine, batch)
        recorded += applied.recorded
        failures += applied.failures
        batch = [batch[i] for i in applied.unresolved]
        if not batch:
            return recorded, failures
        await asyncio.sleep(0.01)  # another writer's `sent` is on its way
    raise AssertionError(f"never resolved: {batch}")


async def test_a_whole_life_on_postgresql(engine: AsyncEngine) -> None:
    life = Life(nid(1))
    changes = life.changes()

    for change in changes:
        applied = await apply_changes(engine, [change])
        assert (applied.recorded, applied.unresolved) == (1, [])
    again = await apply_changes(engine, changes)  # redelivered, in one batch

    assert (again.recorded, again.unresolved, again.failures) == (0, [], [])
    done = await state(engine, life.notification_id)
    assert done.timeline == ["queued", "retrying", "retrying", "sent", "delivered", "read"]
    assert done.row is not None
    assert {k: done.row[k] for k in ROW_KEYS} == {
        "id": life.notification_id, "channel": "groups", "provider": "watzap", "to": "logistic",
        "target_kind": "group", "target_address": LOGISTIC, "event": "stock_low", "status": "read",
        "provider_message_id": life.message_id, "attempts": 3, "error_code": None,
        "error_message": None, "created_at": T0, "updated_at": T0 + timedelta(seconds=120),
    }

    one_batch = Life(nid(2))
    applied = await apply_changes(engine, one_batch.changes())
    assert (applied.recorded, applied.unresolved) == (6, [])
    answer = await get_notification(engine, one_batch.notification_id)
    assert answer is not None
    assert answer["status"] == "read" and len(answer["events"]) == 6


@pytest.mark.parametrize("seed", range(4))
async def test_any_order_ends_the_same_on_postgresql(engine: AsyncEngine, seed: int) -> None:
    life = Life(nid(1))
    changes = life.changes()
    random.Random(seed).shuffle(changes)
    assert await apply_until_resolved(engine, [[c] for c in changes[:3]] + [changes[3:]]) == 6
    done = await state(engine, life.notification_id)
    assert done.row is not None
    assert (done.row["status"], done.row["attempts"], done.row["error_code"]) == ("read", 3, None)
    assert len(done.events) == 6


async def test_receipts_resolved_by_the_provider_id_or_handed_back(engine: AsyncEngine) -> None:
    life = Life(nid(1), provider="meta")
    queued, _, _, sent, delivered, read = life.changes()
    stranger = receipt("meta", "wamid.not-ours", "delivered", T0)

    applied = await apply_changes(engine, [queued, delivered, sent, stranger, read])

    assert applied.unresolved == [1, 3]  # before its `sent`; not ours
    assert applied.recorded == 3
    later = await apply_changes(engine, [delivered, stranger])  # the writer's next try
    assert (later.recorded, later.unresolved) == (1, [1])
    done = await state(engine, life.notification_id)
    assert done.row is not None and done.row["status"] == "read"
    assert sorted(done.timeline) == ["delivered", "queued", "read", "sent"]
    assert await event_count(engine) == 4


async def test_a_late_failure_on_postgresql(engine: AsyncEngine) -> None:
    n = nid(1)
    fact = facts(to="+6281234567890", channel="people")
    await apply_changes(engine, [
        worker(n, "queued", T0, 0, fact=fact),
        worker(n, "sent", T0 + timedelta(seconds=1), 1, fact=fact, provider="meta", provider_message_id="wamid.F"),
        receipt("meta", "wamid.F", "delivered", T0 + timedelta(seconds=2)),
    ])
    failed = receipt("meta", "wamid.F", "failed", T0 + timedelta(seconds=9), code="131047", message=INDONESIAN)

    first = await apply_changes(engine, [failed, failed])
    second = await apply_changes(engine, [failed])

    assert first.failures == [LateFailure(notification_id=n, channel="people", provider="meta",
                                          provider_message_id="wamid.F", code="131047", message=INDONESIAN)]
    assert (second.recorded, second.failures) == (0, [])
    done = await state(engine, n)
    assert done.row is not None
    assert (done.row["status"], done.row["error_code"]) == ("failed", "131047")
    assert done.row["error_message"].encode() == INDONESIAN.encode()
    read = receipt("meta", "wamid.F", "read", T0 + timedelta(seconds=10))
    assert (await apply_changes(engine, [read])).recorded == 1
    assert (await state(engine, n)).row["status"] == "failed"  # type: ignore[index]


async def test_a_replayed_dead_letter_on_postgresql(engine: AsyncEngine) -> None:
    n = nid(1)
    await apply_changes(engine, [worker(n, "queued", T0, 0),
                                 worker(n, "dead", T0 + timedelta(seconds=9), 1, provider="watzap",
                                        code="invalid_key", message="refused")])
    replayed = worker(n, "queued", T0 + timedelta(days=1), 0, generation="g2", replay=True)
    sent = worker(n, "sent", T0 + timedelta(days=1, seconds=1), 1, generation="g2", provider="watzap",
                  provider_message_id="wz-2")
    await apply_changes(engine, [replayed])
    assert (await state(engine, n)).row["status"] == "queued"  # type: ignore[index]
    await apply_changes(engine, [sent])
    done = await state(engine, n)
    assert done.row is not None
    assert (done.row["status"], done.row["error_code"], done.row["provider_message_id"]) == ("sent", None, "wz-2")


async def test_strings_over_the_column_widths_are_clipped_not_refused(engine: AsyncEngine) -> None:
    n = nid(1)
    long_id = "wamid." + "x" * 994
    fact = NotificationFacts(to="t" * 1000, channel="c" * 300, target_kind="group" * 10,
                             target_address="a" * 1000, event="e" * 500, created_at=T0)
    code, message = "C" * 500, ("Gagal 😢 " * 20_000)[: 100 * 1024]

    applied = await apply_changes(engine, [
        worker(n, "queued", T0, 0, fact=fact),
        worker(n, "retrying", T0 + timedelta(seconds=1), 1, fact=fact, provider="p" * 300,
               code=code, message=message),
        worker(n, "sent", T0 + timedelta(seconds=2), 2, fact=fact, provider="meta", provider_message_id=long_id),
        receipt("meta", long_id[:255], "delivered", T0 + timedelta(seconds=3)),
        receipt("meta", long_id[:255], "failed", T0 + timedelta(seconds=4), code=code, message=message),
    ])

    assert (applied.recorded, applied.unresolved) == (5, [])
    [failure] = applied.failures
    assert failure.provider_message_id == long_id[:255]
    done = await state(engine, n)
    assert done.row is not None
    assert done.row["status"] == "failed"
    assert (done.row["error_code"], done.row["error_message"]) == (code[: LIMITS["code"]], message[: LIMITS["message"]])
    assert done.row["provider_message_id"] == long_id[:255]
    assert (len(done.row["to"]), len(done.row["channel"]), len(done.row["event"])) == (255, 64, 128)
    assert done.events[1]["provider"] == "p" * 64


async def test_one_batch_of_500_changes_on_postgresql(engine: AsyncEngine) -> None:
    changes: list[StatusChange] = []
    for i in range(250):
        n, at = nid(i), T0 + timedelta(seconds=i)
        changes += [worker(n, "queued", at, 0, fact=facts(at)),
                    worker(n, "sent", at + timedelta(seconds=1), 1, fact=facts(at), provider="watzap",
                           provider_message_id=f"wz-{i}")]

    applied = await apply_changes(engine, changes)
    receipts = await apply_changes(engine, [receipt("watzap", f"wz-{i}", s, T0 + timedelta(hours=1))
                                            for i in range(250) for s in ("delivered", "read")])

    assert (applied.recorded, applied.unresolved) == (500, [])
    assert (receipts.recorded, receipts.unresolved) == (500, [])
    async with engine.connect() as connection:
        statuses = (await connection.execute(
            select(NotificationRecord.status, func.count()).group_by(NotificationRecord.status)
        )).all()
    assert statuses == [("read", 250)]
    assert await event_count(engine) == 1000


async def test_the_cursor_over_rows_of_the_same_instant_on_postgresql(engine: AsyncEngine) -> None:
    rng = random.Random(3)
    rows = []
    for i in range(60):
        at = T0 + timedelta(seconds=i // 6, microseconds=654_321)
        rows.append((at, str(uuid.UUID(int=rng.getrandbits(128), version=4))))
    await apply_changes(engine, [worker(n, "queued", at, 0, fact=facts(at)) for at, n in rows])

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await list_notifications(engine, Filters(limit=7, cursor=cursor))
        seen += [n["id"] for n in page.notifications]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [n for _, n in sorted(rows, reverse=True)]
