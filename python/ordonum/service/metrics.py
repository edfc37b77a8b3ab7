"""Prometheus text exposition, written by hand.

Why not ``prometheus_client``: it would be one more dependency for ~80 lines, its metrics take
a lock per observation and live in a process-global registry (awkward with one app per test).
Here every observation happens on the event-loop thread: one dict lookup, one ``bisect`` and
three additions per request. Exposed at ``/metrics`` (text format 0.0.4):

- ``ordonum_http_requests_total{method,route,status}``: counter;
- ``ordonum_http_request_duration_seconds{method,route}``: histogram;
- ``ordonum_store_<stat>``: gauges, one per entry of the backend's ``stats()`` (embedded:
  prescriptions, journal bytes, fsyncs, batches, records, failed, ...; PostgreSQL: pool
  size, idle connections, node, dispensations, conflicts, replays), read when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping

__all__ = ["BUCKETS", "Metrics"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


class Metrics:
    """Request counters and latency histograms, plus gauges read from a callback."""

    def __init__(self, gauges: Callable[[], Mapping[str, int | float]] | None = None) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        self._histograms: dict[tuple[str, str], _Histogram] = {}
        self.gauges = gauges

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        hkey = (method, route)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = _Histogram()
        histogram.counts[bisect_left(BUCKETS, seconds)] += 1
        histogram.sum += seconds

    def render(self) -> str:
        out = [
            "# HELP ordonum_http_requests_total HTTP requests by route template and status.",
            "# TYPE ordonum_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self._counts.items()):
            out.append(
                f'ordonum_http_requests_total{{method="{method}",route="{_label(route)}",'
                f'status="{status}"}} {n}'
            )
        out += [
            "# HELP ordonum_http_request_duration_seconds Time from request to response end.",
            "# TYPE ordonum_http_request_duration_seconds histogram",
        ]
        for (method, route), h in sorted(self._histograms.items()):
            labels = f'method="{method}",route="{_label(route)}"'
            cumulative = 0
            for bound, n in zip(BUCKETS, h.counts, strict=False):
                cumulative += n
                out.append(
                    f'ordonum_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} '
                    f"{cumulative}"
                )
            cumulative += h.counts[-1]
            out.append(
                f'ordonum_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {cumulative}'
            )
            out.append(f"ordonum_http_request_duration_seconds_sum{{{labels}}} {h.sum!r}")
            out.append(f"ordonum_http_request_duration_seconds_count{{{labels}}} {cumulative}")
        if self.gauges is not None:
            for name, value in sorted(self.gauges().items()):
                metric = f"ordonum_store_{name}"
                out.append(f"# TYPE {metric} gauge")
                out.append(f"{metric} {value}")
        return "\n".join(out) + "\n"
