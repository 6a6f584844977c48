"""``/metrics``: Prometheus text from prometheus-client, on a registry of the app's
own (two apps in one process never share or clash), read from the store at scrape
time through the query layer.

- ``exectrack_runs{source,status}``: runs started in the last 24 hours;
- ``exectrack_run_duration_seconds{source}``: durations of the finished runs among
  them (histogram). A window, not every run ever stored: a scrape costs what the
  window holds, not what the database holds (a count of a million runs took seconds);
- ``exectrack_open_runs{source}``, ``exectrack_open_runs_past_lease{source}``,
  ``exectrack_oldest_open_run_age_seconds{source}``;
- ``exectrack_hang_rate{source}``: over the runs started in the last 24 hours;
- ``exectrack_store_up``: 0 when the store could not be read (the figures of the
  database are then left out);
- this process: ``exectrack_dropped_writes_total``, ``exectrack_store_failures_total``
  and ``exectrack_write_queue`` (when the app serves a tracker),
  ``exectrack_server_store_errors_total`` and ``exectrack_server_streams`` (live
  change-feed clients).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exectrack import ExectrackError, query
from exectrack._log import get_logger

if TYPE_CHECKING:
    from ._state import ServerState

__all__ = ["BOUNDS_MS", "HANG_WINDOW", "metrics_text", "new_registry"]

log = get_logger(__name__)

BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)
HANG_WINDOW = timedelta(hours=24)


def _le(seconds: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``0.005``, ``+Inf``)."""
    return str(floatToGoString(seconds))  # type: ignore[no-untyped-call]


class _RunsCollector(Collector):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        up = True
        try:
            runs = list(self._runs())
        except ExectrackError as exc:  # the process's own figures still go out
            log.warning("exectrack server: /metrics could not read the store: %s", exc)
            self.state.store_errors += 1
            up, runs = False, []
        yield GaugeMetricFamily(
            "exectrack_store_up", "1 when this scrape could read the store", value=int(up)
        )
        yield from runs
        yield from self._process()

    def _runs(self) -> Iterator[Metric]:
        reader = self.state.reader
        reader.sync()
        store = reader.store
        now = reader.now()
        runs = GaugeMetricFamily(
            "exectrack_runs",
            "Runs started in the last 24 h by source and status",
            labels=["source", "status"],
        )
        durations = HistogramMetricFamily(
            "exectrack_run_duration_seconds",
            "Durations of the finished runs started in the last 24 h",
            labels=["source"],
        )
        opened = GaugeMetricFamily("exectrack_open_runs", "Runs still open", labels=["source"])
        window = query.make_filter(since=now - HANG_WINDOW)
        for s in query.source_stats(store, window, bounds=BOUNDS_MS, percentiles=False):
            for status, n in s.by_status.items():
                runs.add_metric([s.source, status], n)
            buckets = [
                (_le(bound / 1000), float(n)) for bound, n in zip(BOUNDS_MS, s.buckets, strict=True)
            ]
            buckets.append(("+Inf", float(s.duration_count)))
            durations.add_metric([s.source], buckets, s.duration_sum_ms / 1000)
        yield runs
        yield durations
        hang = GaugeMetricFamily(
            "exectrack_hang_rate",
            "(abandoned + open past lease) / started, runs started in the last 24 h",
            labels=["source"],
        )
        past = GaugeMetricFamily(
            "exectrack_open_runs_past_lease", "Open runs past their lease", labels=["source"]
        )
        oldest = GaugeMetricFamily(
            "exectrack_oldest_open_run_age_seconds", "Age of the oldest open run", labels=["source"]
        )
        for r in query.report(store, since=now - HANG_WINDOW, now=now).sources:
            opened.add_metric([r.source], r.open)  # every open run, however old
            if r.hang_rate is not None:
                hang.add_metric([r.source], r.hang_rate)
            past.add_metric([r.source], r.open_past_lease)
            if r.oldest_open_age_s is not None:
                oldest.add_metric([r.source], r.oldest_open_age_s)
        yield opened
        yield hang
        yield past
        yield oldest

    def _process(self) -> Iterator[Metric]:
        stats = self.state.reader.tracker_stats()
        if stats is not None:
            yield CounterMetricFamily(
                "exectrack_dropped_writes",
                "Runs this process dropped instead of writing (queue full, store down)",
                value=stats.dropped,
            )
            yield CounterMetricFamily(
                "exectrack_store_failures",
                "Store failures of this process's tracker",
                value=stats.failures,
            )
            yield GaugeMetricFamily(
                "exectrack_write_queue", "Writes queued in this process", value=stats.queued
            )
        yield CounterMetricFamily(
            "exectrack_server_store_errors",
            "Requests of this server that the store failed",
            value=self.state.store_errors,
        )
        yield GaugeMetricFamily(
            "exectrack_server_streams",
            "Change-feed streams this server is sending",
            value=self.state.streams,
        )


def new_registry(state: ServerState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunsCollector(state))
    return registry


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
