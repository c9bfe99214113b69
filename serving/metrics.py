"""Prometheus metrics of the model server (``GET /monitoring/prometheus/metrics``, TF Serving's path)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
disable_created_metrics()  # the *_created series only add noise here

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class ServerMetrics:
    """One registry per app (tests run several apps in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gf_serving_requests", "Requests by model, API and HTTP status code",
            ["model", "api", "code"], registry=self.registry,
        )
        self.errors = Counter(
            "gf_serving_errors", "Requests answered with an error, by model, API and HTTP status code",
            ["model", "api", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "gf_serving_request_latency_seconds", "Time from request start to response, by model and API",
            ["model", "api"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.instances = Counter(
            "gf_serving_predict_instances", "Instances (windows) predicted, by model", ["model"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "gf_serving_batch_rows", "Rows per TensorFlow call after request batching, by model", ["model"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.loaded = Gauge(
            "gf_serving_model_versions_loaded", "Loaded (AVAILABLE) versions per model", ["model"],
            registry=self.registry,
        )
        self.version = Gauge(
            "gf_serving_model_version", "The version each model serves by default", ["model"],
            registry=self.registry,
        )
        self._children: dict[tuple, tuple] = {}

    def observe(self, model: str, api: str, code: int, seconds: float) -> None:
        key = (model, api, code)
        children = self._children.get(key)
        if children is None:
            c = str(code)
            children = (
                self.requests.labels(model, api, c),
                self.errors.labels(model, api, c) if code >= 400 else None,
                self.latency.labels(model, api),
            )
            self._children[key] = children
        children[0].inc()
        if children[1] is not None:
            children[1].inc()
        children[2].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
