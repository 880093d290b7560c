"""The study's report rendered: its tables, conclusion and plots, ``results.md``, from the decisions
``cluster.study_claims`` makes on the raw results.

Every number in ``OUT/results.md`` comes from ``OUT/results/NAME/results.json`` (written beside it), so
nothing in the document is typed by hand.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from cluster.study_claims import (
    aggregate,
    best_row,
    claim_verdicts,
    comparable_rows,
    default_decision,
    floor_cells,
    teacher_cells,
)
from cluster.study_metrics import METRIC_NAMES, METRICS, to_teacher_best
from cluster.study_plots import plot_quality, plot_samples
from guide_store.atomic import write_json_atomically, write_text_atomically
from teachers.evaluation import primary_metric

__all__ = ["write_report", "write_index"]


def _fmt(cell: tuple[float, float | None] | None) -> str:
    if cell is None:
        return "-"
    mean, half = cell
    if not math.isfinite(mean):
        return "diverged"
    text = f"{mean:.4g}"
    if half is not None and half <= 1e-9 * abs(mean):  # equal values: float noise, not a spread
        half = 0.0
    return text if half is None else f"{text} ± {half:.2g}"


def _fmt_boot(iv: list[float] | None) -> str:
    """A one-seed cell's run bootstrap interval over its evaluation draws, in brackets."""
    return "" if not iv else f" [{iv[0]:.4g}, {iv[1]:.4g}]"


def _interval_note(results: dict) -> str:
    """What the section says about per-run FID intervals: kept (shown for one-seed cells) or, for runs made
    before they were, that only scalars were kept."""
    if results["metric_kind"] != "image":
        return ""
    rows = [r for run in results["runs"] for r in run["rows"] if "fid" in r]
    kept = sum("fid_interval" in r for r in rows)
    if rows and kept == len(rows):
        return (
            " Each run's FID also has a 95% bootstrap interval over its evaluation draws (`fid_interval` in the "
            "raw JSON); a one-seed cell shows it in brackets."
        )
    if kept == 0:
        return (
            " This section's runs kept only scalar FIDs (made before per-run bootstrap intervals were kept): "
            "a one-seed cell has no interval."
        )
    return (
        f" {kept} of {len(rows)} run rows kept a bootstrap FID interval (`fid_interval`; the others were made "
        "before it was kept): a one-seed cell shows it in brackets when its run has one."
    )


def _fmt_count(cell: tuple[float, float | None] | None) -> str:
    """A count (distinct pairs) as a whole number, with its interval when it has one."""
    if cell is None:
        return "-"
    return f"{cell[0]:.0f}" + (f" ± {cell[1]:.0f}" if cell[1] else "")


def _label(results: dict, key: str) -> str:
    variant, objective = key.split("/")
    label = next(v["label"] for v in results["study_config"]["variants"] if v["name"] == variant)
    return f"{label}, `{objective}`"


def _student_table(results: dict, agg: dict, metric: str, with_pairs: bool = False) -> list[str]:
    """One row per variant/objective; ``with_pairs`` adds the distinct noise-data pairs its runs used (when
    the results have them: those from before it was kept do not)."""
    steps = sorted({s for e in agg.values() for (s, m) in e["cells"] if m == metric})
    pairs = with_pairs and any(e["distinct_pairs"] is not None for e in agg.values())
    head = (
        ["variant", "objective", "teacher NFE / record"]
        + (["distinct pairs"] if pairs else [])
        + [f"{METRIC_NAMES[metric]}, {s} step{'s' * (s > 1)}" for s in steps]
        + ["seeds", "wall s / run"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, e in agg.items():
        cells = [
            e["variant"],
            f"`{e['objective']}`",
            str(e["nfe_per_record"] if e["nfe_per_record"] is not None else "adaptive"),
        ]
        cells += [_fmt_count(e["distinct_pairs"])] if pairs else []
        cells += [_fmt(e["cells"].get((s, metric))) + _fmt_boot(e.get("boot", {}).get((s, metric))) for s in steps]
        cells += [str(len(e["seeds"])), _fmt(e["wall"])]
        if key == results["default"]:
            cells[0] = f"**{cells[0]}** (default)"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _teacher_table(results: dict, teachers: dict, metric: str) -> list[str]:
    steps = sorted({s for t in teachers.values() for (s, m) in t["cells"] if s is not None and m == metric})
    ref = next((t["reference_label"] for t in teachers.values() if t["reference_label"]), None)
    straight = any(t["straightness"] is not None for t in teachers.values())
    head = (
        [f"teacher: {METRIC_NAMES[metric]}"]
        + [f"Euler {s}" for s in steps]
        + ["adaptive (mean NFE)"]
        + ([ref] if ref else [])
        + ["best row"]
        + (["straightness"] if straight else [])
        + ["training s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for t in teachers.values():
        cells = [t["label"]] + [_fmt(t["cells"].get((s, metric))) for s in steps]
        cells += [f"{_fmt(t['cells'].get((None, metric)))} ({t['nfe_adaptive']:.0f})"]
        cells += [_fmt(t["reference"][metric]) if t["reference"] else "-"] if ref else []
        cells += [_fmt(t["best"][metric])] + ([_fmt(t["straightness"])] if straight else []) + [_fmt(t["train"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _screen_lines(results: dict) -> list[str]:
    sc = results.get("screen")
    if not sc:
        return []
    seeds = ("seed " if len(sc["seeds"]) == 1 else "seeds ") + ", ".join(map(str, sc["seeds"]))
    how = (
        f"the {sc['keep']} best by the primary metric over the teacher's best, mean over steps "
        f"{', '.join(map(str, sc['steps']))}"
        + (f", and every row of {', '.join(sc['always'])}" if sc["always"] else "")
    )
    if sc.get("finalists") is None:
        return [
            f"- **Screen:** every variant runs at {seeds} first; the finalists ({how}) are chosen when "
            "the screen is finished, and it is not yet."
        ]
    ranking = "; ".join(f"{k} {v:.3g}" for k, v in sc["ranking"])
    return [
        f"- **Screen:** every variant ran at {seeds}; the finalists ({how}) go on to every seed: "
        f"{', '.join(sc['finalists'])}. Screen ranking: {ranking}. The best rows below are among the "
        "rows with the most seeds."
    ]


def _conclusion(results: dict, agg: dict, teachers: dict, verdicts: list[dict]) -> list[str]:
    """The findings in words, each sentence built from the numbers above it (best rows among the rows with
    the most seeds)."""
    metric = primary_metric(results["metric_kind"])
    name, ratio = METRIC_NAMES[metric], to_teacher_best(metric)
    floor = floor_cells(results).get(metric)
    lines = _screen_lines(results)
    full = comparable_rows(agg)
    for steps in sorted({s for e in agg.values() for (s, m) in e["cells"] if m == metric}):
        best = best_row(full, steps, metric)
        assert best is not None  # these steps have the metric in some row
        teacher = {k: t["cells"].get((steps, metric)) for k, t in teachers.items()}
        t_text = "; ".join(
            f"{teachers[k]['label']} with {steps} Euler step{'s' * (steps > 1)}: {_fmt(c)}"
            for k, c in teacher.items()
            if c is not None
        )
        closest = best_row(full, steps, ratio)
        r_text = (
            ""
            if closest is None
            else (
                f" Closest to its own teacher: {_label(results, closest)} at "
                f"{_fmt(agg[closest]['cells'][(steps, ratio)])} x its teacher's best {name}."
            )
        )
        lines.append(
            f"- **{steps} step{'s' * (steps > 1)}:** the best student is {_label(results, best)} "
            f"({name} {_fmt(agg[best]['cells'][(steps, metric)])}).{r_text}" + (f" {t_text}." if t_text else "")
        )
    rows = [
        (t["cells"][(s, m)], k, "the adaptive solver" if s is None else f"{s} Euler steps")
        for k, t in teachers.items()
        for (s, m) in t["cells"]
        if m == metric
    ]
    rows += [
        (t["reference"][metric], k, f"the reference solver ({t['reference_label']})")
        for k, t in teachers.items()
        if t["reference"]
    ]
    best_teacher = min(rows, default=None, key=lambda x: x[0][0])
    if best_teacher is not None:
        cell, k, how = best_teacher
        lines.append(
            f"- The best teacher row is {teachers[k]['label']} with {how} ({name} {_fmt(cell)}); the "
            f"real-vs-real floor is {_fmt(floor)}."
        )
    for v in verdicts:
        head = f"- {v['claim']} ({v['steps']} step{'s' * (v['steps'] > 1)}): **{v['verdict']}**"
        if v["verdict"] == "not run":
            lines.append(head + " (a side has no finished runs).")
            continue
        diff = (
            ""
            if not math.isfinite(v["difference"])
            else (
                f"; paired difference {_fmt((v['difference'], v['half_width']))} "
                f"({100 * v['difference'] / v['b'][0]:+.1f}%) over {v['seeds']} seed(s)"
            )
        )
        lines.append(
            f"{head}. Best of one side: {_label(results, v['better'])} at {_fmt(v['a'])}; of the "
            f"other: {_label(results, v['than'])} at {_fmt(v['b'])}{diff}."
        )
    paper = [v for v in verdicts if v["paper"]]
    if paper:
        failing = sorted(
            {
                f'"{v["claim"]}" at {v["steps"]} step{"s" * (v["steps"] > 1)} ({v["verdict"]})'
                for v in paper
                if v["verdict"] != "holds"
            }
        )
        lines.insert(
            0,
            f"- **The paper's claims:** {len(paper) - len(failing)} of {len(paper)} tests hold here"
            + (f"; these do not: {'; '.join(failing)}." if failing else "."),
        )
    lines.append(_default_line(results, agg, metric))
    lines += [f"- **Decision:** {note}" for note in results.get("study_config", {}).get("notes", [])]
    return lines


def _default_line(results: dict, agg: dict, metric: str) -> str:
    """``default_decision`` in words: whether the shipped default stays, whether a gap is settled, and which
    row is best over all if another."""
    decision = default_decision(results, agg, metric)
    if decision is None:
        return "- **Default:** the shipped default's runs are not finished."
    default, best, overall = decision["default"], decision["best"], decision["overall"]
    line = "- **Default:** "
    if decision["against_default"] is None:
        line += (
            f"the shipped default, {_label(results, default)}, is the best 1-step student from teachers "
            "like its own; it stays."
        )
    else:
        mean, half, _, verdict = decision["against_default"]
        line += (
            f"the best 1-step student from teachers like the shipped default's is {_label(results, best)}, "
            f"not the default ({_label(results, default)}); paired {METRIC_NAMES[metric]} difference "
            f"{_fmt((mean, half))}: "
            + (
                "settled, so the default should change to it."
                if verdict != "not settled"
                else "not settled, so the default stays."
            )
        )
    if decision["against_best"] is not None:
        mean, half, _, verdict = decision["against_best"]
        line += (
            f" Over every row the best is {_label(results, overall)}, whose teacher had a different number "
            f"of reflow rounds (a costlier teacher, see the teacher table); paired difference against "
            f"{_label(results, best)} {_fmt((mean, half))}, "
            + ("settled." if verdict != "not settled" else "not settled.")
        )
    return line


def _trained_seconds(results: dict) -> float:
    """The teachers' training time, each trained teacher once (an ensemble's entry repeats its members' sum)."""
    return sum(t["train_seconds"] for t in results["teachers"] if "members" not in t)


def _section(results: dict, figures: dict[str, str]) -> list[str]:
    agg, teachers = aggregate(results), teacher_cells(results)
    verdicts = claim_verdicts(results)
    metrics = METRICS[results["metric_kind"]]
    st, n_planned = results["settings"], len(results["planned_runs"])
    floor = floor_cells(results)
    ratio = to_teacher_best(metrics[0])
    rows_of = (
        "Euler, adaptive and the reference solver"
        if all(t.get("reference_rows") for t in results["teachers"])
        else "Euler and adaptive"
    )
    ratio_table = (
        [
            f"Each run's {METRIC_NAMES[metrics[0]]} over the best row of its own teachers at its seed "
            f"({rows_of}), then the mean over seeds:",
            "",
            *_student_table(results, agg, ratio),
            "",
        ]
        if any(m == ratio for e in agg.values() for (_, m) in e["cells"])
        else []
    )
    trained = _trained_seconds(results)
    seconds = (
        sum(r["wall_seconds"] for r in results["runs"]) + trained + sum(t["eval_seconds"] for t in results["teachers"])
    )
    lines = [
        f"## {results['study']}{' (quick, reduced)' if results['quick'] else ''}: {results['data']}",
        "",
        f"Made by `bezier-distill study {results['config_file']}{' --quick' if results['quick'] else ''}` "
        f"from `{results['raw_json']}` on {results['written']}. {len(results['runs'])} of {n_planned} "
        f"planned runs finished; seeds {', '.join(map(str, results['seeds']))}. Every run: "
        f"{st['guide_records']} guide records, {st['student_steps']} student steps of "
        f"{st['student_batch_size']} records on each of {st['student_workers']} DeepSpeed ranks, "
        f"{st['eval_samples']} evaluation samples. Intervals: 95%, Student t over seeds." + _interval_note(results),
        "",
        "### Conclusion",
        "",
        *_conclusion(results, agg, teachers, verdicts),
        "",
        "### Students",
        "",
        *ratio_table,
        *_student_table(results, agg, metrics[0], with_pairs=True),
        "",
        *_student_table(results, agg, metrics[1]),
        "",
        *(
            [
                "Distinct pairs: the distinct (noise, data) pairs a run's guide records came from, mean over "
                "seeds (`inversion` pairs are bounded by the number of training examples; generated pairs are "
                "all distinct).",
                "",
            ]
            if any(e["distinct_pairs"] is not None for e in agg.values())
            else []
        ),
        "### Teachers",
        "",
        *_teacher_table(results, teachers, metrics[0]),
        "",
        *_teacher_table(results, teachers, metrics[1]),
        "",
        *(
            [
                "Straightness: the mean squared gap between a teacher's Euler x 32 trajectory and its chord "
                "(0 = straight; 256 noise draws of the seed), as each run report gives it.",
                "",
            ]
            if any(t["straightness"] is not None for t in teachers.values())
            else []
        ),
        "Real-vs-real floor: " + ", ".join(f"{METRIC_NAMES[m]} {_fmt(c)}" for m, c in floor.items()) + ".",
        "",
        "### Cost",
        "",
        f"Compute time of everything in this section: {seconds / 3600:.2f} h on this machine "
        f"({results['machine']}): teachers trained in "
        f"{trained / 60:.1f} min, evaluated in "
        f"{sum(t['eval_seconds'] for t in results['teachers']) / 60:.1f} min, variant runs "
        f"{sum(r['wall_seconds'] for r in results['runs']) / 60:.1f} min. Teacher NFEs per guide record are "
        "in the student tables (the coupling's solve plus the guides); a 2-rectified teacher also paid "
        "for its reflow pairs in its training time.",
        "",
    ]
    for title, file in figures.items():
        lines += [f"![{title}]({file})", ""]
    return lines


def write_report(results: dict, out: str | Path) -> Path:
    """Write ``OUT/results/NAME/`` (``results.json`` and the figures) and rebuild ``OUT/results.md`` from
    every study found there. Returns the path of ``results.md``."""
    out = Path(out)
    folder = out / "results" / results["study"]
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        **results,
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "raw_json": f"results/{results['study']}/results.json",
        "machine": f"{os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}",
    }
    agg, teachers = aggregate(results), teacher_cells(results)
    figures = {}
    if agg or teachers:
        plot_quality(results, agg, teachers, floor_cells(results), folder / "quality_vs_steps.png")
        figures["quality against steps"] = f"results/{results['study']}/quality_vs_steps.png"
    if plot_samples(results, agg, folder / "samples.png"):
        figures["samples, first seed"] = f"results/{results['study']}/samples.png"
    results["figures"] = figures
    write_json_atomically(folder / "results.json", results)
    return write_index(out)


def write_index(out: Path) -> Path:
    """``OUT/results.md``: one section per study under ``OUT/results/`` (digits first)."""
    studies = [json.loads(f.read_text()) for f in sorted((out / "results").glob("*/results.json"))]
    studies.sort(key=lambda r: (r["data"] != "digits", r["study"]))
    lines = [
        "# Bezier distillation against rectified-flow distillation: results",
        "",
        "Generated by `bezier-distill study`; do not edit by hand. Each section's numbers come from its raw "
        "JSON, and re-running the command (it resumes) rewrites this file.",
        "",
        "How to read it: lower is better for every metric (FID, KID, sliced W2, energy distance). A variant is "
        "a path (linear, quadratic, cubic), a coupling (`generated`: the teacher's own samples as end points, "
        "classic rectified-flow distillation; `inversion`: real data as end points), a guide rule and its "
        "teachers; each runs with the paper's `velocity` objective (sampled with Euler steps) and the "
        "`flow_map` objective (sampled by composing the learned map). A claim **holds** when its paired "
        "95% interval over seeds lies entirely on its side, **does not hold** when it lies entirely on the "
        "other side, and is **not settled** otherwise.",
        "",
    ]
    for results in studies:
        lines += _section(results, results["figures"])
    return write_text_atomically(out / "results.md", "\n".join(lines))
