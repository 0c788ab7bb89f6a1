"""Geometry of the two drawings, as plain numbers for the templates to write as
SVG on the server: no JavaScript, nothing fetched from elsewhere.

Coordinates are in the SVG's own units (``WIDTH`` wide); the SVG scales to the
page, so one drawing serves a laptop and a phone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from idledger.api.queries import MauDay
from idledger.domain.history import OwnershipInterval

WIDTH = 1000
PALETTE_SIZE = 8  # owner colours in console.css: .owner-0 ... .owner-7


@dataclass(frozen=True)
class Segment:
    """One owner's interval on the ownership bar."""

    number: int  # 1, 2, ... in time order
    owner_id: UUID
    start: datetime
    end: datetime | None  # None: owns it still
    cause: str
    ended_by: str | None
    x: float
    width: float
    colour: int


@dataclass(frozen=True)
class Boundary:
    """Where one interval ends: what ended it, at which instant."""

    x: float
    at: datetime
    cause: str
    row: int  # labels alternate between two rows so neighbours do not overlap


def ownership_bar(
    intervals: Sequence[OwnershipInterval], now: datetime
) -> tuple[list[Segment], list[Boundary]]:
    """Each interval gets a share of the bar by its length, with a floor so that a
    one-second ownership between two long ones is still visible (the table under
    the bar gives the exact times)."""
    lengths = [
        max(((interval.end or max(now, interval.start)) - interval.start).total_seconds(), 0.0)
        for interval in intervals
    ]
    count = len(intervals)
    floor = min(0.04, 0.5 / count)
    total = sum(lengths)
    shares = [floor + (1 - floor * count) * (length / total if total else 1 / count)
              for length in lengths]  # fmt: skip
    colours: dict[UUID, int] = {}
    segments: list[Segment] = []
    boundaries: list[Boundary] = []
    x = 0.0
    for number, (interval, share) in enumerate(zip(intervals, shares, strict=True), 1):
        colour = colours.setdefault(interval.owner_id, len(colours) % PALETTE_SIZE)
        width = share * WIDTH
        segments.append(
            Segment(number, interval.owner_id, interval.start, interval.end, str(interval.cause),
                    interval.ended_by, x, width, colour)
        )  # fmt: skip
        x += width
        if interval.end is not None:
            boundaries.append(
                Boundary(x, interval.end, interval.ended_by or "", len(boundaries) % 2)
            )
    return segments, boundaries


CHART_HEIGHT = 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 16, 40
PLOT_WIDTH = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
PLOT_HEIGHT = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
MAX_HOVER_DAYS = 400  # one hover target per day up to this many days


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # series-total, series-0, ...
    points: str  # the SVG polyline's "x,y x,y ..."


@dataclass(frozen=True)
class MauChart:
    series: list[Series]
    y_ticks: list[tuple[float, int]]  # (y, value)
    x_ticks: list[tuple[float, date]]  # (x, day)
    day_width: float
    hover: list[tuple[float, MauDay]]  # (x of the day's column, the day), when few days


def mau_chart(days: Sequence[MauDay], types: Sequence[str]) -> MauChart:
    top = _nice_ceiling(max((day.total for day in days), default=0))
    step = PLOT_WIDTH / max(len(days) - 1, 1)

    def x_of(index: int) -> float:
        return MARGIN_LEFT + (index * step if len(days) > 1 else PLOT_WIDTH / 2)

    def y_of(value: int) -> float:
        return MARGIN_TOP + PLOT_HEIGHT * (1 - value / top)

    def line(values: list[int]) -> str:
        return " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(values))

    series = [Series("total", "series-total", line([day.total for day in days]))]
    series += [
        Series(kind, f"series-{number % PALETTE_SIZE}",
               line([day.by_type.get(kind, 0) for day in days]))
        for number, kind in enumerate(types)
    ]  # fmt: skip
    y_ticks = [(y_of(value), value) for value in sorted({0, top // 2, top})]
    picks = sorted({0, (len(days) - 1) // 2, len(days) - 1}) if days else []
    x_ticks = [(x_of(i), days[i].day) for i in picks]
    hover = [(x_of(i), day) for i, day in enumerate(days)] if len(days) <= MAX_HOVER_DAYS else []
    return MauChart(series, y_ticks, x_ticks, max(step, 2.0), hover)


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at or above ``value`` (at least 1)."""
    nice = 1
    while nice < value:
        digits = len(str(nice)) - 1
        nice = {1: 2, 2: 5, 5: 10}[nice // 10**digits] * 10**digits
    return nice
