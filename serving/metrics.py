"""Prometheus metrics of the model server (``GET /monitoring/prometheus/metrics``, TF Serving's path).

The request path only bumps plain counters (no locks, no label look-ups: every update happens on the
event-loop thread); the Prometheus families are built when the endpoint is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, c in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            acc += c
            out.append((bound, acc))
        return out


class ServerMetrics:
    """Counters of one app (tests run several apps in one process, each with its own registry)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.instances: dict[str, int] = defaultdict(int)
        self.batch_rows: dict[str, _Histogram] = {}
        self.gauges: Callable[[], dict[str, tuple[int, int]]] = dict  # model -> (loaded versions, version)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    # ------------------------------------------------------------------------- request path
    def observe(self, model: str, api: str, code: int, seconds: float) -> None:
        self.requests[(model, api, code)] += 1
        hist = self.latency.get((model, api))
        if hist is None:
            hist = self.latency[(model, api)] = _Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def count_instances(self, model: str, rows: int) -> None:
        self.instances[model] += rows

    def batch_observer(self, model: str) -> Callable[[int], None]:
        hist = self.batch_rows.get(model)
        if hist is None:
            hist = self.batch_rows[model] = _Histogram(BATCH_BUCKETS)
        return hist.observe

    # ------------------------------------------------------------------------------- scrape
    def collect(self) -> Iterator:
        req = CounterMetricFamily("gf_serving_requests", "Requests by model, API and HTTP status code",
                                  labels=["model", "api", "code"])
        err = CounterMetricFamily("gf_serving_errors",
                                  "Requests answered with an error, by model, API and HTTP status code",
                                  labels=["model", "api", "code"])
        for (model, api, code), n in sorted(self.requests.items()):
            req.add_metric([model, api, str(code)], n)
            if code >= 400:
                err.add_metric([model, api, str(code)], n)
        lat = HistogramMetricFamily("gf_serving_request_latency_seconds",
                                    "Time from request start to response, by model and API", labels=["model", "api"])
        for (model, api), h in sorted(self.latency.items()):
            lat.add_metric([model, api], h.buckets(), h.total)
        inst = CounterMetricFamily("gf_serving_predict_instances", "Instances (windows) predicted, by model",
                                   labels=["model"])
        for model, n in sorted(self.instances.items()):
            inst.add_metric([model], n)
        rows = HistogramMetricFamily("gf_serving_batch_rows",
                                     "Rows per model call (TFLite or TensorFlow) after request batching, by model", labels=["model"])
        for model, h in sorted(self.batch_rows.items()):
            rows.add_metric([model], h.buckets(), h.total)
        loaded = GaugeMetricFamily("gf_serving_model_versions_loaded", "Loaded (AVAILABLE) versions per model",
                                   labels=["model"])
        version = GaugeMetricFamily("gf_serving_model_version", "The version each model serves by default",
                                    labels=["model"])
        for model, (n, v) in sorted(self.gauges().items()):
            loaded.add_metric([model], n)
            if v:
                version.add_metric([model], v)
        yield from (req, err, lat, inst, rows, loaded, version)

    def render(self) -> bytes:
        return generate_latest(self.registry)
