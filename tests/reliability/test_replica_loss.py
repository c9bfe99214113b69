"""Reliability: losing a model-server replica behind the gateway loses no request."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from serving.launch import free_port, spawn_server
from tests.serving_fixtures import CONTRACT_MODEL, POLL_SECONDS, requires_nginx, window_body


@requires_nginx
def test_dead_upstream_fails_over(config, extra_gateway, stack):
    dead = f"127.0.0.1:{free_port()}"
    ups = {pid: [dead, f"127.0.0.1:{stack.servers[0].port}"] for pid in config.patient_ids}
    g = extra_gateway(ups, rate=None)
    with httpx.Client() as c:
        codes = [c.post(f"{g.url}/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict", content=window_body()).status_code
                 for _ in range(20)]
    assert codes == [200] * 20
    log = (g.workdir / "logs" / "access.log")
    g.process.send_signal(1)  # SIGHUP reopens/flushes; the buffer flushes within 1 s anyway
    time.sleep(1.2)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(dead in r["upstream"] for r in records), "nginx never tried the dead replica"


@requires_nginx
def test_killing_a_replica_loses_no_request(stack, gw, serving_models, models_config_file):
    """A stream of requests through nginx while one of the two replicas is SIGKILLed: all answered 200."""
    url = f"/{CONTRACT_MODEL}/v1/models/{CONTRACT_MODEL}:predict"
    stop = threading.Event()
    results: list[int] = []
    lock = threading.Lock()

    def stream():
        with httpx.Client(base_url=stack.gateway_url, timeout=30) as c:
            while not stop.is_set():
                try:
                    code = c.post(url, content=window_body(3)).status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with lock:
                    results.append(code)

    victim = stack.servers[1]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(stream)
        time.sleep(1.0)
        before = len(results)
        victim.kill()
        time.sleep(2.0)
        stop.set()
    assert not victim.alive()
    assert before > 0 and len(results) > before + 10
    assert set(results) == {200}, {c: results.count(c) for c in set(results)}
    # put the replica back for the other tests
    stack.servers[1] = spawn_server(victim.port, models_dir=serving_models, model_config=models_config_file,
                                    poll_seconds=POLL_SECONDS, log_path=victim.log_path).wait_ready()
    r = httpx.post(f"{stack.servers[1].url}/v1/models/{CONTRACT_MODEL}:predict", content=window_body())
    assert r.status_code == 200
    assert np.isfinite(r.json()["predictions"]).all()
