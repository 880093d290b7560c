"""The study report's arithmetic on hand-made results with known answers: intervals, paired claim verdicts,
the default's detection, and a results.md whose every number comes from the JSON beside it."""

import json
import math

import pytest

from cluster.study_claims import aggregate, claim_verdicts, finalists, interval, teacher_cells
from cluster.study_report import _conclusion, _default_line, write_report


def _conclusion_lines(results):
    return _conclusion(results, aggregate(results), teacher_cells(results), claim_verdicts(results))


def test_interval_is_the_student_t_interval():
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert interval([5.0]) == (5.0, None)


def _run(variant, objective, seed, w1, w2=None):
    rows = [{"label": "s", "steps": 1, "nfe": 1, "sliced_w2": w1, "energy": w1 / 10}]
    if w2 is not None:
        rows.append({"label": "s", "steps": 2, "nfe": 2, "sliced_w2": w2, "energy": w2 / 10})
    return {
        "key": f"{variant}-{objective}-s{seed}",
        "variant": variant,
        "objective": objective,
        "seed": seed,
        "rows": rows,
        "floor": {"sliced_w2": 0.05, "energy": 0.001},
        "nfe_per_record": 130,
        "wall_seconds": 10.0 + seed,
        "samples_file": "/nonexistent",
    }


def _results(runs, claims, default="a/flow_map", notes=()):
    variants = [{"name": n, "label": f"variant {n}"} for n in ("a", "b", "c")]
    return {
        "study": "unit",
        "config_file": "configs/study_unit.yaml",
        "quick": False,
        "seeds": [0, 1, 2],
        "data": "eight_gaussians",
        "metric_kind": "vector",
        "planned_runs": [r["key"] for r in runs] + ["x"],
        "runs": runs,
        "teachers": [],
        "settings": {
            "student_steps": 10,
            "student_batch_size": 8,
            "student_workers": 2,
            "guide_records": 64,
            "eval_samples": 100,
        },
        "study_config": {"variants": variants, "claims": claims, "notes": list(notes)},
        "default": default,
    }


def test_claims_are_tested_seed_by_seed():
    # a beats b by exactly 0.1 on every seed although the seeds differ by far more: the paired test settles it
    runs = [_run("a", "flow_map", s, 1.0 + s - 0.1, 2.0) for s in range(3)]
    runs += [_run("b", "flow_map", s, 1.0 + s, 1.0) for s in range(3)]
    runs += [_run("c", "velocity", s, [1.0, 3.0, 0.5][s] + s) for s in range(3)]
    claims = [
        {"text": "a beats b", "better": ["a"], "than": ["b/flow_map"], "steps": [1, 2]},
        {"text": "c beats b", "better": ["c"], "than": ["b"], "steps": [1]},
    ]
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
    claims = [
        {"text": "a beats b", "better": ["a"], "than": ["b"], "steps": [1]},
        {"text": "b beats a", "better": ["b"], "than": ["a"], "steps": [1]},
    ]
    verdicts = claim_verdicts(_results(runs, claims))
    assert [v["verdict"] for v in verdicts] == ["does not hold", "holds"]
    runs = [_run("a", "flow_map", 0, 0.5), _run("b", "flow_map", 0, 1.0)]
    assert claim_verdicts(_results(runs, claims[:1]))[0]["verdict"] == "not settled"


def test_results_md_is_made_from_the_json_beside_it(tmp_path):
    runs = [_run(v, "flow_map", s, w + 0.01 * s) for v, w in (("a", 0.2), ("b", 0.3)) for s in range(3)]
    claims = [
        {"text": "a beats b", "better": ["a"], "than": ["b"], "steps": [1]},
        {"text": "b beats a", "paper": True, "better": ["b"], "than": ["a"], "steps": [1]},
    ]
    md = write_report(_results(runs, claims, default="b/flow_map", notes=["b is no longer the default."]), tmp_path)
    text = md.read_text()
    saved = json.loads((tmp_path / "results" / "unit" / "results.json").read_text())
    assert saved["runs"] == runs and (tmp_path / "results" / "unit" / "quality_vs_steps.png").stat().st_size > 0
    assert "6 of 7 planned runs finished" in text
    mean, half = interval([0.2, 0.21, 0.22])
    assert f"| a | `flow_map` | 130 | {mean:.4g} ± {half:.2g} |" in text
    assert "a beats b (1 step): **holds**" in text
    assert (
        "the best 1-step student from teachers like the shipped default's is variant a, `flow_map`, not the "
        "default (variant b, `flow_map`)"
    ) in text
    assert "settled, so the default should change to it" in text
    assert "- **Decision:** b is no longer the default." in text
    assert (
        '**The paper\'s claims:** 0 of 1 tests hold here; these do not: "b beats a" at 1 step (does not hold)'
    ) in text


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
        results, aggregate(results), "sliced_w2"
    )


def _teacher(key, seed, euler, adaptive, reference):
    row = lambda label, steps, w: {
        "label": label,
        "steps": steps,
        "nfe": steps or 90,
        "sliced_w2": w,  # noqa: E731
        "energy": w / 10,
    }
    return {
        "key": key,
        "seed": seed,
        "label": f"teacher {key}",
        "rows": [row("euler", 4, euler), row("adaptive", None, adaptive)],
        "reference_rows": [row("rk4", 32, reference)],
        "floor": {"sliced_w2": 0.05, "energy": 0.001},
        "train_seconds": 5.0,
        "eval_seconds": 1.0,
        "samples_files": {"euler": "/nonexistent", "adaptive": "/nonexistent"},
    }


def _with_teachers(runs, teachers, **changes):
    for r in runs:
        r["teachers"] = ["t"]
    return {**_results(runs, []), "teachers": teachers, **changes}


def test_students_are_measured_against_their_own_teachers_best_row_per_seed():
    # the teacher's best is the reference row on seed 0 (0.5) and the adaptive row on seed 1 (0.25)
    teachers = [_teacher("t", 0, 1.0, 0.8, 0.5), _teacher("t", 1, 1.0, 0.25, 0.4)]
    runs = [_run("a", "flow_map", 0, 0.75, 0.6), _run("a", "flow_map", 1, 0.5, 0.3)]
    agg = aggregate(_with_teachers(runs, teachers))
    mean, half = agg["a/flow_map"]["cells"][(1, "sliced_w2_to_teacher_best")]
    assert (mean, half) == pytest.approx(interval([0.75 / 0.5, 0.5 / 0.25]))
    assert agg["a/flow_map"]["cells"][(2, "sliced_w2_to_teacher_best")][0] == pytest.approx((1.2 + 1.2) / 2)
    del runs[1]["teachers"]  # a run without its teachers: no ratio for the row rather than a wrong one
    assert (1, "sliced_w2_to_teacher_best") not in aggregate(_with_teachers(runs[:1], teachers) | {"runs": runs})[
        "a/flow_map"
    ]["cells"]


def test_the_screen_keeps_the_best_rows_by_their_teachers_best_and_the_named_ones():
    # on seed 0 b is best by the ratio, a second, c last; c is kept because the screen always keeps it; seed 1
    # rows (a finalist's later seed) do not change the ranking
    teachers = [_teacher("t", 0, 1.0, 1.0, 0.5), _teacher("t", 1, 1.0, 1.0, 0.5)]
    runs = [
        _run("a", "flow_map", 0, 0.6, 0.7),
        _run("b", "flow_map", 0, 0.55, 0.6),
        _run("c", "velocity", 0, 2.0, 3.0),
        _run("a", "flow_map", 1, 9.0, 9.0),
    ]
    results = _with_teachers(runs, teachers)
    chosen, ranking = finalists(results, {"seeds": [0], "keep": 1, "steps": [1, 2], "always": ["c"]})
    assert chosen == ["b/flow_map", "c/velocity"]
    assert [k for k, _ in ranking] == ["b/flow_map", "a/flow_map", "c/velocity"]
    assert ranking[0][1] == pytest.approx((0.55 + 0.6) / 2 / 0.5)
    chosen, _ = finalists(results, {"seeds": [0], "keep": 2, "steps": [1], "always": []})
    assert chosen == ["b/flow_map", "a/flow_map"]
    chosen, _ = finalists(results, {"seeds": [0], "keep": 1, "steps": [1, 2], "always": ["b"]})
    assert chosen == ["a/flow_map", "b/flow_map"]  # keep counts the rows not always kept


def test_results_md_shows_the_ratio_the_teachers_best_row_and_the_screen(tmp_path):
    teachers = [_teacher("t", s, 1.0, 0.8, 0.5) for s in range(3)]
    runs = [_run(v, "flow_map", s, w + 0.01 * s) for v, w in (("a", 0.6), ("b", 0.9)) for s in range(3)]
    screen = {
        "seeds": [0],
        "keep": 1,
        "steps": [1],
        "always": [],
        "finalists": ["a/flow_map"],
        "ranking": [["a/flow_map", 1.2], ["b/flow_map", 1.8]],
    }
    text = write_report(_with_teachers(runs, teachers, screen=screen), tmp_path).read_text()
    mean, half = interval([(0.6 + 0.01 * s) / 0.5 for s in range(3)])
    assert f"| **a** (default) | `flow_map` | 130 | {mean:.4g} ± {half:.2g} | 3 |" in text  # the ratio table
    assert "| teacher: sliced W2 | Euler 4 | adaptive (mean NFE) | rk4 x 32 | best row | training s |" in text
    assert "| teacher t | 1 ± 0 | 0.8 ± 0 (90) | 0.5 ± 0 | 0.5 ± 0 | 5 ± 0 |" in text
    assert "The best teacher row is teacher t with the reference solver (rk4 x 32)" in text
    assert f"Closest to its own teacher: variant a, `flow_map` at {mean:.4g} ± {half:.2g} x its teacher's best" in text
    assert ". ." not in text
    assert (
        "- **Screen:** every variant ran at seed 0; the finalists (the 1 best by the primary metric over the "
        "teacher's best, mean over steps 1)"
    ) in text
    assert "go on to every seed: a/flow_map. Screen ranking: a/flow_map 1.2; b/flow_map 1.8." in text
    assert "(Euler, adaptive and the reference solver), then the mean over seeds" in text


def test_after_a_screen_the_best_rows_are_among_the_finalists():
    # b was screened out at seed 0 with the best value there; a, a finalist, has three seeds: a is "best"
    teachers = [_teacher("t", s, 1.0, 1.0, 0.5) for s in range(3)]
    runs = [_run("a", "flow_map", s, 0.6 - 0.2 * s) for s in range(3)] + [_run("b", "flow_map", 0, 0.55)]
    results = _with_teachers(runs, teachers, default="b/flow_map")
    text = "\n".join(_conclusion_lines(results))
    assert "the best student is variant a, `flow_map`" in text
    assert "**Default:** the shipped default's runs are not finished" in text  # b has one seed only


def _image_run(variant, seed, fid, interval=True):
    row = {
        "label": "s",
        "steps": 1,
        "nfe": 1,
        "fid": fid,
        "kid": fid / 100,
        **({"fid_interval": [fid - 2, fid + 3]} if interval else {}),
    }
    return {**_run(variant, "flow_map", seed, 1.0), "rows": [row], "floor": {"fid": 9.0, "kid": 0.01}}


def test_per_run_fid_intervals_are_carried_and_old_sections_say_they_kept_scalars():
    from cluster.study_report import _interval_note, _student_table

    runs = [_image_run("a", 0, 30.0), _image_run("a", 1, 32.0), _image_run("b", 0, 40.0)]
    results = {**_results(runs, []), "metric_kind": "image", "data": "digits"}
    agg = aggregate(results)
    assert agg["b/flow_map"]["boot"] == {(1, "fid"): [38.0, 43.0]} and agg["a/flow_map"]["boot"] == {}
    table = "\n".join(_student_table(results, agg, "fid"))
    assert "| 40 [38, 43] |" in table  # one seed: its run's bootstrap interval
    assert "31 ± " in table and "31 ± 13 [" not in table  # several seeds: the t interval over seeds only
    assert "bootstrap interval" in _interval_note(results)
    old = {**results, "runs": [_image_run("a", 0, 30.0, interval=False), _image_run("b", 0, 40.0, interval=False)]}
    assert "kept only scalar FIDs" in _interval_note(old)
    assert "| 40 |" in "\n".join(_student_table(old, aggregate(old), "fid"))
    assert _interval_note(_results([_run("a", "flow_map", 0, 1.0)], [])) == ""  # vectors: no FID


def test_the_figure_takes_five_teachers(tmp_path):
    # three recipes and two ensembles of them (configs/study_digits_quality.yaml): each a grey line of its own
    teachers = [_teacher(f"t{i}", 0, 1.0 + i, 0.8, 0.5) for i in range(5)]
    runs = [_run("a", "flow_map", 0, 0.6)]
    write_report(_with_teachers(runs, teachers), tmp_path)
    assert (tmp_path / "results" / "unit" / "quality_vs_steps.png").is_file()


def test_an_ensembles_student_is_measured_against_its_best_member_and_members_are_trained_once(tmp_path):
    # the ensemble teacher (its own entry, "members" set) is better than both members; the ratio of the
    # ensemble's student is over the best member (the question: does the ensemble beat one teacher?)
    members = [_teacher("t1", 0, 1.0, 0.8, 0.5), _teacher("t2", 0, 1.0, 0.8, 0.4)]
    ensemble = {**_teacher("ensemble-t1+t2", 0, 1.0, 0.8, 0.1), "members": ["t1", "t2"], "train_seconds": 10.0}
    runs = [_run("a", "flow_map", 0, 0.6)]
    results = {**_results(runs, []), "teachers": members + [ensemble]}
    runs[0]["teachers"] = ["t1", "t2"]
    agg = aggregate(results)
    assert agg["a/flow_map"]["cells"][(1, "sliced_w2_to_teacher_best")][0] == pytest.approx(0.6 / 0.4)
    text = write_report(results, tmp_path).read_text()
    assert "| teacher ensemble-t1+t2 |" in text  # in the teacher table, beside its members
    assert "teachers trained in 0.2 min" in text  # 5 s + 5 s: the ensemble's 10 s repeats them
