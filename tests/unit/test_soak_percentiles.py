"""The soak report's percentiles stay inside the samples they summarise."""

from __future__ import annotations

from tests.reliability.soak import percentiles


def test_a_small_minute_with_one_slow_call_never_reports_a_p99_above_its_max() -> None:
    samples = [0.005] * 64 + [0.025]  # 65 calls, one of them 25 ms
    figures = percentiles(samples)
    assert figures["max"] == 25.0
    assert figures["p50"] == 5.0
    assert figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]


def test_one_sample_is_every_percentile() -> None:
    assert percentiles([0.002]) == {"p50": 2.0, "p95": 2.0, "p99": 2.0, "max": 2.0}
