"""The guide store's settings (the run configuration's ``store`` section), and what every section is.

The run configuration (``cluster.config``) is assembled from sections each package owns beside the code that
reads them: this one, the teachers' (``teachers.settings``) and the student's (``student.student_settings``).
A section rejects unknown keys and is frozen once validated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from guide_store.embedded import FSYNC_POLICIES
from guide_store.errors import BezierDistillError
from guide_store.schema import TENSOR_DTYPES

__all__ = ["ConfigError", "Section", "format_section_errors", "StoreSettings", "StoreDtype", "Fsync", "redact_url"]

if TYPE_CHECKING:  # a Literal built from a tuple at import time is no type to mypy: each is a str to it
    StoreDtype = str
    Fsync = str
else:
    StoreDtype = Literal[tuple(TENSOR_DTYPES)]
    Fsync = Literal[FSYNC_POLICIES]


class ConfigError(BezierDistillError, ValueError):
    """A configuration is invalid; the message names each bad key."""


class Section(BaseModel):
    """A configuration section: unknown keys are errors, values are frozen. A field whose Python name differs
    from its YAML key has the key as its alias: it is read by either and written (``model_dump``) by the key."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class StoreSettings(Section):
    url: str | None = Field(
        None,
        pattern=r"^(redis|rediss|unix)://",
        description="redis://[user:password@]host:port/db; unset: a private embedded server",
    )
    dtype: StoreDtype = "float32"
    max_backlog_records: int = Field(200_000, ge=1)
    max_backlog_bytes: int = Field(2 << 30, ge=1 << 20)
    claim_idle_s: float = Field(
        30.0,
        gt=0.0,
        description="ignored since ranks get their own pending records "
        "back when they restart; kept so older configs and checkpoints still load",
    )
    put_timeout_s: float = Field(600.0, gt=0.0)
    fsync: Fsync = "always"
    max_memory_bytes: int = Field(
        4 << 30,
        ge=16 << 20,
        description="the embedded server's memory cap (noeviction: "
        "a write past it fails, nothing is dropped); at least twice max_backlog_bytes",
    )

    @model_validator(mode="after")
    def _backlog_well_below_memory(self) -> "StoreSettings":
        if self.url is None and 2 * self.max_backlog_bytes > self.max_memory_bytes:
            raise ValueError(
                f"max_backlog_bytes ({self.max_backlog_bytes}) must be at most half of max_memory_bytes "
                f"({self.max_memory_bytes}), so acknowledgements and dead letters always have room"
            )
        return self

    def public(self) -> "StoreSettings":
        """These settings with ``url``'s password masked: what goes into files, reports and logs."""
        return self.model_copy(update={"url": redact_url(self.url)})


def redact_url(url: str | None) -> str | None:
    """A store URL without its password (``redis://user:***@host:port/db``), for logs and files."""
    if not url or "@" not in url.split("://", 1)[-1]:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0] if ":" in cred else ""
    return f"{scheme}://{user}:***@{host}"


def _keys(model: type[BaseModel]) -> dict[str, str]:
    """A section's YAML keys (a field's alias where it has one), each with its field's name."""
    return {f.alias or name: name for name, f in model.model_fields.items()}


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """YAML keys of the section at ``loc`` (the location of an unknown key)."""
    for part in loc[:-1]:
        if not isinstance(part, str) or part not in _keys(model):
            return None
        ann = model.model_fields[_keys(model)[part]].annotation
        candidates = get_args(ann) if get_origin(ann) is Union else (ann,)
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return sorted(_keys(model))


def format_section_errors(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per error: the dotted key, then what is allowed (an unknown key lists the known ones)."""
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(e["loc"]))
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed or [])}")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)
