"""What a student worker is handed: the flat ``student`` section grouped once, typed, and the same after the
JSON trip the one-step check takes."""

from pathlib import Path

from cluster.config import load_config
from student.settings import StudentJob
from teachers.ensemble import TeacherSpec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_student_section_is_grouped_as_the_worker_reads_it():
    cfg = load_config(
        CONFIGS / "toy2d.yaml",
        [
            "student.lr=3e-4",
            "student.objective=velocity",
            "student.endpoint_share=0.3",
            "student.replay_records=123",
            "student.checkpoint_every=7",
            "guides.num_samples=640",
        ],
    )
    job = StudentJob.of(cfg, "redis://:pw@h:1/0", [2], TeacherSpec(("/ckpt/teacher",)))
    assert job.data_shape == (2,) and job.run == cfg.name and job.seed == cfg.seed
    assert (job.objective.objective, job.objective.endpoint_share) == ("velocity", 0.3)
    assert job.optim.lr == 3e-4 and job.optim.batch_size == cfg.student.batch_size
    assert job.optim.lr_at(cfg.student.warmup_steps) == 3e-4  # the peak, right after warm-up
    assert (job.feed.replay_records, job.feed.num_samples, job.feed.store_url) == (123, 640, "redis://:pw@h:1/0")
    assert job.saving.checkpoint_every == 7
    assert job.network == (cfg.student.network or cfg.teacher_training.network)


def test_the_job_survives_the_json_trip_of_the_step_check():
    cfg = load_config(CONFIGS / "digits.yaml", ["student.objective=velocity"])
    job = StudentJob.of(cfg, None, (1, 8, 8), None, device="cuda")
    assert StudentJob.from_json(job.to_json()) == job


def test_the_phase_is_the_last_finetune_steps_with_its_own_learning_rate():
    cfg = load_config(
        CONFIGS / "toy2d.yaml",
        ["student.steps=100", "student.warmup_steps=10", "student.finetune.steps=30", "student.finetune.lr=1e-6"],
    )
    job = StudentJob.of(cfg, None, [2], TeacherSpec(("/ckpt/teacher",)))
    assert job.dm_teacher == TeacherSpec(("/ckpt/teacher",))
    assert [job.in_dm_phase(s) for s in (0, 69, 70, 99)] == [False, False, True, True]
    assert job.lr_at(69) == job.optim.lr_at(69) > 1e-6 and job.lr_at(70) == 1e-6
    off = StudentJob.of(load_config(CONFIGS / "toy2d.yaml"), None, [2], TeacherSpec(("/ckpt/teacher",)))
    assert off.dm_teacher is None and not any(off.in_dm_phase(s) for s in range(off.optim.steps))
