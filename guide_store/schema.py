"""The guide record: the one place its field names and Arrow types are spelled.

A guide record is one training example for the student: noise ``x0``, data
``x1`` and the teachers' guide points ``g1..gk`` between them (``teachers.guides``),
plus where they came from. A ``GuideBatch`` holds ``B`` records of one run made
by one producer with one rule; on the wire it is one Arrow record batch whose
tensors are fixed-shape tensor columns (float16 or float32) and whose schema
metadata carries ``SCHEMA_VERSION``. Readers reject versions they do not know.

Columns (``k`` = number of guides, 0..MAX_GUIDES):

    sample_id int64 | run string | run_seed int64 | x0, x1, g1..gk tensor<float>[*D]
    tau{i} float32 | teacher{i} string | teacher{i}_version string   (i = 1..k)
    guide_rule string | coupling string | producer string | created_at timestamp[us, UTC]
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from guide_store.errors import StoreError

__all__ = [
    "SCHEMA_VERSION",
    "MAX_GUIDES",
    "TENSOR_DTYPES",
    "GuideBatch",
    "RecordError",
    "guide_schema",
    "to_record_batch",
    "from_record_batch",
]

SCHEMA_VERSION = 1
MAX_GUIDES = 3
META_VERSION = b"bezier_distill.schema_version"
META_GUIDES = b"bezier_distill.n_guides"
TENSOR_DTYPES = {"float16": (torch.float16, pa.float16()), "float32": (torch.float32, pa.float32())}

SAMPLE_ID, RUN, RUN_SEED, X0, X1 = "sample_id", "run", "run_seed", "x0", "x1"
GUIDE_RULE, COUPLING, PRODUCER, CREATED_AT = "guide_rule", "coupling", "producer", "created_at"


def guide_column(i: int) -> str:
    return f"g{i}"


def tau_column(i: int) -> str:
    return f"tau{i}"


def teacher_column(i: int) -> str:
    return f"teacher{i}"


def teacher_version_column(i: int) -> str:
    return f"teacher{i}_version"


class RecordError(StoreError, ValueError):
    """A payload is not a valid guide batch; the message is the dead-letter reason."""


@dataclass
class GuideBatch:
    """``B`` guide records. Tensors are ``(B, *D)``; ``guides[i]`` was made by ``teachers[i]`` at ``taus[i]``."""

    sample_id: Tensor
    x0: Tensor
    x1: Tensor
    guides: list[Tensor] = field(default_factory=list)
    taus: list[float] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    teacher_versions: list[str] = field(default_factory=list)
    guide_rule: str = "euler_step"
    coupling: str = "inversion"
    run: str = ""
    run_seed: int = 0
    producer: str = ""
    created_at: float = field(default_factory=time.time)

    def __len__(self) -> int:
        return int(self.sample_id.shape[0])

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.x0.shape[1:])

    @property
    def control_points(self) -> list[Tensor]:
        """``[x0, g1, .., gk, x1]``: the Bezier control points (``student.bezier``)."""
        return [self.x0, *self.guides, self.x1]


@lru_cache(maxsize=64)  # a pure function of its arguments; built once per layout, not once per batch
def guide_schema(data_shape: tuple[int, ...], dtype: str = "float32", n_guides: int = 2) -> pa.Schema:
    """The Arrow schema of a batch with ``n_guides`` guides of per-record shape ``data_shape``."""
    if dtype not in TENSOR_DTYPES:
        raise ValueError(f"unknown tensor dtype {dtype!r}; known: {sorted(TENSOR_DTYPES)}")
    if not 0 <= n_guides <= MAX_GUIDES:
        raise ValueError(f"n_guides must be in 0..{MAX_GUIDES}, got {n_guides}")
    tensor = pa.fixed_shape_tensor(TENSOR_DTYPES[dtype][1], list(data_shape))
    text = pa.dictionary(pa.int32(), pa.string())
    fields = [
        pa.field(SAMPLE_ID, pa.int64(), nullable=False),
        pa.field(RUN, text),
        pa.field(RUN_SEED, pa.int64()),
        pa.field(X0, tensor, nullable=False),
        pa.field(X1, tensor, nullable=False),
    ]
    for i in range(1, n_guides + 1):
        fields.append(pa.field(guide_column(i), tensor, nullable=False))
    for i in range(1, n_guides + 1):
        fields += [
            pa.field(tau_column(i), pa.float32()),
            pa.field(teacher_column(i), text),
            pa.field(teacher_version_column(i), text),
        ]
    fields += [
        pa.field(GUIDE_RULE, text),
        pa.field(COUPLING, text),
        pa.field(PRODUCER, text),
        pa.field(CREATED_AT, pa.timestamp("us", tz="UTC")),
    ]
    meta = {
        META_VERSION: str(SCHEMA_VERSION).encode(),
        META_GUIDES: str(n_guides).encode(),
        b"bezier_distill.data_shape": json.dumps(list(data_shape)).encode(),
    }
    return pa.schema(fields, metadata=meta)


def _tensor_array(t: Tensor, typ: pa.FixedShapeTensorType) -> pa.Array:
    """``(B, *D)`` tensor -> fixed-shape tensor column viewing the same memory (a copy only when the tensor is
    not already a contiguous CPU tensor of the column's dtype)."""
    torch_dtype = TENSOR_DTYPES["float16" if typ.value_type == pa.float16() else "float32"][0]
    arr = t.detach().to("cpu", torch_dtype).contiguous().numpy()
    storage = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), math.prod(typ.shape))
    return pa.ExtensionArray.from_storage(typ, storage)


def _repeat(value, n: int, typ: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(typ):
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], pa.string()))
    return pa.array([value] * n, typ)


def to_record_batch(batch: GuideBatch, dtype: str = "float32") -> pa.RecordBatch:
    """``GuideBatch`` -> Arrow record batch (tensor columns share memory with the torch tensors when possible)."""
    n, k = len(batch), len(batch.guides)
    if not (len(batch.taus) == len(batch.teachers) == len(batch.teacher_versions) == k):
        raise RecordError(
            f"{k} guides need {k} taus, teachers and teacher versions; got "
            f"{len(batch.taus)}, {len(batch.teachers)}, {len(batch.teacher_versions)}"
        )
    for name, t in [(X0, batch.x0), (X1, batch.x1), *((guide_column(i + 1), g) for i, g in enumerate(batch.guides))]:
        if tuple(t.shape) != (n, *batch.data_shape):
            raise RecordError(f"{name} has shape {list(t.shape)}, expected {[n, *batch.data_shape]}")
    schema = guide_schema(tuple(batch.data_shape), dtype, k)
    cols: dict[str, pa.Array] = {
        SAMPLE_ID: pa.array(batch.sample_id.detach().cpu().to(torch.int64).numpy()),
        RUN: _repeat(batch.run, n, schema.field(RUN).type),
        RUN_SEED: _repeat(batch.run_seed, n, pa.int64()),
        X0: _tensor_array(batch.x0, schema.field(X0).type),
        X1: _tensor_array(batch.x1, schema.field(X1).type),
    }
    for i, g in enumerate(batch.guides, start=1):
        cols[guide_column(i)] = _tensor_array(g, schema.field(X0).type)
        cols[tau_column(i)] = _repeat(batch.taus[i - 1], n, pa.float32())
        cols[teacher_column(i)] = _repeat(batch.teachers[i - 1], n, schema.field(teacher_column(i)).type)
        cols[teacher_version_column(i)] = _repeat(
            batch.teacher_versions[i - 1], n, schema.field(teacher_version_column(i)).type
        )
    for name, value in ((GUIDE_RULE, batch.guide_rule), (COUPLING, batch.coupling), (PRODUCER, batch.producer)):
        cols[name] = _repeat(value, n, schema.field(name).type)
    cols[CREATED_AT] = pa.array(
        np.full(n, int(batch.created_at * 1e6), dtype="datetime64[us]"), pa.timestamp("us", tz="UTC")
    )
    return pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)


def _single(rb: pa.RecordBatch, name: str):
    """The one value a per-batch column holds; a batch mixing values is not a valid guide batch."""
    col = rb.column(name)
    if len(col) == 0:
        return None
    if col.null_count:
        raise RecordError(f"column {name!r} has null values")
    if pa.types.is_dictionary(col.type):
        if len(col.dictionary) == 1:  # what the encoder writes: one entry, every index 0
            return col.dictionary[0].as_py()
        values = col.dictionary.take(col.indices.unique()).to_pylist()
    else:
        arr = col.to_numpy(zero_copy_only=False)
        if not (arr == arr[0]).all():
            values = [None, None]
        else:
            return col[0].as_py()
    if len(values) != 1:
        raise RecordError(f"column {name!r} holds {len(values)} different values in one batch")
    return values[0]


def _to_torch(rb: pa.RecordBatch, name: str, expect_shape: tuple[int, ...] | None) -> Tensor:
    col = rb.column(name)
    if not isinstance(col.type, pa.FixedShapeTensorType):
        raise RecordError(f"column {name!r} has type {col.type}, expected a fixed-shape tensor")
    if col.type.value_type not in (pa.float16(), pa.float32()):
        raise RecordError(f"column {name!r} has dtype {col.type.value_type}, expected float16 or float32")
    shape = tuple(col.type.shape)
    if expect_shape is not None and shape != tuple(expect_shape):
        raise RecordError(f"column {name!r} has record shape {list(shape)}, expected {list(expect_shape)}")
    if col.null_count:
        raise RecordError(f"column {name!r} has {col.null_count} null records")
    arr = col.to_numpy_ndarray()  # zero-copy view of the Arrow buffer
    with warnings.catch_warnings():
        # Arrow buffers from an immutable payload are read-only; the tensor shares them (no copy) and is
        # only ever read by the student (it is cast or moved before any in-place use).
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(arr)
    if t.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all()):
        # NaN propagates through min/max and +-Inf becomes an extreme: one pass, no mask allocated
        raise RecordError(f"column {name!r} holds NaN or Inf")
    return t


def _schema_version(schema: pa.Schema) -> int:
    meta = schema.metadata or {}
    if META_VERSION not in meta:
        raise RecordError("batch has no schema version (not a guide batch)")
    try:
        version = int(meta[META_VERSION])
    except ValueError:
        raise RecordError(f"schema version {meta[META_VERSION]!r} is not a number") from None
    if version != SCHEMA_VERSION:
        raise RecordError(f"schema version {version} is not supported (this reader knows {SCHEMA_VERSION})")
    return version


def from_record_batch(
    rb: pa.RecordBatch, expect_shape: tuple[int, ...] | None = None, schema: pa.Schema | None = None
) -> GuideBatch:
    """Arrow record batch -> ``GuideBatch``, validating version, columns, shapes, dtypes and finiteness.

    ``schema`` (with its metadata) defaults to the batch's own. Raises ``RecordError`` with the reason.
    """
    schema = schema if schema is not None else rb.schema
    _schema_version(schema)
    try:
        k = int((schema.metadata or {}).get(META_GUIDES, b"0"))
    except ValueError:
        raise RecordError("n_guides metadata is not a number") from None
    expected = guide_schema((1,), "float32", k).names if 0 <= k <= MAX_GUIDES else None
    if expected is None or rb.schema.names != expected:
        raise RecordError(f"columns {rb.schema.names} do not match the version-{SCHEMA_VERSION} layout for {k} guides")
    try:
        x0 = _to_torch(rb, X0, expect_shape)
        shape = tuple(x0.shape[1:])
        x1 = _to_torch(rb, X1, shape)
        guides = [_to_torch(rb, guide_column(i), shape) for i in range(1, k + 1)]
        created = _single(rb, CREATED_AT)
        ids = rb.column(SAMPLE_ID)
        if ids.null_count:
            raise RecordError("column 'sample_id' has null values")
        sample_id = torch.from_numpy(ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
        if sample_id.unique().numel() != len(sample_id):
            raise RecordError("sample_id values repeat within one batch")
        return GuideBatch(
            sample_id=sample_id,
            x0=x0,
            x1=x1,
            guides=guides,
            taus=[float(_single(rb, tau_column(i))) for i in range(1, k + 1)],
            teachers=[_single(rb, teacher_column(i)) for i in range(1, k + 1)],
            teacher_versions=[_single(rb, teacher_version_column(i)) for i in range(1, k + 1)],
            guide_rule=_single(rb, GUIDE_RULE),
            coupling=_single(rb, COUPLING),
            run=_single(rb, RUN),
            run_seed=int(_single(rb, RUN_SEED)),
            producer=_single(rb, PRODUCER),
            created_at=created.timestamp() if created is not None else math.nan,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        raise RecordError(f"malformed batch: {err}") from None
