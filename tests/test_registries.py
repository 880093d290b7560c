"""Each choice is declared once: the configuration schema accepts exactly the names its registry implements,
and the command line offers the same ones. A new ``Literal`` setting must be tied to a registry here (or
listed as a plain switch with no implementation table behind it)."""

from __future__ import annotations

import argparse
from types import UnionType
from typing import Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from cluster.cli import build_parser
from cluster.pipeline_bench import BENCH_SIZES
from cluster.study_config import Variant
from guide_store.embedded import FSYNC_POLICIES
from guide_store.schema import TENSOR_DTYPES
from student.objectives import OBJECTIVES
from cluster.config import RunConfig
from teachers.settings import DEVICES
from teachers.conventions import CONVENTIONS
from teachers.data import DATA_SOURCES
from teachers.digits_features import FEATURE_EXTRACTORS
from teachers.guides import COUPLINGS, GUIDE_RULES, PATHS
from teachers.nets import ARCHITECTURES
from teachers.precision import DTYPES, PRECISIONS
from teachers.rectified_flow import TIME_SAMPLERS
from teachers.registry import Registry
from teachers.solvers import SOLVERS

# setting (dotted, as in YAML) -> the names its implementation knows
TIED = {
    "data.name": DATA_SOURCES,
    "teacher.network.arch": ARCHITECTURES,
    "student.network.arch": ARCHITECTURES,
    "teacher.time_sampling": TIME_SAMPLERS,
    "student.time_sampling": TIME_SAMPLERS,
    "teacher.reflow_solver": SOLVERS,
    "eval.solver": SOLVERS,
    "eval.reference_solver": SOLVERS,
    "guides.solve_solver": SOLVERS,
    "guides.coupling_solver": SOLVERS,
    "eval.feature_extractor": FEATURE_EXTRACTORS,
    "guides.path": PATHS,
    "guides.rule": GUIDE_RULES,
    "guides.coupling": COUPLINGS,
    "teachers.convention": CONVENTIONS,
    "student.objective": OBJECTIVES,
    "precision": PRECISIONS,
    "student.precision": PRECISIONS,
    "guides.precision": PRECISIONS,
    "store.dtype": tuple(TENSOR_DTYPES),
    "store.fsync": FSYNC_POLICIES,
    "device": DEVICES,  # resolved by teachers.device_plan (auto, cpu, cuda), no table behind it
}
# two-way switches whose meaning is written where they are read, not a table of implementations
PLAIN = {"student.init", "student.source"}


def _literal_fields(model: type[BaseModel], prefix: str = "") -> dict[str, tuple]:
    """Every setting of the schema whose type is a ``Literal`` (inside optionals and lists too): its allowed
    values, by dotted key."""
    out = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"  # the YAML key
        stack = [field.annotation]
        while stack:
            ann = stack.pop()
            if get_origin(ann) is Literal:
                out[key] = get_args(ann)
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                out.update(_literal_fields(ann, key + "."))
            elif get_origin(ann) in (Union, UnionType, list):
                stack += list(get_args(ann))
    return out


def test_every_choice_in_the_schema_is_tied_to_its_registry():
    found = _literal_fields(RunConfig)
    assert set(found) == set(TIED) | PLAIN, (
        "a Literal setting without a registry tie (add it to TIED or PLAIN): "
        f"{sorted(set(found) ^ (set(TIED) | PLAIN))}"
    )
    for key, registry in TIED.items():
        assert found[key] == tuple(registry), f"{key}: schema {found[key]} vs implementation {tuple(registry)}"


def test_the_study_file_offers_the_same_objectives():
    assert _literal_fields(Variant)["objectives"] == tuple(OBJECTIVES)


def test_resolved_precisions_are_the_ones_with_a_dtype():
    assert PRECISIONS == ("auto", *DTYPES)


def _choices(parser: argparse.ArgumentParser, path: list[str], option: str) -> tuple:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return _choices(action.choices[path[0]], path[1:], option)
        if option in action.option_strings:
            return tuple(action.choices)
    raise KeyError(option)


@pytest.mark.parametrize(
    "command, option, registry",
    [
        (["eval"], "--solver", SOLVERS),
        (["sample"], "--solver", SOLVERS),
        (["eval"], "--convention", CONVENTIONS),
        (["sample"], "--convention", CONVENTIONS),
        (["eval"], "--feature-extractor", FEATURE_EXTRACTORS),
        (["store", "bench"], "--fsync", FSYNC_POLICIES),
        (["bench", "store"], "--fsync", FSYNC_POLICIES),
        (["bench", "pipeline"], "--size", BENCH_SIZES),
    ],
)
def test_the_command_line_offers_the_registry_names(command, option, registry):
    assert set(_choices(build_parser(), command, option)) == set(registry)


def test_an_unknown_name_is_one_error_that_lists_the_known_ones():
    reg = Registry("colour", {"red": 1, "green": 2})
    assert reg["green"] == 2 and "red" in reg and list(reg) == ["red", "green"] and reg.check("red") == "red"
    with pytest.raises(ValueError, match=r"unknown colour 'blue'; known: red, green"):
        reg["blue"]
    assert get_args(reg.literal()) == ("red", "green")
    with pytest.raises(ValueError, match="at least one entry"):
        Registry("nothing", {})
