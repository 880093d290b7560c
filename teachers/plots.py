"""PNG output a person looks at first: image grids, 2-D scatter panels, loss curves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from guide_store.atomic import replaced_atomically

__all__ = ["pyplot", "save_figure", "save_sample_figure", "save_sample_table", "save_loss_curve"]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (set before pyplot is imported, so no display is needed;
    imported on first use: matplotlib is slow to import and only plots need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_sample_figure(
    panels: dict[str, Tensor],
    path: str | Path,
    reference: Tensor | None = None,
    per_row: int = 16,
    max_images: int = 64,
) -> Path:
    """One panel per label: an image grid for ``(N, C, H, W)`` samples, a scatter for ``(N, 2)``.

    ``reference`` (real data) is drawn as the first panel.
    """
    plt = pyplot()
    items = ([("real data", reference)] if reference is not None else []) + list(panels.items())
    is_image = next(iter(panels.values())).dim() == 4
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items), 3.4), squeeze=False)
    for ax, (label, x) in zip(axes[0], items):
        _draw(ax, x, is_image, max_images)
        ax.set_title(label, fontsize=10)
    return save_figure(plt, fig, path)


def save_sample_table(
    rows: dict[str, dict[str, Tensor]], path: str | Path, max_images: int = 64, rows_per_block: int = 10
) -> Path:
    """A table of sample panels: one row per model (``rows[label]``), one column per setting (e.g. steps);
    a model without a setting leaves its cell empty. Images as grids, ``(N, 2)`` points as scatters. More than
    ``rows_per_block`` models wrap into side-by-side blocks, so the figure stays readable."""
    plt = pyplot()
    columns = list(dict.fromkeys(c for cells in rows.values() for c in cells))
    is_image = next(x for cells in rows.values() for x in cells.values()).dim() == 4
    blocks = -(-len(rows) // rows_per_block)
    height = min(len(rows), rows_per_block)
    fig, axes = plt.subplots(
        height, blocks * len(columns), figsize=(2.6 * blocks * len(columns), 2.2 * height), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, (label, cells) in enumerate(rows.items()):
        b, r = divmod(i, rows_per_block)
        for c, column in enumerate(columns):
            ax = axes[r][b * len(columns) + c]
            if column in cells:
                ax.axis("on")
                _draw(ax, cells[column], is_image, max_images)
                ax.set_title(f"{label}\n{column}" if c == 0 else column, fontsize=7)
    return save_figure(plt, fig, path)


def _draw(ax, x: Tensor, is_image: bool, max_images: int) -> None:
    x = x.detach().float().cpu()
    if is_image:
        ax.imshow(_grid(x[:max_images], per_row=int(max_images**0.5)), cmap="gray", vmin=-1, vmax=1)
    else:
        pts = x[:4000].flatten(1)
        ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.5)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(x: Tensor, per_row: int, pad: int = 1) -> Tensor:
    """``(N, C, H, W)`` -> one ``(rows * (H + pad), per_row * (W + pad))`` grey image (first channel)."""
    n, _, h, w = x.shape
    rows = (n + per_row - 1) // per_row
    canvas = torch.full((rows * (h + pad) + pad, per_row * (w + pad) + pad), -1.0)
    for i in range(n):
        r, c = divmod(i, per_row)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = x[i, 0]
    return canvas


def save_loss_curve(history: list[dict], path: str | Path, title: str = "training loss") -> Path:
    """Loss against step from ``[{"step", "loss"}, ...]``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    return save_figure(plt, fig, path)


def save_figure(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
