"""Helpers shared by the guide-store tests."""

import pytest
import torch

from guide_store.schema import GuideBatch


RUN = {"name": "r"}  # the run a batch belongs to by default: the ``run_name`` fixture sets it to its test's run


def make_batch(
    start: int,
    n: int = 4,
    shape=(1, 8, 8),
    guides: int = 2,
    producer: str = "p0",
    seed: int | None = None,
    run: str | None = None,
) -> GuideBatch:
    g = torch.Generator().manual_seed(start if seed is None else seed)
    t = lambda: torch.randn((n, *shape), generator=g)
    return GuideBatch(
        sample_id=torch.arange(start, start + n),
        x0=t(),
        x1=t(),
        guides=[t() for _ in range(guides)],
        taus=[(i + 1) / (guides + 1) for i in range(guides)],
        teachers=[f"teacher-{chr(97 + i)}" for i in range(guides)],
        teacher_versions=["v1"] * guides,
        guide_rule="euler_step",
        coupling="inversion",
        run=RUN["name"] if run is None else run,
        run_seed=7,
        producer=producer,
    )


def assert_same(a, b, dtype=torch.float32):
    """Every field of two guide batches is equal (taus as float32)."""
    assert torch.equal(a.sample_id, b.sample_id)
    for x, y in zip(a.control_points, b.control_points):
        assert torch.equal(x.to(dtype), y.to(dtype))
    assert a.taus == pytest.approx(b.taus, rel=1e-6)
    for f in ("teachers", "teacher_versions", "guide_rule", "coupling", "run", "run_seed", "producer"):
        assert getattr(a, f) == getattr(b, f), f
    assert abs(a.created_at - b.created_at) < 1e-5
