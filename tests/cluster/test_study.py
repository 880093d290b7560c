"""``bezier-distill study --quick`` on a two-run cut of the 2-D study: each run goes through the real job (teacher
actors, Redis guide store, DeepSpeed student pool in Ray Train) and lands as a row of ``results.md`` with its
claim verdicts; a second call resumes and runs nothing. The numbers are not checked here (tiny runs); every row
of the shipped matrix is validated without running in ``test_study_config.py``."""

import json
import logging

import pytest
import yaml

from cluster.study import RESULT_FILE, run_study
from cluster.study_config import load_study

pytestmark = pytest.mark.slow


def two_run_study(root, tmp_path):
    """The shipped toy study cut to two variants (a one-teacher one, and one whose two teachers are one
    ensemble teacher), one objective each."""
    raw = yaml.safe_load((root / "configs" / "study_toy2d.yaml").read_text())
    keep = {"rf-generated", "cubic-two-solve"}
    raw["variants"] = [
        dict(v, objectives=["flow_map"], ensemble=v["name"] == "cubic-two-solve")
        for v in raw["variants"]
        if v["name"] in keep
    ]
    raw["teachers"] = {k: v for k, v in raw["teachers"].items() if k in ("rf1", "rf1b")}
    raw["claims"] = [
        {
            "text": "Solve guides beat rectified-flow distillation",
            "better": ["cubic-two-solve"],
            "than": ["rf-generated"],
            "steps": [1, 2],
        }
    ]
    raw.update(base=str(root / "configs" / "toy2d.yaml"), run_dir=str(tmp_path / "runs"))
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    return study_file


@pytest.mark.timeout(900)  # 2 runs of the real job and 2 teachers: ~40 s each on 2 cores
def test_quick_study_produces_every_row_and_resumes(ray_cluster, tmp_path, request, caplog):
    study_file = two_run_study(request.config.rootpath, tmp_path)
    study, _, planned = load_study(study_file, quick=True)
    assert len(planned) == 2

    results = run_study(study_file, quick=True, out_dir=tmp_path / "docs", show_bar=False)

    assert sorted(r["key"] for r in results["runs"]) == sorted(r.key for r in planned)
    for r in results["runs"]:
        cfg = next(p.cfg for p in planned if p.key == r["key"])
        assert r["records"] == r["records_consumed"] == cfg.guides.num_samples and r["consumed_twice"] == 0
        assert r["student_steps"] >= cfg.student.steps
        assert [row["steps"] for row in r["rows"]] == cfg.student.eval_steps
        assert all("sliced_w2" in row and "energy" in row for row in r["rows"])
        if cfg.guides.coupling == "generated":
            assert r["distinct_pairs"] == cfg.guides.num_samples
        else:  # inversion: at most one pair per training example
            assert 0 < r["distinct_pairs"] <= cfg.guides.num_samples
    nfe = {r["variant"]: r["nfe_per_record"] for r in results["runs"]}
    coupling = 8 * 4  # quick: rk4 with 8 steps
    assert nfe["rf-generated"] == coupling
    # two guides, each a 4-step Euler solve, by an ensemble of two: each evaluation runs both members
    assert nfe["cubic-two-solve"] == (coupling + 2 * 4) * 2
    ensemble = "ensemble-rf1+rf1b"  # evaluated as a teacher of its own, beside its members
    assert sorted(t["key"] for t in results["teachers"]) == sorted([*study.teachers, ensemble])
    by_key = {t["key"]: t for t in results["teachers"]}
    assert by_key[ensemble]["members"] == ["rf1", "rf1b"]
    assert by_key[ensemble]["train_seconds"] == pytest.approx(
        by_key["rf1"]["train_seconds"] + by_key["rf1b"]["train_seconds"], abs=0.02
    )
    best = {k: min(r["sliced_w2"] for r in t["rows"]) for k, t in by_key.items()}
    assert best[ensemble] not in (best["rf1"], best["rf1b"])  # its own samples, not a member's
    assert all(t["rectification"] == 1 for t in results["teachers"])
    assert all(0 < t["straightness"] < 10 for t in results["teachers"])  # a 1-RF teacher's path is curved
    # every model of a seed is scored on the same noise against the same floor draw (paired comparisons)
    assert len({json.dumps(x["floor"]) for x in results["teachers"] + results["runs"]}) == 1

    md = (tmp_path / "docs" / "results.md").read_text()
    for v in study.variants:
        for objective in v.objectives:
            rows = [
                line
                for line in md.splitlines()
                if line.startswith(f"| {v.name} | `{objective}` |")
                or line.startswith(f"| **{v.name}** (default) | `{objective}` |")
            ]
            assert len(rows) == 3, (v.name, objective)  # sliced W2 over the teacher's best, sliced W2, energy
    assert all(t["reference_rows"][0]["label"] == "rk4" for t in results["teachers"])
    assert "sliced W2 / teacher's best, 1 step" in md and "Closest to its own teacher" in md
    assert sum("| distinct pairs |" in line for line in md.splitlines()) == 1  # in the primary metric's table
    assert sum("| best row | straightness | training s |" in line for line in md.splitlines()) == 2
    for label in [t.label for t in study.teachers.values()] + [by_key[ensemble]["label"]]:
        assert sum(line.startswith(f"| {label} |") for line in md.splitlines()) == 2
    for claim in study.claims:  # one verdict line per step count (the paper's also recur in the summary line)
        assert sum(line.startswith(f"- {claim.text} (") for line in md.splitlines()) == len(claim.steps)
    for png in ("quality_vs_steps.png", "samples.png"):
        assert (tmp_path / "docs" / "results" / "toy2d" / png).stat().st_size > 10_000
    on_disk = json.loads((tmp_path / "docs" / "results" / "toy2d" / "results.json").read_text())
    assert on_disk["runs"] == json.loads(json.dumps(results["runs"]))

    # files written before straightness and distinct pairs were kept: resuming adds them, running nothing again
    old_result = planned[0].cfg.run_path / RESULT_FILE
    old_result.write_text(
        json.dumps({k: v for k, v in json.loads(old_result.read_text()).items() if k != "distinct_pairs"})
    )
    old_eval = next(tmp_path.glob("runs/**/rf1/study_eval.json"))
    old_eval.write_text(json.dumps({k: v for k, v in json.loads(old_eval.read_text()).items() if k != "straightness"}))
    stamps = {p.key: (p.cfg.run_path / RESULT_FILE).stat().st_mtime_ns for p in planned}
    caplog.set_level(logging.INFO, logger="cluster")
    caplog.clear()  # the first study's lines, if a logger of this process let them through
    again = run_study(study_file, quick=True, out_dir=tmp_path / "docs", show_bar=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "cluster.study"]
    assert f"{len(planned)} done, 0 to run" in lines[0]
    assert {p.key: (p.cfg.run_path / RESULT_FILE).stat().st_mtime_ns for p in planned} == stamps
    assert len(again["runs"]) == len(planned)
    assert [r["distinct_pairs"] for r in again["runs"]] == [r["distinct_pairs"] for r in results["runs"]]
    assert [t["straightness"] for t in again["teachers"]] == [t["straightness"] for t in results["teachers"]]
