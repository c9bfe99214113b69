"""CLI: ``glucose-forecast pipeline compile | run-local | submit`` (the KFP v2 pipeline)."""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.errors import InputError
from pipeline.kfp_steps import PIPELINE_NAME, YAML_PATH


@dataclass
class Submission:
    """What `pipeline submit` sends: one pipeline (package) and one run per patient."""

    host: str
    package: Path
    pipeline_name: str
    version_name: str
    experiment_name: str
    namespace: str | None
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments", "source"}


def run_arguments(config: Config, patient_id: str, use_tuned: bool = True) -> tuple[dict[str, Any], str]:
    """Pipeline arguments for a patient: its best Katib trial if tuned, else [model] defaults."""
    config.patient(patient_id)
    hp = config.model
    source = "defaults ([model])"
    if use_tuned:
        from katib.results import best_hyperparameters

        tuned = best_hyperparameters(config, patient_id)
        if tuned is not None:
            hp, source = tuned, "tuned (build/tuning)"
    return {
        "patient_id": patient_id,
        "data_file": "",
        "learning_rate": float(hp.learning_rate),
        "dense1": int(hp.dense1),
        "dense2": int(hp.dense2),
        "epochs": int(hp.epochs),
        "seed": int(hp.seed),
    }, source


def plan_submission(
    config: Config,
    host: str,
    patients: list[str],
    *,
    package: Path = YAML_PATH,
    experiment_name: str = PIPELINE_NAME,
    namespace: str | None = None,
    use_tuned: bool = True,
) -> Submission:
    """Everything `submit` will send, checked before any network call."""
    if not host.startswith(("http://", "https://")):
        raise InputError(f"--host {host!r}: give the KFP API endpoint URL, e.g. http://localhost:8080")
    if not package.is_file():
        raise InputError(f"{package}: no compiled pipeline; run `make pipeline`")
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
    sub = Submission(host.rstrip("/"), package, PIPELINE_NAME, f"{PIPELINE_NAME}-{digest}", experiment_name, namespace)
    for pid in patients:
        arguments, source = run_arguments(config, pid, use_tuned)
        sub.runs.append({"name": f"{PIPELINE_NAME}-{pid}", "arguments": arguments, "source": source})
    return sub


def submit(sub: Submission, client: Any = None, token: str | None = None) -> list[str]:
    """Upload the pipeline (or a new version of it) and start one run per patient; return run ids."""
    if client is None:
        import kfp

        kwargs = {"namespace": sub.namespace} if sub.namespace else {}
        client = kfp.Client(host=sub.host, existing_token=token, **kwargs)
    pipeline_id = client.get_pipeline_id(sub.pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(sub.package), pipeline_name=sub.pipeline_name,
                                          description="compute -> save -> compute_mae")
        pipeline_id = pipeline.pipeline_id
    version_id = None
    versions = client.list_pipeline_versions(pipeline_id, page_size=100).pipeline_versions or []
    for v in versions:
        if v.display_name == sub.version_name:
            version_id = v.pipeline_version_id
    if version_id is None:
        version = client.upload_pipeline_version(str(sub.package), pipeline_version_name=sub.version_name,
                                                 pipeline_id=pipeline_id)
        version_id = version.pipeline_version_id
    experiment = client.create_experiment(sub.experiment_name, **({"namespace": sub.namespace} if sub.namespace else {}))
    run_ids = []
    for run in sub.runs:
        result = client.run_pipeline(experiment_id=experiment.experiment_id, job_name=run["name"],
                                     params=run["arguments"], pipeline_id=pipeline_id, version_id=version_id)
        run_ids.append(result.run_id)
    return run_ids


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="the KFP v2 pipeline: compile, run locally, submit to Kubeflow",
                       description="The KFP v2 pipeline compute -> save -> compute_mae (pipeline/kfp_pipeline.py).")
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    c = psub.add_parser("compile", help="compile to pipeline/glucose_forecast_pipeline.yaml",
                        description="Compile the pipeline to YAML (committed; the tests fail when it is stale).")
    c.add_argument("--out", type=Path, default=YAML_PATH, help=f"output file (default: {YAML_PATH.name})")
    c.set_defaults(func=_compile)

    r = psub.add_parser(
        "run-local", help="run the pipeline on this machine with kfp.local (no cluster)",
        description=("Run compute -> save -> compute_mae for one patient with kfp.local's SubprocessRunner in this "
                     "environment; artifacts (the SavedModel under save/saved_model/<patient>/1) go to --root."),
    )
    r.add_argument("--patient", required=True)
    r.add_argument("--root", type=Path, help="pipeline root for artifacts (default: build/kfp-local)")
    r.add_argument("--epochs", type=int, help="override the epochs (default: tuned or [model])")
    r.add_argument("--defaults", action="store_true", help="ignore tuning results; use the [model] defaults of glucose-forecast.toml")
    r.set_defaults(func=_run_local)

    s = psub.add_parser(
        "submit", help="upload the compiled pipeline to a KFP endpoint and start one run per patient",
        description=("Upload pipeline/glucose_forecast_pipeline.yaml (a new pipeline version when it changed) and "
                     "start a run per patient with its tuned hyperparameters (build/tuning/<patient>.json) or the "
                     "[model] defaults. Authentication: --token or the kfp client's usual credentials."),
    )
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--patient", action="append", help="patient id (repeatable; default: all)")
    who.add_argument("--all", action="store_true", help="every configured patient (default)")
    s.add_argument("--experiment", default=PIPELINE_NAME, help="KFP experiment name (default: glucose-forecast)")
    s.add_argument("--namespace", help="Kubeflow profile namespace (multi-user clusters)")
    s.add_argument("--token", help="bearer token (default: kfp client credentials)")
    s.add_argument("--defaults", action="store_true", help="ignore tuning results; use the [model] defaults of glucose-forecast.toml")
    s.add_argument("--dry-run", action="store_true", help="print what would be sent and stop")
    s.set_defaults(func=_submit)
    p.set_defaults(func=_help, pipeline_parser=p)


def _help(args: argparse.Namespace) -> int:
    args.pipeline_parser.print_help()
    return 2


def _compile(args: argparse.Namespace) -> int:
    from pipeline.kfp_pipeline import compile_pipeline

    path = compile_pipeline(args.out)
    print(f"wrote {path}")
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from kfp import local

    from pipeline.kfp_pipeline import glucose_forecast_pipeline

    config = load_config()
    try:
        arguments, source = run_arguments(config, args.patient, not args.defaults)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.epochs:
        arguments["epochs"] = args.epochs
    root = (args.root or config.root / "build" / "kfp-local").resolve()
    print(f"running {PIPELINE_NAME} for {args.patient} with {source}: {arguments}")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    run = glucose_forecast_pipeline(**arguments)
    print(f"mae={run.outputs['mae']:.6f}  (artifacts under {root})")
    return 0


def _submit(args: argparse.Namespace) -> int:
    config = load_config()
    patients = args.patient or config.patient_ids
    try:
        sub = plan_submission(config, args.host, patients, experiment_name=args.experiment,
                              namespace=args.namespace, use_tuned=not args.defaults)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pipeline {sub.pipeline_name} version {sub.version_name} -> {sub.host} (experiment {sub.experiment_name})")
    for run in sub.runs:
        print(f"  run {run['name']}: {run['source']}: {run['arguments']}")
    if args.dry_run:
        return 0
    try:
        run_ids = submit(sub, token=args.token)
    except Exception as exc:  # noqa: BLE001 - network/auth errors from kfp_server_api, urllib3, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: cannot submit to {sub.host}: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    for run, run_id in zip(sub.runs, run_ids, strict=True):
        print(f"started {run['name']}: {sub.host}/#/runs/details/{run_id}")
    return 0
