"""Quality against NFE, always beside the real-vs-real floor.

Images: FID and KID through torch-fidelity with a registered feature extractor
(``digits-classifier`` by default; ``inception-v3-compat`` for users with its
weights), each FID with ``fid_interval``, its 95% bootstrap interval over the
evaluation draws (``teachers.fid_bootstrap``). Vectors: sliced 2-Wasserstein and energy distance. The reference is
the held-out split; the floor compares a same-sized draw of *training* data
with the same reference, so it is what a perfect sampler would score.
"""

from __future__ import annotations

import logging
import hashlib
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

from teachers.settings import EvalSettings
from teachers.data import DataSplit
from teachers.fid_bootstrap import FID_RESAMPLES, fid_interval
from teachers.digits_features import FEATURE_EXTRACTORS, ensure_registered, prepare_extractor, to_uint8
from teachers.distances import energy_distance, sliced_wasserstein
from teachers.precision import autocast
from teachers.solvers import Sampler, Solution, euler_step

log = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "primary_metric",
    "row_kind",
    "QualitySettings",
    "quality",
    "evaluate_sampler",
    "format_metrics",
    "noise_for_eval",
    "sampler_on",
    "straightness",
    "teacher_straightness",
]

# the metrics that score samples of each kind of data (``DataSplit.kind``), the primary one first; lower is better
METRICS = {"image": ("fid", "kid"), "vector": ("sliced_w2", "energy")}


def primary_metric(kind: str) -> str:
    """The metric that decides "best" for data of ``kind`` (``image`` or ``vector``, ``DataSplit.kind``): FID
    for images, sliced W2 for vectors."""
    if kind not in METRICS:
        raise ValueError(f"unknown data kind {kind!r}; known: {sorted(METRICS)}")
    return METRICS[kind][0]


def row_kind(row: dict) -> str:
    """The kind of data a quality row (``quality``'s keys) scored, for a row that comes without it: ``image``
    when it has an image metric, else ``vector``."""
    return "image" if any(m in row for m in METRICS["image"]) else "vector"


@dataclass(frozen=True)
class QualitySettings:
    n_samples: int = 2000
    feature_extractor: str = "digits-classifier"
    kid_subset_size: int = 200
    slices: int = 256
    seed: int = 0
    device: str = "cpu"  # where torch-fidelity computes image features (cpu or cuda)
    fid_resamples: int = FID_RESAMPLES  # bootstrap resamples of each FID's interval (0: no interval)

    @classmethod
    def of(
        cls,
        e: EvalSettings,
        seed: int,
        device: str = "cpu",
        n_samples: int | None = None,
        feature_extractor: str | None = None,
    ) -> "QualitySettings":
        """A run's ``eval`` section with ``seed`` (noise and floor draw; the run's, or a study seed's);
        ``n_samples``/``feature_extractor`` replace the section's when given (the ``eval`` command's options)."""
        return cls(
            n_samples=n_samples or e.n_samples,
            feature_extractor=feature_extractor or e.feature_extractor,
            kid_subset_size=e.kid_subset_size,
            slices=e.slices,
            seed=seed,
            device=device,
            fid_resamples=e.fid_resamples,
        )


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


_REFERENCE: dict = {}  # the last reference's features: every row of an evaluation shares its held-out split


def _image_features(x: Tensor, settings: QualitySettings) -> dict[str, Tensor]:
    """torch-fidelity's features of images ``x`` for FID and KID (its layers, batch size and data loading, as
    ``torch_fidelity.calculate_metrics`` extracts them): ``{"fid": (N, D), "kid": (N, D')}``."""
    from torch_fidelity.defaults import DEFAULTS  # heavy and only for images: imported when first needed
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    ensure_registered()
    kw = {"feature_extractor": settings.feature_extractor, "verbose": False}
    layers = {m: _feature_layer(m, kw) for m in ("fid", "kid")}
    cuda = settings.device == "cuda"
    extractor = create_feature_extractor(settings.feature_extractor, sorted(set(layers.values())), cuda=cuda, **kw)
    feats = get_featuresdict_from_dataset(
        _TensorDataset(x, FEATURE_EXTRACTORS[settings.feature_extractor]),
        extractor,
        DEFAULTS["batch_size"],
        cuda,
        True,
        False,
    )
    return {m: feats[layer] for m, layer in layers.items()}


def _feature_layer(metric: str, kw: dict) -> str:
    from torch_fidelity.utils import resolve_feature_layer_for_metric

    return resolve_feature_layer_for_metric(metric, **kw)


def _reference_features(ref: Tensor, settings: QualitySettings) -> dict[str, Tensor]:
    """``_image_features`` of the reference, kept for the next call with the same images and extractor."""
    key = (
        settings.feature_extractor,
        settings.device,
        tuple(ref.shape),
        hashlib.sha1(ref.detach().cpu().contiguous().numpy().tobytes()).hexdigest(),
    )
    if _REFERENCE.get("key") != key:
        _REFERENCE.clear()
        _REFERENCE.update(key=key, features=_image_features(ref, settings))
    return _REFERENCE["features"]


def _image_quality(
    x: Tensor, ref: Tensor, settings: QualitySettings, features: dict | None = None
) -> dict[str, float | list[float]]:
    """FID (with its bootstrap interval) and KID from torch-fidelity's features; the same figures
    ``torch_fidelity.calculate_metrics`` gives for these inputs. ``features``, when given, receives the FID
    features of ``x`` (``"x"``) and of ``ref`` (``"ref"``)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    fx, fr = _image_features(x, settings), _reference_features(ref, settings)
    fid = float(
        fid_statistics_to_metric(fid_features_to_statistics(fx["fid"]), fid_features_to_statistics(fr["fid"]), False)[
            "frechet_inception_distance"
        ]
    )
    subset = min(settings.kid_subset_size, x.shape[0], ref.shape[0])
    kid = kid_features_to_metric(
        fx["kid"], fr["kid"], kid_subsets=50, kid_subset_size=subset, verbose=False, rng_seed=settings.seed
    )
    out: dict[str, Any] = {"fid": fid}
    if settings.fid_resamples:
        out["fid_interval"] = [
            round(v, 4) for v in fid_interval(fx["fid"], fr["fid"], fid, settings.fid_resamples, settings.seed)
        ]
    if features is not None:
        features.update(x=fx["fid"], ref=fr["fid"])
    return {
        **out,
        "kid": float(kid["kernel_inception_distance_mean"]),
        "kid_std": float(kid["kernel_inception_distance_std"]),
    }


def _vector_quality(x: Tensor, ref: Tensor, settings: QualitySettings) -> dict[str, float]:
    return {
        "sliced_w2": sliced_wasserstein(x, ref, settings.slices, settings.seed),
        "energy": energy_distance(x, ref, seed=settings.seed),
    }


def sampler_on(sampler: Sampler, device: torch.device, precision: str) -> Sampler:
    """``sampler`` (whose model lives on ``device``) fed CPU noise and run under ``precision`` autocast; its
    samples come back as fp32 on the CPU, so distances never depend on where they were drawn."""

    def sample(noise: Tensor, steps: int | None) -> Solution:
        with torch.no_grad(), autocast(device, precision):
            sol = sampler(noise.to(device), steps)
        return replace(sol, x=sol.x.float().cpu())

    return sample


def quality(x: Tensor, data: DataSplit, settings: QualitySettings, features: dict | None = None) -> dict:
    """Distances of samples ``x: (N, *D)`` to the held-out split (FID with ``fid_interval``, KID; or SW2 and
    energy). ``features``, when given, receives the FID features of ``x`` and of the reference (images only)."""
    if not torch.isfinite(x).all():
        return {"non_finite": 1.0}
    if data.is_image:
        return _image_quality(x.float().cpu(), data.held_out, settings, features)
    return _vector_quality(x.float().cpu(), data.held_out, settings)


def floor(data: DataSplit, n: int, settings: QualitySettings) -> dict[str, float]:
    """Real-vs-real: ``n`` training samples against the held-out split."""
    idx = torch.randperm(data.train.shape[0], generator=torch.Generator().manual_seed(settings.seed + 1))[:n]
    return quality(data.train[idx], data, settings)


def noise_for_eval(n: int, data_shape: tuple[int, ...], seed: int) -> Tensor:
    """The same noise for every sampler and step count, so rows are paired comparisons."""
    return torch.randn((n, *data_shape), generator=torch.Generator().manual_seed(10_000 + seed))


def evaluate_sampler(
    sampler: Sampler,
    data: DataSplit,
    steps: list[int | None],
    settings: QualitySettings,
    label: str = "model",
    features: list[dict] | None = None,
    with_floor: bool = True,
) -> dict:
    """A table ``{"floor": {...}, "rows": [{"label", "steps", "nfe", metrics...}, ...], "n_samples"}``.

    ``n_samples`` is capped at the training split's size so the floor is
    measured with the same sample size as the rows. A step count of ``None``
    means the sampler chooses (an adaptive solver). ``features``, when given,
    receives one dict per row (``quality``'s: the FID features of the row's
    samples and of the reference; empty for vectors and non-finite samples),
    for intervals of figures made from several rows (a ratio of two FIDs).
    ``with_floor=False`` leaves the floor out (``"floor": None``) for a caller
    that keeps only the rows.
    """
    if data.is_image:
        prepare_extractor(settings.feature_extractor)  # a first use trains it: not inside the sampling
    n = min(settings.n_samples, data.train.shape[0])
    noise = noise_for_eval(n, data.data_shape, settings.seed)
    rows = []
    for k in steps:
        sol = sampler(noise, k)
        kept: dict = {}
        row = {"label": label, "steps": k, "nfe": sol.nfe, **quality(sol.x, data, settings, kept)}
        rows.append(row)
        if features is not None:
            features.append(kept)
        log.debug(format_row(row))
    return {
        "n_samples": n,
        "n_reference": int(data.held_out.shape[0]),
        "floor": floor(data, n, settings) if with_floor else None,
        "rows": rows,
    }


def format_table(table: dict) -> str:
    """A plain-text table of the rows and the floor."""
    lines = [format_row(r) for r in table["rows"]]
    lines.append(f"{'real-vs-real floor':<37} {format_metrics(table['floor'])}")
    return "\n".join(lines)


def format_metrics(metrics: dict) -> str:
    """``fid=30.6 [28.1, 33.4]  kid=...``: each figure, an interval (``NAME_interval``) in brackets after its
    figure."""

    def one(k, v):
        iv = metrics.get(f"{k}_interval")
        return f"{k}={v:.4g}" + (f" [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "")

    return "  ".join(one(k, v) for k, v in metrics.items() if not k.endswith("_interval"))


def format_row(row: dict) -> str:
    metrics = format_metrics({k: v for k, v in row.items() if k not in ("label", "steps", "nfe")})
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
