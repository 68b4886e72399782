"""A finished job's result file (per-step metrics CSV) saved beside its dataset version, with a loss/accuracy plot.

Layout: `<version>/finetune/<job id>/` holding `step_metrics.csv`, `metrics.png` and `job.json`. The plot is
drawn on a bare matplotlib Figure (Agg canvas), so no display or global pyplot state is involved.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from finetune.backend import Backend, FinetuneError, Job


@dataclass(frozen=True)
class Results:
    dir: Path
    csv: Path
    plot: Path
    final: dict[str, float]  # last value of every metric column


def results_dir(version_dir: Path | None, output_dir: Path, job_id: str) -> Path:
    """Beside the dataset version the job was made from; under output_dir for a job made elsewhere."""
    return (Path(version_dir) if version_dir else Path(output_dir)) / "finetune" / job_id


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_metrics(data: bytes) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.ParserError) as exc:
        raise FinetuneError(f"the result file is not a CSV of step metrics: {' '.join(str(exc).split())}") from None
    if "step" not in frame.columns:
        raise FinetuneError(f"the result file has no `step` column (columns: {', '.join(map(str, frame.columns))})")
    return frame


def plot_metrics(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Loss on the left, token accuracy on the right; validation columns (measured every few steps) as dots."""
    fig = Figure(figsize=(11, 4.2), dpi=100)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, word, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "token accuracy")):
        for column in [c for c in frame.columns if word in str(c)]:
            series = frame[["step", column]].dropna()
            if series.empty:
                continue
            sparse = len(series) < len(frame) / 2
            ax.plot(series["step"], series[column], marker="o" if sparse else None,
                    markersize=3, linewidth=1.2, label=str(column))
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _write_atomic(path, buf.getvalue())


def save_results(backend: Backend, job: Job, dest: Path, *, dataset: str | None = None) -> Results:
    if not job.result_files:
        raise FinetuneError(f"job {job.id} has no result file yet (status {job.status}); results come when it "
                            f"succeeds: `python pipeline.py jobs wait {job.id}`")
    data = backend.download_result(job.result_files[0])
    frame = read_metrics(data)
    dest.mkdir(parents=True, exist_ok=True)
    csv_path, plot_path = dest / "step_metrics.csv", dest / "metrics.png"
    _write_atomic(csv_path, data)
    title = f"{job.fine_tuned_model or job.id}" + (f" · {dataset}" if dataset else "")
    plot_metrics(frame, plot_path, title)
    final = {}
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce").dropna()
        if column != "step" and not values.empty and math.isfinite(values.iloc[-1]):
            final[str(column)] = float(values.iloc[-1])
    summary: dict[str, Any] = {**asdict(job), "dataset": dataset, "final_metrics": final}
    _write_atomic(dest / "job.json", (json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
                  .encode("utf-8"))
    return Results(dest, csv_path, plot_path, final)
