"""The end-of-watch chart: error rate, p95 and connection use over the watch, as a PNG (matplotlib, Agg)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import matplotlib

matplotlib.use("Agg")  # no display; must precede any pyplot import anywhere in the process

import matplotlib.dates as mdates  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bot.config import MonitoringConfig  # noqa: E402
from bot.runbook.monitoring import Readings  # noqa: E402

_NAN = float("nan")


def _series(samples: Sequence[Readings], value: Callable[[Readings], float | None], scale: float) -> list[float]:
    """Values with None as NaN, so lines break at gaps instead of bridging them."""
    out: list[float] = []
    for sample in samples:
        v = value(sample)
        out.append(v * scale if v is not None and math.isfinite(v) else _NAN)
    return out


def watch_chart(
    samples: Sequence[Readings],
    *,
    config: MonitoringConfig | None = None,
    title: str | None = None,
) -> bytes:
    """A PNG with three stacked panels (error rate %, p95 ms, connections %), thresholds as dashed lines.

    Missing readings leave gaps; one sample is drawn as points. Built on a bare Figure (no pyplot state), so it
    is safe to call from worker threads.
    """
    config = config or MonitoringConfig()
    ordered = sorted(samples, key=lambda s: s.taken_at)
    times = [s.taken_at.astimezone(UTC) for s in ordered]
    panels: list[tuple[str, list[float], list[tuple[float, str, str]]]] = [
        ("Error rate (%)", _series(ordered, lambda s: s.worst_error_rate, 100.0),
         [(config.error_rate_warn * 100, "#e0a000", f"warn {config.error_rate_warn * 100:g} %"),
          (config.error_rate_page * 100, "#d62728", f"page {config.error_rate_page * 100:g} %")]),
        ("p95 response (ms)", _series(ordered, lambda s: s.p95_ms, 1.0),
         [(config.p95_warn_ms, "#e0a000", f"warn {config.p95_warn_ms:g} ms"),
          (config.p95_alert_ms, "#d62728", f"alert {config.p95_alert_ms:g} ms")]),
        ("DB connections (%)", _series(ordered, lambda s: s.connection_use, 100.0),
         [(config.connections_warn * 100, "#e0a000", f"warn {config.connections_warn * 100:g} %"),
          (config.connections_alert * 100, "#d62728", f"alert {config.connections_alert * 100:g} %")]),
    ]

    figure = Figure(figsize=(10, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, 1, sharex=True)
    sparse = len(ordered) <= 3
    for ax, (label, values, thresholds) in zip(axes, panels, strict=True):
        if times:
            ax.plot(times, values, color="#1f77b4", linewidth=1.4, marker="o" if sparse else None, markersize=5)
            lone = _isolated(values)  # a reading between two gaps draws no line segment: mark it
            if lone and not sparse:
                ax.plot([times[i] for i in lone], [values[i] for i in lone], linestyle="none", marker="o",
                        markersize=3, color="#1f77b4")
        finite = [v for v in values if not math.isnan(v)]
        for level, color, name in thresholds:
            ax.axhline(level, color=color, linestyle="--", linewidth=1.0, label=name)
        top = max([*finite, *(level for level, _, _ in thresholds), 1e-9])
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
        if not finite:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")

    bottom = axes[-1]
    if times:
        start, end = times[0], times[-1]
        if end - start < timedelta(minutes=10):  # one sample, or a short run: give the axis some width
            start, end = start - timedelta(minutes=5), end + timedelta(minutes=5)
        bottom.set_xlim(start, end)
    # matplotlib.dates' locator and formatter constructors are untyped
    locator = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    bottom.set_xlabel("time (UTC)")
    figure.suptitle(title or _default_title(times), fontsize=12)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _isolated(values: Sequence[float]) -> list[int]:
    """Indexes of finite values whose neighbours are both missing (or absent)."""

    def missing(i: int) -> bool:
        return i < 0 or i >= len(values) or math.isnan(values[i])

    return [i for i in range(len(values)) if not missing(i) and missing(i - 1) and missing(i + 1)]


def _default_title(times: Sequence[datetime]) -> str:
    if not times:
        return "Post-migration watch (no samples)"
    if len(times) == 1:
        return f"Post-migration watch, one sample at {times[0]:%Y-%m-%d %H:%M} UTC"
    span = f"{times[0]:%Y-%m-%d %H:%M} – {times[-1]:%Y-%m-%d %H:%M} UTC"
    return f"Post-migration watch, {span} ({len(times)} sample{'s' if len(times) != 1 else ''})"
