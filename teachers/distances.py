"""Sample-based distances between two point clouds ``x: (N, D)`` and ``y: (M, D)``.

Used for low-dimensional data, where no feature extractor is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein", "energy_distance"]


def _quantiles(proj: Tensor, levels: Tensor) -> Tensor:
    """Empirical quantile function of each column of ``proj: (N, L)`` at ``levels: (Q,)`` -> ``(Q, L)``."""
    return torch.quantile(proj, levels, dim=0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_slices: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: ``sqrt(mean_theta W_2^2(<x, theta>, <y, theta>))``.

    ``theta`` are ``n_slices`` random unit directions (fixed by ``seed``); each
    one-dimensional ``W_2`` compares quantile functions on a common grid, so
    ``N`` and ``M`` may differ.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_slices, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = max(x.shape[0], y.shape[0])
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qx, qy = _quantiles(x @ theta, levels), _quantiles(y @ theta, levels)
    return float((qx - qy).pow(2).mean().sqrt())


def energy_distance(x: Tensor, y: Tensor, max_points: int = 4000, seed: int = 0) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (an MMD with the distance kernel).

    Within-sample terms exclude the diagonal (unbiased). Inputs larger than
    ``max_points`` are subsampled with a fixed ``seed`` to bound memory.
    """
    x, y = _subsample(x.flatten(1).double(), max_points, seed), _subsample(y.flatten(1).double(), max_points, seed + 1)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (x.shape[0] * (x.shape[0] - 1))
    yy = torch.cdist(y, y).sum() / (y.shape[0] * (y.shape[0] - 1))
    return float(2 * xy - xx - yy)


def _subsample(x: Tensor, n: int, seed: int) -> Tensor:
    if x.shape[0] <= n:
        return x
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]
