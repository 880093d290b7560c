"""One choice, declared once: its allowed names and what each name means.

A ``Registry`` maps each name of a choice (a solver, a guide path, a time sampling, a teacher convention, a
student objective, ...) to its implementation. The configuration schema takes its allowed values from the
same object (``Registry.literal``), so a new entry is accepted by the YAML the moment it exists, and an
unknown name raises one error that lists the known ones. ``tests/test_registries.py`` ties each registry to
the schema field that names it.
"""

from __future__ import annotations

from typing import Any, Generic, Iterator, Literal, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one choice (``what``, as errors say it) and the value each stands for, in declaration order."""

    def __init__(self, what: str, entries: dict[str, T]):
        if not entries:
            raise ValueError(f"a registry of {what} needs at least one entry")
        self.what = what
        self._entries = dict(entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def literal(self) -> Any:
        """``Literal[name, ...]``: the schema's type for a setting that takes one of these names."""
        return Literal[self.names]  # a tuple subscript is the same as listing the names

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; known: {', '.join(self.names)}")
        return self._entries[name]

    def check(self, name: str) -> str:
        """``name`` when it is known, else the error that lists the known names."""
        self[name]
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self.names)})"
