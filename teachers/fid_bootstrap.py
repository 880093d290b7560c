"""Bootstrap intervals for FID over the evaluation draws.

One resample draws the generated samples' features AND the reference features
with replacement (each side its own index draw) and recomputes the Fréchet
distance; ``resamples`` of them give the interval. The draws come from a
generator seeded with the run's seed, and the reference side's draw depends on
that seed only, so every row of a run (and the real-vs-real floor) is
resampled against the same reference draws: reproducible and paired.

Resampling with replacement repeats samples, which shrinks each covariance's
effective sample size and so raises FID: on 450 samples of 128-d features the
resampled FIDs lie almost wholly above the point estimate (FID's bias, roughly
doubled). The interval is therefore the 2.5 and 97.5 percentiles of the
resampled FIDs shifted by the bootstrap's bias estimate (their mean minus the
point estimate): it keeps their spread, which is what two rows measured at
the same sample size differ by, and is centred on the reported FID. It is an
interval for the figure this evaluation would report on other draws of the same
size, not for the infinite-sample FID (which lies lower: FID is biased upward).

``fid_ratio_interval`` bootstraps a ratio of two FIDs that share the reference
set and whose generated samples come from the same noise (a student row over
the teachers' best): each resample uses one generated index draw for both sides
and one reference draw, so the shared noise and reference cancel as they do in
the point ratio.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "FID_RESAMPLES",
    "frechet_distance",
    "fid_resamples",
    "fid_interval",
    "fid_ratio_interval",
    "shifted_percentiles",
]

FID_RESAMPLES = 200  # the default ``eval.fid_resamples``
_CHUNK = 50  # resamples computed at once (memory: CHUNK x N x D features)
_SEED_OFFSET = 20_000  # apart from the evaluation noise's seeds (10_000 + seed)


def _moments(f: Tensor) -> tuple[Tensor, Tensor]:
    """Means ``(..., D)`` and unbiased covariances ``(..., D, D)`` of features ``(..., N, D)``."""
    mu = f.mean(-2)
    c = f - mu.unsqueeze(-2)
    return mu, c.transpose(-1, -2) @ c / (f.shape[-2] - 1)


def _psd_sqrt(s: Tensor) -> Tensor:
    ev, v = torch.linalg.eigh(s)
    return (v * ev.clamp_min(0).sqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


def _frechet(mu1: Tensor, s1: Tensor, mu2: Tensor, root2: Tensor, tr2: Tensor) -> Tensor:
    """``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1 S2)^(1/2)``, with ``root2 = S2^(1/2)``: the eigenvalues of
    ``S1 S2`` are those of the symmetric ``root2 S1 root2``."""
    m = torch.linalg.eigvalsh(root2 @ s1 @ root2)
    return ((mu1 - mu2) ** 2).sum(-1) + s1.diagonal(dim1=-2, dim2=-1).sum(-1) + tr2 - 2 * m.clamp_min(0).sqrt().sum(-1)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """FID between feature sets ``x: (N, D)`` and ``y: (M, D)`` (float64; torch-fidelity's figure to ~1e-6)."""
    mu1, s1 = _moments(x.double())
    mu2, s2 = _moments(y.double())
    return float(_frechet(mu1, s1, mu2, _psd_sqrt(s2), s2.diagonal().sum()))


def _draws(n: int, m: int, resamples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Index draws ``(resamples, n)`` for the generated side and ``(resamples, m)`` for the reference, each
    from its own generator so the reference draw is the same for every row of a seed."""
    g = torch.Generator().manual_seed(_SEED_OFFSET + 2 * seed)
    r = torch.Generator().manual_seed(_SEED_OFFSET + 2 * seed + 1)
    return (torch.randint(0, n, (resamples, n), generator=g), torch.randint(0, m, (resamples, m), generator=r))


def fid_resamples(gens: list[Tensor], ref: Tensor, resamples: int, seed: int) -> Tensor:
    """Resampled FIDs ``(len(gens), resamples)`` of each generated feature set ``(N, D)`` (all of one size
    ``N``) against ``ref: (M, D)``; every set uses the same generated index draw and the same reference draw
    in a given resample (paired)."""
    n, m = gens[0].shape[0], ref.shape[0]
    if any(g.shape[0] != n for g in gens):
        raise ValueError(f"paired resamples need generated sets of one size, got {[g.shape[0] for g in gens]}")
    gi, ri = _draws(n, m, resamples, seed)
    # a feature constant over every set (a dead ReLU unit: half the digits classifier's 128) adds exactly 0 to
    # every resample's FID: left out, the eigendecompositions are of the features that vary
    union = torch.cat([*gens, ref]).double()
    live = union.amax(0) > union.amin(0)
    refs = _reference_side(ref, live, ri, seed)
    gens = [g.double()[:, live] for g in gens]
    out = []
    for s, (mu2, root2, tr2) in zip(range(0, resamples, _CHUNK), refs):
        idx = gi[s : s + _CHUNK]
        out.append(torch.stack([_frechet(*_moments(g[idx]), mu2, root2, tr2) for g in gens]))
    return torch.cat(out, dim=1)


_REF_CACHE: dict = {}  # the last reference side: the rows of an evaluation share its draws (same seed)


def _reference_side(ref: Tensor, live: Tensor, ri: Tensor, seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per chunk of resamples: the reference draws' means, covariance square roots and traces (computed once
    for the same reference tensor, features, seed and number of resamples)."""
    key = (seed, tuple(ri.shape), live.numpy().tobytes())
    if _REF_CACHE.get("ref") is not ref or _REF_CACHE.get("key") != key:
        r = ref.double()[:, live]
        sides = []
        for s in range(0, ri.shape[0], _CHUNK):
            mu2, s2 = _moments(r[ri[s : s + _CHUNK]])
            sides.append((mu2, _psd_sqrt(s2), s2.diagonal(dim1=-2, dim2=-1).sum(-1)))
        _REF_CACHE.clear()
        _REF_CACHE.update(ref=ref, key=key, sides=sides)
    return _REF_CACHE["sides"]


def shifted_percentiles(values: Tensor, point: float, level: float = 0.95) -> list[float]:
    """The ``level`` percentile interval of bootstrap ``values`` shifted by the bootstrap's bias estimate
    (``mean(values) - point``), so it is centred on ``point`` (see the module's docstring)."""
    a = (1 - level) / 2
    q = torch.quantile(values.double(), torch.tensor([a, 1 - a], dtype=torch.float64))
    shift = float(values.double().mean()) - point
    return [float(q[0]) - shift, float(q[1]) - shift]


def fid_interval(gen: Tensor, ref: Tensor, point: float, resamples: int = FID_RESAMPLES, seed: int = 0) -> list[float]:
    """95% bootstrap interval ``[low, high]`` of the FID ``point`` of features ``gen`` against ``ref``
    (``low`` at least 0)."""
    low, high = shifted_percentiles(fid_resamples([gen], ref, resamples, seed)[0], point)
    return [max(low, 0.0), high]


def fid_ratio_interval(
    gen: Tensor, base: Tensor, ref: Tensor, point: float, resamples: int = FID_RESAMPLES, seed: int = 0
) -> list[float]:
    """95% bootstrap interval of ``point = FID(gen, ref) / FID(base, ref)``, with paired resamples: ``gen`` and
    ``base`` (generated from the same noise, sample ``i`` of each from noise ``i``) share each resample's
    generated index draw, and both share its reference draw."""
    fids = fid_resamples([gen, base], ref, resamples, seed)
    low, high = shifted_percentiles(fids[0] / fids[1], point)
    return [max(low, 0.0), high]
