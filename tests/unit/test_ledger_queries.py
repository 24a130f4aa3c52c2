"""Reading the ledger (queries.py) from a real SQLite file (tmp_path) filled by
apply_changes: one notification in the shape of GET /notify/{id} with its timeline
oldest first; the list newest first, narrowed by each filter, paged by an opaque cursor
that visits every row once even when many share the same instant; a cursor or a filter
that cannot be used is a BadQuery."""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.test_ledger_apply import INDONESIAN, T0, facts, nid, receipt, worker
from wa_gateway.ledger.apply import apply_changes
from wa_gateway.ledger.changes import StatusChange
from wa_gateway.ledger.queries import (
    MAX_LIMIT,
    BadQuery,
    Filters,
    decode_cursor,
    encode_cursor,
    get_notification,
    list_notifications,
)
from wa_gateway.ledger.schema import open_ledger

NOTIFICATION_KEYS = {
    "id", "status", "to", "channel", "provider", "provider_message_id", "attempts", "event",
    "created_at", "updated_at", "error", "events",
}
"""GET /notify/{id}'s object (README "The ledger"); `event` is the notification's event name."""
EVENT_KEYS = {"at", "status", "channel", "provider", "code", "message", "attempt"}
RAW = "+6281234567890"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as engine:
        yield engine


async def fill(engine: AsyncEngine, changes: list[StatusChange]) -> None:
    applied = await apply_changes(engine, changes)
    assert applied.unresolved == []


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


A, B, C, D, E = (nid(n) for n in range(1, 6))


@pytest.fixture
async def five(engine: AsyncEngine) -> AsyncEngine:
    """Five notifications a minute apart, A oldest: A queued (groups, logistic), B sent
    (people, RAW), C failed (people, RAW), D read (groups, logistic), E dead (groups, purchase)."""
    groups, people = facts(minutes(0)), facts(minutes(1), to=RAW, channel="people")
    await fill(engine, [
        worker(A, "queued", minutes(0), 0, fact=groups),
        worker(B, "queued", minutes(1), 0, fact=people),
        worker(B, "sent", minutes(1.1), 1, fact=people, provider="meta", provider_message_id="wamid.B"),
        worker(C, "sent", minutes(2.1), 1, fact=facts(minutes(2), to=RAW, channel="people"),
               provider="meta", provider_message_id="wamid.C"),
        receipt("meta", "wamid.C", "failed", minutes(2.2), code="131047", message=INDONESIAN),
        worker(D, "sent", minutes(3.1), 1, fact=facts(minutes(3)), provider="watzap", provider_message_id="wz-D"),
        receipt("watzap", "wz-D", "delivered", minutes(3.2)),
        receipt("watzap", "wz-D", "read", minutes(3.3)),
        worker(E, "dead", minutes(4.5), 3, fact=facts(minutes(4), to="purchase"), provider="watzap",
               code="invalid_key", message="the API key was refused"),
    ])
    return engine


async def ids(engine: AsyncEngine, **filters: object) -> list[str]:
    page = await list_notifications(engine, Filters(**filters))  # type: ignore[arg-type]
    return [n["id"] for n in page.notifications]


async def test_one_notification_has_the_api_shape_and_its_timeline_oldest_first(engine: AsyncEngine) -> None:
    n = nid(1)
    fact = facts(T0, to=RAW, channel="people")
    changes = [
        worker(n, "queued", T0, 0, fact=fact),
        worker(n, "retrying", T0 + timedelta(seconds=5), 1, fact=fact, provider="meta",
               code="131000", message="Layanan sedang sibuk"),
        worker(n, "sent", T0 + timedelta(seconds=20), 2, fact=fact, provider="meta",
               provider_message_id="wamid.1"),
        receipt("meta", "wamid.1", "delivered", T0 + timedelta(seconds=21)),
        receipt("meta", "wamid.1", "failed", T0 + timedelta(seconds=40), code="131047", message=INDONESIAN),
    ]
    # the retry written after the `sent` (late): the timeline is still by time
    await fill(engine, [changes[0], changes[2]])
    await fill(engine, [changes[1], changes[3]])
    await fill(engine, [changes[4]])

    answer = await get_notification(engine, n)

    assert answer is not None
    assert set(answer) == NOTIFICATION_KEYS
    assert {k: v for k, v in answer.items() if k != "events"} == {
        "id": n, "status": "failed", "to": RAW, "channel": "people", "provider": "meta",
        "provider_message_id": "wamid.1", "attempts": 2, "event": "stock_low",
        "created_at": T0, "updated_at": T0 + timedelta(seconds=40),
        "error": {"code": "131047", "message": INDONESIAN},
    }
    assert answer["created_at"].tzinfo is not None
    events = answer["events"]
    assert all(set(e) == EVENT_KEYS for e in events)
    assert [e["status"] for e in events] == ["queued", "retrying", "sent", "delivered", "failed"]
    assert [e["at"] for e in events] == sorted(c.at for c in changes)
    assert events[1] == {"at": T0 + timedelta(seconds=5), "status": "retrying", "channel": "people",
                         "provider": "meta", "code": "131000", "message": "Layanan sedang sibuk",
                         "attempt": 1}
    assert events[4]["message"] == INDONESIAN


async def test_a_notification_without_an_error_or_a_provider_yet(engine: AsyncEngine) -> None:
    await fill(engine, [worker(nid(1), "queued", T0, 0)])
    answer = await get_notification(engine, nid(1))
    assert answer is not None
    assert (answer["status"], answer["provider"], answer["provider_message_id"]) == ("queued", None, None)
    assert (answer["error"], answer["attempts"]) == (None, 0)
    assert [e["status"] for e in answer["events"]] == ["queued"]


async def test_events_of_the_same_instant_keep_the_order_they_were_written(engine: AsyncEngine) -> None:
    n = nid(1)
    await fill(engine, [worker(n, "queued", T0, 0),
                        worker(n, "sent", T0, 1, provider="log", provider_message_id="log-1")])
    await fill(engine, [receipt("log", "log-1", "delivered", T0)])
    answer = await get_notification(engine, n)
    assert answer is not None
    assert [e["status"] for e in answer["events"]] == ["queued", "sent", "delivered"]


async def test_an_unknown_id_is_none(five: AsyncEngine) -> None:
    assert await get_notification(five, nid(99)) is None
    assert await get_notification(five, "") is None
    assert await get_notification(five, "'; DROP TABLE notifications; --") is None
    assert await get_notification(five, A) is not None


async def test_the_list_is_newest_first_and_items_have_no_timeline(five: AsyncEngine) -> None:
    page = await list_notifications(five, Filters())
    assert [n["id"] for n in page.notifications] == [E, D, C, B, A]
    assert page.next_cursor is None
    assert all(set(n) == NOTIFICATION_KEYS - {"events"} for n in page.notifications)
    [c] = [n for n in page.notifications if n["id"] == C]
    assert (c["status"], c["error"]) == ("failed", {"code": "131047", "message": INDONESIAN})


async def test_each_filter_narrows_the_list(five: AsyncEngine) -> None:
    assert await ids(five, status="sent") == [B]
    assert await ids(five, status="read") == [D]
    assert await ids(five, status="dead") == [E]
    assert await ids(five, status="retrying") == []
    assert await ids(five, to=RAW) == [C, B]
    assert await ids(five, to="logistic") == [D, A]
    assert await ids(five, to="+62") == []  # the whole target, not a prefix
    assert await ids(five, channel="groups") == [E, D, A]
    assert await ids(five, channel="people") == [C, B]
    assert await ids(five, channel="alerts") == []
    assert await ids(five, since=minutes(2)) == [E, D, C]  # since: inclusive
    assert await ids(five, until=minutes(2)) == [B, A]  # until: exclusive
    assert await ids(five, since=minutes(1), until=minutes(3)) == [C, B]
    assert await ids(five, since=minutes(1.5), until=minutes(1.6)) == []
    jakarta = minutes(2).astimezone(ZoneInfo("Asia/Jakarta"))  # the same instant at +07:00
    assert await ids(five, since=jakarta) == [E, D, C]
    assert await ids(five, channel="groups", to="logistic", status="read") == [D]
    assert await ids(five, channel="people", since=minutes(2)) == [C]


async def test_the_limit_cuts_the_page_and_gives_a_cursor(five: AsyncEngine) -> None:
    first = await list_notifications(five, Filters(limit=2))
    assert [n["id"] for n in first.notifications] == [E, D]
    assert first.next_cursor is not None
    second = await list_notifications(five, Filters(limit=2, cursor=first.next_cursor))
    assert [n["id"] for n in second.notifications] == [C, B]
    third = await list_notifications(five, Filters(limit=2, cursor=second.next_cursor))
    assert [n["id"] for n in third.notifications] == [A]
    assert third.next_cursor is None
    exact = await list_notifications(five, Filters(limit=5))
    assert len(exact.notifications) == 5 and exact.next_cursor is None  # no empty last page
    assert await ids(five, limit=1) == [E]


@pytest.mark.parametrize("tie", [1, 7, 120])
async def test_paging_visits_every_row_once_in_order_even_with_the_same_created_at(
    engine: AsyncEngine, tie: int
) -> None:
    """120 rows, `tie` of them at each instant (all 120 at one instant for tie=120), ids
    in no particular order: pages of 25 give each row exactly once, newest first, ties
    broken by id."""
    rng = random.Random(tie)
    rows = []
    for i in range(120):
        at = T0 + timedelta(seconds=i // tie, microseconds=123_457 * (i // tie) % 1_000_000)
        rows.append((at, str(uuid.UUID(int=rng.getrandbits(128), version=4))))
    changes = [worker(n, "queued", at, 0, fact=facts(at)) for at, n in rows]
    rng.shuffle(changes)
    await fill(engine, changes)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await list_notifications(engine, Filters(limit=25, cursor=cursor))
        pages += 1
        seen += [n["id"] for n in page.notifications]
        if page.next_cursor is None:
            break
        assert len(page.notifications) == 25
        cursor = page.next_cursor
        assert pages < 10, "the cursor does not advance"

    assert pages == 5
    assert seen == [n for _, n in sorted(rows, reverse=True)]
    assert len(set(seen)) == 120


async def test_paging_keeps_the_filters(five: AsyncEngine) -> None:
    first = await list_notifications(five, Filters(channel="groups", limit=2))
    assert [n["id"] for n in first.notifications] == [E, D]
    rest = await list_notifications(five, Filters(channel="groups", limit=2, cursor=first.next_cursor))
    assert [n["id"] for n in rest.notifications] == [A]
    assert rest.next_cursor is None


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBAGE_CURSORS = [
    "not a cursor!",
    "x",
    "",
    "é",
    "%%%%",
    "A" * 1000,
    b64(b"\xff\xfe\x00junk"),
    b64(b"junk"),
    b64(b"{}"),
    b64(b'{"at": "2026-03-02T08:00:00+00:00", "id": "x"}'),
    b64(b"42"),
    b64(b"null"),
    b64(b'"ab"'),
    b64(json.dumps(["2026-03-02T08:00:00", "x"]).encode()),  # a naive time
    b64(json.dumps(["2026-03-02T08:00:00+00:00"]).encode()),
    b64(json.dumps(["2026-03-02T08:00:00+00:00", "x", "y"]).encode()),
    b64(json.dumps(["2026-03-02T08:00:00+00:00", 7]).encode()),
    b64(json.dumps([1700000000, "x"]).encode()),
    b64(json.dumps(["yesterday", "x"]).encode()),
    b64(json.dumps(["0001-01-01T00:00:00+05:00", "x"]).encode()),  # before year 1 in UTC
    b64(json.dumps(["9999-12-31T23:59:59-05:00", "x"]).encode()),  # after year 9999 in UTC
]


@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
async def test_a_cursor_this_gateway_did_not_give_out_is_a_bad_query(five: AsyncEngine, cursor: str) -> None:
    with pytest.raises(BadQuery, match="cursor is not one this gateway gave out"):
        await list_notifications(five, Filters(cursor=cursor))


def test_a_cursor_round_trips_an_instant_and_an_id() -> None:
    at = datetime(2026, 3, 2, 15, 0, 0, 123456, tzinfo=ZoneInfo("Asia/Jakarta"))
    cursor = encode_cursor(at, A)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (at, A)


@pytest.mark.parametrize(
    ("filters", "complaint"),
    [
        ({"status": "bogus"}, "status must be one of"),
        ({"status": "QUEUED"}, "status must be one of"),
        ({"limit": 0}, "limit must be between 1 and 500"),
        ({"limit": -1}, "limit must be between 1 and 500"),
        ({"limit": MAX_LIMIT + 1}, "limit must be between 1 and 500"),
        ({"since": datetime(2026, 3, 2, 8, 0)}, "since needs a time zone"),
        ({"until": datetime(2026, 3, 2, 8, 0)}, "until needs a time zone"),
        ({"since": datetime(1, 1, 1, tzinfo=ZoneInfo("Asia/Jakarta"))}, "since"),
        ({"until": datetime(9999, 12, 31, 23, tzinfo=ZoneInfo("America/New_York"))}, "until"),
    ],
)
def test_filters_that_cannot_be_used_are_a_bad_query(filters: dict[str, object], complaint: str) -> None:
    with pytest.raises(BadQuery, match=complaint):
        Filters(**filters)  # type: ignore[arg-type]


def test_the_limits_themselves_are_fine() -> None:
    assert Filters(limit=1).limit == 1
    assert Filters(limit=MAX_LIMIT).limit == MAX_LIMIT
    assert Filters().limit == 50
