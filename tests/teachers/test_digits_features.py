"""The project's digits feature extractor: deterministic, accurate, registered, and FID behaves."""

import torch

from teachers.data import digits
from teachers.digits_features import EXTRACTOR_NAME, _train_classifier, ensure_registered, load_or_train_classifier
from teachers.evaluation import QualitySettings, floor, quality


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


def test_the_digits_extractor_takes_images_of_any_size_and_channels():
    # synthetic-32's 3x32x32 images: one channel, 8x8 (a study on them failed with a shape error in the classifier)
    from torch_fidelity.utils import create_feature_extractor

    ensure_registered()
    extractor = create_feature_extractor(EXTRACTOR_NAME, ["features"], cuda=False)
    colour = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    (feats,) = extractor(colour)
    assert feats.shape == (5, 128)
    gray = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)  # the digits' own size: as it was
    (same,) = extractor(torch.cat([gray, gray, gray], dim=1))
    assert torch.allclose(same, extractor(gray)[0])


def test_fid_separates_real_from_damaged():
    data = digits()
    s = QualitySettings(n_samples=450, kid_subset_size=100)
    real = floor(data, 450, s)
    g = torch.Generator().manual_seed(0)
    noisy = quality((data.train[:450] + 0.4 * torch.randn(450, 1, 8, 8, generator=g)).clamp(-1, 1), data, s)
    noise = quality(torch.randn(450, 1, 8, 8, generator=g).clamp(-1, 1), data, s)
    assert real["fid"] < noisy["fid"] < noise["fid"]
    assert real["kid"] < noisy["kid"] < noise["kid"]


def test_first_evaluation_inside_no_grad_trains_the_extractor_on_a_fresh_cache(tmp_path, monkeypatch):
    from teachers.digits_features import classifier_path
    from teachers.evaluation import evaluate_sampler
    from teachers.solvers import Solution

    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path / "empty-cache"))
    assert not classifier_path().exists()
    data = digits()
    sampler = lambda noise, steps: Solution(x=data.train[: noise.shape[0]], nfe=steps)  # noqa: E731
    with torch.no_grad():
        table = evaluate_sampler(sampler, data, [1], QualitySettings(n_samples=200, kid_subset_size=50))
    assert (classifier_path() / "model.safetensors").is_file()
    assert table["rows"][0]["fid"] >= 0 and table["floor"]["fid"] >= 0
