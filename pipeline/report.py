"""Per-patient report: markdown with the numbers beside the baselines, forecast and Clarke grid plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.metrics import clarke_zones

ZONE_COLOURS = ["#2ca02c", "#1f77b4", "#ff7f0e", "#d62728", "#7f0e0e"]


def metrics_table(metrics: dict[str, dict]) -> str:
    rows = ["| forecaster | RMSE (mg/dL) | MAE (mg/dL) | Clarke A+B % | A % | n |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        rows.append(
            f"| {name} | {m['rmse']:.2f} | {m['mae']:.2f} | {m['clarke_ab']:.1f} | {m['clarke'].get('A', 0):.1f} | {m['n']} |"
        )
    return "\n".join(rows)


def _break_gaps(times, values: np.ndarray, max_step: np.timedelta64) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where consecutive points are further apart than ``max_step`` (no line across gaps)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    v = np.asarray(values, dtype=float)
    cut = np.flatnonzero(np.diff(t) > max_step) + 1
    return np.insert(t, cut, t[cut - 1] + max_step), np.insert(v, cut, np.nan)


def plot_forecast(times, actual, forecasts: dict[str, np.ndarray], path: Path, title: str, *,
                  horizon_minutes: int = 30) -> None:
    """Forecasts and actuals at the time they are *for* (forecast time + horizon); gaps are not bridged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(times, dtype="datetime64[ns]") + np.timedelta64(horizon_minutes, "m")
    max_step = np.timedelta64(30, "m")
    fig, ax = plt.subplots(figsize=(12, 4.2), dpi=110)
    ax.axhspan(70, 180, color="#2ca02c", alpha=0.08, label="target range 70–180")
    ax.plot(times, actual, ".", color="black", ms=3, label="actual (real readings)")
    styles = {"model": ("#1f77b4", 1.4), "ridge": ("#ff7f0e", 0.9), "persistence": ("#7f7f7f", 0.8)}
    for name, (colour, lw) in styles.items():
        if name in forecasts:
            ax.plot(*_break_gaps(times, forecasts[name], max_step), "-", color=colour, lw=lw, label=name, alpha=0.9)
    ax.set_ylabel("glucose (mg/dL)")
    ax.set_xlabel(f"time the forecast is for (made {horizon_minutes} minutes earlier)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_clarke(actual: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    zones = clarke_zones(actual, predicted)
    for z, colour in enumerate(ZONE_COLOURS):
        sel = zones == z
        if sel.any():
            ax.scatter(actual[sel], predicted[sel], s=6, color=colour, label=f"{'ABCDE'[z]} ({sel.mean():.0%})")
    lim = 400
    ax.plot([0, lim], [0, lim], ":", color="grey")
    # Zone boundaries (Clarke et al. 1987).
    for xs, ys in [
        ([0, 175 / 3], [70, 70]), ([175 / 3, 400 / 1.2], [70, 400]), ([70, 70], [84, 400]),
        ([0, 70], [180, 180]), ([70, 290], [180, 400]), ([70, 70], [0, 56]), ([70, 400], [56, 320]),
        ([180, 180], [0, 70]), ([180, 400], [70, 70]), ([240, 240], [70, 180]), ([240, 400], [180, 180]),
        ([130, 180], [0, 70]),
    ]:
        ax.plot(xs, ys, "-", color="black", lw=0.6)
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("reference glucose (mg/dL)")
    ax.set_ylabel("forecast glucose (mg/dL)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _selection_lines(selection: dict) -> list[str]:
    """How the hyperparameters were chosen, when there was a choice (``training.run_best``)."""
    maes = {k.removesuffix("_validation_mae"): v for k, v in selection.items() if k.endswith("_validation_mae")}
    if len(maes) < 2:
        return []
    listed = ", ".join(f"{name} {mae:.3f}" for name, mae in maes.items())
    return [f"The {selection['chosen']} hyperparameters had the lower validation MAE ({listed})."]


def write_report(result, out_dir: Path) -> Path:
    """Write report.md, forecast.png and clarke.png for one RunResult; return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = result.dataset
    pid = result.patient_id
    test = ds.test
    plot_forecast(test.times, test.y, result.predictions, out_dir / "forecast.png",
                  f"{pid}: 30-minute forecasts over the test span (held-out last 30%)")
    plot_clarke(test.y, result.predictions["model"], out_dir / "clarke.png", f"{pid}: Clarke error grid (model)")
    rep = ds.report
    hp = result.hyperparameters
    lines = [
        f"# {pid}: 30-minute glucose forecast",
        "",
        f"Data: {rep.summary()}.",
        "",
        *(f"- {w}" for w in (*rep.warnings, *rep.notes)),
        "",
        f"Windows (leak-free, forecast times on real readings): train {result.sizes['train']}, "
        f"validation {result.sizes['validation']}, test {result.sizes['test']}.",
        "",
        f"Hyperparameters: learning_rate {hp['learning_rate']:g}, dense1 {hp['dense1']}, dense2 {hp['dense2']}, "
        f"epochs {hp['epochs']} (ran {result.training['epochs_run']}, best {result.training['best_epoch']}), seed {hp['seed']}.",
        *_selection_lines(result.training.get("selection", {})),
        "",
        "## Test-set accuracy",
        "",
        metrics_table(result.metrics),
        "",
        "![forecast vs actual](forecast.png)",
        "",
        "![Clarke error grid](clarke.png)",
        "",
    ]
    if result.version_dir is not None:
        lines.insert(2, f"Model: `{result.version_dir}`\n")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
