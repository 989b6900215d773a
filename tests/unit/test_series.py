"""`observability.series` gives the same samples as prometheus_client's own Counter and Histogram
for the same updates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from observability.metrics import LATENCY_BUCKETS
from observability.series import CounterSeries, HistogramSeries, SeriesCollector

OBSERVED = [("a", 0.0), ("a", 0.001), ("a", 0.0011), ("b", 0.3), ("a", 42.0), ("b", 1000.0), ("a", 0.01)]


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_plain_series_match_prometheus_clients_own() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("t_requests", "Requests.", ["op"], registry=theirs)
    histogram = Histogram("t_seconds", "Seconds.", ["op"], buckets=LATENCY_BUCKETS, registry=theirs)
    plain_counter = CounterSeries("t_requests", "Requests.", ["op"], initial=[("c",)])
    plain_histogram = HistogramSeries("t_seconds", "Seconds.", ["op"], LATENCY_BUCKETS)
    ours.register(SeriesCollector(plain_counter, plain_histogram))
    counter.labels("c")
    for op, seconds in OBSERVED:
        counter.labels(op).inc()
        histogram.labels(op).observe(seconds)
        plain_counter.inc((op,))
    plain_histogram.child(("a",)).observe_many(s for op, s in OBSERVED if op == "a")
    for seconds in (s for op, s in OBSERVED if op == "b"):
        plain_histogram.child(("b",)).observe(seconds)

    expected = samples(theirs)
    assert samples(ours) == expected
    assert expected[("t_requests_total", frozenset({("op", "a")}))] == 5
    assert expected[("t_requests_total", frozenset({("op", "c")}))] == 0
    assert expected[("t_seconds_bucket", frozenset({("op", "a"), ("le", "0.001")}))] == 2  # 0.0 and 0.001
    assert expected[("t_seconds_bucket", frozenset({("op", "b"), ("le", "+Inf")}))] == 2
    assert expected[("t_seconds_sum", frozenset({("op", "b")}))] == 1000.3
