"""Counters and histograms kept as plain numbers, turned into Prometheus families when `/metrics`
is scraped.

For what happens once per request or per run (requests, messages, dispatch latency). A
`prometheus_client` child takes a lock for every update, and a `.labels(...)` lookup costs more
than the update; here an update is a dict lookup and an integer addition. The replica's one event
loop is their only writer, so nothing else is needed; a scrape reads them from the same loop.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class Buckets:
    """One histogram series: a count per bucket (not cumulative) and the sum. The last bound is
    +Inf (added when missing)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds if bounds and bounds[-1] == math.inf else (*bounds, math.inf)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds = self.counts, self.bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), running))
        return out


class CounterSeries:
    """A counter family (`{name}_total`), a number per label values."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Iterable[str], initial: Iterable[Labels] = ()) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.values: dict[Labels, float] = dict.fromkeys(initial, 0)

    def inc(self, key: Labels, amount: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, count in list(self.values.items()):
            family.add_metric(list(key), count)
        return family


class HistogramSeries:
    """A histogram family, a `Buckets` per label values."""

    __slots__ = ("bounds", "children", "doc", "labels", "name")

    def __init__(self, name: str, doc: str, labels: Iterable[str], bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, list(labels), bounds
        self.children: dict[Labels, Buckets] = {}

    def child(self, key: Labels) -> Buckets:
        buckets = self.children.get(key)
        if buckets is None:
            buckets = self.children[key] = Buckets(self.bounds)
        return buckets

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, buckets in list(self.children.items()):
            family.add_metric(list(key), buckets.cumulative(), buckets.total)
        return family


class SeriesCollector(Collector):
    """Registers plain series with a `CollectorRegistry`."""

    def __init__(self, *series: CounterSeries | HistogramSeries) -> None:
        self.series = series

    def collect(self) -> Iterator[Metric]:
        for series in self.series:
            yield series.family()
