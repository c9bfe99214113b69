"""Tune configured patients with the local executor: render, run, write build/tuning/<patient>.json.

This is what ``glucose-forecast tune`` and ``make demo`` call; the Experiment that runs is the
file written to build/katib/<patient>.yaml, byte for byte what ``kubectl apply -f`` would take.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pipeline.config import Config

from .executor import run_experiment, write_result
from .render import dump, render_experiment
from .results import result_path, tuning_dir


def tune_patient(
    config: Config,
    patient_id: str,
    *,
    preset: str | None = None,
    max_trial_count: int | None = None,
    parallel_trial_count: int | None = None,
    max_failed_trial_count: int | None = None,
    goal: float | None = None,
    out: IO[str] | None | str = "stdout",
    progress: bool = True,
    experiment_dir: Path | None = None,
) -> dict[str, Any]:
    """Render the patient's Experiment, run it locally and write its result; return the result."""
    preset = preset or config.tuning.preset
    doc = render_experiment(
        config,
        patient_id,
        preset,
        max_trial_count=max_trial_count,
        parallel_trial_count=parallel_trial_count,
        max_failed_trial_count=max_failed_trial_count,
        goal=goal,
    )
    exp_dir = experiment_dir or config.root / "build" / "katib"
    exp_dir.mkdir(parents=True, exist_ok=True)
    exp_file = exp_dir / f"{patient_id}.yaml"
    exp_file.write_text(dump(doc))
    result = run_experiment(
        exp_file,
        log_dir=tuning_dir(config) / patient_id,
        workdir=config.root,
        env={"GLUCOSE_FORECAST_CONFIG": str(config.path)},
        out=out,
        progress=progress,
    )
    path = result_path(config, patient_id)
    write_result(
        result,
        path,
        patient=patient_id,
        preset=preset,
        experiment_file=str(exp_file),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return {**result.as_dict(), "patient": patient_id, "preset": preset, "path": str(path)}
