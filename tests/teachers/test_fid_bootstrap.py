"""FID's bootstrap interval over the evaluation draws (``teachers.fid_bootstrap``): it holds the point figure,
narrows with more samples, separates different feature sets, pairs a ratio's resamples, is reproducible, and the
evaluation's figures are torch-fidelity's."""

import numpy as np
import pytest
import torch

from teachers.fid_bootstrap import fid_interval, fid_ratio_interval, frechet_distance

D = 16


def _gauss(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64) * scale + shift


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_interval_contains_the_point_and_narrows_with_more_samples(shift):
    widths = []
    for n in (100, 2000):
        x, ref = _gauss(n, 1, shift), _gauss(n, 2)
        point = frechet_distance(x, ref)
        low, high = fid_interval(x, ref, point, resamples=200, seed=0)
        assert low <= point <= high, (n, low, point, high)
        widths.append(high - low)
    assert widths[1] < 0.5 * widths[0], widths


def test_interval_of_different_sets_excludes_the_fid_of_identical_ones():
    n = 450
    ref = _gauss(n, 2)
    same = frechet_distance(_gauss(n, 3), ref)  # a draw of the reference's own distribution
    x = _gauss(n, 1, shift=0.3, scale=1.2)  # clearly different
    low, high = fid_interval(x, ref, frechet_distance(x, ref), resamples=200, seed=0)
    same_low, same_high = fid_interval(_gauss(n, 3), ref, same, resamples=200, seed=0)
    assert low > same and low > same_high, (low, high, same, same_high)
    assert low > frechet_distance(ref, ref) + 1e-6  # identical sets: FID 0


def test_ratio_resamples_are_paired():
    """The same generated set over itself is 1 in every paired resample; a set that differs from the base
    only slightly has a ratio interval far narrower than either FID's relative spread."""
    ref, x = _gauss(450, 2), _gauss(450, 1, shift=0.4)
    assert fid_ratio_interval(x, x, ref, 1.0, resamples=100, seed=0) == pytest.approx([1.0, 1.0], abs=1e-9)
    y = x + 0.05 * _gauss(450, 5)  # the same "noise", a slightly different sampler
    fx, fy = frechet_distance(x, ref), frechet_distance(y, ref)
    r_low, r_high = fid_ratio_interval(y, x, ref, fy / fx, resamples=100, seed=0)
    low, high = fid_interval(y, ref, fy, resamples=100, seed=0)
    assert r_low <= fy / fx <= r_high
    assert (r_high - r_low) / (fy / fx) < 0.25 * (high - low) / fy


def test_interval_is_reproducible_from_the_seed():
    x, ref = _gauss(200, 1, 0.2), _gauss(200, 2)
    p = frechet_distance(x, ref)
    assert fid_interval(x, ref, p, 50, seed=3) == fid_interval(x, ref, p, 50, seed=3)
    assert fid_interval(x, ref, p, 50, seed=3) != fid_interval(x, ref, p, 50, seed=4)


def test_frechet_distance_is_torch_fidelitys():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    x, ref = _gauss(300, 1, 0.3).float(), _gauss(400, 2).float()
    x[:, 3] = 0.0  # a dead feature: left out of the bootstrap, but the figure is the same
    ref[:, 3] = 0.0
    want = fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(ref), False)
    assert frechet_distance(x, ref) == pytest.approx(want["frechet_inception_distance"], rel=1e-6)


def test_quality_rows_are_torch_fidelitys_figures_with_an_interval():
    import torch_fidelity

    from teachers.data import digits
    from teachers.evaluation import QualitySettings, _TensorDataset, prepare_extractor, quality

    data = digits()
    s = QualitySettings(n_samples=450, kid_subset_size=100, fid_resamples=100)
    prepare_extractor(s.feature_extractor)
    g = torch.Generator().manual_seed(0)
    x = (data.train[:450] + 0.3 * torch.randn(450, 1, 8, 8, generator=g)).clamp(-1, 1)
    row = quality(x, data, s)
    want = torch_fidelity.calculate_metrics(
        input1=_TensorDataset(x, 1),
        input2=_TensorDataset(data.held_out, 1),
        fid=True,
        kid=True,
        feature_extractor=s.feature_extractor,
        kid_subset_size=100,
        kid_subsets=50,
        cuda=False,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
        rng_seed=s.seed,
    )
    assert row["fid"] == pytest.approx(want["frechet_inception_distance"], rel=1e-9)
    assert row["kid"] == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-9)
    low, high = row["fid_interval"]
    assert low <= row["fid"] <= high and np.isfinite(high)
    assert quality(x, data, s) == row  # the same draws again


def test_interval_width_matches_the_spread_of_fresh_draws_of_both_sets():
    """Both sides are draws: the interval's width is the 95% spread of FID over fresh draws of the generated
    AND the reference set (a bootstrap of one side only comes out about 0.7 of it)."""
    n = 450
    fresh = torch.tensor([frechet_distance(_gauss(n, 100 + i, 0.5), _gauss(n, 5000 + i)) for i in range(300)])
    q = torch.quantile(fresh, torch.tensor([0.025, 0.975], dtype=fresh.dtype))
    x, ref = _gauss(n, 100, 0.5), _gauss(n, 5000)
    low, high = fid_interval(x, ref, frechet_distance(x, ref), resamples=200, seed=0)
    assert 0.85 < (high - low) / float(q[1] - q[0]) < 1.25, (low, high, q.tolist())
