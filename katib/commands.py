"""CLI: ``glucose-forecast katib render`` and ``glucose-forecast tune``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import InputError

DEFAULT_NAMESPACE = os.environ.get("GF_KATIB_NAMESPACE", "kubeflow-user-example-com")


def _tuning_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="search space [search.<preset>] (default: [tuning].preset; e.g. seed, default)")
    p.add_argument("--max-trials", type=int, metavar="N", help="maxTrialCount (default: [tuning].max_trial_count)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="parallelTrialCount (default: [tuning].parallel_trial_count)")
    p.add_argument("--max-failed", type=int, metavar="N",
                   help="maxFailedTrialCount (default: [tuning].max_failed_trial_count)")
    p.add_argument("--goal", type=float, help="objective goal for mae (default: [tuning].goal)")


def _overrides(args: argparse.Namespace) -> dict:
    return {
        "max_trial_count": args.max_trials,
        "parallel_trial_count": args.parallel,
        "max_failed_trial_count": args.max_failed,
        "goal": args.goal,
    }


def _patients(args: argparse.Namespace, config) -> list[str]:
    if getattr(args, "all", False) or not args.patient:
        return config.patient_ids
    for pid in args.patient:
        config.patient(pid)
    return list(dict.fromkeys(args.patient))


def register(sub: argparse._SubParsersAction) -> None:
    katib = sub.add_parser(
        "katib",
        help="Katib Experiments (render, run)",
        description="Katib hyperparameter tuning artefacts.",
    )
    ksub = katib.add_subparsers(dest="katib_command", metavar="ACTION")
    render = ksub.add_parser(
        "render",
        help="render one Katib Experiment per patient into build/katib/<patient>.yaml",
        description=(
            "Render katib/experiment.yaml.tmpl for every patient of glucose-forecast.toml (search space from "
            "[search.<preset>], counts/goal/random_state from [tuning], image from [images]). The files are "
            "ready for `kubectl apply -f` and for the local executor (`glucose-forecast tune`)."
        ),
    )
    render.add_argument("--out", type=Path, help="output directory (default: build/katib)")
    render.add_argument("--patient", action="append", help="only this patient (repeatable; default: all)")
    render.add_argument("--namespace", help="set metadata.namespace (default: none; kubectl -n decides)")
    _tuning_overrides(render)
    render.set_defaults(func=_render)
    run = ksub.add_parser(
        "run",
        help="run any Katib Experiment YAML with the local executor",
        description=(
            "Run a Katib v1beta1 Experiment file on this machine (random search; batch/v1 Job trials with an "
            "explicit command; StdOut metrics). Prints the live trial table and Katib's summary; --out writes "
            "the result JSON."
        ),
    )
    run.add_argument("experiment", type=Path, help="Experiment YAML (e.g. build/katib/hupa0002p.yaml)")
    run.add_argument("--out", type=Path, help="write the result JSON here")
    run.add_argument("--logs", type=Path, help="trial logs directory (default: build/tuning/<experiment>/)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (the trial table stays)")
    run.set_defaults(func=_run)
    katib.set_defaults(func=_katib_help, katib_parser=katib)

    tune = sub.add_parser(
        "tune",
        help="tune patients' hyperparameters with Katib (local executor by default)",
        description=(
            "Run each patient's Katib Experiment. --local (default) runs the rendered Experiment on this "
            "machine with the local executor (random search from random_state, parallel trial processes, "
            "Katib's stop rules) and writes build/tuning/<patient>.json, which `train` then uses. --submit "
            "applies it to the cluster of the current kubeconfig context instead; --wait waits for the "
            "optimal trial."
        ),
    )
    who = tune.add_mutually_exclusive_group()
    who.add_argument("--patient", action="append", metavar="P", help="patient id (repeatable)")
    who.add_argument("--all", action="store_true", help="every patient of glucose-forecast.toml (the default)")
    where = tune.add_mutually_exclusive_group()
    where.add_argument("--local", dest="mode", action="store_const", const="local", help="run here (default)")
    where.add_argument("--submit", dest="mode", action="store_const", const="submit",
                       help="apply the Experiment(s) to a Kubernetes cluster with Katib")
    _tuning_overrides(tune)
    tune.add_argument("--no-progress", action="store_true", help="no progress bar (the trial table stays)")
    tune.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                      help=f"--submit: namespace (default: $GF_KATIB_NAMESPACE or {DEFAULT_NAMESPACE})")
    tune.add_argument("--context", help="--submit: kubeconfig context (default: current)")
    tune.add_argument("--replace", action="store_true", help="--submit: replace an existing Experiment")
    tune.add_argument("--wait", action="store_true", help="--submit: wait and print the optimal trial")
    tune.add_argument("--timeout", type=float, default=3600, help="--submit --wait: seconds (default 3600)")
    tune.set_defaults(func=_tune, mode="local")


def _katib_help(args: argparse.Namespace) -> int:
    args.katib_parser.print_help()
    return 2


def _run(args: argparse.Namespace) -> int:
    from .executor import run_experiment, write_result

    config = load_config()
    try:
        from .executor import load_experiment

        exp = load_experiment(args.experiment)
        result = run_experiment(
            exp,
            log_dir=args.logs or config.root / "build" / "tuning" / exp.name,
            workdir=config.root,
            env={"GLUCOSE_FORECAST_CONFIG": str(config.path)},
            progress=not args.no_progress,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_result(result, args.out, experiment_file=str(args.experiment))
        print(f"wrote {args.out}")
    return 0 if result.status == "Succeeded" else 1


def _render(args: argparse.Namespace) -> int:
    from .render import dump, render_experiment

    config = load_config()
    out = args.out or config.root / "build" / "katib"
    out.mkdir(parents=True, exist_ok=True)
    try:
        for pid in _patients(args, config):
            doc = render_experiment(config, pid, args.preset, namespace=args.namespace, **_overrides(args))
            path = out / f"{pid}.yaml"
            path.write_text(dump(doc))
            print(f"wrote {path}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _tune(args: argparse.Namespace) -> int:
    config = load_config()
    try:
        patients = _patients(args, config)
        if args.mode == "submit":
            return _submit(args, config, patients)
        from .tuning import tune_patient

        results = []
        for pid in patients:
            results.append(
                tune_patient(config, pid, preset=args.preset, progress=not args.no_progress, **_overrides(args))
            )
            print()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'patient':<12} {'status':<10} {'reason':<28} {'trials':>6} {'val mae':>9}  {'time':>7}  best parameters")
    for r in results:
        best = r["best_trial"]
        params = " ".join(f"{k}={v}" for k, v in best["parameters"].items()) if best else "-"
        mae = f"{best['mae']:.3f}" if best else "-"
        print(f"{r['patient']:<12} {r['status']:<10} {r['reason']:<28} {len(r['trials']):>6} {mae:>9}  "
              f"{r['wall_time_s']:>6.1f}s  {params}")
    print(f"results: {Path(results[0]['path']).parent}/<patient>.json" if results else "")
    return 0 if all(r["status"] == "Succeeded" for r in results) else 1


def _submit(args: argparse.Namespace, config, patients: list[str]) -> int:
    from .render import render_experiment
    from .submit import (
        apply_experiment,
        custom_objects_api,
        experiment_state,
        optimal_trial,
        wait_for_experiment,
    )

    docs = [render_experiment(config, pid, args.preset, namespace=args.namespace, **_overrides(args))
            for pid in patients]  # all rendered and checked before anything is sent
    try:
        api = custom_objects_api(args.context)
    except Exception as exc:  # noqa: BLE001 - kubernetes.config raises several types
        print(f"error: no Kubernetes credentials (kubeconfig or in-cluster): {exc}", file=sys.stderr)
        return 1
    names = []
    for doc in docs:
        try:
            apply_experiment(api, doc, args.namespace, replace=args.replace)
        except Exception as exc:  # noqa: BLE001 - ApiException, connection errors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: cannot create Experiment {args.namespace}/{doc['metadata']['name']}: {reason}",
                  file=sys.stderr)
            return 1
        names.append(doc["metadata"]["name"])
        print(f"applied Experiment {args.namespace}/{doc['metadata']['name']}")
    if not args.wait:
        return 0
    code = 0
    for name in names:
        obj = wait_for_experiment(api, name, args.namespace, timeout=args.timeout)
        status, reason, message = experiment_state(obj)
        best = optimal_trial(obj)
        print(f"{name}: {status} ({reason}) {message}")
        if best:
            print(f"  optimal trial {best['name']}: {best['metrics']} {best['parameters']}")
        code |= status != "Succeeded"
    return int(code)
