"""The study's decisions, made only from its raw results: intervals over seeds, the rows' aggregates, the
claims' verdicts, a screen's finalists, the shipped default's standing. Returns data; ``cluster.study_report``
renders it as ``results.md``.

Intervals are 95% Student-t intervals over seeds; a claim compares two variants seed by seed (every variant
of a seed shares its teachers, data split and evaluation noise), so its interval is that of the paired
difference.
"""

from __future__ import annotations

import math

from cluster.study_metrics import METRICS, to_teacher_best
from teachers.evaluation import primary_metric

__all__ = [
    "interval",
    "aggregate",
    "teacher_bests",
    "teacher_cells",
    "floor_cells",
    "best_row",
    "comparable_rows",
    "paired",
    "claim_verdicts",
    "finalists",
    "default_decision",
]


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
    """``{(teacher key, seed): its best primary-metric value}`` (a recipe, or a ``cluster.study.ensemble_key``)
    over every row it was evaluated with (Euler at ``eval.steps``, adaptive, and the reference solver when the
    study's teachers have that row)."""
    metric = primary_metric(results["metric_kind"])
    return {
        (t["key"], t["seed"]): min(_value(r, metric) for r in t["rows"] + (t.get("reference_rows") or []))
        for t in results["teachers"]
    }


def _ratio_cells(results: dict, runs: list[dict], bests: dict) -> dict:
    """``{(steps, METRIC_to_teacher_best): (mean, half)}``: each run's primary metric over the best row of its
    own teachers (its recipe keys: an ensemble's run, its best single member) at its own seed (the run report's
    ``fid_to_teacher_best``, which also counts an ensemble itself), when every run has one."""
    metric = primary_metric(results["metric_kind"])
    best = [
        min((bests[(k, r["seed"])] for k in r.get("teachers", []) if (k, r["seed"]) in bests), default=None)
        for r in runs
    ]
    if not all(b is not None and math.isfinite(b) and b > 0 for b in best):
        return {}
    found = [b for b in best if b is not None]  # every run's (checked above)
    return {
        (row["steps"], to_teacher_best(metric)): interval(
            [_value(_row(r, row["steps"]), metric) / b for r, b in zip(runs, found)]
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


def teacher_cells(results: dict) -> dict[str, dict]:
    """Per teacher recipe or ensemble: ``{(steps, metric): (mean, half)}`` over seeds, Euler rows and the adaptive one;
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


def paired(agg: dict, a: str, b: str, steps: int, metric: str) -> tuple[float, float | None, int, str]:
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
            mean, half, n, verdict = paired(agg, a, b, steps, metric)
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


def floor_cells(results: dict) -> dict[str, tuple]:
    floors = {r["seed"]: r["floor"] for r in results["runs"]} | {t["seed"]: t["floor"] for t in results["teachers"]}
    return {m: interval([f[m] for f in floors.values()]) for m in METRICS[results["metric_kind"]]} if floors else {}


def best_row(agg: dict, steps: int, metric: str) -> str | None:
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


def comparable_rows(agg: dict) -> dict:
    """The rows measured on the most seeds (after a screen: the finalists; the screened-out rows have the
    screen's seeds only, and a mean over other seeds is not comparable)."""
    most = max((len(e["seeds"]) for e in agg.values()), default=0)
    return {k: e for k, e in agg.items() if len(e["seeds"]) == most}


def default_decision(results: dict, agg: dict, metric: str) -> dict | None:
    """Whether the shipped default is the best 1-step student among the rows made with teachers like its own
    (the same reflow rounds; among the rows with the most seeds), and which row is best over all: ``{"default",
    "best", "overall", "against_default", "against_best"}`` (each ``against_*`` the ``paired`` result of the
    better row against the other, ``None`` when they are the same row); ``None`` when the default's runs are
    not finished."""
    default = results["default"]
    agg = comparable_rows(agg)
    peers = results.get("default_peers") or list(agg)
    best, overall = best_row({k: v for k, v in agg.items() if k in peers}, 1, metric), best_row(agg, 1, metric)
    if default not in agg or best is None or overall is None:  # overall is None only when agg is empty
        return None
    return {
        "default": default,
        "best": best,
        "overall": overall,
        "against_default": None if best == default else paired(agg, best, default, 1, metric),
        "against_best": None if overall == best else paired(agg, overall, best, 1, metric),
    }
