"""Core subcommands: data, train, evaluate, bench, demo. Thin: each calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import Config, Hyperparameters, load_config
from pipeline.errors import InputError

log = logging.getLogger("glucose_forecast")


def _patients(args: argparse.Namespace, config: Config) -> list[str]:
    if getattr(args, "all", False) or not getattr(args, "patient", None):
        return config.patient_ids
    for p in args.patient:
        config.patient(p)  # raises ConfigError naming the known ids
    return list(args.patient)


def _add_patient_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patient", action="append", metavar="ID", help="patient id (repeatable; default: all configured)")
    p.add_argument("--all", action="store_true", help="every configured patient (the default)")


# ---------------------------------------------------------------- data


def cmd_data(args: argparse.Namespace) -> int:
    """Read files and print what they hold: span, coverage, gaps, native interval, meals, boluses."""
    from pipeline.readers import read_series

    config = load_config()
    reports = []
    try:
        if args.file:
            for f in args.file:
                r = read_series(f, args.format, glucose_unit=args.glucose_unit, carb_unit=args.carb_unit, spec=config.series)
                reports.append(r.report)
        else:
            for pid in _patients(args, config):
                p = config.patient(pid)
                r = read_series(p.file, p.reader, carb_unit=p.carb_unit, name=pid, spec=config.series)
                reports.append(r.report)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2, default=str))
        return 0
    for rep in reports:
        print(rep.summary())
        print(f"  observed readings {rep.observed_fraction:.1%} of the grid; hidden gap points {rep.hidden_gap_points}; "
              f"filled {rep.filled_points}; duplicates {rep.duplicates}; out of order {rep.out_of_order}")
        for w in rep.warnings:
            print(f"  ! {w}")
        for note in rep.notes:
            print(f"  - {note}")
    return 0


# ---------------------------------------------------------------- train


def settings_key(config: Config, candidates: dict[str, Hyperparameters], fingerprint: str) -> dict:
    """What a model depends on: if all of it matches the latest export, training can be skipped."""
    from pipeline import __version__

    return {
        "fingerprint": fingerprint,
        "hyperparameters": {name: hp.as_dict() for name, hp in candidates.items()},
        "series": config.series.__dict__,
        "split": config.split.__dict__,
        "training": config.training.__dict__,
        "population": sorted(config.patient_ids) if config.training.population_pretraining else [],
        "code_version": __version__,
    }


def hyperparameters_for(config: Config, pid: str, use_tuned: bool = True) -> tuple[Hyperparameters, str]:
    if use_tuned:
        try:
            from katib.results import best_hyperparameters
        except ModuleNotFoundError:
            best_hyperparameters = None
        hp = best_hyperparameters(config, pid) if best_hyperparameters else None
        if hp is not None:
            return hp, "tuned"
    return config.model, "default"


def candidates_for(config: Config, pid: str, use_tuned: bool = True) -> dict[str, Hyperparameters]:
    """What training chooses from on validation: the tuned hyperparameters (if any) and the defaults."""
    hp, source = hyperparameters_for(config, pid, use_tuned)
    return {source: hp} if source == "default" or hp == config.model else {source: hp, "default": config.model}


def up_to_date(config: Config, pid: str, key: dict) -> bool:
    from pipeline.export import read_metadata

    meta = read_metadata(config.models_dir, pid)
    return bool(meta) and meta.get("settings") == json.loads(json.dumps(key, default=str))


def train_patients(config: Config, patients: list[str], *, use_tuned: bool = True, force: bool = False,
                   reports_dir: Path | None = None, out=None) -> list[dict]:
    """Train, evaluate and export each patient (skipping those already up to date); write reports."""
    from tqdm import tqdm

    from pipeline.dataset import fingerprint
    from pipeline.export import read_metadata
    from pipeline.report import write_report
    from pipeline.training import run_best

    reports_dir = reports_dir or config.root / "build" / "reports"
    out = out or sys.stdout  # looked up per call: sys.stdout may have been replaced since import
    done = []
    # A bar in a terminal only: in a log file the per-patient lines below say the same.
    bar = tqdm(patients, desc="train", unit="patient", file=sys.stderr, disable=not sys.stderr.isatty())
    for pid in bar:
        bar.set_postfix_str(pid)
        candidates = candidates_for(config, pid, use_tuned)
        key = settings_key(config, candidates, fingerprint(config.patient(pid).file))
        if not force and up_to_date(config, pid, key):
            meta = read_metadata(config.models_dir, pid)
            source = meta["training"].get("hyperparameters_source", "?")
            tqdm.write(f"{pid}: up to date (version {meta['version']}, {source} hyperparameters); skipped", file=out)
            done.append({"patient": pid, "skipped": True, "version": meta["version"], "metrics": meta["metrics"],
                         "training": meta["training"], "hyperparameters": meta["hyperparameters"]})
            continue
        result, runs = run_best(pid, candidates, config)
        source = result.training["selection"]["chosen"]
        result.training["hyperparameters_source"] = source
        result.training["settings"] = key
        _export(result, config)
        report = write_report(result, reports_dir / pid)
        m = result.metrics
        tqdm.write(
            f"{pid}: v{result.version_dir.name}  RMSE model {m['model']['rmse']:.1f} | ridge {m['ridge']['rmse']:.1f} | "
            f"persistence {m['persistence']['rmse']:.1f} mg/dL  ({_chosen_text(result, runs)})  report {report}",
            file=out,
        )
        done.append({"patient": pid, "skipped": False, "version": int(result.version_dir.name), "metrics": m,
                     "training": result.training, "hyperparameters": result.hyperparameters})
    return done


def _chosen_text(result, runs: dict) -> str:
    source = result.training["selection"]["chosen"]
    if len(runs) == 1:
        return f"{source} hp"
    others = ", ".join(f"{n} {r.training['validation_mae']:.2f}" for n, r in runs.items() if n != source)
    return f"{source} hp: validation MAE {result.training['validation_mae']:.2f} vs {others}"


def _export(result, config: Config) -> None:
    from pipeline.export import export_model
    from pipeline.training import build_metadata

    settings = result.training.pop("settings")
    meta = build_metadata(result.dataset, Hyperparameters(**result.hyperparameters), result, config)
    meta["settings"] = json.loads(json.dumps(settings, default=str))
    result.version_dir = export_model(result.model, config.models_dir, result.patient_id, meta,
                                      window=config.series.window, n_features=len(config.series.features))


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config()
    train_patients(config, _patients(args, config), use_tuned=not args.default_hyperparameters, force=args.force)
    return 0


# ---------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the exported SavedModel (as served) on the test windows beside the baselines."""
    import dataclasses

    from pipeline.dataset import load_patient_dataset, load_test_file
    from pipeline.export import versions
    from pipeline.metrics import evaluate_predictions
    from pipeline.report import metrics_table
    from pipeline.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME
    from pipeline.training import evaluate_baselines

    config = load_config()
    import tensorflow as tf

    for pid in _patients(args, config):
        exported = versions(config.models_dir, pid)
        if not exported:
            print(f"{pid}: no exported model under {config.models_dir}/{pid}; run `make train`", file=sys.stderr)
            return 2
        version = args.version or exported[-1]
        if version not in exported:
            print(f"{pid}: no version {version} under {config.models_dir}/{pid}; exported: "
                  f"{', '.join(map(str, exported))}", file=sys.stderr)
            return 2
        fn = tf.saved_model.load(str(config.models_dir / pid / str(version))).signatures[SIGNATURE_NAME]
        ds = load_patient_dataset(pid, config)
        splits = {"test split": ds}
        extra = load_test_file(config.patient(pid), config)
        if extra is not None and len(extra):  # baselines still fit on the training split only
            splits[f"separate test file {config.patient(pid).test_file.name}"] = dataclasses.replace(ds, test=extra)
        for label, data in splits.items():
            metrics, _ = evaluate_baselines(data, config)
            pred = fn(**{INPUT_NAME: tf.constant(data.test.X)})[OUTPUT_NAME].numpy()
            metrics = {"model": evaluate_predictions(data.test.y, pred), **metrics}
            print(f"\n{pid} (version {version}), {label}:\n{metrics_table(metrics)}")
    return 0


# ---------------------------------------------------------------- bench / demo


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.bench import run_bench

    return run_bench(load_config(), quick=args.quick, skip_serving=args.skip_serving, patients=args.patient,
                     out_dir=args.out)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(load_config(), skip_tuning=args.skip_tuning, no_webapp=args.no_webapp, hold=not args.no_hold)


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("data", help="read data files and report span, coverage, gaps, native interval, meals, boluses",
                       description=cmd_data.__doc__, formatter_class=fmt)
    _add_patient_args(p)
    p.add_argument("--file", action="append", help="read this file instead of the configured patients")
    p.add_argument("--format", choices=["hupa", "ohio", "canonical"], help="file format (default: detect)")
    p.add_argument("--glucose-unit", choices=["mg/dL", "mmol/L"], help="glucose unit (default: detect, with a warning)")
    p.add_argument("--carb-unit", choices=["g", "portion"], default="g", help="carbohydrate unit (portion = 10 g)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train, evaluate beside baselines and export SavedModels (+ reports)",
                       description="Train each patient with its tuned hyperparameters (build/tuning/<id>.json) "
                       "and with the default hyperparameters ([model] in glucose-forecast.toml), keep whichever has the lower validation MAE, evaluate on the chronological test split beside persistence, "
                       "linear extrapolation and ridge, export models/<id>/<version>/ atomically and write "
                       "build/reports/<id>/report.md. Patients whose latest model matches data and settings are skipped.")
    _add_patient_args(p)
    p.add_argument("--force", action="store_true", help="retrain even when the latest model is up to date")
    p.add_argument("--default-hyperparameters", action="store_true", help="ignore tuning results; use the [model] defaults of glucose-forecast.toml")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score exported SavedModels on the test windows beside the baselines",
                       description="Load each patient's exported SavedModel (the latest version, or --version) "
                       "and score it on the patient's leak-free chronological test windows beside persistence, "
                       "linear extrapolation and ridge regression: RMSE, MAE (mg/dL) and Clarke A+B. A patient's "
                       "separate test file (test_file in glucose-forecast.toml, e.g. OhioT1DM -testing.xml) is "
                       "scored too.")
    _add_patient_args(p)
    p.add_argument("--version", type=int, help="model version (default: latest)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="accuracy, tuning/training time and serving speed → build/bench/bench.{md,json}",
                       description="Measure, in one run, in a work directory of its own (models/ and "
                       "build/tuning/ are never touched): accuracy per patient on leak-free test windows "
                       "(model vs persistence, linear extrapolation, ridge), tuning and training wall time "
                       "(tuned vs default hyperparameters), and serving speed with wrk (1- and 1,000-window "
                       "requests, direct and through nginx, beside nginx's static-response ceiling) and "
                       "memory per model. Prints a table; writes bench.md and bench.json.")
    p.add_argument("--quick", action="store_true", help="a small smoke run (CI): checks the figures exist")
    p.add_argument("--skip-serving", action="store_true", help="accuracy and timing only")
    p.add_argument("--patient", action="append", metavar="ID", help="only these patients")
    p.add_argument("--out", type=Path, help="output directory (default: build/bench)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="tune, train and export every patient, serve them, start the web app",
                       description="The whole system on this machine: local Katib tuning, training and export "
                       "(skipping up-to-date patients), two model-server replicas, the nginx gateway (when "
                       "installed), the Streamlit app; prints URLs and a curl. Ctrl-C stops everything.")
    p.add_argument("--skip-tuning", action="store_true", help="train with existing tuning results or defaults")
    p.add_argument("--no-webapp", action="store_true", help="do not start Streamlit")
    p.add_argument("--no-hold", action="store_true", help="exit once everything answered (smoke test)")
    p.set_defaults(func=cmd_demo)
