"""``self`` and ``self:K`` in ``teachers[].checkpoints``: the run's own teachers, trained by the run itself
(``RUN/teacher`` and ``RUN/teacher-K``), not checkpoint paths. The one parser of that spelling."""

from __future__ import annotations

from typing import Iterable

from guide_store.settings import ConfigError
from teachers.settings import TeacherPoolSettings

__all__ = ["OWN_TEACHER", "own_teacher_index", "own_teacher_refs"]

OWN_TEACHER = "self"


def own_teacher_index(ref: str) -> int | None:
    """Which of the run's own teachers ``ref`` names: 0 for ``self``, K for ``self:K``; None for anything
    else (a checkpoint path). ``ConfigError`` for ``self:`` followed by anything but an integer K >= 1."""
    if ref == OWN_TEACHER:
        return 0
    if not ref.startswith(OWN_TEACHER + ":"):
        return None
    k = ref.split(":", 1)[1]
    if not k.isdigit() or int(k) < 1:
        raise ConfigError(f"teachers: checkpoint {ref!r}: expected self or self:K with K >= 1")
    return int(k)


def own_teacher_refs(pools: Iterable[TeacherPoolSettings]) -> list[str]:
    """The references to the run's own teachers in ``pools``' checkpoints, each once, sorted."""
    return sorted({c for p in pools for c in p.checkpoints if own_teacher_index(c) is not None})
