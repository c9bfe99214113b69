"""`make bench`: the project's figures measured in one run, printed and written as markdown + JSON.

Sections: accuracy (tuned model vs persistence, linear extrapolation, ridge; plus the untuned
defaults), tuning and training wall time per patient, and serving speed (from serving.bench).
Tuning results and models go to build/bench/work/, so a bench run never touches build/tuning or models/.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, Hyperparameters

FORECASTERS = ("model", "persistence", "linear", "ridge")


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kib = next((line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal")), "0")
    mem = f"{int(kib) / 1024**2:.0f} GiB"
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {"cores": os.cpu_count(), "memory": mem, "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def _fmt_accuracy(rows: list[dict]) -> str:
    head = ("| patient | n test | model RMSE | MAE | A+B % | persistence RMSE | MAE | A+B % | linear RMSE | MAE | A+B % "
            "| ridge RMSE | MAE | A+B % | model/persistence | model/ridge |")
    out = [head, "|" + "---|" * 16]
    for r in rows:
        cells = [r["patient"], str(r["n_test"])]
        for f in FORECASTERS:
            cells += [f"{r[f]['rmse']:.2f}", f"{r[f]['mae']:.2f}", f"{r[f]['clarke_ab']:.1f}"]
        cells += [f"{r['model']['rmse'] / r['persistence']['rmse']:.3f}", f"{r['model']['rmse'] / r['ridge']['rmse']:.3f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _mean_row(rows: list[dict]) -> dict:
    mean = {"patient": "**mean**", "n_test": int(np.sum([r["n_test"] for r in rows]))}
    for f in FORECASTERS:
        mean[f] = {k: float(np.mean([r[f][k] for r in rows])) for k in ("rmse", "mae", "clarke_ab")}
    return mean


def _fmt_timing(rows: list[dict]) -> str:
    out = ["| patient | tuning wall time (s) | trials (ok/failed) | best trial | best val MAE | training (s) "
           "| tuned test RMSE | default test RMSE | exported (lower validation MAE) |",
           "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        best = r.get("best_parameters") or {}
        bp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items())
        out.append(
            f"| {r['patient']} | {r['tuning_s']:.1f} | {r['trials_succeeded']}/{r['trials_failed']} | {bp} | "
            f"{r['best_objective'] if r['best_objective'] is not None else '-'} | {r['training_s']:.1f} | "
            f"{r['tuned_rmse']:.2f} | {r['default_rmse']:.2f} | {r['chosen']} |"
        )
    return "\n".join(out)


def accuracy_and_timing(config: Config, patients: list[str], *, quick: bool, models_dir: Path) -> tuple[list, list]:
    from tqdm import tqdm

    from pipeline.dataset import load_patient_dataset
    from pipeline.export import export_model
    from pipeline.training import build_metadata, run_best

    accuracy, timing = [], []
    for pid in tqdm(patients, desc="bench", unit="patient", file=sys.stderr, disable=not sys.stderr.isatty()):
        ds = load_patient_dataset(pid, config)
        tuning = _tune(config, pid, quick)
        candidates = {"tuned": tuning["hp"], "default": config.model} if tuning["hp"] else {"default": config.model}
        if quick:
            candidates = {n: Hyperparameters(**{**hp.as_dict(), "epochs": min(hp.epochs, 5)})
                          for n, hp in candidates.items()}
        t0 = time.perf_counter()
        chosen, runs = run_best(pid, candidates, config, dataset=ds)
        training_s = time.perf_counter() - t0
        tuned, default = runs.get("tuned", runs["default"]), runs["default"]
        name = chosen.training["selection"]["chosen"]
        export_model(chosen.model, models_dir, pid, build_metadata(ds, candidates[name], chosen, config),
                     window=config.series.window, n_features=len(config.series.features))
        m = chosen.metrics
        accuracy.append({"patient": pid, "n_test": m["model"]["n"], "n_train": len(ds.train),
                         **{f: {k: m[f][k] for k in ("rmse", "mae", "clarke_ab")} for f in FORECASTERS},
                         "default_model": {k: default.metrics["model"][k] for k in ("rmse", "mae", "clarke_ab")},
                         "tuned_model": {k: tuned.metrics["model"][k] for k in ("rmse", "mae", "clarke_ab")},
                         "hyperparameters": candidates[name].as_dict(), "hyperparameters_source": name})
        timing.append({"patient": pid, "tuning_s": tuning["wall_time_s"], "training_s": round(training_s, 2),
                       "trials_succeeded": tuning["succeeded"], "trials_failed": tuning["failed"],
                       "best_parameters": tuning["best_parameters"], "best_objective": tuning["best_objective"],
                       "tuned_rmse": tuned.metrics["model"]["rmse"], "default_rmse": default.metrics["model"]["rmse"],
                       "chosen": name, "selection": chosen.training["selection"]})
    return accuracy, timing


def _tune(config: Config, pid: str, quick: bool) -> dict[str, Any]:
    from katib.results import best_hyperparameters
    from katib.tuning import tune_patient

    kwargs = {"preset": "seed", "max_trial_count": 2, "parallel_trial_count": 2} if quick else {}
    t0 = time.perf_counter()
    result = tune_patient(config, pid, out=None, progress=False, **kwargs)
    wall = time.perf_counter() - t0
    best = result.get("best_trial") or {}
    counts = result.get("counts", {})
    return {"hp": best_hyperparameters(config, pid), "wall_time_s": round(wall, 1),
            "succeeded": counts.get("succeeded", 0), "failed": counts.get("failed", 0),
            "best_parameters": best.get("parameters"), "best_objective": best.get("mae")}


def isolated_config(config: Config, work: Path) -> Config:
    """The same configuration rooted in ``work``: tuning results, Experiments and models of a bench
    run land there and never overwrite the user's build/tuning or models/."""
    import tomllib

    from pipeline.config import load_config

    raw = tomllib.loads(config.path.read_text())
    work.mkdir(parents=True, exist_ok=True)
    lines = config.path.read_text().splitlines()
    for entry, patient in zip(raw["patients"], config.patients, strict=True):
        for key, value in (("file", patient.file), ("test_file", patient.test_file)):
            if key in entry and value is not None:
                lines = [ln.replace(f'"{entry[key]}"', f'"{value}"') if ln.strip().startswith(f"{key} =") else ln
                         for ln in lines]
    path = work / "glucose-forecast.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def run_bench(config: Config, *, quick: bool = False, skip_serving: bool = False, patients: list[str] | None = None,
              out_dir: Path | None = None) -> int:
    import shutil

    out_dir = Path(out_dir or config.root / "build" / "bench")
    if (out_dir / "work").exists():
        shutil.rmtree(out_dir / "work")
    config = isolated_config(config, out_dir / "work")
    models_dir = out_dir / "work" / "models"
    patients = patients or (config.patient_ids[:1] if quick else config.patient_ids)
    started = time.perf_counter()
    accuracy, timing = accuracy_and_timing(config, patients, quick=quick, models_dir=models_dir)
    doc: dict[str, Any] = {"machine": machine(), "quick": quick, "accuracy": accuracy, "timing": timing}
    mean = _mean_row(accuracy)
    doc["accuracy_mean"] = {f: mean[f] for f in FORECASTERS}
    md = [f"# glucose-forecast benchmark ({doc['machine']['date']}{', quick' if quick else ''})", "",
          f"Machine: {doc['machine']['cores']} cores, {doc['machine']['memory']}, {doc['machine']['cpu']}, "
          f"Python {doc['machine']['python']}.", "",
          "## Accuracy on leak-free test windows (last 30% of each patient's data, mg/dL)", "",
          _fmt_accuracy([*accuracy, mean]), "",
          f"Mean model RMSE / persistence RMSE: {mean['model']['rmse'] / mean['persistence']['rmse']:.3f}; "
          f"model / ridge: {mean['model']['rmse'] / mean['ridge']['rmse']:.3f}.", "",
          "## Tuning (local Katib executor) and training wall time", "", _fmt_timing(timing), ""]
    if not skip_serving:
        from serving.bench import format_serving, run_serving_bench

        doc["serving"] = run_serving_bench(config, models_dir, quick=quick)
        md += ["## Serving", "", format_serving(doc["serving"]), ""]
    doc["wall_time_s"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=2, default=str))
    (out_dir / "bench.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"\nwritten: {out_dir / 'bench.md'}, {out_dir / 'bench.json'} ({doc['wall_time_s']} s)")
    return 0
