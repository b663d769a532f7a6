"""``sltrader bench --plot``: one picture of a bench, read at a glance.

Top: per figure, each plugin set's ratio against ``none``. The dot is the median of the
set's repeats over the median of ``none``'s (the table's ratio); the whisker spans each
repeat of the set over that same ``none`` median (min to max); the grey band is ``none``'s
own repeats over its median, the noise floor. Green is an improvement, red a regression,
by the figure's ``better`` (:mod:`sltrader_plugins.host.figures`).

Bottom: scan wall time per cycle for ``none`` and ``all`` (else the last other set), the
median of each cycle over the repeats, with the scans of stale series (the first scan and
those after a base candle close) marked.

matplotlib is an optional extra (``sltrader-plugins[plot]``), imported only here, only when
a plot is drawn; no plugin needs it.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from sltrader_plugins.host.figures import Figure, figures

#: The figures of the top panel, in drawing order.
PLOT_FIGURES = (
    "scan_stale_s",
    "scan_fresh_s",
    "model_s_per_prediction",
    "feature_build_s",
    "feature_alloc_bytes_per_build",
    "cache_hit_rate",
    "exchange_requests",
    "rss_peak_bytes",
)

BASE = "none"
INSTALL_HINT = "python3 -m pip install 'sltrader-plugins[plot]'"

GREEN, RED, NEUTRAL, BAND = "#1a9850", "#d73027", "#555555", "#d9d9d9"
#: ratios that print as x1.00 are neither better nor worse
SAME = 0.005


class PlotUnavailable(ImportError):
    """matplotlib is not installed: the message says how to install it."""


@attrs.frozen
class Ratio:
    """One set's figure against ``none``: what the top panel draws.

    :ivar median: median of the set's repeats / median of ``none``'s repeats.
    :ivar low: the set's smallest repeat / median of ``none``.
    :ivar high: the set's largest repeat / median of ``none``.
    :ivar improved: ``True`` better, ``False`` worse, ``None`` neither (x1.00, or the
        figure has no better direction).
    """

    median: float
    low: float
    high: float
    improved: bool | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _repeats(result: Mapping[str, Any], name: str, key: str) -> list[float]:
    """The set's value of ``key`` in each repeat (its median alone for a JSON without runs)."""
    rows = result.get("runs", {}).get(name) or [result.get("sets", {}).get(name, {})]
    return [v for v in (_number(row.get(key)) for row in rows) if v is not None]


def _median(result: Mapping[str, Any], name: str, key: str) -> float | None:
    """The set's median of ``key`` as the bench wrote it, else over its repeats."""
    median = _number(result.get("sets", {}).get(name, {}).get(key))
    if median is None:
        values = _repeats(result, name, key)
        median = statistics.median(values) if values else None
    return median


def _improved(ratio: float, fig: Figure) -> bool | None:
    if fig.better is None or abs(ratio - 1.0) < SAME:
        return None
    return (ratio < 1.0) == (fig.better == "lower")


def plot_figures() -> dict[str, Figure]:
    """The top panel's figures with their definitions, in drawing order."""
    every = figures()
    return {name: every[name] for name in PLOT_FIGURES}


def bench_ratios(result: Mapping[str, Any]) -> dict[str, dict[str, Ratio]]:
    """``{figure: {set: Ratio}}``: the numbers of the top panel.

    ``none`` is in each figure's row too (median 1, its repeats' spread). A figure is left
    out when ``none`` has no non-zero value for it, a set when it has no value.
    """
    sets: Mapping[str, Mapping[str, Any]] = result.get("sets", {})
    if BASE not in sets:
        return {}
    out: dict[str, dict[str, Ratio]] = {}
    for key, fig in plot_figures().items():
        reference = _median(result, BASE, key)
        if not reference:
            continue
        row = {}
        for name in sets:
            median = _median(result, name, key)
            if median is None:
                continue
            values = _repeats(result, name, key) or [median]
            ratio = median / reference
            row[name] = Ratio(
                ratio,
                min(values) / reference,
                max(values) / reference,
                None if name == BASE else _improved(ratio, fig),
            )
        out[key] = row
    return out


@attrs.frozen
class Series:
    """One set's scan wall time per cycle: the median of each cycle over the repeats."""

    name: str
    seconds: list[float]
    low: list[float]
    high: list[float]
    stale: list[bool]


def scan_series(result: Mapping[str, Any], name: str) -> Series | None:
    """The bottom panel's line of one set (``None`` if the JSON has no scans for it).

    Cycles are cut to the shortest repeat; a cycle is stale if it was in any repeat (it is
    in all of them: candle closes depend on the simulated clock only).
    """
    repeats = [r for r in result.get("scans", {}).get(name, []) if r.get("scan_times_s")]
    if not repeats:
        return None
    cycles = min(len(r["scan_times_s"]) for r in repeats)
    per_cycle = [[r["scan_times_s"][i] for r in repeats] for i in range(cycles)]
    stale = [
        any(i < len(r.get("stale", [])) and r["stale"][i] for r in repeats) for i in range(cycles)
    ]
    return Series(
        name,
        [statistics.median(c) for c in per_cycle],
        [min(c) for c in per_cycle],
        [max(c) for c in per_cycle],
        stale,
    )


def compared_sets(result: Mapping[str, Any]) -> list[str]:
    """The bottom panel's sets: ``none`` and ``all``, else the last other set listed."""
    names = [n for n in result.get("sets", {}) if n in result.get("scans", {})]
    others = [n for n in names if n != BASE]
    chosen = ([BASE] if BASE in names else []) + (["all"] if "all" in others else others[-1:])
    return chosen


def title_of(key: str) -> str:
    """A figure's label without its unit; a sub-row's (indented) label after its parent's."""
    parent = ""
    for name, fig in figures().items():
        if not fig.label.startswith(" "):
            parent = _unitless(fig.label)
        if name == key:
            label = _unitless(fig.label)
            return f"{parent} {label}" if fig.label.startswith(" ") else label
    raise KeyError(key)


def _unitless(label: str) -> str:
    label = label.strip()
    if label.endswith(")") and " (" in label:
        label = label[: label.rindex(" (")]
    return label


def readable(value: float, fig: Figure) -> str:
    """An absolute value in a unit a person reads (ms, µs, MiB...)."""
    if fig.unit == "s":
        for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(value) >= scale or unit == "ns":
                return f"{value / scale:.3g} {unit}"
    if fig.unit == "bytes":
        for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")):
            if abs(value) >= scale or unit == "B":
                return f"{value / scale:.3g} {unit}"
    return format(value, fig.fmt)


def _matplotlib() -> tuple[Any, Any]:
    """matplotlib's figure and its Agg canvas: no pyplot, no global backend switched."""
    try:
        import matplotlib  # noqa: F401  (the package first: a stub left in sys.modules fails)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as Canvas
    except ImportError as exc:
        raise PlotUnavailable(
            f"plotting needs matplotlib, an optional extra: {INSTALL_HINT}"
        ) from exc
    return Canvas, FigureCanvasAgg


def plot_bench(result: Mapping[str, Any], path: Path) -> None:
    """Draw a bench's JSON (``sltrader bench --json``) as one PNG (or any format by suffix).

    :raises PlotUnavailable: matplotlib is not installed.
    """
    Canvas, FigureCanvasAgg = _matplotlib()
    ratios = bench_ratios(result)
    # the JSON sorts the sets by name: single plugins first, then combinations, ``all`` last
    names = [n for n in result.get("sets", {}) if n != BASE]
    order = sorted(names, key=lambda n: (n == "all", "+" in n, n))
    defined = plot_figures()
    shown = [k for k in PLOT_FIGURES if any(n in ratios.get(k, {}) for n in order)]

    columns = 4
    rows = max(1, math.ceil(len(shown) / columns))
    row_height = 1.15 + 0.55 * max(1, len(order))
    top, bottom = 0.7 + rows * row_height, 5.0
    fig = Canvas(figsize=(17, 1.3 + top + bottom), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(_title(result), fontsize=18, fontweight="bold")
    upper, lower = fig.subfigures(2, 1, height_ratios=[top, bottom], hspace=0.04)

    upper.suptitle(
        "Ratio against none, per figure.  Dot: median of the set's repeats / median of none's "
        "(the table's ratio).  Bar: min-max of each repeat / median of none.  Grey band: none's "
        "own repeats.\nGreen: better, red: worse, grey: the same (x1.00) or no better side.",
        fontsize=13,
        x=0.01,
        ha="left",
    )
    if shown:
        axes = upper.subplots(rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index < len(shown):
                key = shown[index]
                _ratio_axes(ax, key, defined[key], ratios[key], order, result)
            else:
                ax.set_axis_off()
    else:
        ax = upper.subplots()
        ax.set_axis_off()
        why = (
            "no `none` set: no ratios"
            if BASE not in result.get("sets", {})
            else ("only `none` ran: nothing to compare" if not order else "no figure to compare")
        )
        ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=16, transform=ax.transAxes)

    _scan_axes(lower.subplots(), result)
    _save(fig, Path(path))


def _save(fig: Any, path: Path) -> None:
    """A PNG in 256 colours (a third of the size, the same to the eye); other formats as is."""
    if path.suffix.lower() != ".png":
        fig.savefig(path)
        return
    try:
        from PIL import Image  # matplotlib's own dependency
    except ImportError:  # pragma: no cover - matplotlib requires Pillow
        fig.savefig(path)
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)  # median cut


def _title(result: Mapping[str, Any]) -> str:
    workload = result.get("workload", {})
    sets = result.get("sets", {})
    bits = [f"sltrader bench: {workload.get('size', '?')} workload"]
    if "universe" in workload and "cycles" in workload:
        bits.append(f"{workload['universe']} symbols x {workload['cycles']} scans")
    bits.append(f"{workload.get('repeats', '?')} repeats")
    if "python" in workload:
        bits.append(f"Python {workload['python']}")
    line = ", ".join(bits)
    members = {
        n: p for n, p in workload.get("sets", {}).items() if n not in (BASE,) and "," in str(p)
    }
    notes = [f"{n} = {'+'.join(str(p).split(','))}" for n, p in members.items()]
    digests = {str(s.get("decisions_digest", "")) for s in sets.values()}
    if len(sets) > 1 and len(digests) == 1:
        notes.append("decisions identical in every set")
    elif len(sets) > 1:
        notes.append("DECISIONS DIFFER between sets")
    return line + ("\n" + "; ".join(notes) if notes else "")


def _ratio_axes(
    ax: Any,
    key: str,
    fig_def: Figure,
    row: Mapping[str, Ratio],
    order: Sequence[str],
    result: Mapping[str, Any],
) -> None:
    names = [n for n in order if n in row]
    base = row.get(BASE)
    ys = list(range(len(order)))[::-1]  # the first set on top
    position = dict(zip(order, ys, strict=True))
    values = [1.0] + [v for n in names for v in (row[n].low, row[n].high)]
    if base is not None:
        values += [base.low, base.high]
    low, high = min(values), max(values)
    log = high / low >= 10.0 if low > 0 else False  # ratios that span a decade
    if base is not None and base.high > base.low:
        ax.axvspan(base.low, base.high, color=BAND, zorder=0)
    ax.axvline(1.0, color="black", linewidth=1.2, zorder=1)
    for name in names:
        r = row[name]
        y = position[name]
        color = {True: GREEN, False: RED, None: NEUTRAL}[r.improved]
        ax.plot([r.low, r.high], [y, y], color=color, linewidth=3, solid_capstyle="butt", zorder=2)
        ax.plot([r.low, r.low], [y - 0.18, y + 0.18], color=color, linewidth=2, zorder=2)
        ax.plot([r.high, r.high], [y - 0.18, y + 0.18], color=color, linewidth=2, zorder=2)
        ax.plot(r.median, y, "o", color=color, markersize=11, zorder=3)
        ax.annotate(
            f"x{r.median:.2f}",
            (r.median, y),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=12,
            fontweight="bold",
            color=color,
        )
    if log:
        ax.set_xscale("log")
        ax.set_xlim(low / 1.6, high * 1.6)
        ax.xaxis.set_major_formatter(_plain)
        ax.xaxis.set_minor_formatter(_blank)
    else:
        pad = max(0.02, (high - low) * 0.18)
        ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(-0.7, len(order) - 0.25)
    ax.set_yticks(ys, order, fontsize=13)
    for label in ax.get_yticklabels():
        if label.get_text() not in row:
            label.set_color("#aaaaaa")  # this set has no value for the figure
    ax.tick_params(axis="x", labelsize=11)
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    reference = _number(result.get("sets", {}).get(BASE, {}).get(key))
    better = {"lower": "lower is better", "higher": "higher is better"}.get(
        fig_def.better or "", "no better side"
    )
    subtitle = f"none = {readable(reference, fig_def)}, {better}" if reference else better
    ax.set_title(title_of(key), fontsize=14, fontweight="bold", loc="left", pad=22)
    ax.text(
        0,
        1.03,
        subtitle,
        fontsize=11,
        color="#444444",
        transform=ax.transAxes,
        va="bottom",
        ha="left",
    )


def _plain(value: float, _position: Any = None) -> str:
    return f"{value:g}"


def _blank(_value: float, _position: Any = None) -> str:
    return ""


def _scan_label(result: Mapping[str, Any], series: Series) -> str:
    """The set's name and its mean scan time after a close and of fresh series, as in the
    table."""
    every = figures()
    means = []
    for key, kind in (("scan_stale_s", "after a close"), ("scan_fresh_s", "fresh series")):
        value = _median(result, series.name, key)
        if value is not None:
            means.append(f"{kind} {readable(value, every[key])}")
    return f"{series.name} (mean scan: {', '.join(means)})" if means else series.name


def _scan_axes(ax: Any, result: Mapping[str, Any]) -> None:
    lines = [s for s in (scan_series(result, n) for n in compared_sets(result)) if s]
    base_timeframe = result.get("workload", {}).get("base_timeframe", "base")
    ax.set_title(
        "Scan wall time per cycle: median of the repeats (band: min-max).  "
        f"Triangles and grey lines: scans of stale series (the first, and each after a "
        f"{base_timeframe} candle close)",
        fontsize=13,
        loc="left",
    )
    if not lines:
        ax.text(
            0.5,
            0.5,
            "no scan times in this JSON",
            ha="center",
            va="center",
            fontsize=16,
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return
    colors = {BASE: "#4d4d4d"}
    palette = iter(["#2166ac", "#b2182b", "#762a83"])
    stale = lines[0].stale
    for cycle, is_stale in enumerate(stale, start=1):
        if is_stale:
            ax.axvline(cycle, color="#bbbbbb", linewidth=1.0, zorder=0)
    for series in lines:
        color = colors.get(series.name) or next(palette)
        xs = list(range(1, len(series.seconds) + 1))
        ms = [s * 1e3 for s in series.seconds]
        if len(series.low) and series.low != series.high:
            ax.fill_between(
                xs,
                [s * 1e3 for s in series.low],
                [s * 1e3 for s in series.high],
                color=color,
                alpha=0.15,
                linewidth=0,
            )
        stale_ms = [m for m, st in zip(ms, series.stale, strict=True) if st]
        ax.plot(xs, ms, color=color, linewidth=1.6, label=_scan_label(result, series), zorder=2)
        ax.plot(
            [x for x, st in zip(xs, series.stale, strict=True) if st],
            stale_ms,
            "v",
            color=color,
            markersize=8,
            zorder=3,
        )
    ax.set_xlabel("scan cycle", fontsize=13)
    ax.set_ylabel("scan wall time (ms)", fontsize=13)
    ax.set_xlim(0.5, max(len(s.seconds) for s in lines) + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    # The first scan (nothing cached) can dwarf the others: cut it, and say its time.
    rest = [v for s in lines for v in s.high[1:]]
    peak = max(max(s.high) for s in lines)
    if rest and peak > 1.6 * max(rest):
        peak = max(rest)
        first = ", ".join(f"{s.name} {s.seconds[0] * 1e3:.0f} ms" for s in lines)
        ax.annotate(
            f"\u2191 first scan (nothing cached): {first}",
            (1, peak * 1.5e3),
            xytext=(6, -2),
            textcoords="offset points",
            va="top",
            fontsize=12,
        )
    ax.set_ylim(0, peak * 1.5e3)  # room for the legend above the highest scan
    ax.tick_params(labelsize=11)
    ax.legend(fontsize=13, loc="upper right", frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
