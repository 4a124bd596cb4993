"""What every benchmark prints the same way: percentiles of a list of durations."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def quantiles(values: list[float], unit: float = 1000.0, suffix: str = "ms", digits: int = 0) -> str:
    """`p50 .. ms, p95 .. ms (n=..)` of durations in seconds."""
    p50, p95 = statistics.median(values) * unit, percentile(values, 0.95) * unit
    return f"p50 {p50:.{digits}f} {suffix}, p95 {p95:.{digits}f} {suffix} (n={len(values)})"
