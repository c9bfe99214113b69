"""Reliability: load from concurrent clients through the gateway, bounded in count and time: zero errors."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from tests.serving_fixtures import CONTRACT_MODEL, requires_nginx, window_body

CLIENTS = 16
REQUESTS_PER_CLIENT = 60


@requires_nginx
def test_concurrent_clients_get_no_errors(stack):
    url = f"{stack.gateway_url}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict"

    def client(i: int) -> list[tuple[int, int]]:
        out = []
        with httpx.Client(timeout=30) as c:
            for k in range(REQUESTS_PER_CLIENT):
                n = 1 + (i + k) % 5  # mixed batch sizes
                r = c.post(url, content=window_body(n, value=100.0 + i))
                ok = r.status_code == 200 and len(r.json()["predictions"]) == n
                out.append((r.status_code, int(ok and bool(np.isfinite(r.json()["predictions"]).all()))))
        return out

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [x for chunk in pool.map(client, range(CLIENTS)) for x in chunk]
    assert time.monotonic() - started < 120
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    assert all(code == 200 and ok for code, ok in results), {c: sum(1 for x, _ in results if x == c) for c, _ in results}
