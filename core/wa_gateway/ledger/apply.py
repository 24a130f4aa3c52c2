"""Write a batch of status changes in one transaction: the ledger writer's database half.

Safe to run from several processes at once and with changes in any order:
- a notification's row is created by whichever change carrying its facts comes first
  (INSERT … ON CONFLICT DO NOTHING);
- each change is an event row under its unique key, so a change that arrives twice is
  recorded once;
- a status is applied by one conditional UPDATE (`WHERE rank(status) < rank(new)`), so
  it never moves backwards, whatever another writer did in between; a late change is
  recorded in the timeline and not applied.
A receipt names the provider's message id; one whose notification is not (yet) in the
ledger is handed back as unresolved, for the caller to try again later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, case, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..provider import LateFailure
from .changes import RANK, StatusChange
from .models import NotificationEvent, NotificationRecord

_notifications: Table = NotificationRecord.__table__  # type: ignore[assignment]
_events: Table = NotificationEvent.__table__  # type: ignore[assignment]

LIMITS = {"callback_url": 2048, "channel": 64, "provider": 64, "to": 255, "target_kind": 16, "target_address": 255,
          "event": 128, "provider_message_id": 255, "code": 64, "message": 2000}
"""Column widths: what a provider or a caller sends is clipped to them, never refused
by the database (a refused batch would hold every change behind it)."""


@dataclass
class Applied:
    recorded: int = 0
    """Changes recorded now (duplicates of earlier ones are not counted)."""
    unresolved: list[int] = field(default_factory=list)
    """Indexes of the changes whose notification is not in the ledger."""
    failures: list[LateFailure] = field(default_factory=list)
    applied: list[tuple[StatusChange, str]] = field(default_factory=list)
    """The changes that moved a notification's status (with its id), in order: each is one
    status callback."""
    callback_urls: dict[str, str] = field(default_factory=dict)
    """Where the notifications of `applied` want their callbacks (those that do)."""


@dataclass
class _Row:
    """What a batch needs of a notification's row, read (and locked) before it applies."""

    status: str
    channel: str
    provider: str
    provider_message_id: str | None
    callback_url: str | None


def applies(status: str, change: StatusChange) -> bool:
    """Whether `change` moves a notification that is at `status` (the conditional UPDATE's rule)."""
    if RANK[change.status] > RANK[status]:
        return True
    # a replay (a dead letter sent again, a template after a late refusal) starts a new life
    return (change.status == "retrying" and status == "retrying") or (change.replay and status in ("dead", "failed"))


def _clip(name: str, value: Any) -> Any:
    if isinstance(value, str) and name in LIMITS:
        return value[: LIMITS[name]]
    return value


def _insert(connection: AsyncConnection | Connection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT (imported here: a process loads only its own)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise NotImplementedError(f"the ledger supports PostgreSQL and SQLite, not {dialect}")


_rank = case(RANK, value=_notifications.c.status, else_=0)
_APPLY = (
    update(_notifications)
    .where(
        _notifications.c.id == bindparam("b_id"),
        or_(_rank < bindparam("b_rank"), _notifications.c.status == bindparam("b_over")),
    )
    .values(
        status=bindparam("b_status"),
        updated_at=bindparam("b_at"),
        attempts=func.coalesce(bindparam("b_attempt"), _notifications.c.attempts),
        provider=func.coalesce(bindparam("b_provider"), _notifications.c.provider),
        provider_message_id=func.coalesce(bindparam("b_pmid"), _notifications.c.provider_message_id),
        error_code=bindparam("b_code"),
        error_message=bindparam("b_message"),
    )
)


BeforeCommit = Callable[[AsyncConnection, "Applied"], Awaitable[None]]


async def apply_changes(
    engine: AsyncEngine, changes: Sequence[StatusChange], before_commit: BeforeCommit | None = None
) -> Applied:
    """Record `changes` (in their order) in one transaction. `before_commit` runs inside
    it once they are applied (the writer queues the status callbacks there: if it fails,
    nothing is committed and the batch is tried again, so no callback is lost)."""
    async with engine.begin() as connection:
        applied = await _apply(connection, changes)
        if before_commit is not None and applied.applied:
            await before_commit(connection, applied)
        return applied


async def _apply(connection: AsyncConnection, changes: Sequence[StatusChange]) -> Applied:
    result = Applied()
    ids, changes = await _resolve(connection, changes)
    created = await _create_rows(connection, changes, ids)
    known = await _existing(connection, {i for i in ids if i is not None})
    rows = []
    for index, (change, notification_id) in enumerate(zip(changes, ids, strict=True)):
        if notification_id is None or notification_id not in known:
            result.unresolved.append(index)
            continue
        rows.append((change, notification_id))
    if not rows:
        return result
    new_keys = await _record_events(connection, rows)
    result.recorded = len(new_keys)
    updates: list[dict[str, Any]] = []
    for change, notification_id in rows:
        if change.key not in new_keys:
            continue  # recorded (and applied) before
        new_keys.discard(change.key)  # the same key twice in one batch: once
        row = known[notification_id]
        if change.status == "queued" and notification_id in created:
            created.discard(notification_id)  # its row was made at `queued` just now: the first change
            result.applied.append((change, notification_id))
            if row.callback_url:
                result.callback_urls[notification_id] = row.callback_url
            continue
        if not applies(row.status, change):
            continue  # a late report: in the timeline, not applied
        updates.append(_update_params(change, notification_id, row.status))
        row.status = change.status
        row.provider = change.provider or row.provider
        row.provider_message_id = change.provider_message_id or row.provider_message_id
        result.applied.append((change, notification_id))
        if row.callback_url:
            result.callback_urls[notification_id] = row.callback_url
        if change.status == "failed":
            result.failures.append(LateFailure(
                notification_id=notification_id, channel=row.channel, provider=row.provider,
                provider_message_id=row.provider_message_id or "", code=change.code, message=change.message,
            ))
    if updates:
        # the rows are locked (PostgreSQL) and the rule was checked above; the UPDATE
        # checks it again, so the status never moves backwards whatever happens
        await connection.execute(_APPLY, updates)
    return result


async def _resolve(
    connection: AsyncConnection, changes: Sequence[StatusChange]
) -> tuple[list[str | None], list[StatusChange]]:
    """Each change's notification id; a receipt's from the provider's message id (the
    newest notification with it, or a `sent` earlier in this batch). The ids are compared
    clipped, as they are stored.

    Also the changes to record: a receipt's time is the provider's, in whole seconds
    (Meta) and on the provider's clock, so it is never put before the change it follows
    (the notification's latest change when the receipt came): the timeline, ordered by
    time, stays in the order things happened."""
    wanted = {_provider_id(c)[1] for c in changes if c.id is None and c.provider_message_id}
    by_provider_id: dict[tuple[str, str], tuple[str, datetime]] = {}
    if wanted:
        found = await connection.execute(
            select(_notifications.c.id, _notifications.c.provider, _notifications.c.provider_message_id,
                   _notifications.c.updated_at)
            .where(_notifications.c.provider_message_id.in_(sorted(wanted)))
            .order_by(_notifications.c.created_at)
        )
        for notification_id, provider, provider_message_id, updated_at in found:
            by_provider_id[(provider, provider_message_id)] = (notification_id, updated_at)
    ids: list[str | None] = []
    recorded: list[StatusChange] = []
    for change in changes:
        if change.id is not None:
            if change.provider_message_id and change.provider:
                by_provider_id[_provider_id(change)] = (change.id, change.at)
            ids.append(change.id)
            recorded.append(change)
            continue
        found_id = by_provider_id.get(_provider_id(change))
        if found_id is None:
            ids.append(None)
            recorded.append(change)
            continue
        notification_id, latest = found_id
        ids.append(notification_id)
        if change.at < latest:
            change = change.model_copy(update={"at": latest})
        by_provider_id[_provider_id(change)] = (notification_id, max(latest, change.at))
        recorded.append(change)
    return ids, recorded


def _provider_id(change: StatusChange) -> tuple[str, str]:
    return _clip("provider", change.provider or ""), _clip("provider_message_id", change.provider_message_id or "")


async def _create_rows(
    connection: AsyncConnection, changes: Sequence[StatusChange], ids: Sequence[str | None]
) -> set[str]:
    """Create the rows of the notifications first seen here (at `queued`); their ids."""
    rows: dict[str, dict[str, Any]] = {}
    for change, notification_id in zip(changes, ids, strict=True):
        facts = change.facts
        if facts is None or notification_id is None or notification_id in rows:
            continue
        rows[notification_id] = {
            name: _clip(name, value) for name, value in {
                "id": notification_id[:36],
                "channel": facts.channel,
                "provider": change.provider or "",
                "to": facts.to,
                "target_kind": facts.target_kind,
                "target_address": facts.target_address,
                "event": facts.event,
                "status": "queued",
                "attempts": 0,
                "created_at": facts.created_at,
                "updated_at": facts.created_at,
                "callback_url": facts.callback_url,
                "body": facts.body,
            }.items()
        }
    if not rows:
        return set()
    insert = (
        _insert(connection, _notifications)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(_notifications.c.id)
    )
    # in the order of the ids, as _existing locks them: two writers never deadlock
    created = await connection.execute(insert, sorted(rows.values(), key=lambda row: row["id"]))
    return {notification_id for notification_id in created.scalars() if notification_id is not None}


async def _existing(connection: AsyncConnection, ids: set[str]) -> dict[str, _Row]:
    """The ids in the ledger, their rows locked (PostgreSQL) in the order of the ids: a
    second writer of the same notifications waits here, before it takes any other lock
    (event keys, row updates) in an order of its own, so the two never deadlock."""
    if not ids:
        return {}
    columns = _notifications.c
    found = await connection.execute(
        select(columns.id, columns.status, columns.channel, columns.provider, columns.provider_message_id,
               columns.callback_url)
        .where(columns.id.in_(sorted(ids)))
        .order_by(columns.id).with_for_update()
    )
    return {
        row.id: _Row(row.status, row.channel, row.provider, row.provider_message_id, row.callback_url)
        for row in found
    }


async def _record_events(connection: AsyncConnection, rows: list[tuple[StatusChange, str]]) -> set[str]:
    """Insert the event rows; the keys that were new."""
    values = []
    seen: set[str] = set()
    for change, notification_id in rows:
        if change.key in seen:
            continue
        seen.add(change.key)
        values.append({
            "notification_id": notification_id,
            "at": change.at,
            "status": change.status,
            "channel": _clip("channel", change.channel),
            "provider": _clip("provider", change.provider),
            "code": _clip("code", change.code),
            "message": _clip("message", change.message),
            "attempt": change.attempt,
            "key": change.key,
        })
    # executemany with RETURNING ("insertmanyvalues"): the statement is compiled once and
    # cached, where a multi-row .values() would be compiled anew for every batch
    insert = (
        _insert(connection, _events)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(_events.c.key)
    )
    return {key for key in (await connection.execute(insert, values)).scalars() if key is not None}


def _update_params(change: StatusChange, notification_id: str, current: str) -> dict[str, Any]:
    over = "retrying" if change.status == "retrying" else (current if change.replay else "")
    failing = change.status in ("retrying", "failed", "dead")
    return {
        "b_id": notification_id,
        "b_rank": RANK[change.status],
        "b_over": over,
        "b_status": change.status,
        "b_at": change.at,
        "b_attempt": change.attempt,
        "b_provider": _clip("provider", change.provider),
        "b_pmid": _clip("provider_message_id", change.provider_message_id),
        "b_code": _clip("code", change.code) if failing else None,
        "b_message": _clip("message", change.message) if failing else None,
    }
