"""Prometheus metrics. Under gunicorn PROMETHEUS_MULTIPROC_DIR is set (gunicorn_conf.py) and every
worker writes its samples there; /metrics merges them, so any worker answers for all of them."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("woof_gateway_requests", "HTTP requests answered by the gateway",
                   ["endpoint", "model", "status"])
LATENCY = Histogram("woof_gateway_request_seconds", "Time from request received to response ready",
                    ["endpoint", "model"], buckets=BUCKETS)
ERRORS = Counter("woof_gateway_errors", "Error responses by error code", ["endpoint", "model", "code"])
UPSTREAM = Histogram("woof_gateway_torchserve_seconds", "TorchServe prediction round trip", ["model"],
                     buckets=BUCKETS)
INFLIGHT = Gauge("woof_gateway_torchserve_inflight", "Predictions waiting on TorchServe now", ["model"],
                 multiprocess_mode="livesum")


def inflight(model: str) -> float:
    """Predictions of `model` in flight now, summed over every gateway worker process."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY.get_sample_value("woof_gateway_torchserve_inflight", {"model": model}) or 0.0
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return sum(s.value for family in registry.collect() if family.name == "woof_gateway_torchserve_inflight"
               for s in family.samples if s.labels.get("model") == model)


def render() -> tuple[bytes, str]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
