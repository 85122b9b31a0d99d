"""Figures as benchmarks report them, and the run's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Config:
    quick: bool = False
    rounds: int = 2  # pushreach and its baseline alternate this many times; best of each kept


@dataclass
class Figure:
    bench: str  # benchmark row
    metric: str
    value: float
    unit: str
    baseline: str = ""  # what the value is compared with
    baseline_value: float | None = None
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline_value:
            return self.value / self.baseline_value
        return None

    def as_json(self) -> dict[str, Any]:
        d = {
            "bench": self.bench,
            "metric": self.metric,
            "value": round(self.value, 4),
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": None if self.baseline_value is None else round(self.baseline_value, 4),
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target,
            "met": self.met,
        }
        d.update(self.extra)
        return d
