"""Serving subcommands of ``glucose-forecast``: serve, server, gateway render, images build, models-config.

Light at import: TensorFlow, uvicorn and the server modules load only inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from pipeline.config import ConfigError, load_config

log = logging.getLogger("serving")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _ports(text: str, where: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",")]
    except ValueError:
        raise ConfigError(f"{where}={text!r}: give comma-separated TCP ports") from None
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ConfigError(f"{where}={text!r}: not TCP ports")
    return ports


# ----------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    """Replicas + gateway in the foreground until Ctrl-C; a replica that dies is restarted."""
    from serving.launch import local_stack, nginx_binary, spawn_server

    config = load_config()
    models_dir = Path(args.models_dir or config.models_dir)
    if args.model_config_file is None and not models_dir.is_dir():
        print(f"error: models directory {models_dir} does not exist; run `make train` first", file=sys.stderr)
        return 2
    ports = _ports(args.server_ports, "--server-ports") if args.server_ports else list(config.ports.servers)
    if args.gateway_port is not None:
        gateway_port = args.gateway_port
    elif os.environ.get("GATEWAY_PORT"):
        gateway_port = _ports(os.environ["GATEWAY_PORT"], "GATEWAY_PORT")[0]
    else:
        gateway_port = config.ports.gateway
    workdir = Path(args.workdir or config.root / "build" / "serve")
    print(f"starting {len(ports)} model-server replica(s) over {args.model_config_file or models_dir} "
          f"(ports {', '.join(map(str, ports))}) and the nginx gateway (port {gateway_port})", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (e.g. from a script with &)
    try:
        with local_stack(models_dir, config, gateway_port=gateway_port, server_ports=ports,
                         poll_seconds=args.poll_seconds, model_config=args.model_config_file,
                         workdir=workdir) as stack:
            for url in stack.server_urls:
                print(f"  model server replica: {url}/v1/models/<model>   (metrics: {url}/monitoring/prometheus/metrics)")
            if stack.gateway_url:
                print(f"  gateway:              {stack.gateway_url}/<patient>/v1/models/<patient>:predict")
                pid = config.patient_ids[0]
                print(f"  try:  curl {stack.gateway_url}/{pid}/v1/models/{pid}")
            elif nginx_binary() is None:
                print("  nginx is not installed: no gateway (apt-get install nginx)")
            print(f"  logs: {workdir}   -- press Ctrl-C to stop everything", flush=True)
            while True:
                time.sleep(1)
                for i, s in enumerate(stack.servers):
                    if not s.alive():
                        print(f"  replica on port {s.port} exited (code {s.process.returncode}); restarting",
                              file=sys.stderr, flush=True)
                        new = spawn_server(s.port, models_dir=models_dir, model_config=args.model_config_file,
                                           poll_seconds=args.poll_seconds, log_path=s.log_path)
                        stack.servers[i] = new.wait_ready()
                if stack.gateway is not None and not stack.gateway.alive():
                    print(f"  nginx exited; see {stack.gateway.error_log}", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0


# ---------------------------------------------------------------------------------------- server
def cmd_server(args: argparse.Namespace) -> int:
    from serving.server import run_server

    return run_server(args)


# --------------------------------------------------------------------------------------- gateway
def cmd_gateway_render(args: argparse.Namespace) -> int:
    from serving.gateway import TLS, local_upstreams, render_gateway, templated_upstreams
    from serving.launch import nginx_binary

    config = load_config()
    if args.upstream_template:
        upstreams = templated_upstreams(config, args.upstream_template, args.replicas)
    else:
        ports = [int(p) for p in args.server_ports.split(",")] if args.server_ports else None
        upstreams = local_upstreams(config, ports)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        tls = TLS(args.tls_cert, args.tls_key)
    text = render_gateway(
        config, upstreams, args.listen_port or config.ports.gateway, tls=tls,
        rate=None if args.rate == "off" else args.rate, burst=args.burst, body_limit=args.body_limit,
        listen_host=None if args.listen_host in ("", "*") else args.listen_host,
        log_to_stdout=args.container,
    )
    out = Path(args.out or config.root / "build" / "nginx" / "nginx.conf")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({len(config.patient_ids)} patients, upstreams: "
          f"{', '.join(sorted({s for v in upstreams.values() for s in v}))})")
    if args.check:
        import subprocess
        import tempfile

        binary = nginx_binary()
        if binary is None:
            print("nginx not installed: skipped the syntax check", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            for d in ("logs", "temp"):
                Path(tmp, d).mkdir()
            r = subprocess.run([binary, "-t", "-p", tmp, "-c", str(out.resolve()), "-e", "logs/error.log"],
                               capture_output=True, text=True)
        print(r.stderr.strip(), file=sys.stderr)
        return r.returncode
    return 0


# ---------------------------------------------------------------------------------------- images
def cmd_images_build(args: argparse.Namespace) -> int:
    from serving.images import build_images

    return build_images(load_config(), models_dir=args.models_dir, patients=args.patient, dry_run=args.dry_run,
                        push=args.push, include_webapp=not args.skip_webapp)


# --------------------------------------------------------------------------------- models-config
def cmd_models_config(args: argparse.Namespace) -> int:
    from serving.modelconfig import ModelSpec, VersionPolicy, render_model_config

    config = load_config()
    patients = args.patient or config.patient_ids
    for p in patients:
        config.patient(p)
    base = args.base_path.rstrip("/")
    specs = [ModelSpec(p, Path(f"{base}/{p}"), policy=VersionPolicy("latest", num_versions=args.num_versions))
             for p in patients]
    text = render_model_config(specs)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out or config.models_dir / "models.config")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out} ({len(specs)} models, base path {base}/<patient>)")
    return 0


# -------------------------------------------------------------------------------------- register
def register(sub: argparse._SubParsersAction) -> None:
    from serving.server import add_server_arguments

    fmt = argparse.HelpFormatter  # wraps the descriptions
    p = sub.add_parser(
        "serve", formatter_class=fmt,
        help="local model-server replicas over models/ behind the nginx gateway (foreground; Ctrl-C stops)",
        description="Run the local serving stack in the foreground: model-server replicas (ports from "
                    "[ports].servers or $GF_SERVER_PORTS) over models/, behind the nginx gateway "
                    "([ports].gateway or $GF_GATEWAY_PORT). Prints the URLs; Ctrl-C stops everything.",
    )
    p.add_argument("--models-dir", type=Path, help="models directory (default: the config's models/)")
    p.add_argument("--model-config-file", type=Path, help="serve what this TF Serving models.config lists instead")
    p.add_argument("--server-ports", help="comma-separated replica ports (default: config/GF_SERVER_PORTS)")
    p.add_argument("--gateway-port", type=int,
                   help="gateway port (default: $GATEWAY_PORT, else [ports].gateway / $GF_GATEWAY_PORT)")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="new-version polling interval (default 2)")
    p.add_argument("--workdir", help="logs and nginx files (default build/serve)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "server", formatter_class=fmt,
        help="one model-server replica (TF Serving REST API) in the foreground",
        description="One TensorFlow-Serving-compatible REST model server. Flags mirror "
                    "tensorflow_model_server (--rest_api_port, --model_config_file, --model_name, "
                    "--model_base_path, --file_system_poll_wait_seconds).",
    )
    add_server_arguments(p)
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("gateway", help="the nginx gateway configuration")
    gsub = p.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    g = gsub.add_parser(
        "render", formatter_class=fmt, help="write build/nginx/nginx.conf from the patient list",
        description="Render nginx.conf: per patient exactly /<p>/v1/models/<p>:predict, /metadata and the "
                    "status path, rewritten to the patient's upstream replicas; everything else 404. "
                    "Default upstreams: the local replicas ([ports].servers).",
    )
    g.add_argument("--out", help="output file (default build/nginx/nginx.conf)")
    g.add_argument("--listen-port", type=int, help="listen port (default [ports].gateway)")
    g.add_argument("--listen-host", default="127.0.0.1", help="listen address ('*' for all; default 127.0.0.1)")
    g.add_argument("--server-ports", help="local replica ports, comma-separated (default [ports].servers)")
    g.add_argument("--upstream-template",
                   help="upstream servers from a pattern, e.g. '{patient}-serving-{replica}:8501' (production)")
    g.add_argument("--replicas", type=int, default=2, help="replicas per patient with --upstream-template (default 2)")
    g.add_argument("--rate", default="200r/s", help="per-client request rate ('off' disables; default 200r/s)")
    g.add_argument("--burst", type=int, default=400, help="requests allowed above the rate in a burst (default 400)")
    g.add_argument("--body-limit", default="16m", help="client_max_body_size (default 16m)")
    g.add_argument("--tls-cert", help="certificate (PEM) to listen with TLS")
    g.add_argument("--tls-key", help="private key (PEM) for --tls-cert")
    g.add_argument("--container", action="store_true", help="log to stdout/stderr, pid and temp files in /tmp")
    g.add_argument("--check", action="store_true", help="validate the result with `nginx -t`")
    g.set_defaults(func=cmd_gateway_render)

    p = sub.add_parser("images", help="container images")
    isub = p.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    b = isub.add_parser(
        "build", formatter_class=fmt, help="docker build each patient's TF Serving image (and the web app's)",
        description="Build <registry>/<patient>-serving:<tag> per patient from serving/Dockerfile "
                    "(FROM [images].serving_base, the latest exported version copied to "
                    "/models/<patient>/<version>, MODEL_NAME=<patient>, non-root). Needs a Docker engine.",
    )
    b.add_argument("--patient", action="append", metavar="ID", help="only this patient (repeatable)")
    b.add_argument("--models-dir", type=Path, help="models directory (default: the config's)")
    b.add_argument("--dry-run", action="store_true", help="print the docker commands without running them")
    b.add_argument("--push", action="store_true", help="docker push each image after building it")
    b.add_argument("--skip-webapp", action="store_true", help="do not build the web app image")
    b.set_defaults(func=cmd_images_build)

    p = sub.add_parser(
        "models-config", formatter_class=fmt, help="write TF Serving's models.config for the patients",
        description="Write a model_config_list for tensorflow_model_server --model_config_file (and the local "
                    "server, which maps /models/<p> to its --models-dir).",
    )
    p.add_argument("--patient", action="append", metavar="ID", help="only this patient (repeatable)")
    p.add_argument("--base-path", default="/models", help="where the models live in the server (default /models)")
    p.add_argument("--num-versions", type=int, default=1, help="latest N versions served (default 1)")
    p.add_argument("--out", help="output file, '-' for stdout (default models/models.config)")
    p.set_defaults(func=cmd_models_config)
