"""The study's report, made only from its raw results: tables, claim verdicts, plots, ``results.md``.

Every number in ``OUT/results.md`` is computed here from ``OUT/results/NAME/results.json``
(written beside it), so nothing in the document is typed by hand. Intervals are
95% Student-t intervals over seeds; a claim compares two variants seed by seed
(every variant of a seed shares its teachers, data split and evaluation noise),
so its interval is that of the paired difference.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from cluster.study_metrics import METRIC_NAMES, METRICS, to_teacher_best
from cluster.study_plots import plot_quality, plot_samples
from guide_store.atomic import write_json_atomically, write_text_atomically
from teachers.evaluation import primary_metric

__all__ = ["interval", "aggregate", "claim_verdicts", "finalists", "teacher_bests", "write_report", "METRICS"]


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t interval (``None`` from one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy.stats import t  # scipy is slow to import; only a study's intervals need it

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def _value(row: dict, metric: str) -> float:
    return float("inf") if "non_finite" in row else row[metric]


def teacher_bests(results: dict) -> dict[tuple[str, int], float]:
    """``{(teacher recipe, seed): its best primary-metric value}`` over every row it was evaluated with (Euler
    at ``eval.steps``, adaptive, and the reference solver when the study's teachers have that row)."""
    metric = primary_metric(results["metric_kind"])
    return {
        (t["key"], t["seed"]): min(_value(r, metric) for r in t["rows"] + (t.get("reference_rows") or []))
        for t in results["teachers"]
    }


def _ratio_cells(results: dict, runs: list[dict], bests: dict) -> dict:
    """``{(steps, METRIC_to_teacher_best): (mean, half)}``: each run's primary metric over the best row of its
    own teachers at its own seed (what the run report calls ``fid_to_teacher_best``), when every run has one."""
    metric = primary_metric(results["metric_kind"])
    best = [
        min((bests[(k, r["seed"])] for k in r.get("teachers", []) if (k, r["seed"]) in bests), default=None)
        for r in runs
    ]
    if not all(b is not None and math.isfinite(b) and b > 0 for b in best):
        return {}
    return {
        (row["steps"], to_teacher_best(metric)): interval(
            [_value(_row(r, row["steps"]), metric) / b for r, b in zip(runs, best)]
        )
        for row in runs[0]["rows"]
    }


def aggregate(results: dict) -> dict[str, dict]:
    """``{"variant/objective": {"runs", "seeds", "cells": {(steps, metric): (mean, half)}, ...}}``; the cells
    include ``METRIC_to_teacher_best`` (the primary metric over the teacher's best) where the teachers' rows are
    in the results."""
    bests = teacher_bests(results)
    out: dict[str, dict] = {}
    for r in results["runs"]:
        entry = out.setdefault(
            f"{r['variant']}/{r['objective']}", {"runs": [], "variant": r["variant"], "objective": r["objective"]}
        )
        entry["runs"].append(r)
    for entry in out.values():
        runs = entry["runs"]
        entry["seeds"] = sorted(r["seed"] for r in runs)
        entry["cells"] = {
            (row["steps"], m): interval([_value(_row(r, row["steps"]), m) for r in runs])
            for row in runs[0]["rows"]
            for m in METRICS[results["metric_kind"]]
        }
        entry["cells"].update(_ratio_cells(results, runs, bests))
        entry["boot"] = (
            {
                (row["steps"], m): _row(runs[0], row["steps"])[f"{m}_interval"]
                for row in runs[0]["rows"]
                for m in METRICS[results["metric_kind"]]
                if f"{m}_interval" in _row(runs[0], row["steps"])
            }
            if len(runs) == 1
            else {}
        )
        entry["wall"] = interval([r["wall_seconds"] for r in runs])
        entry["nfe_per_record"] = runs[0]["nfe_per_record"]
        pairs = [r.get("distinct_pairs") for r in runs]
        entry["distinct_pairs"] = interval(pairs) if None not in pairs else None
    return out


def _row(run: dict, steps) -> dict:
    return next(r for r in run["rows"] if r["steps"] == steps)


def _teacher_cells(results: dict) -> dict[str, dict]:
    """Per teacher recipe: ``{(steps, metric): (mean, half)}`` over seeds, Euler rows and the adaptive one;
    ``reference`` (``{metric: (mean, half)}``, the reference solver's row, when every seed has it) and ``best``
    (``{metric: (mean, half)}``: each seed's best row over all of them)."""
    out: dict[str, dict] = {}
    for t in results["teachers"]:
        out.setdefault(t["key"], {"label": t["label"], "evals": []})["evals"].append(t)
    for entry in out.values():
        ev = entry["evals"]
        metrics = METRICS[results["metric_kind"]]
        entry["cells"] = {
            (row["steps"], m): interval([_value(_row(e, row["steps"]), m) for e in ev])
            for row in ev[0]["rows"]
            for m in metrics
        }
        refs = [e.get("reference_rows") or [] for e in ev]
        entry["reference"] = {m: interval([_value(r[0], m) for r in refs]) for m in metrics} if all(refs) else None
        entry["reference_label"] = f"{refs[0][0]['label']} x {refs[0][0]['steps']}" if all(refs) else None
        entry["best"] = {
            m: interval([min(_value(r, m) for r in e["rows"] + (e.get("reference_rows") or [])) for e in ev])
            for m in metrics
        }
        entry["nfe_adaptive"] = interval([_row(e, None)["nfe"] for e in ev])[0]
        entry["train"] = interval([e["train_seconds"] for e in ev])
        gaps = [e.get("straightness") for e in ev]
        entry["straightness"] = interval(gaps) if None not in gaps else None
    return out


def _members(results: dict, agg: dict, entries: list[str]) -> list[str]:
    keys = []
    for e in entries:
        keys += [k for k in agg if k == e or k.split("/")[0] == e]
    return keys


def _paired(agg: dict, a: str, b: str, steps: int, metric: str) -> tuple[float, float | None, int, str]:
    """``a`` against ``b`` seed by seed: the mean paired difference, its interval's half-width, the number of
    seeds both have, and the verdict on "``a`` is better" (lower)."""
    by_seed = {r["seed"]: _value(_row(r, steps), metric) for r in agg[b]["runs"]}
    pairs = [(_value(_row(r, steps), metric), by_seed[r["seed"]]) for r in agg[a]["runs"] if r["seed"] in by_seed]
    a_bad, b_bad = (any(not math.isfinite(p[i]) for p in pairs) for i in (0, 1))
    if a_bad or b_bad:  # a diverged side loses; both diverged settles nothing
        return math.nan, None, len(pairs), "not settled" if a_bad == b_bad else "does not hold" if a_bad else "holds"
    mean, half = interval([x - y for x, y in pairs])
    verdict = "not settled" if half is None or abs(mean) <= half else "holds" if mean < 0 else "does not hold"
    return mean, half, len(pairs), verdict


def claim_verdicts(results: dict) -> list[dict]:
    """Each claim of the study at each of its step counts: the best member of each side (lowest mean of the
    primary metric), the paired difference over the seeds both have, and a verdict: ``holds`` (the interval
    lies below zero), ``does not hold`` (above zero), ``not settled`` (it spans zero, or one seed only)."""
    agg = aggregate(results)
    metric = primary_metric(results["metric_kind"])
    verdicts = []
    for claim in results["study_config"]["claims"]:
        for steps in claim["steps"]:
            sides = []
            for entries in (claim["better"], claim["than"]):
                members = [k for k in _members(results, agg, entries) if (steps, metric) in agg[k]["cells"]]
                sides.append(min(members, key=lambda k: agg[k]["cells"][(steps, metric)][0]) if members else None)
            a, b = sides
            v = {
                "claim": claim["text"],
                "paper": claim.get("paper", False),
                "steps": steps,
                "metric": metric,
                "better": a,
                "than": b,
            }
            if a is None or b is None:
                verdicts.append({**v, "verdict": "not run"})
                continue
            mean, half, n, verdict = _paired(agg, a, b, steps, metric)
            verdicts.append(
                {
                    **v,
                    "verdict": verdict,
                    "difference": mean,
                    "half_width": half,
                    "seeds": n,
                    "a": agg[a]["cells"][(steps, metric)],
                    "b": agg[b]["cells"][(steps, metric)],
                }
            )
    return verdicts


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


def _floor(results: dict) -> dict[str, tuple]:
    floors = {r["seed"]: r["floor"] for r in results["runs"]} | {t["seed"]: t["floor"] for t in results["teachers"]}
    return {m: interval([f[m] for f in floors.values()]) for m in METRICS[results["metric_kind"]]} if floors else {}


def _best(agg: dict, steps: int, metric: str) -> str | None:
    keys = [k for k in agg if (steps, metric) in agg[k]["cells"]]
    return min(keys, key=lambda k: agg[k]["cells"][(steps, metric)][0]) if keys else None


def finalists(results: dict, screen: dict) -> tuple[list[str], list[tuple[str, float]]]:
    """A screen's finalists (``variant/objective`` rows) and its ranking: every row scored on the screen's
    seeds by the mean, over ``screen["steps"]``, of its primary metric over its teacher's best (of the plain
    metric for every row when any row lacks that), lowest first; the ``keep`` best rows not in ``always``,
    then every row of ``always``."""
    seeds = set(screen["seeds"])
    agg = aggregate({**results, "runs": [r for r in results["runs"] if r["seed"] in seeds]})
    metric = primary_metric(results["metric_kind"])
    ratio = to_teacher_best(metric)
    use = ratio if all((s, ratio) in e["cells"] for e in agg.values() for s in screen["steps"]) else metric
    ranking = sorted(
        ((k, sum(e["cells"][(s, use)][0] for s in screen["steps"]) / len(screen["steps"])) for k, e in agg.items()),
        key=lambda kv: kv[1],
    )
    always = [k for k, _ in ranking if agg[k]["variant"] in screen["always"]]
    return [k for k, _ in ranking if k not in always][: screen["keep"]] + always, ranking


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


def _comparable(agg: dict) -> dict:
    """The rows measured on the most seeds (after a screen: the finalists; the screened-out rows have the
    screen's seeds only, and a mean over other seeds is not comparable)."""
    most = max((len(e["seeds"]) for e in agg.values()), default=0)
    return {k: e for k, e in agg.items() if len(e["seeds"]) == most}


def _conclusion(results: dict, agg: dict, teachers: dict, verdicts: list[dict]) -> list[str]:
    """The findings in words, each sentence built from the numbers above it (best rows among the rows with
    the most seeds)."""
    metric = primary_metric(results["metric_kind"])
    name, ratio = METRIC_NAMES[metric], to_teacher_best(metric)
    floor = _floor(results).get(metric)
    lines = _screen_lines(results)
    full = _comparable(agg)
    for steps in sorted({s for e in agg.values() for (s, m) in e["cells"] if m == metric}):
        best = _best(full, steps, metric)
        teacher = {k: t["cells"].get((steps, metric)) for k, t in teachers.items()}
        t_text = "; ".join(
            f"{teachers[k]['label']} with {steps} Euler step{'s' * (steps > 1)}: {_fmt(c)}"
            for k, c in teacher.items()
            if c is not None
        )
        closest = _best(full, steps, ratio)
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
    """Whether the shipped default is the best 1-step student among the rows made with teachers like its own
    (the same reflow rounds), whether a gap is settled, and which row is best over all if another."""
    default = results["default"]
    agg = _comparable(agg)
    peers = results.get("default_peers") or list(agg)
    best, overall = _best({k: v for k, v in agg.items() if k in peers}, 1, metric), _best(agg, 1, metric)
    if default not in agg or best is None:
        return "- **Default:** the shipped default's runs are not finished."
    line = "- **Default:** "
    if best == default:
        line += (
            f"the shipped default, {_label(results, default)}, is the best 1-step student from teachers "
            "like its own; it stays."
        )
    else:
        mean, half, _, verdict = _paired(agg, best, default, 1, metric)
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
    if overall != best:
        mean, half, _, verdict = _paired(agg, overall, best, 1, metric)
        line += (
            f" Over every row the best is {_label(results, overall)}, whose teacher had a different number "
            f"of reflow rounds (a costlier teacher, see the teacher table); paired difference against "
            f"{_label(results, best)} {_fmt((mean, half))}, "
            + ("settled." if verdict != "not settled" else "not settled.")
        )
    return line


def _section(results: dict, figures: dict[str, str]) -> list[str]:
    agg, teachers = aggregate(results), _teacher_cells(results)
    verdicts = claim_verdicts(results)
    metrics = METRICS[results["metric_kind"]]
    st, n_planned = results["settings"], len(results["planned_runs"])
    floor = _floor(results)
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
    seconds = sum(r["wall_seconds"] for r in results["runs"]) + sum(
        t["train_seconds"] + t["eval_seconds"] for t in results["teachers"]
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
        f"{sum(t['train_seconds'] for t in results['teachers']) / 60:.1f} min, evaluated in "
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
    agg, teachers = aggregate(results), _teacher_cells(results)
    figures = {}
    if agg or teachers:
        plot_quality(results, agg, teachers, _floor(results), folder / "quality_vs_steps.png")
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
