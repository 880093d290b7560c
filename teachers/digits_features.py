"""A feature extractor for FID/KID on 8x8 digits, registered in torch-fidelity.

No pretrained Inception weights can be downloaded here, and Inception
features of 8x8 images upsampled to 299x299 say little anyway. So the project
trains a small classifier on the digits *training* split once (seeded, one
thread, fixed epochs: deterministic), caches it as safetensors + JSON, and
reports its accuracy on the held-out split. Its 128-d penultimate layer is the
feature space for FID and KID.

torch-fidelity feeds extractors ``uint8`` images ``(N, C, H, W)`` in
``0..255``; ``to_uint8`` maps the project's ``[-1, 1]`` images there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from guide_store.atomic import replaced_atomically, write_json_atomically
from teachers.data import digit_labels, digits
from teachers.registry import Registry

__all__ = [
    "EXTRACTOR_NAME",
    "FEATURE_EXTRACTORS",
    "DigitsClassifier",
    "DigitsFeatureExtractor",
    "ensure_registered",
    "classifier_path",
    "load_or_train_classifier",
    "prepare_extractor",
    "to_uint8",
]

# declared, not bound: the module's ``__getattr__`` (at the end) builds it on first access, so that importing this
# module does not import torch-fidelity
DigitsFeatureExtractor: type

EXTRACTOR_NAME = "digits-classifier"
_VERSION = 1


class DigitsClassifier(nn.Module):
    """Two conv layers, a 128-d feature layer and 10 logits, for ``(N, 1, 8, 8)`` in ``[-1, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.features = nn.Sequential(nn.Linear(64 * 4 * 4, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.features(self.conv(x))
        return feats, self.head(feats)


def to_uint8(images: Tensor) -> Tensor:
    """``[-1, 1]`` floats -> ``uint8`` in ``0..255`` (torch-fidelity's input convention)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_uint8(images: Tensor) -> Tensor:
    return images.float() / 127.5 - 1.0


def cache_dir() -> Path:
    """Where project-trained helper models are cached (``$BEZIER_DISTILL_CACHE`` or ``~/.cache``)."""
    root = os.environ.get("BEZIER_DISTILL_CACHE") or Path.home() / ".cache" / "bezier-distill"
    return Path(root)


def classifier_path() -> Path:
    return cache_dir() / f"{EXTRACTOR_NAME}-v{_VERSION}"


def _train_classifier(epochs: int = 30, seed: int = 0) -> tuple[DigitsClassifier, float]:
    split = digits(seed=0)
    labels = digit_labels(seed=0)
    n_out = split.held_out.shape[0]
    y_train, y_test = labels[n_out:], labels[:n_out]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fixed reduction order: the same weights on every machine
    try:
        # gradients on even when the first use comes from inside an evaluation's torch.no_grad()
        with torch.enable_grad():
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            model = DigitsClassifier()
            opt = torch.optim.Adam(model.parameters(), lr=2e-3)
            for _ in range(epochs):
                perm = torch.randperm(split.train.shape[0], generator=g)
                for i in range(0, perm.numel(), 64):
                    idx = perm[i : i + 64]
                    x = split.train[idx]
                    x = x + 0.05 * torch.randn(x.shape, generator=g)  # light noise: features robust to sampler noise
                    loss = nn.functional.cross_entropy(model(x)[1], y_train[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(split.held_out)[1].argmax(1) == y_test).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    return model, accuracy


def load_or_train_classifier(path: Path | None = None) -> tuple[DigitsClassifier, dict]:
    """The cached classifier and its report (``{"test_accuracy": ...}``); trains and caches it if absent."""
    path = Path(path) if path is not None else classifier_path()
    weights, report_file = path / "model.safetensors", path / "report.json"
    model = DigitsClassifier()
    if weights.is_file() and report_file.is_file():
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), json.loads(report_file.read_text())
    model, accuracy = _train_classifier()
    path.mkdir(parents=True, exist_ok=True)
    # two processes may train it at once (parallel test workers, two runs sharing a cache): each writes files
    # of its own and renames them into place, so a reader never sees a half-written one
    with replaced_atomically(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    report = {
        "name": EXTRACTOR_NAME,
        "version": _VERSION,
        "test_accuracy": accuracy,
        "trained_on": "digits train split (seed 0)",
        "evaluated_on": "digits held-out split (450 images)",
    }
    write_json_atomically(report_file, report)
    return model, report


def _extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # heavy: only image metrics need it

    class DigitsFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity adapter: ``uint8 (N, C, H, W)`` -> ``(features (N, 128), logits (N, 10))``. The digits
        (one channel, 8x8) go in as they are; other images are made one channel (the mean of theirs) and 8x8
        (area averages), so any image data gets features, though only the digits' are calibrated."""

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            path = kwargs.get("feature_extractor_weights_path")
            self.net, self.report = load_or_train_classifier(Path(path) if path else None)

        @staticmethod
        def get_provided_features_list():
            return "features", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits"}.get(metric, "features")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

        def forward(self, x):
            x = _from_uint8(x)
            if x.shape[1] != 1:
                x = x.mean(dim=1, keepdim=True)
            if tuple(x.shape[-2:]) != (8, 8):
                x = nn.functional.adaptive_avg_pool2d(x, (8, 8))
            feats, logits = self.net(x)
            found = {"features": feats, "logits": logits}
            return tuple(found[name] for name in self.features_list)

    return DigitsFeatureExtractor


# the feature extractors ``eval.feature_extractor`` may name -> the channels its images must have (``None``: as
# stored); ``inception-v3-compat`` is torch-fidelity's own (its weights are downloaded on first use)
FEATURE_EXTRACTORS: Registry[int | None] = Registry(
    "feature extractor", {EXTRACTOR_NAME: None, "inception-v3-compat": 3}
)


def prepare_extractor(name: str) -> None:
    """Train and cache the digits classifier now if ``name`` is it and it is not cached, so that the first
    FID does not train it in the middle of sampling."""
    if name == EXTRACTOR_NAME:
        load_or_train_classifier()


def ensure_registered() -> type:
    """Register the extractor with torch-fidelity under ``digits-classifier`` (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor  # heavy, as above

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, _extractor_class())
    return FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME]


def __getattr__(name: str):
    if name == "DigitsFeatureExtractor":
        return ensure_registered()
    raise AttributeError(name)
