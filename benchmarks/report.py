"""Results, their targets, and the two ways they leave: a table on stdout and a JSON file."""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """A bound on the measured value, or on the ratio measured/baseline when `on_ratio`."""

    op: str  # ">=", "<=", or "±" (the ratio within 1 ± bound: a pace kept)
    bound: float
    on_ratio: bool = False

    def met(self, measured: float, ratio: float | None) -> bool:
        value = ratio if self.on_ratio or self.op == "±" else measured
        if value is None or math.isnan(value):
            return False
        if self.op == "±":
            return abs(value - 1) <= self.bound
        return {">=": operator.ge, "<=": operator.le}[self.op](value, self.bound)

    def describe(self, unit: str) -> str:
        if self.op == "±":
            return f"ratio 1 ± {self.bound:g}"
        subject = "ratio " if self.on_ratio else ""
        suffix = "" if self.on_ratio else f" {unit}"
        return f"{subject}{self.op} {self.bound:g}{suffix}"


@dataclass
class Result:
    """One row: a measurement next to the baseline measured in the same run."""

    name: str
    measured: float
    unit: str
    baseline: float | None = None
    target: Target | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or math.isnan(self.baseline) or math.isnan(self.measured):
            return None
        return self.measured / self.baseline

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None for a row that is only information."""
        return None if self.target is None else self.target.met(self.measured, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": _rounded(self.measured),
            "baseline": _rounded(self.baseline),
            "ratio": _rounded(self.ratio),
            "unit": self.unit,
            "target": self.target.describe(self.unit) if self.target else None,
            "pass": self.passed,
            "note": self.note,
            "details": self.details,
        }


def failed_row(name: str, reason: str) -> Result:
    """A benchmark that could not run still shows up, as a failure saying why."""
    return Result(name, math.nan, "", target=Target(">=", 0), note=reason)


def _rounded(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, 3)


def _number(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[passed]


def table(results: list[Result]) -> str:
    """A fixed-width text table; notes follow underneath so the columns stay readable."""
    header = ("benchmark", "measured", "baseline", "ratio", "target", "result")
    rows = [
        (
            r.name,
            _number(r.measured, r.unit),
            _number(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            r.target.describe(r.unit) if r.target else "-",
            _verdict(r.passed),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  * {r.name}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def write_json(path: Path, results: list[Result], run: dict[str, Any], problems: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "run": run,
        "results": [r.as_dict() for r in results],
        "problems": problems,
        "all_passed": all(r.passed is not False for r in results),
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
