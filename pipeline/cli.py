"""`glucose-forecast`: one console script; each part of the system registers its subcommands.

Every module listed in COMMAND_MODULES exposes ``register(subparsers)``, adding its subcommands
with ``set_defaults(func=handler)``; handlers take the parsed namespace and return an exit code.
Modules must stay light at import time (no TensorFlow), so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline import __version__
from pipeline.errors import InputError

COMMAND_MODULES = (
    "pipeline.commands",  # data, train, evaluate, export, report, bench, demo
    "pipeline.kfp_commands",  # pipeline compile|submit
    "katib.commands",  # katib render, tune
    "serving.commands",  # serve, gateway
    "k8s.commands",  # k8s render
    "webapp.commands",  # webapp
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glucose-forecast",
        description=(
            "Forecast blood glucose 30 minutes ahead, one model per patient: read data, tune, train, "
            "export SavedModels, serve them with the TF Serving REST API, and render the Kubeflow "
            "and Kubernetes artefacts. Settings come from glucose-forecast.toml "
            "(or $GLUCOSE_FORECAST_CONFIG)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="path to glucose-forecast.toml "
                        "(default: $GLUCOSE_FORECAST_CONFIG, else glucose-forecast.toml here or in the repository)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional part not installed / not built yet
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # TensorFlow's Python logger says "Assets written to ..." at INFO on every export: not news.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, in every command
    if args.config:
        os.environ["GLUCOSE_FORECAST_CONFIG"] = args.config
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:  # bad config, file or argument: the message names it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
