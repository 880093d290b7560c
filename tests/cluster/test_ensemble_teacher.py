"""An ensemble pool as the rest of a run sees it: the student starts from its first member, the
distribution-matching phase is scored by the ensemble's mean field, and evaluation gives the ensemble rows of
its own beside each member's."""

import torch

from cluster.config import parse_config
from cluster.guide_stage import _student_init
from cluster.preflight import teachers_check
from student.objectives import time_inputs
from student.networks import build_student
from student.plain_loop import plain_student
from student.run_report import evaluate_run, quality_table
from student.settings import StudentJob
from student.train_loop import _distribution
from teachers.checkpoint import CheckpointMeta, save_checkpoint
from teachers.device_plan import StagePlan
from teachers.ensemble import EnsembleVelocity, TeacherSpec, load_teacher
from teachers.nets import build_network

NET = {"hidden": 16, "depth": 1, "time_embed_dim": 8}


def _members(tmp_path, n=3):
    paths = []
    for i in range(n):
        torch.manual_seed(7 + i)
        kwargs = {**NET, "hidden": 16 + 8 * i}  # members may differ in width
        save_checkpoint(
            tmp_path / f"m{i}",
            build_network("mlp", (2,), **kwargs),
            CheckpointMeta(arch="mlp", arch_kwargs=kwargs, data_shape=[2]),
        )
        paths.append(str(tmp_path / f"m{i}"))
    return paths


def _config(tmp_path, checkpoints, ensemble, **student):
    return parse_config(
        {
            "name": "ens",
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians", "n_train": 400, "n_held_out": 100},
            "teacher": {"network": {"arch": "mlp", **NET}},
            "eval": {"steps": [1], "reference_solver": "rk4", "reference_steps": 2, "n_samples": 64, "slices": 16},
            "guides": {"block_size": 8, "num_samples": 64},
            "teachers": [{"name": "ens", "checkpoints": checkpoints, "ensemble": ensemble}],
            "student": {"objective": "velocity", "steps": 20, "eval_steps": [1], "workers": 1, **student},
        }
    )


def test_the_phase_is_scored_by_the_ensemble_and_the_student_starts_from_the_first_member(tmp_path):
    paths = _members(tmp_path)
    cfg = _config(tmp_path, paths, True, finetune={"steps": 5})
    teacher = _student_init(cfg)
    assert teacher == TeacherSpec(tuple(paths))
    job = StudentJob.from_json(StudentJob.of(cfg, None, (2,), teacher).to_json())  # as a worker receives it
    assert job.init_checkpoint == paths[0] and job.dm_teacher == teacher
    dm = _distribution(job, torch.device("cpu"))
    assert isinstance(dm.teacher, EnsembleVelocity) and len(dm.teacher.members) == 3
    members = [load_teacher(TeacherSpec((p,)), (2,)) for p in paths]
    x, t = torch.randn(8, 2), torch.rand(8)
    with torch.no_grad():
        torch.testing.assert_close(dm.teacher(x, t), sum(m(x, t) for m in members) / 3)
        torch.testing.assert_close(plain_student(job, torch.device("cpu"))(x, t), members[0](x, t))


def _save_student(cfg):
    torch.manual_seed(0)
    student = build_student("mlp", (2,), NET, "velocity")
    meta = CheckpointMeta(
        arch="mlp", arch_kwargs=NET, data_shape=[2], time_inputs=time_inputs("velocity"), role="student"
    )
    save_checkpoint(cfg.student_path, student, meta)


def test_evaluation_rows_include_the_ensemble_beside_its_members(tmp_path):
    paths = _members(tmp_path)
    cfg = _config(tmp_path, paths, True)
    _save_student(cfg)
    quality = evaluate_run(cfg, paths, StagePlan("cpu", "fp32"))
    key = f"ensemble({', '.join(paths)})"
    assert list(quality["teachers"]) == [*paths, key] and list(quality["teacher_straightness"]) == [*paths, key]
    labels = [[r["label"] for r in rows] for rows in quality["teachers"].values()]
    assert labels == [[f"teacher{i}/euler", f"teacher{i}/rk4"] for i in range(3)] + [["ensemble/euler", "ensemble/rk4"]]
    every = [r["sliced_w2"] for rows in quality["teachers"].values() for r in rows]
    assert quality["teacher_best"]["value"] == min(every)  # over the members and the ensemble
    assert "ensemble straightness" in quality_table(quality)
    # the same members without ensemble: true are the members' rows only
    plain = _config(tmp_path, paths[:2], False)
    without = evaluate_run(plain, paths[:2], StagePlan("cpu", "fp32"))
    assert list(without["teachers"]) == paths[:2]
    assert "ensemble" not in quality_table(without)


def test_the_preflight_refuses_an_ensemble_member_of_another_data_shape(tmp_path):
    paths = _members(tmp_path, 2)
    kwargs = {**NET}
    save_checkpoint(
        tmp_path / "wide",
        build_network("mlp", (3,), **kwargs),
        CheckpointMeta(arch="mlp", arch_kwargs=kwargs, data_shape=[3]),
    )
    check = teachers_check(_config(tmp_path, [*paths, str(tmp_path / "wide")], True), (2,))
    assert check.ok is False and "wide" in check.detail and "data_shape" in check.detail
    assert teachers_check(_config(tmp_path, paths, True), (2,)).ok is True


def test_a_study_counts_an_ensembles_evaluations_in_member_networks():
    from cluster.study import _ensemble_nfe
    from teachers.settings import TeacherPoolSettings

    three = TeacherPoolSettings(name="e", checkpoints=["a", "b", "c"], ensemble=True)
    assert _ensemble_nfe(three, 36) == 108
    assert _ensemble_nfe(three, None) is None  # an adaptive solve: its cost depends on the data
    assert _ensemble_nfe(TeacherPoolSettings(name="two", checkpoints=["a", "b"]), 36) == 36
