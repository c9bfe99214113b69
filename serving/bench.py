"""The serving benchmark (``make bench`` → ``run_serving_bench``; also ``python -m serving.bench``).

Measured on this machine, loopback only:

* requests/s, p50, p99 for 1-window and 1,000-window predicts, straight to one replica and through the
  nginx gateway (two replicas), with ``wrk`` (closed loop, 32 / 8 connections);
* nginx answering a static response with the same worker count: the machine's ceiling, and the ratios;
* one 10,000-window request end to end (client-side wall time, body pre-encoded);
* p50/p99 at a fixed 1,000 requests/s through the gateway (open loop: latency counted from the
  scheduled send time, so a stalled server cannot hide its queueing);
* batching on vs off (full mode);
* resident memory of a replica: with no model, and with six models (full mode), hence per model.

Rate limiting is disabled on the benchmark gateway (one client address would hit it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, load_config

log = logging.getLogger("serving.bench")

TARGETS = {
    "gateway_1_rps": 12_000,  # single-window predicts through nginx, 32 connections
    "large_10000_ms": 50.0,  # one 10,000-window request end to end
    "fixed_1000_p99_ms": 10.0,  # p99 at 1,000 requests/s
    "six_models_rss_mb": 1536.0,  # one replica serving six models
}

WRK_SCRIPT = r"""
wrk.method = "%(method)s"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("%(body)s", "rb")
if f then wrk.body = f:read("*a"); f:close() end
done = function(summary, latency, requests)
  io.write(string.format(
    'GFJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,' ..
    '"p50_us":%%.1f,"p90_us":%%.1f,"p99_us":%%.1f,"mean_us":%%.1f,"max_us":%%.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def windows_body(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    g = 120 + rng.normal(0, 30, (n, 15))
    ins = rng.choice([0.0, 0.0, 0.5, 2.0], size=(n, 15))
    carbs = rng.choice([0.0] * 9 + [40.0], size=(n, 15))
    X = np.stack([g, ins, carbs], axis=-1).round(1)
    return json.dumps({"instances": X.tolist()}, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------- wrk
def run_wrk(url: str, body: bytes | None, *, connections: int, seconds: float, workdir: Path,
            threads: int = 1) -> dict[str, Any]:
    """Closed-loop load with wrk; requests/s and latency percentiles (ms)."""
    body_file = workdir / f"body-{len(body or b'')}.json"
    if body is not None:
        body_file.write_bytes(body)
    script = workdir / f"wrk-{'post' if body else 'get'}-{len(body or b'')}.lua"
    script.write_text(WRK_SCRIPT % {"method": "POST" if body is not None else "GET",
                                    "body": body_file if body is not None else "/nonexistent"})
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s",
           "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("GFJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    r = json.loads(line[len("GFJSON "):])
    secs = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {
        "rps": round(r["requests"] / secs, 1),
        "p50_ms": round(r["p50_us"] / 1e3, 3),
        "p99_ms": round(r["p99_us"] / 1e3, 3),
        "mean_ms": round(r["mean_us"] / 1e3, 3),
        "requests": r["requests"],
        "errors": errors,
        "non_2xx": r["status"],
        "connections": connections,
        "seconds": round(secs, 2),
    }


# ------------------------------------------------------------------------------ async HTTP client
async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _request_bytes(host: str, port: int, path: str, body: bytes | None) -> bytes:
    method = "POST" if body is not None else "GET"
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body or b'')}\r\n\r\n").encode()
    return head + (body or b"")


async def _fixed_rate(host: str, port: int, path: str, body: bytes, rate: float, seconds: float,
                      connections: int) -> dict[str, Any]:
    """Open-loop load: request i is due at t0 + i/rate; latency counts from that due time."""
    request = _request_bytes(host, port, path, body)
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    next_i = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2

    async def worker() -> None:
        nonlocal next_i, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                i = next_i
                if i >= total:
                    return
                next_i += 1
                due = t0 + i / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    status = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(loop.time() - due)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - start - 0.2
    lat = np.array(latencies) * 1e3
    return {
        "target_rps": rate,
        "achieved_rps": round(len(latencies) / max(wall, 1e-9), 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "max_ms": round(float(lat.max()), 3) if len(lat) else None,
        "requests": len(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def _closed_loop(host: str, port: int, path: str, body: bytes | None, seconds: float,
                       connections: int) -> dict[str, Any]:
    """Fallback when wrk is missing: closed-loop load from asyncio."""
    request = _request_bytes(host, port, path, body)
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while loop.time() < end:
            t = loop.time()
            try:
                status = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            if status < 400:
                latencies.append(loop.time() - t)
            else:
                errors += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    return {"rps": round(len(lat) / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3), "mean_ms": round(float(lat.mean()), 3),
            "requests": len(lat), "errors": errors, "non_2xx": 0, "connections": connections,
            "seconds": round(wall, 2)}


def _split(url: str) -> tuple[str, int, str]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or 80, u.path


def load(url: str, body: bytes | None, *, connections: int, seconds: float, workdir: Path) -> dict[str, Any]:
    if shutil.which("wrk"):
        return run_wrk(url, body, connections=connections, seconds=seconds, workdir=workdir)
    host, port, path = _split(url)
    return asyncio.run(_closed_loop(host, port, path, body, seconds, connections))


def single_requests(url: str, body: bytes, n: int) -> dict[str, Any]:
    """Sequential requests on one keep-alive connection; wall time per request (ms)."""
    import http.client

    host, port, path = _split(url)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    times = []
    try:
        for _ in range(n + 1):
            t = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status} {data[:200]!r}")
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        conn.close()
    ms = np.array(times[1:])  # the first one warms the connection
    return {"requests": n, "p50_ms": round(float(np.median(ms)), 2), "min_ms": round(float(ms.min()), 2),
            "max_ms": round(float(ms.max()), 2), "body_bytes": len(body)}


# ----------------------------------------------------------------------------------------- memory
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _six_model_dir(config: Config, models_dir: Path, dest: Path) -> int:
    """Six (configured) model names, each pointing at an existing version (symlinks)."""
    sources = [p for p in sorted(Path(models_dir).iterdir()) if p.is_dir() and any(c.name.isdigit() for c in p.iterdir())]
    count = 0
    for i, pid in enumerate(config.patient_ids[:6]):
        src_model = next((p for p in sources if p.name == pid), sources[i % len(sources)])
        version = max(int(c.name) for c in src_model.iterdir() if c.name.isdigit())
        (dest / pid).mkdir(parents=True, exist_ok=True)
        os.symlink(src_model / str(version), dest / pid / str(version))
        count += 1
    return count


def memory_figures(config: Config, models_dir: Path, work: Path) -> dict[str, Any]:
    """RSS of a replica serving one model and six models (each warmed by a few predicts).

    TensorFlow is imported when the first model loads, so the runtime's share is the 1-model figure
    minus one model's increment.
    """
    from serving.launch import start_server

    six = work / "six-models"
    n = _six_model_dir(config, models_dir, six)
    one = work / "one-model"
    one.mkdir()
    first = config.patient_ids[0]
    os.symlink(six / first, one / first)
    body = windows_body(1)
    out: dict[str, Any] = {}
    for key, mdir, names in (("one_model_rss_mb", one, [first]), ("six_models_rss_mb", six, config.patient_ids[:n])):
        srv = start_server(0, models_dir=mdir, poll_seconds=0, log_path=work / f"mem-{key}.log")
        try:
            for pid in names:
                single_requests(f"{srv.url}/v1/models/{pid}:predict", body, 3)
            out[key] = rss_mb(srv.pid)
        finally:
            srv.stop()
    out["models"] = n
    out["per_model_mb"] = round((out["six_models_rss_mb"] - out["one_model_rss_mb"]) / max(n - 1, 1), 1)
    out["runtime_mb"] = round(out["one_model_rss_mb"] - out["per_model_mb"], 1)
    return out


# ------------------------------------------------------------------------------------------ nginx
def start_static_nginx(work: Path, workers: int | str) -> tuple[subprocess.Popen, int]:
    """nginx answering a fixed JSON body: the machine's HTTP ceiling."""
    from serving.launch import _wait_tcp, free_port, nginx_binary

    d = work / "static-nginx"
    (d / "logs").mkdir(parents=True)
    (d / "temp").mkdir()
    port = free_port()
    user = "user root root;" if os.geteuid() == 0 else ""
    (d / "nginx.conf").write_text(
        f"{user}\nworker_processes {workers};\npid nginx.pid;\nerror_log logs/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http { access_log off; client_body_temp_path temp/body; proxy_temp_path temp/proxy;\n"
        "  fastcgi_temp_path temp/fcgi; uwsgi_temp_path temp/uwsgi; scgi_temp_path temp/scgi;\n"
        "  keepalive_requests 1000000;\n"
        f"  server {{ listen 127.0.0.1:{port}; default_type application/json;\n"
        "    location / { return 200 '{\"predictions\":[123.456]}'; } } }\n"
    )
    proc = subprocess.Popen([nginx_binary(), "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "logs/error.log",
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_tcp("127.0.0.1", port, proc, 10, "static nginx", d / "logs" / "error.log")
    return proc, port


# ------------------------------------------------------------------------------------------- main
def _pick_patient(config: Config, models_dir: Path) -> str:
    from pipeline.export import latest_version

    for pid in config.patient_ids:
        if latest_version(models_dir, pid) is not None:
            return pid
    raise FileNotFoundError(f"no exported model for any configured patient in {models_dir}; run `make train`")


def run_serving_bench(config: Config, models_dir: str | Path, *, quick: bool = False) -> dict[str, Any]:
    """Run the serving benchmark and return its figures (see the module docstring)."""
    from serving.launch import local_stack, nginx_binary, start_server

    models_dir = Path(models_dir)
    pid = _pick_patient(config, models_dir)
    seconds = 2.0 if quick else 10.0
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gf-bench-"))
    workers = 1  # nginx workers: the two Python replicas need the other core(s)
    doc: dict[str, Any] = {
        "patient": pid,
        "quick": quick,
        "seconds_per_run": seconds,
        "load_generator": "wrk" if shutil.which("wrk") else "python-asyncio",
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "gateway_nginx_workers": workers,
    }
    one, thousand, big = windows_body(1), windows_body(1000, 1), windows_body(10_000, 2)
    try:
        static_proc = None
        if nginx_binary():
            static_proc, sport = start_static_nginx(work, workers)
            try:
                doc["static_nginx"] = load(f"http://127.0.0.1:{sport}/", None, connections=32, seconds=seconds,
                                           workdir=work)
                # the open-loop client's own latency floor (nginx answers in microseconds)
                doc["fixed_rate_1000_static"] = asyncio.run(
                    _fixed_rate("127.0.0.1", sport, "/", one, 1000.0, min(seconds, 3.0), 32))
            finally:
                static_proc.terminate()
                static_proc.wait(10)
        with local_stack(models_dir, config, replicas=2, poll_seconds=0, workdir=work / "stack",
                         gateway_options={"rate": None, "workers": workers}) as stack:
            direct = f"{stack.server_urls[0]}/v1/models/{pid}:predict"
            via = f"{stack.gateway_url}/{pid}/v1/models/{pid}:predict" if stack.gateway_url else None
            single_requests(direct, one, 20)  # warm up
            metrics_url = f"{stack.server_urls[0]}/monitoring/prometheus/metrics"
            before = _batch_counts(metrics_url, pid)
            doc["direct"] = {"1": load(direct, one, connections=32, seconds=seconds, workdir=work)}
            after = _batch_counts(metrics_url, pid)
            doc["mean_rows_per_tf_call_1_window"] = round((after[0] - before[0]) / max(after[1] - before[1], 1), 2)
            doc["direct"]["1000"] = load(direct, thousand, connections=8, seconds=seconds, workdir=work)
            if via:
                doc["gateway"] = {
                    "1": load(via, one, connections=32, seconds=seconds, workdir=work),
                    "1000": load(via, thousand, connections=8, seconds=seconds, workdir=work),
                }
            n_big = 3 if quick else 20
            doc["large_10000"] = {"direct": single_requests(direct, big, n_big)}
            if via:
                doc["large_10000"]["gateway"] = single_requests(via, big, n_big)
            host, port, path = _split(via or direct)
            doc["fixed_rate_1000"] = asyncio.run(_fixed_rate(host, port, path, one, 1000.0, seconds, 32))
            doc["fixed_rate_1000"]["via"] = "gateway" if via else "direct"
            doc["replica_rss_mb"] = [rss_mb(s.pid) for s in stack.servers]
            doc["replica_models_loaded"] = sum(1 for p in models_dir.iterdir() if p.is_dir())
        if not quick:
            srv = start_server(0, models_dir=models_dir, poll_seconds=0, extra_args=["--no-batching"],
                               log_path=work / "nobatch.log")
            try:
                url = f"{srv.url}/v1/models/{pid}:predict"
                single_requests(url, one, 20)
                off = load(url, one, connections=32, seconds=seconds, workdir=work)
            finally:
                srv.stop()
            on = doc["direct"]["1"]
            doc["batching"] = {"on_rps": on["rps"], "off_rps": off["rps"], "on_p99_ms": on["p99_ms"],
                               "off_p99_ms": off["p99_ms"], "speedup": round(on["rps"] / max(off["rps"], 1e-9), 2)}
            doc["memory"] = memory_figures(config, models_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _ratios_and_targets(doc)
    doc["wall_time_s"] = round(time.perf_counter() - started, 1)
    return doc


def _batch_counts(metrics_url: str, pid: str) -> tuple[float, float]:
    """(rows, model calls) so far, from the server's batch histogram."""
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f'gf_serving_batch_rows_sum{{model="{pid}"}}'):
            total = float(line.split()[-1])
        if line.startswith(f'gf_serving_batch_rows_count{{model="{pid}"}}'):
            count = float(line.split()[-1])
    return total, count


def _ratios_and_targets(doc: dict[str, Any]) -> None:
    static = doc.get("static_nginx", {}).get("rps")
    ratios = {}
    if static:
        ratios["direct_1_vs_static"] = round(doc["direct"]["1"]["rps"] / static, 4)
        if "gateway" in doc:
            ratios["gateway_1_vs_static"] = round(doc["gateway"]["1"]["rps"] / static, 4)
    if "gateway" in doc:
        ratios["gateway_vs_direct_1"] = round(doc["gateway"]["1"]["rps"] / doc["direct"]["1"]["rps"], 3)
        ratios["gateway_vs_direct_1000"] = round(doc["gateway"]["1000"]["rps"] / doc["direct"]["1000"]["rps"], 3)
    doc["ratios"] = ratios
    big = doc["large_10000"].get("gateway") or doc["large_10000"]["direct"]
    measured = {
        "gateway_1_rps": (doc.get("gateway") or doc["direct"])["1"]["rps"],
        "large_10000_ms": big["p50_ms"],
        "fixed_1000_p99_ms": doc["fixed_rate_1000"]["p99_ms"],
        "six_models_rss_mb": doc.get("memory", {}).get("six_models_rss_mb"),
    }
    targets = {}
    for key, target in TARGETS.items():
        value = measured[key]
        # A quick run's 2-second measurements are a smoke test, not evidence either way.
        judged = value is not None and not doc["quick"]
        met = (value >= target if key.endswith("rps") else value <= target) if judged else None
        targets[key] = {"target": target, "measured": value, "met": met}
    doc["targets"] = targets


def format_serving(doc: dict[str, Any]) -> str:
    """A markdown summary of ``run_serving_bench``'s result."""
    rows = ["| path | windows/request | connections | requests/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|"]

    def row(name: str, n: str, r: dict[str, Any]) -> None:
        rows.append(f"| {name} | {n} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
                    f"{r['errors'] + r.get('non_2xx', 0)} |")

    if "static_nginx" in doc:
        row("nginx static response (ceiling)", "-", doc["static_nginx"])
    for where in ("direct", "gateway"):
        for n in ("1", "1000"):
            if where in doc:
                row("one replica, direct" if where == "direct" else "nginx gateway, 2 replicas", n, doc[where][n])
    out = ["\n".join(rows), ""]
    if doc.get("ratios"):
        out.append("Ratios: " + ", ".join(f"{k} {v}" for k, v in doc["ratios"].items()))
    big = doc["large_10000"]
    out.append("10,000-window request (end to end, p50/max ms): " + ", ".join(
        f"{k} {v['p50_ms']}/{v['max_ms']}" for k, v in big.items()))
    fr = doc["fixed_rate_1000"]
    out.append(f"Fixed 1,000 requests/s ({fr['via']}): achieved {fr['achieved_rps']}/s, p50 {fr['p50_ms']} ms, "
               f"p99 {fr['p99_ms']} ms, errors {fr['errors']}")
    if "fixed_rate_1000_static" in doc:
        c = doc["fixed_rate_1000_static"]
        out.append(f"  (same client against static nginx: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms: "
                   "the load generator's own floor on this machine)")
    if "batching" in doc:
        b = doc["batching"]
        out.append(f"Batching (1-window, direct): on {b['on_rps']:,.0f}/s vs off {b['off_rps']:,.0f}/s "
                   f"(x{b['speedup']}); mean rows per model call {doc.get('mean_rows_per_tf_call_1_window')}")
    if "memory" in doc:
        m = doc["memory"]
        out.append(f"Memory (RSS of one replica): 1 model {m['one_model_rss_mb']} MB, {m['models']} models "
                   f"{m['six_models_rss_mb']} MB: {m['per_model_mb']} MB per model on top of "
                   f"{m['runtime_mb']} MB for Python + TensorFlow")
    out.append(f"Replica RSS during the run: {doc.get('replica_rss_mb')} MB")
    out += ["", "| target | goal | measured | met |", "|---|---:|---:|---|"]
    unjudged = "not judged (quick run)" if doc["quick"] else "-"
    for k, t in doc["targets"].items():
        measured = "not measured" if t["measured"] is None else t["measured"]
        out.append(f"| {k} | {t['target']} | {measured} | {unjudged if t['met'] is None else t['met']} |")
    out.append(f"\n(load generator {doc['load_generator']}, {doc['seconds_per_run']} s per run, "
               f"load average at start {doc['machine']['load_avg_at_start']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m serving.bench", description="the serving benchmark")
    p.add_argument("--models-dir", type=Path, help="models directory (default: the config's)")
    p.add_argument("--quick", action="store_true", help="short runs (< 60 s)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()
    doc = run_serving_bench(config, args.models_dir or config.models_dir, quick=args.quick)
    print(format_serving(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
