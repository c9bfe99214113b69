"""`glucose-forecast webapp`: run the Streamlit app against a gateway (``make webapp``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from webapp import GATEWAY_ENV, SERVER_ENV

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(port: int, address: str, python: str = sys.executable) -> list[str]:
    """The command line that serves the app; run it from webapp/ (settings in webapp/.streamlit/)."""
    return [
        python, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from webapp.client import service

    config = load_config()
    if args.gateway_url:
        os.environ[GATEWAY_ENV] = args.gateway_url
        os.environ.pop(SERVER_ENV, None)  # the flag wins over the environment
    if args.model_server_url:
        os.environ[SERVER_ENV] = args.model_server_url
    url, direct = service(config)
    env = {**os.environ, SERVER_ENV if direct else GATEWAY_ENV: url}
    gateway = f"the model server {url} (no gateway)" if direct else url
    port = args.port or config.ports.webapp
    host = "localhost" if args.address in ("127.0.0.1", "0.0.0.0") else args.address
    print(f"web app: http://{host}:{port}  (forecasts from {gateway}; Ctrl-C to stop)", flush=True)
    try:
        # From webapp/, so that Streamlit reads webapp/.streamlit/config.toml.
        return subprocess.call(streamlit_command(port, args.address), env=env, cwd=APP.parent)
    except KeyboardInterrupt:
        return 130


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "webapp",
        help="run the Streamlit web app against the gateway",
        description=(
            "Serve the web app: patients pick their id, upload a CSV (window CSV, time series, "
            "HUPA-UCM or OhioT1DM) and see their 30-minute forecast, answered by their model through "
            f"the gateway. The gateway is --gateway-url, else ${GATEWAY_ENV}, else the local nginx "
            "gateway on [ports].gateway of glucose-forecast.toml. Start the models first (make serve)."
        ),
    )
    p.add_argument("--port", type=int, help="port of the app (default: [ports].webapp or $GF_WEBAPP_PORT)")
    p.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gateway-url", help=f"base URL of the gateway (default: ${GATEWAY_ENV} or the local gateway)")
    where.add_argument("--model-server-url", help=f"instead of a gateway, one model server called with TF Serving's "
                   f"own paths, e.g. a kubectl port-forward (default: ${SERVER_ENV})")
    p.set_defaults(func=_run)
