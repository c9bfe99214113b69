"""`glucose-forecast serve` (make serve): foreground replicas + gateway, a dead replica is restarted,
Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from serving.launch import free_port, nginx_binary


def _pid_of(log, after: int = 0) -> int | None:
    if not log.is_file():
        return None
    pids = [int(p) for p in re.findall(r"model server on http://\S+ \(pid (\d+)\)", log.read_text())]
    pids = [p for p in pids if p != after]
    return pids[-1] if pids else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
def test_serve_restarts_a_dead_replica_and_stops_on_ctrl_c(serving_models, tmp_path):
    ports = [free_port(), free_port()]
    gw = free_port()
    work = tmp_path / "serve"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--models-dir", str(serving_models), "--server-ports",
         ",".join(map(str, ports)), "--gateway-port", str(gw), "--workdir", str(work), "--poll-seconds", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{gw}/hupa0002p/v1/models/hupa0002p"

        def up():
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None and pytest.fail(proc.stdout.read())

        _wait(up, 180, "the gateway")
        first = _pid_of(work / "server-1.log")
        assert first and _alive(first)
        os.kill(first, signal.SIGKILL)
        # the gateway keeps answering from the other replica while serve restarts this one
        assert httpx.get(url, timeout=10).status_code == 200
        second = _wait(lambda: _pid_of(work / "server-1.log", after=first), 180, "the restarted replica")
        def replica_answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{ports[1]}/v1/models/hupa0002p", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(replica_answers, 180, "the restarted replica to answer")
        children = [_pid_of(work / "server-0.log"), second]
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "stopped" in out and f"127.0.0.1:{gw}" in out and "restarting" in out
        _wait(lambda: not any(_alive(p) for p in children), 20, "the replicas to exit")
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
