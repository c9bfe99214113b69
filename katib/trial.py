"""One Katib trial: train and evaluate one patient's model with four hyperparameters.

    python -m katib.trial --patient hupa0002p --learning-rate 0.001 --dense1 64 --dense2 32 --epochs 30

It calls the library (`pipeline.training.run_patient`, no export) and prints the metrics in
Katib's StdOut format, one ``name=value`` per line with a plain decimal value::

    mae=17.234567          <- the objective: MAE on the *validation* windows
    rmse=24.012345
    test_mae=16.987654     <- the held-out test set, for the record (not in the Experiment's metrics)
    test_rmse=23.456789

Selection uses the validation split so that the test set stays unseen until the final report
(choosing hyperparameters by test MAE would make the reported test MAE optimistic). Keras's own
progress lines such as ``mae: 17.2`` would not be picked up by Katib's collector.
Exit status: 0 on success, 2 for bad input, 1 when training fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from pipeline.config import ConfigError, Hyperparameters, load_config, validate_patient_id
from pipeline.errors import InputError


def katib_metric(name: str, value: float) -> str:
    """``name=value`` with a plain decimal, which every version of Katib's default filter reads."""
    return f"{name}={float(value):.6f}"


def _positive_int(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value != float(text) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m katib.trial",
        description="Katib trial: train one patient's model (no export) and print mae=<value> and rmse=<value>.",
    )
    p.add_argument("--patient", required=True, help="patient id from glucose-forecast.toml")
    p.add_argument("--learning-rate", type=_positive_float, required=True)
    p.add_argument("--dense1", type=_positive_int, required=True, help="units of the first dense layer")
    p.add_argument("--dense2", type=_positive_int, required=True, help="units of the second dense layer")
    p.add_argument("--epochs", type=_positive_int, required=True)
    p.add_argument("--seed", type=int, default=None, help="random seed (default: [model].seed)")
    p.add_argument("--config", help="path to glucose-forecast.toml (default: $GLUCOSE_FORECAST_CONFIG or ./)")
    return p


def trial_metrics(result: Any) -> dict[str, float]:
    """Validation mae/rmse (the objective, as the library computed it) and test mae/rmse of a `RunResult`."""
    test = result.metrics["model"]
    return {"mae": result.training["validation_mae"], "rmse": result.training["validation_rmse"],
            "test_mae": test["mae"], "test_rmse": test["rmse"]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        pid = validate_patient_id(args.patient)
        config.patient(pid)
        hp = Hyperparameters(
            learning_rate=args.learning_rate,
            dense1=args.dense1,
            dense2=args.dense2,
            epochs=args.epochs,
            seed=config.model.seed if args.seed is None else args.seed,
        )
        from pipeline.training import run_patient  # TensorFlow loads here, not at --help

        start = time.monotonic()
        result = run_patient(pid, hp, config, export=False)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = trial_metrics(result)
    print(f"trial {pid} {hp.as_dict()} trained in {time.monotonic() - start:.1f} s", file=sys.stderr)
    for name, value in metrics.items():
        print(katib_metric(name, value), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
