"""Velocity networks ``v(x, t)`` (and ``f(x, s, t)`` for flow maps).

Two families: an MLP for vector data ``(B, D)`` and a small UNet for images
``(B, C, H, W)``. Both take one time input (a velocity field) or two (a flow
map conditioned on ``(s, t)``), each ``(B,)`` in ``[0, 1]``, embedded with
sinusoidal features and an MLP. ``build_network`` picks a family from a string.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from teachers.registry import Registry

__all__ = ["ARCHITECTURES", "MLPVelocity", "UNetVelocity", "build_network", "TimeEmbedding"]


class TimeEmbedding(nn.Module):
    freqs: Tensor  # a buffer (registered in __init__)
    mlp: nn.Sequential
    """Sinusoidal features of one or more times, mixed by a 2-layer MLP: ``(B,) * k -> (B, dim)``."""

    def __init__(self, dim: int, time_inputs: int = 1, max_period: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        self.dim, self.time_inputs = dim, time_inputs
        freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2) / (dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim * time_inputs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, *times: Tensor) -> Tensor:
        if len(times) != self.time_inputs:
            raise ValueError(f"expected {self.time_inputs} time input(s), got {len(times)}")
        feats = []
        for t in times:
            arg = (t.float() * 1000.0)[:, None] * self.freqs[None]
            feats += [torch.sin(arg), torch.cos(arg)]
        # the features are computed in fp32 for accuracy, then meet the weights in their dtype (bf16/fp16
        # under DeepSpeed); under autocast the weights stay fp32 and autocast casts both
        first: nn.Linear = self.mlp[0]  # type: ignore[assignment]  # torch types a Sequential's item as any Module
        return self.mlp(torch.cat(feats, dim=-1).to(first.weight.dtype))


class MLPVelocity(nn.Module):
    """Residual MLP over flattened vectors, conditioned on time by addition."""

    def __init__(
        self,
        data_shape: tuple[int, ...],
        hidden: int = 256,
        depth: int = 3,
        time_embed_dim: int = 64,
        time_inputs: int = 1,
    ):
        super().__init__()
        self.data_shape = tuple(data_shape)
        dim = math.prod(self.data_shape)
        self.embed = TimeEmbedding(time_embed_dim, time_inputs)
        self.inp = nn.Linear(dim, hidden)
        self.cond = nn.Linear(time_embed_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, *times: Tensor) -> Tensor:
        h = self.inp(x.flatten(1)) + self.cond(self.embed(*times))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).view_as(x)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(nn.functional.silu(h))
        return h + self.skip(x)


class UNetVelocity(nn.Module):
    """A two-level UNet for small images ``(B, C, H, W)`` with ``H, W`` even.

    ``channels`` at full resolution, ``2 * channels`` at half; FiLM time
    conditioning in every residual block.
    """

    def __init__(self, data_shape: tuple[int, ...], channels: int = 32, time_embed_dim: int = 64, time_inputs: int = 1):
        super().__init__()
        if len(data_shape) != 3 or data_shape[1] % 2 or data_shape[2] % 2:
            raise ValueError(f"UNet needs data_shape (C, H, W) with even H, W; got {tuple(data_shape)}")
        self.data_shape = tuple(data_shape)
        c_in, c1, c2 = data_shape[0], channels, 2 * channels
        self.embed = TimeEmbedding(time_embed_dim, time_inputs)
        self.inp = nn.Conv2d(c_in, c1, 3, padding=1)
        self.down1 = _ResBlock(c1, c1, time_embed_dim)
        self.pool = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.mid1 = _ResBlock(c2, c2, time_embed_dim)
        self.mid2 = _ResBlock(c2, c2, time_embed_dim)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up1 = _ResBlock(c2 + c1, c1, time_embed_dim)
        self.out = nn.Sequential(nn.GroupNorm(min(8, c1), c1), nn.SiLU(), nn.Conv2d(c1, c_in, 3, padding=1))

    def forward(self, x: Tensor, *times: Tensor) -> Tensor:
        emb = self.embed(*times)
        h1 = self.down1(self.inp(x), emb)
        h = self.mid2(self.mid1(self.pool(h1), emb), emb)
        h = self.up1(torch.cat([self.upsample(h), h1], dim=1), emb)
        return self.out(h)


ARCHITECTURES: Registry[type[nn.Module]] = Registry("architecture", {"mlp": MLPVelocity, "unet": UNetVelocity})


def build_network(arch: str, data_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Instantiate a network family by name (``mlp`` or ``unet``)."""
    return ARCHITECTURES[arch](tuple(data_shape), **kwargs)
