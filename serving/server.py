"""The model server process: ``python -m serving.server`` (also ``glucose-forecast server``).

Flags mirror ``tensorflow_model_server`` where they mean the same thing (``--rest_api_port``,
``--model_config_file``, ``--model_name``/``--model_base_path``,
``--file_system_poll_wait_seconds``), so the same command line works against either server.
Runs the ASGI app on uvicorn with uvloop and httptools.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("models (one of)")
    src.add_argument("--models-dir", "--models_dir", dest="models_dir", type=Path,
                     help="serve every sub-directory <name>/<version>/ of this directory (default: config models_dir)")
    src.add_argument("--model-config-file", "--model_config_file", dest="model_config_file", type=Path,
                     help="TF Serving models.config (model_config_list); absolute base_paths that do not exist "
                          "here, like /models/<name>, are looked up in --models-dir")
    src.add_argument("--model-name", "--model_name", dest="model_name",
                     help="serve one model with this name (with --model-base-path), like the TF Serving image")
    src.add_argument("--model-base-path", "--model_base_path", dest="model_base_path", type=Path,
                     help="directory holding the numbered versions of --model-name")
    net = p.add_argument_group("network")
    net.add_argument("--port", "--rest-api-port", "--rest_api_port", dest="port", type=int, default=8501,
                     help="REST port (default 8501, TF Serving's)")
    net.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}; 0.0.0.0 in a container)")
    tune = p.add_argument_group("behaviour")
    tune.add_argument("--poll-seconds", "--file_system_poll_wait_seconds", dest="poll_seconds", type=float,
                      default=2.0, help="how often to look for new versions (0 disables; default 2)")
    tune.add_argument("--max-body-bytes", dest="max_body_bytes", type=int, default=32 * 1024 * 1024,
                      help="largest accepted request body; larger gets 413 (default 32 MiB)")
    tune.add_argument("--engine", choices=("auto", "tflite", "tensorflow"), default="auto",
                      help="what runs the signatures: 'auto' (default) uses TFLite for each signature that "
                           "converts and gives TensorFlow's answers on a probe batch, TensorFlow otherwise; "
                           "'tflite' requires TFLite; 'tensorflow' never converts")
    tune.add_argument("--no-batching", dest="batching", action="store_false",
                      help="run each request on its own instead of batching concurrent requests")
    tune.add_argument("--max-batch-rows", type=int, default=2048, help="rows per model call at most (default 2048)")
    tune.add_argument("--inline-rows", type=int, default=64,
                      help="batches up to this many rows run on the event loop, larger in a thread (default 64)")
    tune.add_argument("--tensorflow-intra-op-parallelism", "--tensorflow_intra_op_parallelism", type=int, default=0,
                      dest="intra_op", help="threads inside one TensorFlow op (0: TensorFlow's default)")
    tune.add_argument("--tensorflow-inter-op-parallelism", "--tensorflow_inter_op_parallelism", type=int, default=0,
                      dest="inter_op", help="TensorFlow ops run in parallel (0: TensorFlow's default)")
    tune.add_argument("--access-log", default="-",
                      help="structured (JSON lines) access log: a file path, '-' for stdout, 'off' (default '-')")


def build_app(args: argparse.Namespace):
    from pipeline.config import ConfigError
    from serving.app import AccessLog, ServingApp
    from serving.modelconfig import ModelSpec
    from serving.repository import ModelManager
    from serving.runtime import load_servable

    specs = None
    models_dir = args.models_dir
    if args.model_name or args.model_base_path:
        if not (args.model_name and args.model_base_path):
            raise ConfigError("--model-name and --model-base-path go together")
        specs = [ModelSpec(args.model_name, Path(args.model_base_path))]
    elif args.model_config_file is None and models_dir is None:
        from pipeline.config import load_config

        models_dir = load_config().models_dir
    if args.model_config_file is not None:
        from serving.modelconfig import load_model_config

        if not Path(args.model_config_file).is_file():
            raise ConfigError(f"--model-config-file {args.model_config_file} does not exist")
        load_model_config(args.model_config_file, models_dir=models_dir)  # fail fast, naming the line
    if specs is None and args.model_config_file is None and not Path(models_dir).is_dir():
        raise ConfigError(f"models directory {models_dir} does not exist (train and export a model first)")
    manager = ModelManager(models_dir=models_dir, model_config=args.model_config_file, specs=specs,
                           poll_seconds=args.poll_seconds,
                           loader=functools.partial(load_servable, engine=args.engine))
    access = None
    if args.access_log == "-":
        access = AccessLog(sys.stdout.buffer)
    elif args.access_log and args.access_log != "off":
        access = AccessLog(open(args.access_log, "ab"))  # noqa: SIM115 - lives as long as the process
    return ServingApp(manager, max_body_bytes=args.max_body_bytes, batching=args.batching,
                      max_batch_rows=args.max_batch_rows, inline_rows=args.inline_rows, access_log=access)


def run_server(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    if getattr(args, "intra_op", 0) or getattr(args, "inter_op", 0):
        import tensorflow as tf  # must be configured before the first op runs

        if args.intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
        if args.inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    app = build_app(args)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_keep_alive=75,  # longer than nginx's upstream keepalive, so nginx closes first
        timeout_graceful_shutdown=10,
        server_header=False,
        proxy_headers=False,  # the access log records the peer (nginx); no X-Forwarded-* rewriting
        date_header=False,
    )
    server = uvicorn.Server(config)
    logging.getLogger("serving").info("model server on http://%s:%d (pid %d)", args.host, args.port, os.getpid())
    server.run()
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from pipeline.config import ConfigError

    try:
        return run_server(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
