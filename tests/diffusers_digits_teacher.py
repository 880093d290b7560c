"""A pretrained teacher of the kind users bring: a diffusers ``UNet2DModel`` with attention blocks, trained here on
the digits in diffusers' flow-matching convention (``x = sigma * noise + (1 - sigma) * data``, the model called
with ``sigma * num_train_timesteps`` and fitted to ``noise - data``), saved with ``save_pretrained`` beside a
``FlowMatchEulerDiscreteScheduler`` config in a pipeline's layout (``OUT/unet``, ``OUT/scheduler``).

    python tests/diffusers_digits_teacher.py models/hf-digits   # 1600 steps of 64, as the digits job's teacher
    bezier-distill run configs/digits.yaml --set name=digits-hf \\
        --set 'teachers=[{"name": "hf", "checkpoints": ["models/hf-digits/unet"], "replicas": 2}]'

The end-to-end test (``tests/cluster/test_diffusers_teacher_e2e.py``) trains a smaller one for fewer steps."""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

from teachers.data import digits


def flow_match_unet(attention: bool = True, channels: tuple[int, int] = (32, 64), norm_groups: int = 8):
    """A ``UNet2DModel`` for 1x8x8 images: two levels, attention at the 4x4 level when ``attention``."""
    import diffusers

    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"),
        norm_num_groups=norm_groups,
        attention_head_dim=8,
    )


def train_flow_match_unet(
    out: Path,
    steps: int = 400,
    num_train_timesteps: int = 1000,
    attention: bool = True,
    channels: tuple[int, int] = (16, 32),
    lr: float = 2e-3,
    ema_decay: float = 0.0,
    log_every: int = 0,
    norm_groups: int = 8,
    batch_size: int = 64,
) -> tuple[Path, float]:
    """Train on the digits' training split (seed 0) with Adam, batches of ``batch_size``; save the model (its EMA when
    ``ema_decay`` > 0) to ``out`` and the scheduler config to ``out.parent / "scheduler"``."""
    import diffusers

    torch.manual_seed(0)
    data = digits(seed=0).train
    model = flow_match_unet(attention, channels, norm_groups)
    ema = copy.deepcopy(model).requires_grad_(False) if ema_decay > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(1, steps + 1):
        x1 = data[torch.randint(0, data.shape[0], (batch_size,), generator=g)]
        noise = torch.randn(x1.shape, generator=g)
        sigma = torch.rand(batch_size, generator=g)
        s = sigma.view(-1, 1, 1, 1)
        loss = (model(s * noise + (1 - s) * x1, sigma * num_train_timesteps).sample - (noise - x1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - ema_decay)
        if log_every and step % log_every == 0:
            print(f"step {step}/{steps}, loss {loss.item():.4f}, {time.time() - start:.0f}s", flush=True)
    (ema or model).eval().save_pretrained(out, safe_serialization=True)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps)
    scheduler.save_config(out.parent / "scheduler")  # a pipeline's layout: MODEL/../scheduler
    return out, loss.item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write: OUT/unet (the model) and OUT/scheduler")
    ap.add_argument("--steps", type=int, default=1600, help="Adam steps of batch 64 (default: the digits teacher's)")
    ap.add_argument("--no-attention", action="store_true", help="plain down and up blocks")
    ap.add_argument(
        "--channels",
        type=int,
        nargs=2,
        default=(16, 32),
        help="channels at 8x8 and 4x4 (default 16 32: 177k parameters, the digits job's UNet teacher has 260k)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    unet, loss = train_flow_match_unet(
        args.out / "unet",
        args.steps,
        attention=not args.no_attention,
        channels=tuple(args.channels),
        ema_decay=0.999,
        log_every=200,
    )
    print(f"wrote {unet} (final loss {loss:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
