"""The project's digits feature extractor: deterministic, accurate, registered, and FID behaves."""

import torch

from student.digits_features import EXTRACTOR_NAME, _train_classifier, ensure_registered, load_or_train_classifier
from student.evaluation import QualitySettings, floor, quality
from teachers.data import digits


def test_classifier_is_accurate_cached_and_deterministic(tmp_path):
    model, report = load_or_train_classifier(tmp_path / "clf")
    assert report["test_accuracy"] > 0.95
    again, report2 = load_or_train_classifier(tmp_path / "clf")  # from cache
    assert report2 == report
    retrained, _ = _train_classifier()
    for a, b in zip(model.state_dict().values(), retrained.state_dict().values()):
        assert torch.equal(a, b)


def test_registered_with_torch_fidelity():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    ensure_registered()
    ensure_registered()  # idempotent
    assert EXTRACTOR_NAME in FEATURE_EXTRACTORS_REGISTRY


def test_fid_separates_real_from_damaged():
    data = digits()
    s = QualitySettings(n_samples=450, kid_subset_size=100)
    real = floor(data, 450, s)
    g = torch.Generator().manual_seed(0)
    noisy = quality((data.train[:450] + 0.4 * torch.randn(450, 1, 8, 8, generator=g)).clamp(-1, 1), data, s)
    noise = quality(torch.randn(450, 1, 8, 8, generator=g).clamp(-1, 1), data, s)
    assert real["fid"] < noisy["fid"] < noise["fid"]
    assert real["kid"] < noisy["kid"] < noise["kid"]
