"""The overview's chart: sent / delivered / failed / dead per hour for the last 24 hours,
counted from the ledger's status changes (notification_events) and drawn as an SVG on
the server, so the page needs no JavaScript.

Counting a busy day is one GROUP BY over the index on (status, at) (migration 0005), and
still reads every change of the day: a quarter of a second or more with 100,000
notifications in it. So `HourlyChart` counts the whole day in the background, every
REFRESH seconds from the process's start, and each view counts only the current and the
previous hour (where changes still arrive) on top of the last whole count; a change
written late into an older hour (after a database outage) shows within REFRESH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..ledger.engine import DATABASE_ERRORS, first_line
from ..ledger.models import NotificationEvent

log = logging.getLogger(__name__)

CHART_STATUSES = ("sent", "delivered", "failed", "dead")
HOURS = 24
LIVE_HOURS = 2
"""Counted on every view: the current hour and the one before (changes still arrive)."""
REFRESH = 60.0
STALE = 300.0
"""Older than this, the overview says when the older hours were counted."""


@dataclass(frozen=True)
class HourlyCounts:
    hours: list[datetime]
    """The start of each hour (UTC), oldest first; the last is the current hour."""
    counts: dict[str, list[int]]
    """status -> one count per hour."""
    older_age: float | None = None
    """Seconds since the hours before the live ones were counted, when that is longer
    than STALE (the database did not answer since); None: they are current."""

    def total(self, status: str) -> int:
        return sum(self.counts[status])


def hour_starts(now: datetime, hours: int = HOURS) -> list[datetime]:
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=hours - 1 - index) for index in range(hours)]


def _key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d %H")


async def count_since(engine: AsyncEngine, since: datetime) -> dict[tuple[str, str], int]:
    """(status, 'YYYY-MM-DD HH' in UTC) -> changes of the charted statuses at or after `since`."""
    at = NotificationEvent.at
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            bucket = func.to_char(func.timezone("UTC", at), "YYYY-MM-DD HH24", type_=String)
        else:  # SQLite keeps UTC times as text, 'YYYY-MM-DD HH:MM:SS…': the hour is a prefix
            bucket = func.substr(at, 1, 13, type_=String)
        query = (
            select(NotificationEvent.status, bucket.label("hour"), func.count())
            .where(NotificationEvent.status.in_(CHART_STATUSES), at >= since)
            .group_by(NotificationEvent.status, bucket)
        )
        rows = (await connection.execute(query)).all()
    return {(status, hour): count for status, hour, count in rows}


def _arrange(starts: list[datetime], found: dict[tuple[str, str], int]) -> HourlyCounts:
    index = {_key(start): position for position, start in enumerate(starts)}
    counts = {status: [0] * len(starts) for status in CHART_STATUSES}
    for (status, hour), count in found.items():
        position = index.get(hour)
        if position is not None:  # a change stamped in the future (clock skew) is left out
            counts[status][position] += count
    return HourlyCounts(starts, counts)


async def hourly_counts(engine: AsyncEngine, *, now: datetime | None = None, hours: int = HOURS) -> HourlyCounts:
    """The whole day counted now."""
    starts = hour_starts(now or datetime.now(UTC), hours)
    return _arrange(starts, await count_since(engine, starts[0]))


class HourlyChart:
    """The day's counts for a process's overview, cheap to ask for on every view: a task
    counts the whole day every REFRESH seconds while the process runs, and each view adds
    the live hours to its last count."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._day: dict[tuple[str, str], int] | None = None
        self._counted_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep_counting())

    async def counts(self, *, now: datetime | None = None) -> HourlyCounts:
        starts = hour_starts(now or datetime.now(UTC))
        if self._day is None:  # the first count has not finished (or the database was down)
            async with self._lock:
                day = self._day
            if day is None:
                await self._count_day(starts[0])
                assert self._day is not None
            return _arrange(starts, self._day)
        live_since = starts[-LIVE_HOURS]
        live = await count_since(self.engine, live_since)
        older = {key: count for key, count in self._day.items() if key[1] < _key(live_since)}
        counts = _arrange(starts, {**older, **live})
        age = time.monotonic() - self._counted_at
        return counts if age <= STALE else HourlyCounts(counts.hours, counts.counts, older_age=age)

    async def _count_day(self, since: datetime) -> None:
        async with self._lock:  # a first view waits for the count under way, not a second one
            self._day = await count_since(self.engine, since)
            self._counted_at = time.monotonic()

    async def _keep_counting(self) -> None:
        failing = False
        while True:
            try:
                await self._count_day(hour_starts(datetime.now(UTC))[0])
                failing = False
            except DATABASE_ERRORS as exc:
                if not failing:  # once per outage: the views say it too
                    log.warning("console: counting the day's status changes failed (%s)", first_line(exc))
                failing = True
            await asyncio.sleep(REFRESH)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(frozen=True)
class Series:
    status: str
    points: str
    """SVG polyline points."""
    dots: list[tuple[float, float, int, str]]
    """(x, y, count, hour label) for each hour: a dot with a tooltip."""


@dataclass(frozen=True)
class Chart:
    width: int = 760
    height: int = 260
    left: int = 52
    right: int = 24
    top: int = 12
    bottom: int = 34
    series: list[Series] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 times 10^n at or above `value`, at least 5: the axis then
    has five whole steps."""
    if value <= 5:
        return 5
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def chart(counts: HourlyCounts) -> Chart:
    base = Chart()
    width = base.plot_right - base.left
    height = base.plot_bottom - base.top
    top_value = nice_ceiling(max((max(values) for values in counts.counts.values()), default=0))
    slots = max(len(counts.hours) - 1, 1)

    def x(position: int) -> float:
        return round(base.left + width * position / slots, 1)

    def y(value: int) -> float:
        return round(base.plot_bottom - height * value / top_value, 1)

    series = []
    for status in CHART_STATUSES:
        values = counts.counts[status]
        dots = [
            (x(position), y(value), value, counts.hours[position].strftime("%H:00"))
            for position, value in enumerate(values)
        ]
        series.append(Series(status, " ".join(f"{dx},{dy}" for dx, dy, _, _ in dots), dots))
    y_ticks = [(y(top_value * step // 5), f"{top_value * step // 5:,}") for step in range(6)]
    x_ticks = [
        (x(position), start.strftime("%H:00"))
        for position, start in enumerate(counts.hours)
        if position % 3 == 0 or position == len(counts.hours) - 1
    ]
    return Chart(series=series, y_ticks=y_ticks, x_ticks=x_ticks)
