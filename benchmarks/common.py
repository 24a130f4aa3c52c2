"""Small pieces every benchmark module needs: the error type, progress output, statistics."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass


class BenchError(Exception):
    """A benchmark could not run; the message is one line a person can act on."""


def say(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the final table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: always a value that was really observed, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Span:
    """`count` events, the first at `first` and the last at `last` (seconds, one clock)."""

    count: int
    first: float
    last: float
    cpu: float = math.nan
    """CPU seconds the consumer used over the span (NaN when unknown)."""

    @property
    def seconds(self) -> float:
        return self.last - self.first

    @property
    def rate(self) -> float:
        """Events per second between the first and the last: count-1 intervals in that time."""
        if self.count < 2 or self.seconds <= 0:
            return math.nan
        return (self.count - 1) / self.seconds

    @property
    def cpu_ms_per_event(self) -> float:
        return self.cpu * 1000 / max(1, self.count - 1)

    @classmethod
    def joined(cls, spans: list[Span]) -> Span:
        """Several runs as one: their intervals and CPU added up, the gaps between them not."""
        seconds = sum(span.seconds for span in spans)
        count = sum(span.count - 1 for span in spans) + 1
        return cls(count, 0.0, seconds, sum(span.cpu for span in spans))

    def as_dict(self) -> dict[str, float]:
        figures = {"count": self.count, "seconds": self.seconds, "rate": self.rate}
        figures["cpu_ms_per_event"] = self.cpu_ms_per_event
        return {k: round(v, 3) for k, v in figures.items() if not math.isnan(v)}
