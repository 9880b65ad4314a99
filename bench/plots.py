"""Line charts of the sweeps as PNG files, drawn with Pillow.

Pillow is already a dependency (pictures); a plotting library would be a large one
for three charts. A chart has a title, two labelled axes (linear or logarithmic,
with 1-2-5 ticks), one coloured line with round markers per series and a legend.
``Chart.to_px`` is where a data point is drawn, which is what the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
PALETTE: tuple[RGB, ...] = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
)
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
GRID: RGB = (225, 225, 225)
MARKER_RADIUS = 4

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ValueError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _label(value: float) -> str:
    if value == int(value) and abs(value) < 1e7:
        return f"{int(value)}"
    return f"{value:g}"


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]  # (x, y); NaN y values leave a gap


class Axis:
    """Maps data values to [0, 1]; linear axes start at zero, log axes pad a little."""

    def __init__(
        self, values: list[float], log: bool = False, ticks: list[float] | None = None
    ) -> None:
        self.log = log
        finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if log:
            lo, hi = (min(finite), max(finite)) if finite else (1.0, 10.0)
            self.lo, self.hi = lo / 1.25, hi * 1.25
            self.ticks = _log_ticks(self.lo, self.hi)
            if len(self.ticks) < 2:  # a narrow range: label the data instead
                self.ticks = sorted(set(finite))
        else:
            hi = max([*finite, 0.0])
            step = _nice_step(hi / 5 if hi > 0 else 0.2)
            self.lo = 0.0
            self.hi = step * math.ceil(hi / step) if hi > 0 else 1.0
            if self.hi < hi * 1.04:  # a point on the top edge would hide its marker
                self.hi += step
            self.ticks = [i * step for i in range(round(self.hi / step) + 1)]
        if ticks:
            self.ticks = [t for t in ticks if self.lo <= t <= self.hi]

    def frac(self, value: float) -> float:
        if self.log:
            return math.log(value / self.lo) / math.log(self.hi / self.lo)
        return (value - self.lo) / (self.hi - self.lo)


def _nice_step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def _log_ticks(lo: float, hi: float) -> list[float]:
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    span = math.log10(hi / lo)
    mantissas: tuple[float, ...] = (1, 2, 5) if span <= 3.5 else (1,)
    if span < 1.2:  # less than a decade: finer steps, or two ticks would be all
        mantissas = (1, 1.5, 2, 3, 4, 5, 7)
    return [m * 10.0**d for d in decades for m in mantissas if lo <= m * 10.0**d <= hi]


class Chart:
    """One line chart; ``size`` is the PNG's size in pixels."""

    def __init__(
        self,
        title: str,
        x_label: str,
        y_label: str,
        series: list[Series],
        *,
        log_x: bool = False,
        log_y: bool = False,
        x_ticks: list[float] | None = None,
        size: tuple[int, int] = (800, 480),
    ) -> None:
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.series = series
        self.size = size
        xs = [x for s in series for x, _ in s.points]
        ys = [y for s in series for _, y in s.points]
        self.x, self.y = Axis(xs, log_x, x_ticks), Axis(ys, log_y)
        width, height = size
        # plot area: left, top, right, bottom (the legend sits right of it)
        self.box = (78, 46, width - 190, height - 58)

    def colour(self, index: int) -> RGB:
        return PALETTE[index % len(PALETTE)]

    def to_px(self, x: float, y: float) -> tuple[int, int]:
        left, top, right, bottom = self.box
        return (
            round(left + self.x.frac(x) * (right - left)),
            round(bottom - self.y.frac(y) * (bottom - top)),
        )

    def render(self) -> Image.Image:
        img = Image.new("RGB", self.size, WHITE)
        draw = ImageDraw.Draw(img)
        small, big = _font(13), _font(16)
        left, top, right, bottom = self.box
        for tick in self.x.ticks:
            px, _ = self.to_px(tick, self.y.hi)
            draw.line([(px, top), (px, bottom)], fill=GRID)
            draw.line([(px, bottom), (px, bottom + 5)], fill=BLACK)
            draw.text((px, bottom + 8), _label(tick), fill=BLACK, font=small, anchor="mt")
        for tick in self.y.ticks:
            _, py = self.to_px(self.x.hi, tick)
            draw.line([(left, py), (right, py)], fill=GRID)
            draw.line([(left - 5, py), (left, py)], fill=BLACK)
            draw.text((left - 8, py), _label(tick), fill=BLACK, font=small, anchor="rm")
        draw.rectangle(self.box, outline=BLACK)
        draw.text(((left + right) // 2, 14), self.title, fill=BLACK, font=big, anchor="mt")
        draw.text(
            ((left + right) // 2, self.size[1] - 8), self.x_label, fill=BLACK, font=small,
            anchor="mb",
        )  # fmt: skip
        self._y_label(img, small)
        for i, s in enumerate(self.series):
            self._line(draw, s, self.colour(i))
        self._legend(draw, small)
        return img

    def _y_label(self, img: Image.Image, font: Font) -> None:
        text = Image.new("RGB", (self.box[3] - self.box[1], 18), WHITE)
        ImageDraw.Draw(text).text(
            (text.width // 2, 9), self.y_label, fill=BLACK, font=font, anchor="mm"
        )
        img.paste(text.rotate(90, expand=True), (6, self.box[1]))

    def _line(self, draw: ImageDraw.ImageDraw, series: Series, colour: RGB) -> None:
        run: list[tuple[int, int]] = []
        for x, y in [*sorted(series.points), (math.nan, math.nan)]:
            ok = math.isfinite(x) and math.isfinite(y)
            if ok and ((self.x.log and x <= 0) or (self.y.log and y <= 0)):
                ok = False
            if ok:
                run.append(self.to_px(x, y))
                continue
            if len(run) > 1:
                draw.line(run, fill=colour, width=2)
            for px, py in run:
                r = MARKER_RADIUS
                draw.ellipse([(px - r, py - r), (px + r, py + r)], fill=colour)
            run = []

    def _legend(self, draw: ImageDraw.ImageDraw, font: Font) -> None:
        x = self.box[2] + 14
        for i, s in enumerate(self.series):
            y = self.box[1] + 8 + 22 * i
            draw.line([(x, y), (x + 24, y)], fill=self.colour(i), width=2)
            draw.ellipse([(x + 8, y - 4), (x + 16, y + 4)], fill=self.colour(i))
            draw.text((x + 32, y), s.label, fill=BLACK, font=font, anchor="lm")

    def save(self, path: Path) -> None:
        self.render().save(path, format="PNG")


# -- the benchmark's charts ----------------------------------------------------------


def _ok_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if "error" not in p]


def _f(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def charts(sweeps: dict[str, Any]) -> dict[str, Chart]:
    """File name -> chart, for every sweep with data."""
    out: dict[str, Chart] = {}
    lvr = sweeps.get("latency_vs_rate") or []
    if lvr:
        out["latency_vs_rate.png"] = Chart(
            "Cached profile reads, main tree: latency against offered rate",
            "offered rate (req/s, open loop)",
            "latency (ms, log scale)",
            [
                Series("p50", [(_f(p["rate"]), _f(p["p50_ms"])) for p in lvr]),
                Series("p99", [(_f(p["rate"]), _f(p["p99_ms"])) for p in lvr]),
            ],
            log_y=True,
        )
    pools = _ok_points(sweeps.get("pool_size") or [])
    if pools:
        sizes = sorted({_f(p["settings"]["pool_size"]) for p in pools})

        def series(scenario: str, key: str, label: str) -> Series:
            return Series(
                label,
                [
                    (_f(p["settings"]["pool_size"]), _f(p["scenarios"][scenario][key]))
                    for p in pools
                ],
            )

        out["throughput_vs_pool.png"] = Chart(
            "Uncached profile reads: maximum throughput against MySQL pool size",
            "MySQL pool size (connections, log scale)",
            "req/s (closed loop)",
            [series("profile_uncached", "max_rps", "uncached, max")],
            log_x=True,
            x_ticks=sizes,
        )
        out["p99_vs_pool.png"] = Chart(
            "Profile reads at the bench rate: p99 against MySQL pool size",
            "MySQL pool size (connections, log scale)",
            "p99 latency (ms, log scale)",
            [
                series("profile_cached", "p99_ms", "cached"),
                series("profile_uncached", "p99_ms", "uncached"),
            ],
            log_x=True,
            log_y=True,
            x_ticks=sizes,
        )
    return out


def write_plots(sweeps: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw every chart into ``out_dir``; return the file names written."""
    names = []
    for name, chart in charts(sweeps).items():
        chart.save(out_dir / name)
        names.append(name)
    return names
