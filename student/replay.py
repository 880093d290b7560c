"""A rank's local pool of guide records it has consumed, so each record can train more than one step.

Teachers spend ~130 network evaluations per record (an RK4 inversion plus the
guides); a student step spends ~3 per record. Reading each record once would
leave the student waiting on the teachers nearly all the time, so every rank
keeps the records it consumed (after acknowledging them) and fills each
micro-batch from this pool. ``max_reuse`` bounds the average number of uses
per record: past it, the rank waits for fresh guides. Pure torch; the pool lives
on the training device (``device``), so a draw copies nothing from the host but
its indices.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["ReplayPool"]


class ReplayPool:
    """Up to ``capacity`` records of ``n_points`` control points each, oldest overwritten first."""

    def __init__(self, capacity: int, max_reuse: float, device: torch.device | str = "cpu"):
        if capacity < 1 or max_reuse <= 0:
            raise ValueError(f"capacity must be >= 1 and max_reuse > 0; got {capacity}, {max_reuse}")
        self.capacity, self.max_reuse, self.device = capacity, max_reuse, torch.device(device)
        self._data: Tensor | None = None  # (capacity, n_points, *D)
        self.size = self._next = 0
        self.received = 0  # records ever added
        self.used = 0  # record-uses drawn from the pool

    def add(self, points: Sequence[Tensor]) -> None:
        """Append a batch given as control points, each ``(B, *D)``."""
        stacked = torch.stack([p.detach().to(self.device, torch.float32) for p in points], dim=1)
        if self._data is None:
            self._data = torch.empty((self.capacity, *stacked.shape[1:]), device=self.device)
        elif stacked.shape[1:] != self._data.shape[1:]:
            raise ValueError(
                f"records of layout {tuple(stacked.shape[1:])} do not fit a pool of {tuple(self._data.shape[1:])}"
            )
        rows = stacked[-self.capacity :]
        self._data[(self._next + torch.arange(rows.shape[0], device=self.device)) % self.capacity] = rows
        self._next = (self._next + rows.shape[0]) % self.capacity
        self.size = min(self.capacity, self.size + stacked.shape[0])
        self.received += stacked.shape[0]

    def state(self) -> tuple[dict[str, Tensor], dict]:
        """Tensors and counters that rebuild the pool (``load_state``): part of a rank's checkpoint, so a
        restarted rank trains on what it had consumed rather than on nothing."""
        rows = self._data[: self.size].cpu() if self._data is not None else torch.empty(0)
        return {"rows": rows.contiguous()}, {
            "size": self.size,
            "next": self._next,
            "received": self.received,
            "used": self.used,
        }

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        rows = tensors["rows"]
        if meta["size"] == 0:
            return
        if rows.shape[0] != meta["size"] or meta["size"] > self.capacity:
            raise ValueError(
                f"replay state holds {rows.shape[0]} rows for size {meta['size']} (capacity {self.capacity})"
            )
        self._data = torch.empty((self.capacity, *rows.shape[1:]), device=self.device)
        self._data[: rows.shape[0]] = rows.to(self.device)
        self.size, self._next = meta["size"], meta["next"] % self.capacity
        self.received, self.used = meta["received"], meta["used"]

    def merge_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """``load_state`` into an empty pool; into one that holds records (an old rank taken over at another
        world size), its rows appended (the oldest overwritten past capacity) and its counters added."""
        if self.size == 0 and self.received == 0:
            self.load_state(tensors, meta)
        elif meta["size"]:
            self.add(list(tensors["rows"].unbind(dim=1)))
            self.received += meta["received"] - meta["size"]
            self.used += meta["used"]

    def can_draw(self, n: int) -> bool:
        """Whether ``n`` more uses stay within ``max_reuse`` uses per record received."""
        return self.size > 0 and self.used + n <= self.max_reuse * self.received

    def draw(self, n: int, g: torch.Generator) -> list[Tensor]:
        """``n`` records drawn uniformly with replacement, as control points ``(n, *D)`` each."""
        if self._data is None or self.size == 0:
            raise ValueError("the replay pool is empty")
        idx = torch.randint(0, self.size, (n,), generator=g).to(self.device, non_blocking=True)
        self.used += n
        rows = self._data[idx]
        return list(rows.unbind(dim=1))
