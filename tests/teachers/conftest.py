"""A small toy teacher trained once per test session (real training, a few seconds)."""

import pytest

from cluster.config import parse_config


def toy_config(tmp_path, **teacher):
    raw = {
        "name": "toy-test",
        "seed": 0,
        "run_dir": str(tmp_path),
        "data": {"name": "eight_gaussians", "n_train": 4000, "n_held_out": 1000},
        "teacher": {
            "network": {"arch": "mlp", "hidden": 64, "depth": 2, "time_embed_dim": 32},
            "lr": 3e-3,
            "steps": 800,
            "batch_size": 256,
            "ema_decay": 0.99,
            "log_every": 100,
            **teacher,
        },
        "eval": {"n_samples": 1000, "slices": 128},
    }
    return parse_config(raw)


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory):
    from teachers.train_teacher import train_teacher

    tmp = tmp_path_factory.mktemp("toy-teacher")
    cfg = toy_config(tmp)
    return train_teacher(cfg, progress=False)
