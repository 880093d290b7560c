"""The study report's arithmetic on hand-made results with known answers: intervals, paired claim verdicts,
the default's detection, and a results.md whose every number comes from the JSON beside it."""

import json
import math

import pytest

from cluster.study_report import _default_line, aggregate, claim_verdicts, interval, write_report


def test_interval_is_the_student_t_interval():
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert interval([5.0]) == (5.0, None)


def _run(variant, objective, seed, w1, w2=None):
    rows = [{"label": "s", "steps": 1, "nfe": 1, "sliced_w2": w1, "energy": w1 / 10}]
    if w2 is not None:
        rows.append({"label": "s", "steps": 2, "nfe": 2, "sliced_w2": w2, "energy": w2 / 10})
    return {"key": f"{variant}-{objective}-s{seed}", "variant": variant, "objective": objective, "seed": seed,
            "rows": rows, "floor": {"sliced_w2": 0.05, "energy": 0.001}, "nfe_per_record": 130,
            "wall_seconds": 10.0 + seed, "samples_file": "/nonexistent"}


def _results(runs, claims, default="a/flow_map", notes=()):
    variants = [{"name": n, "label": f"variant {n}"} for n in ("a", "b", "c")]
    return {"study": "unit", "config_file": "configs/study_unit.yaml", "quick": False, "seeds": [0, 1, 2],
            "data": "eight_gaussians", "metric_kind": "vector", "planned_runs": [r["key"] for r in runs] + ["x"],
            "runs": runs, "teachers": [], "settings": {"student_steps": 10, "student_batch_size": 8,
                                                       "student_workers": 2, "guide_records": 64,
                                                       "eval_samples": 100},
            "study_config": {"variants": variants, "claims": claims, "notes": list(notes)},
            "default": default}


def test_claims_are_tested_seed_by_seed():
    # a beats b by exactly 0.1 on every seed although the seeds differ by far more: the paired test settles it
    runs = [_run("a", "flow_map", s, 1.0 + s - 0.1, 2.0) for s in range(3)]
    runs += [_run("b", "flow_map", s, 1.0 + s, 1.0) for s in range(3)]
    runs += [_run("c", "velocity", s, [1.0, 3.0, 0.5][s] + s) for s in range(3)]
    claims = [{"text": "a beats b", "better": ["a"], "than": ["b/flow_map"], "steps": [1, 2]},
              {"text": "c beats b", "better": ["c"], "than": ["b"], "steps": [1]}]
    verdicts = claim_verdicts(_results(runs, claims))
    by = {(v["claim"], v["steps"]): v for v in verdicts}
    assert by[("a beats b", 1)]["verdict"] == "holds"
    assert by[("a beats b", 1)]["difference"] == pytest.approx(-0.1)
    assert by[("a beats b", 2)]["verdict"] == "does not hold"
    assert by[("c beats b", 1)]["verdict"] == "not settled"
    assert by[("c beats b", 1)]["seeds"] == 3
    agg = aggregate(_results(runs, claims))
    assert agg["a/flow_map"]["cells"][(1, "sliced_w2")][0] == pytest.approx(1.9)
    assert agg["a/flow_map"]["cells"][(1, "sliced_w2")][1] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_a_diverged_side_loses_and_one_seed_settles_nothing():
    runs = [_run("a", "flow_map", 0, float("inf")), _run("b", "flow_map", 0, 1.0)]
    runs[0]["rows"][0] = {"label": "s", "steps": 1, "nfe": 1, "non_finite": 1.0}
    claims = [{"text": "a beats b", "better": ["a"], "than": ["b"], "steps": [1]},
              {"text": "b beats a", "better": ["b"], "than": ["a"], "steps": [1]}]
    verdicts = claim_verdicts(_results(runs, claims))
    assert [v["verdict"] for v in verdicts] == ["does not hold", "holds"]
    runs = [_run("a", "flow_map", 0, 0.5), _run("b", "flow_map", 0, 1.0)]
    assert claim_verdicts(_results(runs, claims[:1]))[0]["verdict"] == "not settled"


def test_results_md_is_made_from_the_json_beside_it(tmp_path):
    runs = [_run(v, "flow_map", s, w + 0.01 * s) for v, w in (("a", 0.2), ("b", 0.3)) for s in range(3)]
    claims = [{"text": "a beats b", "better": ["a"], "than": ["b"], "steps": [1]},
              {"text": "b beats a", "paper": True, "better": ["b"], "than": ["a"], "steps": [1]}]
    md = write_report(_results(runs, claims, default="b/flow_map", notes=["b is no longer the default."]), tmp_path)
    text = md.read_text()
    saved = json.loads((tmp_path / "results" / "unit" / "results.json").read_text())
    assert saved["runs"] == runs and (tmp_path / "results" / "unit" / "quality_vs_steps.png").stat().st_size > 0
    assert "6 of 7 planned runs finished" in text
    mean, half = interval([0.2, 0.21, 0.22])
    assert f"| a | `flow_map` | 130 | {mean:.4g} ± {half:.2g} |" in text
    assert "a beats b (1 step): **holds**" in text
    assert ("the best 1-step student from teachers like the shipped default's is variant a, `flow_map`, not the "
            "default (variant b, `flow_map`)") in text
    assert "settled, so the default should change to it" in text
    assert "- **Decision:** b is no longer the default." in text
    assert "**The paper's claims:** 0 of 1 tests hold here; these do not: \"b beats a\" at 1 step (does not hold)" in text


def test_default_line_compares_rows_with_teachers_like_the_defaults_and_names_the_best_overall():
    # c (a costlier teacher) is best over all; among the default's peers a beats the default b on every seed
    runs = [_run(v, "flow_map", s, w + 0.01 * s) for v, w in (("a", 0.2), ("b", 0.3), ("c", 0.1)) for s in range(3)]
    results = _results(runs, [], default="b/flow_map")
    results["default_peers"] = ["a/flow_map", "b/flow_map"]
    line = _default_line(results, aggregate(results), "sliced_w2")
    assert "teachers like the shipped default's is variant a, `flow_map`, not the default (variant b" in line
    assert "settled, so the default should change to it" in line
    assert "Over every row the best is variant c, `flow_map`, whose teacher had a different number" in line
    results["default"] = "a/flow_map"
    line = _default_line(results, aggregate(results), "sliced_w2")
    assert "the shipped default, variant a, `flow_map`, is the best 1-step student from teachers like its own" in line
    results["default_peers"] = []  # older result files: every row is a peer
    assert "the best 1-step student from teachers like the shipped default's is variant c" in _default_line(
        results, aggregate(results), "sliced_w2")
