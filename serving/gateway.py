"""The nginx gateway configuration, generated from the patient list and ``pipeline.routes``.

Each patient gets one ``location`` whose pattern is ``pipeline.routes.path_regex(patient)`` (the same
regex the Kubernetes Ingress uses, so there is one definition of the public URL space) and one
``upstream`` with its model-server replicas. Everything else answers 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, ConfigError
from pipeline.routes import path_regex

TEMPLATE = Path(__file__).with_name("nginx") / "nginx.conf.tmpl"
DEFAULT_RATE = "200r/s"  # per client address; `None` disables rate limiting
DEFAULT_BURST = 400
DEFAULT_BODY_LIMIT = "16m"  # a 10,000-window request is ~3 MB of JSON
_RATE_RE = re.compile(r"^\d+r/[sm]$")
_SIZE_RE = re.compile(r"^\d+[kKmMgG]?$")
_UPSTREAM_RE = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


@dataclass(frozen=True)
class TLS:
    """Certificate and key paths for ``listen ... ssl``."""

    cert: str
    key: str


def upstream_name(patient: str) -> str:
    return f"gf_{patient}"


def _check_upstreams(config: Config, upstreams: dict[str, list[str]]) -> None:
    unknown = sorted(set(upstreams) - set(config.patient_ids))
    if unknown:
        raise ConfigError(f"gateway upstreams for unknown patient(s) {unknown}; configured: {config.patient_ids}")
    for pid in config.patient_ids:
        servers = upstreams.get(pid)
        if not servers:
            raise ConfigError(f"gateway: no upstream server for patient {pid!r}")
        for s in servers:
            if not _UPSTREAM_RE.match(s):
                raise ConfigError(f"gateway: upstream {s!r} of patient {pid!r} is not host[:port]")


def render_gateway(
    config: Config,
    upstreams: dict[str, list[str]],
    listen_port: int,
    *,
    tls: TLS | dict | None = None,
    rate: str | None = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
    body_limit: str = DEFAULT_BODY_LIMIT,
    listen_host: str | None = "127.0.0.1",
    workers: int | str = "auto",
    user: str | None = None,
    log_to_stdout: bool = False,
    keepalive: int = 64,
) -> str:
    """The nginx.conf text. Relative paths (logs/, temp/, nginx.pid) are relative to ``nginx -p``."""
    _check_upstreams(config, upstreams)
    if not 0 < int(listen_port) < 65536:
        raise ConfigError(f"gateway listen port {listen_port} is not a TCP port")
    if rate is not None and not _RATE_RE.match(rate):
        raise ConfigError(f"gateway rate {rate!r}: use nginx syntax like '200r/s' or '600r/m'")
    if not _SIZE_RE.match(body_limit):
        raise ConfigError(f"gateway body limit {body_limit!r}: use nginx size syntax like '16m'")
    if isinstance(tls, dict):
        tls = TLS(**tls)

    upstream_blocks = []
    locations = []
    limit = f"            limit_req zone=gf_clients burst={burst} nodelay;\n" if rate else ""
    for pid in config.patient_ids:
        name = upstream_name(pid)
        servers = "".join(f"        server {s} max_fails=3 fail_timeout=5s;\n" for s in upstreams[pid])
        upstream_blocks.append(
            f"    upstream {name} {{\n        zone {name} 64k;\n{servers}"
            f"        keepalive {keepalive};\n        keepalive_timeout 60s;\n    }}\n"
        )
        locations.append(
            f"        # {pid}: /{pid}/v1/models/{pid}:predict, /metadata, status\n"
            f'        location ~ "{path_regex(pid)}" {{\n{limit}'
            f"            proxy_pass http://{name}$1;\n        }}\n"
        )
    addr = f"{listen_host}:{listen_port}" if listen_host else str(listen_port)
    if tls is not None:
        listen = (
            f"        listen {addr} ssl reuseport backlog=4096;\n"
            f"        ssl_certificate {tls.cert};\n        ssl_certificate_key {tls.key};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:gf_ssl:10m;\n"
        )
    else:
        listen = f"        listen {addr} reuseport backlog=4096;\n"
    rate_zone = (
        f"    limit_req_zone $binary_remote_addr zone=gf_clients:10m rate={rate};\n"
        "    limit_req_status 429;\n    limit_req_log_level warn;\n"
        if rate
        else "    # rate limiting disabled\n"
    )
    values = {
        "@@USER@@": f"user {user};" if user else "",
        "@@WORKERS@@": str(workers),
        "@@PID@@": "/tmp/nginx.pid" if log_to_stdout else "nginx.pid",
        "@@ERROR_LOG@@": "/dev/stderr" if log_to_stdout else "logs/error.log",
        "@@ACCESS_LOG@@": "/dev/stdout gf_json" if log_to_stdout else "logs/access.log gf_json buffer=64k flush=1s",
        "@@TEMP@@": "/tmp/nginx" if log_to_stdout else "temp",
        "@@BODY_LIMIT@@": body_limit,
        "@@RATE_ZONE@@": rate_zone,
        "@@UPSTREAMS@@": "\n".join(upstream_blocks),
        "@@LISTEN@@": listen.rstrip("\n"),
        "@@LOCATIONS@@": "\n".join(locations).rstrip("\n") + "\n",
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def local_upstreams(config: Config, ports: list[int] | tuple[int, ...] | None = None,
                    host: str = "127.0.0.1") -> dict[str, list[str]]:
    """Every patient routed to the same local replicas (``make serve``: each replica serves all models)."""
    ports = list(ports if ports is not None else config.ports.servers)
    return {pid: [f"{host}:{p}" for p in ports] for pid in config.patient_ids}


def templated_upstreams(config: Config, template: str, replicas: int = 2) -> dict[str, list[str]]:
    """Upstreams from a pattern such as ``{patient}-serving-{replica}:8501`` (replica counts from 0)."""
    if "{patient}" not in template:
        raise ConfigError(f"upstream template {template!r} must contain {{patient}}")
    out = {}
    for pid in config.patient_ids:
        names = [template.format(patient=pid, replica=r) for r in range(replicas)]
        out[pid] = list(dict.fromkeys(names))  # a template without {replica} gives one server
    return out
