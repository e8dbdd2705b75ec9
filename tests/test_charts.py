"""The end-of-watch chart is a real PNG for a full day of samples, one sample, gaps, and no data."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import matplotlib.image

from bot.config import MonitoringConfig
from bot.runbook.charts import watch_chart
from bot.runbook.monitoring import Readings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START = datetime(2026, 1, 6, 3, 0, tzinfo=UTC)


def decode(png: bytes) -> tuple[int, int]:
    """Height and width of the decoded image."""
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    return image.shape[0], image.shape[1]


class TestWatchChart:
    def test_day_of_samples_with_gaps(self) -> None:
        """288 five-minute samples, some readings missing, make a decodable PNG."""
        samples = []
        for i in range(288):
            samples.append(Readings(
                taken_at=START + timedelta(minutes=5 * i),
                error_rate=None if i % 50 == 7 else 0.002 + (0.07 if 100 <= i < 110 else 0.0),
                error_rate_source="alb",
                p95_ms=None if i % 37 == 3 else 180.0 + (i % 24) * 10,
                connections=None if 200 <= i < 210 else 20 + i % 30,
                connection_limit=100,
            ))
        png = watch_chart(samples, config=MonitoringConfig())
        assert png.startswith(PNG_MAGIC)
        height, width = decode(png)
        assert height > 300 and width > 500

    def test_single_sample_with_gaps(self) -> None:
        """One sample with only some readings still renders."""
        png = watch_chart([Readings(taken_at=START, p95_ms=420.0, unavailable={"error_rate": "x"})])
        assert png.startswith(PNG_MAGIC) and decode(png)[0] > 0

    def test_no_samples(self) -> None:
        """An empty watch renders an empty chart rather than failing."""
        assert watch_chart([]).startswith(PNG_MAGIC)
