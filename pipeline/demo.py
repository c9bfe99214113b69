"""`make demo`: tune → train → export every patient, then serve them behind nginx and start the web app.

Every step says what it does; patients whose model matches the data and settings are skipped;
Ctrl-C stops every process this started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from pipeline.config import Config


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def needs_tuning(config: Config, pid: str) -> bool:
    """Tune unless a tuning result exists that is newer than the patient's data and the config."""
    from katib.results import load_best, result_path

    if load_best(config, pid) is None:
        return True
    stamp = result_path(config, pid).stat().st_mtime
    return stamp < max(config.patient(pid).file.stat().st_mtime, config.path.stat().st_mtime)


def tune_all(config: Config) -> None:
    from katib.tuning import tune_patient

    todo = [p for p in config.patient_ids if needs_tuning(config, p)]
    if not todo:
        say("tuning: every patient has a current tuning result (build/tuning/); skipped")
        return
    s = config.tuning
    say(f"tuning {len(todo)} patient(s) with the local Katib executor: {s.max_trial_count} trials each, "
        f"{s.parallel_trial_count} in parallel, preset '{s.preset}', objective mae < {s.goal:g}")
    for i, pid in enumerate(todo, 1):
        print(f"\n--- [{i}/{len(todo)}] {pid}", flush=True)
        tune_patient(config, pid)


def example_curl(config: Config, base_url: str, *, direct: bool = False) -> str:
    """A ready-to-paste curl with a real window of the first patient, through the gateway or
    (``direct``) straight to a model server."""
    from pipeline.dataset import load_patient_dataset
    from pipeline.routes import routes

    pid = config.patient_ids[0]
    X = load_patient_dataset(pid, config).test.X[:1]
    body = json.dumps({"instances": X.astype(float).round(2).tolist()}, separators=(",", ":"))
    predict = routes(pid)[0]  # the :predict route
    return f"curl -s -X POST {base_url}{predict.upstream_path if direct else predict.public_path} -d '{body}'"


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def start_webapp(config: Config, base_url: str, *, direct: bool = False) -> subprocess.Popen:
    """The Streamlit app against the gateway, or (``direct``) straight against one model server.

    Started as ``glucose-forecast webapp`` starts it: from ``webapp/``, so that Streamlit reads the
    app's own settings (``webapp/.streamlit/config.toml``: upload limit, no tracebacks, no telemetry).
    """
    from webapp import GATEWAY_ENV, SERVER_ENV
    from webapp.commands import APP, streamlit_command

    env = {k: v for k, v in os.environ.items() if k not in (GATEWAY_ENV, SERVER_ENV)}
    env.update({SERVER_ENV if direct else GATEWAY_ENV: base_url, "GLUCOSE_FORECAST_CONFIG": str(config.path)})
    log = open(config.root / "build" / "logs" / "webapp.log", "ab")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(streamlit_command(config.ports.webapp, "127.0.0.1"), env=env, cwd=APP.parent,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_demo(config: Config, *, skip_tuning: bool = False, no_webapp: bool = False, hold: bool = True) -> int:
    from pipeline.commands import train_patients
    from serving.launch import local_stack, nginx_binary

    started = time.perf_counter()
    # Ctrl-C must stop everything even when started with SIGINT ignored (e.g. `make demo &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    (config.root / "build" / "logs").mkdir(parents=True, exist_ok=True)
    say(f"glucose-forecast demo: {len(config.patient_ids)} patients ({', '.join(config.patient_ids)})")
    if not skip_tuning:
        tune_all(config)
    say("training and exporting (patients whose model is up to date are skipped)")
    train_patients(config, config.patient_ids)
    say(f"models ready in {time.perf_counter() - started:.0f} s; reports in build/reports/<patient>/report.md")

    if nginx_binary() is None:
        say("nginx is not installed: starting the local model server (2 replicas) without the gateway; "
            "the web app talks straight to the first replica (apt-get install nginx for the gateway)")
    else:
        say("starting the local model server (2 replicas) and the nginx gateway")
    webapp = None
    with local_stack(config.models_dir, config, gateway_port=config.ports.gateway,
                     server_ports=list(config.ports.servers), workdir=config.root / "build" / "serve") as stack:
        direct = stack.gateway_url is None
        base = stack.server_urls[0] if direct else stack.gateway_url
        if direct:
            print("  (no gateway: use the model server's own API, /v1/models/<patient>:predict)")
        for url in stack.server_urls:
            print(f"  model server replica: {url}/v1/models/<patient>")
        if stack.gateway_url:
            print(f"  gateway:              {stack.gateway_url}/<patient>/v1/models/<patient>:predict")
        try:
            if not no_webapp:
                say("starting the Streamlit web app")
                webapp = start_webapp(config, base, direct=direct)
                url = f"http://127.0.0.1:{config.ports.webapp}"
                if not _wait_http(f"{url}/_stcore/health", 60):
                    print(f"  the web app did not answer; see {config.root}/build/logs/webapp.log", file=sys.stderr)
                    return 1
                print(f"  web app:              {url}")
                print(f"  example upload:       {config.root / 'data' / 'examples'}")
            say("a forecast from the command line:")
            print(example_curl(config, base, direct=direct))
            if not hold:
                return 0
            say("running; press Ctrl-C to stop everything")
            signal.signal(signal.SIGTERM, _interrupt)
            while webapp is None or webapp.poll() is None:
                time.sleep(1)
            print(f"the web app exited (code {webapp.returncode}); see build/logs/webapp.log", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        finally:
            if webapp is not None:
                os.killpg(webapp.pid, signal.SIGTERM)
                try:
                    webapp.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(webapp.pid, signal.SIGKILL)
            say("stopped the web app, the gateway and the model servers")
    return 0
