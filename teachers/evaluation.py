"""Quality against NFE, always beside the real-vs-real floor.

Images: FID and KID through torch-fidelity with a registered feature extractor
(``digits-classifier`` by default; ``inception-v3-compat`` for users with its
weights). Vectors: sliced 2-Wasserstein and energy distance. The reference is
the held-out split; the floor compares a same-sized draw of *training* data
with the same reference, so it is what a perfect sampler would score.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

from teachers.config import RunConfig
from teachers.data import DataSplit
from teachers.digits_features import FEATURE_EXTRACTORS, ensure_registered, prepare_extractor, to_uint8
from teachers.distances import energy_distance, sliced_wasserstein
from teachers.precision import autocast
from teachers.solvers import Solution, euler_step

__all__ = ["Sampler", "QualitySettings", "quality", "evaluate_sampler", "noise_for_eval", "sampler_on", "straightness", "teacher_straightness"]

Sampler = Callable[[Tensor, int], Solution]  # (noise (N, *D), steps) -> samples and NFE


@dataclass(frozen=True)
class QualitySettings:
    n_samples: int = 2000
    feature_extractor: str = "digits-classifier"
    kid_subset_size: int = 200
    slices: int = 256
    seed: int = 0
    device: str = "cpu"  # where torch-fidelity computes image features (cpu or cuda)

    @classmethod
    def of(cls, cfg: RunConfig, seed: int | None = None, device: str = "cpu", n_samples: int | None = None,
           feature_extractor: str | None = None) -> "QualitySettings":
        """A run's ``eval`` settings; ``seed`` (noise and floor draw) defaults to the run's seed, and
        ``n_samples``/``feature_extractor`` replace the config's when given (the ``eval`` command's options)."""
        e = cfg.eval
        return cls(n_samples=n_samples or e.n_samples, feature_extractor=feature_extractor or e.feature_extractor,
                   kid_subset_size=e.kid_subset_size, slices=e.slices, seed=cfg.seed if seed is None else seed,
                   device=device)


class _TensorDataset(torch.utils.data.Dataset):
    """uint8 images for torch-fidelity, 3 channels for Inception, as stored otherwise."""

    def __init__(self, images: Tensor, channels: int | None):
        x = to_uint8(images)
        if channels is not None and x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1)
        self.x = x.contiguous()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


def _image_quality(x: Tensor, ref: Tensor, settings: QualitySettings) -> dict[str, float]:
    import torch_fidelity  # heavy and only for images: imported when first needed

    ensure_registered()
    channels = FEATURE_EXTRACTORS[settings.feature_extractor]
    subset = min(settings.kid_subset_size, x.shape[0], ref.shape[0])
    metrics = torch_fidelity.calculate_metrics(
        input1=_TensorDataset(x, channels), input2=_TensorDataset(ref, channels),
        fid=True, kid=True, feature_extractor=settings.feature_extractor,
        kid_subset_size=subset, kid_subsets=50, cuda=settings.device == "cuda",
        cache=False, save_cpu_ram=True, verbose=False, rng_seed=settings.seed,
    )
    return {"fid": float(metrics["frechet_inception_distance"]),
            "kid": float(metrics["kernel_inception_distance_mean"]),
            "kid_std": float(metrics["kernel_inception_distance_std"])}


def _vector_quality(x: Tensor, ref: Tensor, settings: QualitySettings) -> dict[str, float]:
    return {"sliced_w2": sliced_wasserstein(x, ref, settings.slices, settings.seed),
            "energy": energy_distance(x, ref, seed=settings.seed)}


def sampler_on(sampler: Sampler, device: torch.device, precision: str) -> Sampler:
    """``sampler`` (whose model lives on ``device``) fed CPU noise and run under ``precision`` autocast; its
    samples come back as fp32 on the CPU, so distances never depend on where they were drawn."""

    def sample(noise: Tensor, steps: int) -> Solution:
        with torch.no_grad(), autocast(device, precision):
            sol = sampler(noise.to(device), steps)
        return replace(sol, x=sol.x.float().cpu())

    return sample


def quality(x: Tensor, data: DataSplit, settings: QualitySettings) -> dict[str, float]:
    """Distances of samples ``x: (N, *D)`` to the held-out split (FID/KID or SW2/energy)."""
    if not torch.isfinite(x).all():
        return {"non_finite": 1.0}
    fn = _image_quality if data.is_image else _vector_quality
    return fn(x.float().cpu(), data.held_out, settings)


def floor(data: DataSplit, n: int, settings: QualitySettings) -> dict[str, float]:
    """Real-vs-real: ``n`` training samples against the held-out split."""
    idx = torch.randperm(data.train.shape[0], generator=torch.Generator().manual_seed(settings.seed + 1))[:n]
    return quality(data.train[idx], data, settings)


def noise_for_eval(n: int, data_shape: tuple[int, ...], seed: int) -> Tensor:
    """The same noise for every sampler and step count, so rows are paired comparisons."""
    return torch.randn((n, *data_shape), generator=torch.Generator().manual_seed(10_000 + seed))


def evaluate_sampler(sampler: Sampler, data: DataSplit, steps: list[int | None], settings: QualitySettings,
                     label: str = "model", progress: Callable[[str], None] | None = None) -> dict:
    """A table ``{"floor": {...}, "rows": [{"label", "steps", "nfe", metrics...}, ...], "n_samples"}``.

    ``n_samples`` is capped at the training split's size so the floor is
    measured with the same sample size as the rows. A step count of ``None``
    means the sampler chooses (an adaptive solver).
    """
    if data.is_image:
        prepare_extractor(settings.feature_extractor)  # a first use trains it: not inside the sampling
    n = min(settings.n_samples, data.train.shape[0])
    noise = noise_for_eval(n, data.data_shape, settings.seed)
    rows = []
    for k in steps:
        sol = sampler(noise, k)
        row = {"label": label, "steps": k, "nfe": sol.nfe, **quality(sol.x, data, settings)}
        rows.append(row)
        if progress is not None:
            progress(format_row(row))
    return {"n_samples": n, "n_reference": int(data.held_out.shape[0]),
            "floor": floor(data, n, settings), "rows": rows}


def format_table(table: dict) -> str:
    """A plain-text table of the rows and the floor."""
    lines = [format_row(r) for r in table["rows"]]
    fl = "  ".join(f"{k}={v:.4g}" for k, v in table["floor"].items())
    lines.append(f"{'real-vs-real floor':<37} {fl}")
    return "\n".join(lines)


def format_row(row: dict) -> str:
    metrics = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("label", "steps", "nfe"))
    steps = "auto" if row["steps"] is None else row["steps"]
    return f"{row['label']:<18} steps={steps:<5} nfe={row['nfe']:<5} {metrics}"


@torch.no_grad()
def straightness(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int = 32) -> float:
    """How far a flow is from straight: the mean squared gap between its Euler trajectory from ``noise``
    (``steps`` steps) and that trajectory's chord ``(1 - t) x0 + t x1``, over the grid's times, the samples and
    the dimensions. 0 for a straight flow, where one Euler step is exact."""
    x0 = x = noise
    states = [x]
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
    for a, b in zip(grid[:-1], grid[1:]):
        x = euler_step(velocity, x, a, b)
        states.append(x)
    gaps = [((state - ((1 - t) * x0 + t * x)) ** 2).mean() for t, state in zip(grid, states)]
    return float(torch.stack(gaps).mean())


STRAIGHTNESS_DRAWS = 256


def teacher_straightness(model, data_shape: tuple[int, ...], seed: int, device: torch.device | None = None) -> float:
    """A teacher's reported straightness: ``straightness`` on ``STRAIGHTNESS_DRAWS`` evaluation noise draws of
    ``seed`` (the run report and the study give this figure)."""
    noise = noise_for_eval(STRAIGHTNESS_DRAWS, data_shape, seed)
    return round(straightness(model, noise if device is None else noise.to(device)), 6)
