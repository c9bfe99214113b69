"""Start model servers and the nginx gateway as subprocesses (tests, ``make serve``, ``make demo``).

* ``start_server(port, ...)``   one model-server replica; returns once it answers HTTP.
* ``start_gateway(config, upstreams, listen_port, workdir)``   real nginx with a rendered config, its
  logs, pid and temp files inside ``workdir``; works as root and as a normal user.
* ``local_stack(models_dir, ...)``   N replicas over one models directory behind the gateway.

Children run in their own session (Ctrl-C reaches only the parent, which stops them in order) and get
SIGTERM if the thread that started them dies (Linux ``PR_SET_PDEATHSIG``): start them from a thread that
lives as long as they should (the main thread, a test fixture).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, load_config

log = logging.getLogger("serving.launch")
LOOPBACK = "127.0.0.1"


def _child_setup() -> None:
    """In the child before exec: own session (Ctrl-C goes to the parent, which stops children in order)
    and, on Linux, SIGTERM when the parent dies, so nothing outlives a killed ``make serve``."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not Path(path).is_file():
        return ""
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


NGINX_ENV = "GF_NGINX"  # the nginx executable to use; "none" runs without the gateway


def nginx_binary() -> str | None:
    """The nginx executable (``$GF_NGINX``, else PATH, then /usr/sbin), or None without nginx."""
    chosen = os.environ.get(NGINX_ENV, "").strip()
    if chosen.lower() == "none":
        return None
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise ConfigError(f"{NGINX_ENV}={chosen!r} is not an executable file (or 'none' for no gateway)")
        return chosen
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


# ------------------------------------------------------------------------------------ model server
@dataclass
class ServerHandle:
    """A running model-server replica."""

    process: subprocess.Popen
    port: int
    log_path: Path
    host: str = LOOPBACK
    _log_file: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> ServerHandle:
        """Block until the server answers HTTP (its models are loaded by then)."""
        deadline = time.monotonic() + timeout
        probe = f"{self.url}/monitoring/prometheus/metrics"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"model server on port {self.port} exited with code {self.process.returncode}:\n"
                    + _tail(self.log_path)
                )
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"model server on port {self.port} did not answer in {timeout:.0f}s:\n"
                                   + _tail(self.log_path))
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM: in-flight requests finish), SIGKILL after ``timeout``."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """Hard kill (SIGKILL), as a crash would."""
        if self.alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def spawn_server(
    port: int,
    *,
    models_dir: str | Path | None = None,
    model_config: str | Path | None = None,
    poll_seconds: float = 2.0,
    log_path: str | Path | None = None,
    host: str = LOOPBACK,
    extra_args: Sequence[str] = (),
) -> ServerHandle:
    """Start a replica without waiting for it (see ``ServerHandle.wait_ready``)."""
    if models_dir is None and model_config is None:
        raise ValueError("start_server needs models_dir or model_config")
    port = port or free_port(host)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"gf-server-{port}-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "serving.server", "--host", host, "--port", str(port),
           "--poll-seconds", str(poll_seconds), "--access-log", "-"]
    if models_dir is not None:
        cmd += ["--models-dir", str(models_dir)]
    if model_config is not None:
        cmd += ["--model-config-file", str(model_config)]
    cmd += list(extra_args)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by the handle
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=_child_setup)
    log.info("model server starting on %s:%d (pid %d, log %s)", host, port, proc.pid, log_path)
    return ServerHandle(proc, port, log_path, host, log_file)


def start_server(
    port: int,
    *,
    models_dir: str | Path | None = None,
    model_config: str | Path | None = None,
    poll_seconds: float = 2.0,
    log_path: str | Path | None = None,
    host: str = LOOPBACK,
    extra_args: Sequence[str] = (),
    timeout: float = 180.0,
) -> ServerHandle:
    """Start one model-server replica (port 0: a free port) and wait until it answers."""
    handle = spawn_server(port, models_dir=models_dir, model_config=model_config, poll_seconds=poll_seconds,
                          log_path=log_path, host=host, extra_args=extra_args)
    return handle.wait_ready(timeout)


# ------------------------------------------------------------------------------------------ nginx
@dataclass
class GatewayHandle:
    """A running nginx gateway."""

    process: subprocess.Popen
    port: int
    workdir: Path
    conf: Path
    scheme: str = "http"
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.workdir / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "logs" / "access.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def reload(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful quit (SIGQUIT), then fast shutdown, then SIGKILL."""
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout / 2 if sig != signal.SIGKILL else timeout)
            except subprocess.TimeoutExpired:
                continue


def _wait_tcp(host: str, port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{what} did not listen on {host}:{port} in {timeout:.0f}s:\n{_tail(log)}")
        time.sleep(0.05)


def start_gateway(
    config: Config,
    upstreams: dict[str, list[str]],
    listen_port: int,
    workdir: str | Path,
    **render_options: Any,
) -> GatewayHandle:
    """Render the gateway into ``workdir/nginx.conf`` and run ``nginx -p workdir -c ... -g 'daemon off;'``.

    ``render_options`` go to ``serving.gateway.render_gateway`` (tls, rate, burst, body_limit, workers).
    """
    from serving.gateway import render_gateway

    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx)")
    workdir = Path(workdir).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    (workdir / "temp").mkdir(parents=True, exist_ok=True)
    port = listen_port or free_port()
    if os.geteuid() == 0:
        # Workers would otherwise switch to 'nobody', who may not reach a private workdir.
        render_options.setdefault("user", "root root")
    conf = workdir / "nginx.conf"
    conf.write_text(render_gateway(config, upstreams, port, **render_options))
    base = [binary, "-p", str(workdir), "-c", str(conf), "-e", "logs/error.log"]
    check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected {conf}:\n{check.stderr.strip()}")
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdin=subprocess.DEVNULL, preexec_fn=_child_setup,
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "logs" / "nginx.stderr", "ab"))  # noqa: SIM115
    _wait_tcp(LOOPBACK, port, proc, 15, "nginx", workdir / "logs" / "error.log")
    scheme = "https" if render_options.get("tls") else "http"
    log.info("nginx gateway on %s://%s:%d (pid %d, %s)", scheme, LOOPBACK, port, proc.pid, conf)
    return GatewayHandle(proc, port, workdir, conf, scheme)


# ------------------------------------------------------------------------------------ local stack
@dataclass
class LocalStack:
    """Replicas + gateway started by ``local_stack``."""

    config: Config
    servers: list[ServerHandle]
    gateway: GatewayHandle | None
    workdir: Path

    @property
    def server_urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def gateway_url(self) -> str | None:
        return self.gateway.url if self.gateway else None

    def predict_url(self, patient: str) -> str:
        """The public predict URL of a patient (through the gateway, else the first replica)."""
        if self.gateway_url:
            return f"{self.gateway_url}/{patient}/v1/models/{patient}:predict"
        return f"{self.server_urls[0]}/v1/models/{patient}:predict"

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for s in self.servers:
            s.stop()


@contextlib.contextmanager
def local_stack(
    models_dir: str | Path,
    config: Config | None = None,
    *,
    gateway_port: int = 0,
    replicas: int = 2,
    server_ports: Sequence[int] | None = None,
    poll_seconds: float = 2.0,
    model_config: str | Path | None = None,
    workdir: str | Path | None = None,
    gateway_options: dict[str, Any] | None = None,
    server_args: Sequence[str] = (),
) -> Iterator[LocalStack]:
    """``replicas`` model servers over ``models_dir`` behind nginx (``gateway_url`` None without nginx).

    Ports 0 (the default) are free ports picked at start. Everything stops when the block exits.
    """
    from serving.gateway import local_upstreams

    config = config or load_config()
    ports = list(server_ports) if server_ports else [0] * replicas
    own_workdir = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="gf-stack-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    servers: list[ServerHandle] = []
    gateway = None
    stack = None
    try:
        for i, port in enumerate(ports):
            servers.append(spawn_server(port, models_dir=models_dir, model_config=model_config,
                                        poll_seconds=poll_seconds, log_path=work / f"server-{i}.log",
                                        extra_args=server_args))
        for s in servers:
            s.wait_ready()
        if nginx_binary() is not None:
            upstreams = local_upstreams(config, [s.port for s in servers])
            gateway = start_gateway(config, upstreams, gateway_port, work / "nginx", **(gateway_options or {}))
        else:
            log.warning("nginx is not installed: no gateway, the replicas answer directly")
        stack = LocalStack(config, servers, gateway, work)
        yield stack
    finally:
        if gateway is not None:
            gateway.stop()
        for s in servers:
            s.stop()
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)
