"""Trend charts as SVG shapes for the board's template: bars of cases filed and closed per day
(or week), and a line of the share closed on time on a 0-100 % axis. Pure; no script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from workbench.board import TrendPoint

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 48, 16, 40


@dataclass
class Chart:
    width: int
    height: int
    bars: list[dict[str, float | str]] = field(default_factory=list)
    line: str = ""
    points: list[dict[str, float | str]] = field(default_factory=list)
    y_ticks: list[dict[str, float | str]] = field(default_factory=list)
    rate_ticks: list[dict[str, float | str]] = field(default_factory=list)
    x_labels: list[dict[str, float | str]] = field(default_factory=list)
    plot: dict[str, float] = field(default_factory=dict)


def nice_max(value: int) -> int:
    """An axis maximum at or above `value`: 1, 2, 5 × 10^n."""
    if value <= 5:
        return 5
    magnitude = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def trend_chart(points: Sequence[TrendPoint], period: str) -> Chart:
    chart = Chart(WIDTH, HEIGHT)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    chart.plot = {"x": LEFT, "y": TOP, "w": plot_w, "h": plot_h, "bottom": TOP + plot_h,
                  "right": LEFT + plot_w}
    if not points:
        return chart
    top = nice_max(max(max(p.filed, p.closed) for p in points))
    slot = plot_w / len(points)
    bar = max(1.0, min(18.0, slot * 0.38))

    def y(value: float) -> float:
        return round(TOP + plot_h - value / top * plot_h, 1)

    for i in range(5):
        v = top * i / 4
        chart.y_ticks.append({"y": y(v), "label": f"{v:g}"})
        chart.rate_ticks.append({"y": round(TOP + plot_h - plot_h * i / 4, 1),
                                 "label": f"{25 * i}%"})
    every = max(1, math.ceil(len(points) / 12))
    line_points = []
    for i, p in enumerate(points):
        cx = LEFT + slot * (i + 0.5)
        label = p.start.strftime("%m-%d") + ("起" if period == "week" else "")
        for kind, value, dx in (("filed", p.filed, -bar), ("closed", p.closed, 0.0)):
            chart.bars.append({"kind": kind, "x": round(cx + dx, 1), "y": y(value),
                               "w": round(bar, 1), "h": round(TOP + plot_h - y(value), 1),
                               "title": f"{p.start.isoformat()} {'立案' if kind == 'filed' else '结案'} {value}"})
        if p.on_time_rate is not None:
            py = round(TOP + plot_h - p.on_time_rate * plot_h, 1)
            line_points.append(f"{round(cx, 1)},{py}")
            chart.points.append({"x": round(cx, 1), "y": py,
                                 "title": f"{p.start.isoformat()} 按期率 {p.on_time_rate * 100:.1f}%"
                                          f" ({p.closed_on_time}/{p.closed_tasks})"})
        if i % every == 0:
            chart.x_labels.append({"x": round(cx, 1), "label": label})
    chart.line = " ".join(line_points)
    return chart
