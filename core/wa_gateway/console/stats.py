"""The overview's chart: sent / delivered / failed / dead per hour for the last 24 hours,
counted from the ledger's status changes (notification_events) and drawn as an SVG on
the server, so the page needs no JavaScript.

One GROUP BY over the index on (status, at) (migration 0004): the database reads only
the index entries of the four statuses within the day, however large the ledger is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..ledger.models import NotificationEvent

CHART_STATUSES = ("sent", "delivered", "failed", "dead")
HOURS = 24


@dataclass(frozen=True)
class HourlyCounts:
    hours: list[datetime]
    """The start of each hour (UTC), oldest first; the last is the current hour."""
    counts: dict[str, list[int]]
    """status -> one count per hour."""

    def total(self, status: str) -> int:
        return sum(self.counts[status])


def hour_starts(now: datetime, hours: int = HOURS) -> list[datetime]:
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=hours - 1 - index) for index in range(hours)]


async def hourly_counts(engine: AsyncEngine, *, now: datetime | None = None, hours: int = HOURS) -> HourlyCounts:
    starts = hour_starts(now or datetime.now(UTC), hours)
    at = NotificationEvent.at
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            bucket = func.to_char(func.timezone("UTC", at), "YYYY-MM-DD HH24", type_=String)
        else:  # SQLite keeps UTC times as text, 'YYYY-MM-DD HH:MM:SS…': the hour is a prefix
            bucket = func.substr(at, 1, 13, type_=String)
        query = (
            select(NotificationEvent.status, bucket.label("hour"), func.count())
            .where(NotificationEvent.status.in_(CHART_STATUSES), at >= starts[0])
            .group_by(NotificationEvent.status, bucket)
        )
        rows = (await connection.execute(query)).all()
    index = {start.strftime("%Y-%m-%d %H"): position for position, start in enumerate(starts)}
    counts = {status: [0] * hours for status in CHART_STATUSES}
    for status, hour, count in rows:
        position = index.get(hour)
        if position is not None:  # a change stamped in the future (clock skew) is left out
            counts[status][position] += count
    return HourlyCounts(starts, counts)


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
    """The smallest of 1, 2, 5 times 10^n at or above `value` (at least 4: room for ticks)."""
    if value <= 4:
        return 4
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
    y_ticks = [(y(top_value * step // 4), f"{top_value * step // 4:,}") for step in range(5)]
    x_ticks = [
        (x(position), start.strftime("%H:00"))
        for position, start in enumerate(counts.hours)
        if position % 3 == 0 or position == len(counts.hours) - 1
    ]
    return Chart(series=series, y_ticks=y_ticks, x_ticks=x_ticks)
