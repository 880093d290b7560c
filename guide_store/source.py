"""What a student reads guides from: the live Redis stream or a Parquet directory, behind one protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from guide_store.schema import GuideBatch

__all__ = ["Delivery", "GuideSource"]


@dataclass
class Delivery:
    """One batch handed to a consumer: ack ``id`` after the optimizer step that used ``batch``."""

    id: str
    batch: GuideBatch
    reclaimed: bool = False


class GuideSource(Protocol):
    def get(self, consumer: str, timeout_s: float = 1.0, count: int = 1) -> list[Delivery]: ...

    def ack(self, ids: Iterable[str]) -> int: ...

    def stats(self) -> dict: ...

    def settled(self, consumer: str) -> bool:
        """Whether ``consumer`` holds nothing the source has not handed to it (a live store's question)."""
        ...
