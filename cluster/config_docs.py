"""``docs/configuration.md``, generated from the settings models: every key, its type, default and allowed values.

    python -m cluster.config_docs > docs/configuration.md

The models are walked generically (pydantic's ``model_fields``: annotations, defaults, ``Literal`` choices,
``ge``/``gt``/``le``/``lt``/``multiple_of``/length/pattern constraints, descriptions), starting from the two
roots a user writes, ``RunConfig`` and ``StudyConfig``; nothing here names a section, so the page follows the
schema wherever its classes live. ``tests/test_docs.py`` fails when the file in ``docs/`` differs from this
output, and reads ``config_keys`` to check the keys the README and docs name.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cluster.config import RunConfig
from cluster.study_config import StudyConfig

__all__ = ["render", "config_keys", "section_models"]

_BOUNDS = (
    ("ge", ">="),
    ("gt", ">"),
    ("le", "<="),
    ("lt", "<"),
    ("multiple_of", "a multiple of"),
    ("min_length", "at least this many items:"),
    ("max_length", "at most this many items:"),
)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (itself, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True
    return annotation, False


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The settings model a field holds and how: ``""`` (the section itself), ``"[]"`` (a list of them) or
    ``".NAME"`` (a mapping of names to them); (None, "") for a plain value."""
    annotation, _ = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], ".NAME"
    return None, ""


def _type_name(annotation: Any) -> str:
    annotation, optional = _strip_optional(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        text = "choice"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "section"
    elif origin is list:
        inner = _model_in(annotation)[0]
        text = "list of sections" if inner else f"list of {_type_name(args[0])}" if args else "list"
    elif origin is dict:
        inner = _model_in(annotation)[0]
        text = (
            f"mapping of {_type_name(args[0])} to sections"
            if inner
            else f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
            if args
            else "mapping"
        )
    elif origin in (Union, types.UnionType):
        text = " or ".join(_type_name(a) for a in args)
    else:
        text = getattr(annotation, "__name__", str(annotation))
    return f"{text} or null" if optional else text


def _allowed(field: Any) -> str:
    annotation, optional = _strip_optional(field.annotation)
    parts = []
    if get_origin(annotation) is Literal:
        parts.append(", ".join(f"`{a}`" for a in get_args(annotation)))
    for meta in field.metadata:
        for attr, word in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{word} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    if optional and parts:
        parts.append("or `null`")
    return "; ".join(parts)


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"`{value}` ({value >> 20} MiB)" if value < 1 << 30 else f"`{value}` ({value >> 30} GiB)"
    if isinstance(value, str) and value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section_models(root: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every settings model under ``root`` with the dotted key it sits at (``""`` for the root), in field
    order, each model once per place it is used."""
    out = [(prefix, root)]
    for name, field in root.model_fields.items():
        model, how = _model_in(field.annotation)
        if model is not None:
            out.extend(section_models(model, f"{prefix}{field.alias or name}{how}."))
    return out


def config_keys(root: type[BaseModel] = RunConfig) -> set[str]:
    """Every dotted key of ``root``: sections and values, lists of sections as ``teachers[].name``."""
    keys = set()
    for prefix, model in section_models(root):
        for name, field in model.model_fields.items():
            keys.add(f"{prefix}{field.alias or name}")
    return keys


def _table(prefix: str, model: type[BaseModel]) -> list[str]:
    title = f"`{prefix[:-1]}`" if prefix else f"`{model.__name__}`: the top level"
    lines = [f"### {title}", ""]
    doc = (model.__doc__ or "").strip()
    if doc and not doc.startswith(("A base class", "Usage docs")):
        lines += [_cell(doc), ""]
    lines += ["| key | type | default | allowed | what |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        lines.append(
            f"| `{prefix}{field.alias or name}` | {_type_name(field.annotation)} | {_default(field)} | "
            f"{_allowed(field)} | {_cell(field.description or '')} |"
        )
    return lines + [""]


def render() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings models by `python -m cluster.config_docs > docs/configuration.md`;",
        "do not edit by hand (`tests/test_docs.py` fails when this file differs from that output).",
        "",
        "A run configuration (`configs/*.yaml` but the studies) validates into `RunConfig`; a study file",
        "(`configs/study_*.yaml`) into `StudyConfig`. An unknown key, a wrong type or a value outside the",
        "allowed ones stops the command before any work and names the key. Any value can be overridden",
        "by its dotted key: `--set student.steps=8000`; a list of sections is set whole",
        '(`--set "teachers=[{name: teacher, checkpoints: [self]}]"`). A `[]` in a key below means',
        '"each item of the list", `NAME` a key of a mapping you choose.',
        "",
    ]
    for title, root in (("Run configuration (`RunConfig`)", RunConfig), ("Study files (`StudyConfig`)", StudyConfig)):
        lines += [f"## {title}", ""]
        for prefix, model in section_models(root):
            lines += _table(prefix, model)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
