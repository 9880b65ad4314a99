"""bench.plots draws real PNGs, with every point where its data says."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from bench import plots
from bench.plots import Axis, Chart, Series


def two_series() -> Chart:
    return Chart(
        "title",
        "x",
        "y",
        [
            Series("low", [(50, 10.0), (500, 20.0), (4000, 15.0)]),
            Series("high", [(50, 90.0), (500, 70.0), (4000, 95.0)]),
        ],
        log_x=True,
        size=(640, 400),
    )


def test_a_real_png_of_the_asked_size(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    two_series().save(path)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (640, 400)


def test_each_point_is_drawn_where_its_data_says(tmp_path: Path) -> None:
    chart = two_series()
    path = tmp_path / "chart.png"
    chart.save(path)
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        for index, series in enumerate(chart.series):
            for x, y in series.points:
                assert rgb.getpixel(chart.to_px(x, y)) == chart.colour(index), (series.label, x)
        # and not where it does not: mid-way up, far from both lines, is background
        left, top, right, bottom = chart.box
        assert rgb.getpixel(((left + right) // 2 + 3, (top + bottom) // 2 + 3)) in (
            plots.WHITE,
            plots.GRID,
        )


def test_points_are_inside_the_plot_area() -> None:
    chart = two_series()
    left, top, right, bottom = chart.box
    for series in chart.series:
        for x, y in series.points:
            px, py = chart.to_px(x, y)
            assert left < px < right and top < py < bottom


def test_a_log_axis_puts_each_decade_the_same_distance_apart() -> None:
    chart = Chart("t", "x", "y", [Series("s", [(10, 1.0), (1000, 2.0)])], log_x=True)
    x10, _ = chart.to_px(10, 1.0)
    x100, _ = chart.to_px(100, 1.0)
    x1000, _ = chart.to_px(1000, 1.0)
    assert abs((x100 - x10) - (x1000 - x100)) <= 1


def test_a_linear_axis_starts_at_zero_with_round_ticks() -> None:
    axis = Axis([120.0, 930.0])
    assert axis.lo == 0.0
    assert axis.frac(0.0) == 0.0
    assert axis.ticks[0] == 0.0 and axis.ticks[-1] >= 930.0
    steps = {round(b - a, 6) for a, b in zip(axis.ticks, axis.ticks[1:], strict=False)}
    assert len(steps) == 1


def test_log_ticks_follow_one_two_five() -> None:
    axis = Axis([50.0, 4000.0], log=True)
    assert axis.ticks == [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]


def test_missing_values_leave_a_gap_instead_of_failing(tmp_path: Path) -> None:
    chart = Chart("t", "x", "y", [Series("s", [(1, 1.0), (2, math.nan), (3, 3.0)])])
    chart.save(tmp_path / "gap.png")
    with Image.open(tmp_path / "gap.png") as img:
        assert img.convert("RGB").getpixel(chart.to_px(3, 3.0)) == chart.colour(0)


def phase(p99: float, max_rps: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": 100.0, "p50_ms": p99 / 3, "p99_ms": p99, "errors": 0}
    if max_rps is not None:
        out["max_rps"] = max_rps
    return out


def test_the_benchmark_charts_are_written_for_the_sweeps_there_are(tmp_path: Path) -> None:
    point = {
        "settings": {"pool_size": 8},
        "scenarios": {"profile_cached": phase(4.0), "profile_uncached": phase(9.0, 800.0)},
    }
    sweeps = {
        "pool_size": [point, {**point, "settings": {"pool_size": 32}}, {"error": "x"}],
        "latency_vs_rate": [phase(3.0), {**phase(5.0), "rate": 200.0}],
    }
    names = plots.write_plots(sweeps, tmp_path)
    assert names == ["latency_vs_rate.png", "throughput_vs_pool.png", "p99_vs_pool.png"]
    for name in names:
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG"
    assert plots.write_plots({"pool_size": [{"error": "x"}]}, tmp_path / "none") == []


def test_a_narrow_log_axis_gets_finer_ticks() -> None:
    assert Axis([3.0, 9.5], log=True).ticks == [3.0, 4.0, 5.0, 7.0, 10.0]
