"""The metric that decides "best" is chosen in one place, and every quality row of its kind carries it."""

import pytest
import torch

from teachers.data import toy_2d
from teachers.evaluation import METRICS, QualitySettings, primary_metric, quality, row_kind


def test_fid_for_images_sliced_w2_for_vectors():
    assert primary_metric("image") == "fid"
    assert primary_metric("vector") == "sliced_w2"
    with pytest.raises(ValueError, match="unknown data kind 'audio'"):
        primary_metric("audio")


def test_a_vector_quality_row_has_its_primary_metric_and_says_its_kind():
    data = toy_2d("eight_gaussians", 256, 128, seed=0)
    row = quality(torch.randn(128, 2), data, QualitySettings(slices=16))
    assert data.kind == "vector" and primary_metric(data.kind) in row
    assert set(METRICS[data.kind]) <= row.keys()
    assert row_kind(row) == "vector"
    assert row_kind({"fid": 3.0, "kid": 0.1}) == "image"
