"""Distances are ~0 for the same distribution and grow with a shift."""

import torch

from teachers.distances import energy_distance, sliced_wasserstein


def test_sliced_wasserstein_known_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g)
    assert sliced_wasserstein(x, x) < 1e-9
    # a shift by c along every direction theta moves each projection by <c, theta>:
    # SW2^2 = E[<c, theta>^2] = |c|^2 / d for uniform directions in d dimensions
    c = torch.tensor([2.0, 0.0])
    sw = sliced_wasserstein(x, x + c, n_slices=2000)
    assert abs(sw - (c.norm() / 2**0.5).item()) < 0.05


def test_energy_distance_orders_distributions():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1500, 2, generator=g), torch.randn(1500, 2, generator=g)
    same = energy_distance(x, y)
    near, far = energy_distance(x, y + 0.3), energy_distance(x, y + 2.0)
    assert abs(same) < 0.01 < near < far


def test_unequal_sizes():
    g = torch.Generator().manual_seed(2)
    assert sliced_wasserstein(torch.randn(500, 3, generator=g), torch.randn(2000, 3, generator=g)) < 0.15
