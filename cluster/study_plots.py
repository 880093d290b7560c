"""The study's figures: quality against steps for every variant, and the sample table of the first seed."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors.torch import load_file

from cluster.study_metrics import METRIC_NAMES, METRICS
from teachers.plots import pyplot, save_figure, save_sample_table

__all__ = ["plot_quality", "plot_samples"]


def plot_quality(results: dict, agg: dict, teachers: dict, floor: dict, path: Path) -> None:
    """Quality against steps: every variant (colour) and objective (line style), the teachers, the floor."""
    plt = pyplot()
    metrics = METRICS[results["metric_kind"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 5.2), squeeze=False)
    variants = list(dict.fromkeys(e["variant"] for e in agg.values()))
    colours = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    for ax, metric in zip(axes[0], metrics):
        for key, e in agg.items():
            steps = sorted(s for (s, m) in e["cells"] if m == metric)
            means = [e["cells"][(s, metric)][0] for s in steps]
            halves = [e["cells"][(s, metric)][1] or 0.0 for s in steps]
            ax.errorbar(
                steps,
                means,
                yerr=halves,
                marker="o",
                ms=3,
                capsize=2,
                lw=1.2,
                color=colours(variants.index(e["variant"])),
                ls="-" if e["objective"] == "flow_map" else ":",
                label=key,
            )
        grey = min(0.25, 0.7 / max(len(teachers) - 1, 1))  # darkest to 0.85 at most: a grey level is <= 1
        for i, (key, t) in enumerate(teachers.items()):
            steps = sorted(s for (s, m) in t["cells"] if m == metric and s is not None)
            ax.plot(
                steps,
                [t["cells"][(s, metric)][0] for s in steps],
                "--",
                color=str(0.15 + grey * i),
                lw=1.5,
                label=f"{t['label']} (Euler)",
            )
        if metric in floor:
            ax.axhline(floor[metric][0], color="red", ls="-.", lw=1, label="real-vs-real floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sampling steps (NFE)")
        ax.set_ylabel(METRIC_NAMES[metric])
        ax.set_title(f"{results['study']}: {METRIC_NAMES[metric]} (mean, 95% interval over seeds)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(plt, fig, path)


def plot_samples(results: dict, agg: dict, path: Path) -> bool:
    """One row per variant/objective of the first seed (students at their steps), teachers on top."""

    seed = min(results["seeds"])
    rows = {}
    for t in results["teachers"]:
        if t["seed"] == seed and Path(t["samples_files"]["euler"]).is_file():
            rows[f"{t['label']} (Euler)"] = _by_steps(load_file(t["samples_files"]["euler"]))
    for key, e in agg.items():
        run = next((r for r in e["runs"] if r["seed"] == seed), None)
        if run is not None and Path(run["samples_file"]).is_file():
            rows[key] = _by_steps(load_file(run["samples_file"]))
    if not rows:
        return False
    save_sample_table(rows, path)
    return True


def _by_steps(cells: dict) -> dict:
    """``steps-K`` panels (a file's keys come back sorted as text: 1, 2, 32, 4) as columns in step order."""
    by_steps = {key.split("-")[1]: x for key, x in cells.items()}
    return {f"{k} step(s)": by_steps[k] for k in sorted(by_steps, key=lambda k: int(k) if k.isdigit() else math.inf)}
