"""The record schema and codec, without any server: round trips, zero copy, and every rejection reason."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from guide_store.codec import decode_batch, encode_batch, encode_record_batch
from guide_store.schema import META_VERSION, RecordError, from_record_batch, guide_schema, to_record_batch

from guide_factory import assert_same, make_batch


@pytest.mark.parametrize("guides", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (3, 4, 5)])
def test_round_trip(guides, shape):
    b = make_batch(10, n=5, shape=shape, guides=guides)
    assert_same(decode_batch(encode_batch(b)), b)


def test_float16_round_trip():
    b = make_batch(0)
    d = decode_batch(encode_batch(b, "float16"))
    assert d.x0.dtype == torch.float16
    assert_same(d, b, dtype=torch.float16)


def test_decode_is_zero_copy():
    payload = encode_batch(make_batch(0, n=64)).to_pybytes()
    d = decode_batch(payload)
    start = np.frombuffer(payload, dtype=np.uint8).ctypes.data
    for t in d.control_points:
        assert start <= t.data_ptr() < start + len(payload)


def test_truncated_payload():
    payload = encode_batch(make_batch(0)).to_pybytes()
    for cut in (5, len(payload) // 2, len(payload) - 3):
        with pytest.raises(RecordError, match="truncated|corrupt"):
            decode_batch(payload[:cut])


def test_unknown_schema_version():
    rb = to_record_batch(make_batch(0))
    meta = dict(rb.schema.metadata)
    meta[META_VERSION] = b"99"
    with pytest.raises(RecordError, match="schema version 99 is not supported"):
        decode_batch(encode_record_batch(rb.replace_schema_metadata(meta)))


def test_missing_schema_version():
    rb = to_record_batch(make_batch(0)).replace_schema_metadata({})
    with pytest.raises(RecordError, match="no schema version"):
        from_record_batch(rb)


def test_nan_and_inf():
    for bad in (float("nan"), float("inf")):
        b = make_batch(0)
        b.guides[1][2, 0, 3, 3] = bad
        with pytest.raises(RecordError, match="'g2' holds NaN or Inf"):
            decode_batch(encode_batch(b))


def test_wrong_shape_for_reader():
    with pytest.raises(RecordError, match=r"record shape \[1, 8, 8\], expected \[2\]"):
        decode_batch(encode_batch(make_batch(0)), expect_shape=(2,))


def test_wrong_dtype_and_columns():
    b = make_batch(0, guides=1)
    rb = to_record_batch(b)
    f64 = pa.FixedShapeTensorArray.from_numpy_ndarray(b.x1.double().numpy())
    bad = rb.set_column(rb.schema.get_field_index("x1"), pa.field("x1", f64.type), f64)
    with pytest.raises(RecordError, match="dtype double, expected float16 or float32"):
        from_record_batch(bad.replace_schema_metadata(rb.schema.metadata))
    dropped = rb.drop_columns(["producer"]).replace_schema_metadata(rb.schema.metadata)
    with pytest.raises(RecordError, match="do not match the version-1 layout"):
        from_record_batch(dropped)


def test_repeated_ids_and_inconsistent_guides():
    b = make_batch(0)
    b.sample_id[1] = b.sample_id[0]
    with pytest.raises(RecordError, match="repeat"):
        decode_batch(encode_batch(b))
    b = make_batch(0)
    b.teachers = ["only-one"]
    with pytest.raises(RecordError, match="2 guides need 2"):
        encode_batch(b)


def test_schema_names_every_field():
    names = guide_schema((2,), "float32", 2).names
    for required in (
        "sample_id",
        "run",
        "run_seed",
        "x0",
        "x1",
        "g1",
        "g2",
        "tau1",
        "tau2",
        "teacher1",
        "teacher2",
        "teacher1_version",
        "guide_rule",
        "coupling",
        "producer",
        "created_at",
    ):
        assert required in names
