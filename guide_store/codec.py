"""Guide batches as Arrow IPC stream messages: the bytes that cross processes and disks.

Encoding: the torch tensors are viewed (not copied) as Arrow arrays; the IPC
writer then makes the one copy that serialising into a contiguous message
needs (into a buffer of the final size, measured by a dry run). Decoding is zero-copy: the Arrow buffers
point into the received bytes
and the torch tensors point into the Arrow buffers. Copies remain only where a
tensor must change dtype or device, or is not contiguous, before encoding.
No pickle anywhere.
"""

from __future__ import annotations

import pyarrow as pa

from guide_store.schema import GuideBatch, RecordError, from_record_batch, to_record_batch

__all__ = ["encode_batch", "decode_batch", "encode_record_batch", "decode_record_batch"]


def _write_stream(sink, rb: pa.RecordBatch) -> None:
    with pa.ipc.new_stream(sink, rb.schema) as writer:
        writer.write_batch(rb)


def encode_record_batch(rb: pa.RecordBatch) -> pa.Buffer:
    """One Arrow IPC stream (schema + one record batch) in a buffer (supports the buffer protocol).

    The size is measured first (a dry run that copies nothing), so the data is copied exactly once, into
    a buffer of the final size, instead of into a growing one that reallocates."""
    dry = pa.MockOutputStream()
    _write_stream(dry, rb)
    buf = pa.allocate_buffer(dry.size())
    _write_stream(pa.FixedSizeBufferWriter(buf), rb)
    return buf


def encode_batch(batch: GuideBatch, dtype: str = "float32") -> pa.Buffer:
    """``GuideBatch`` -> IPC bytes."""
    return encode_record_batch(to_record_batch(batch, dtype))


def decode_record_batch(payload: bytes | memoryview | pa.Buffer) -> pa.RecordBatch:
    """IPC bytes -> the single record batch they hold; ``RecordError`` if truncated or malformed."""
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(payload) if not isinstance(payload, pa.Buffer) else payload)
        rb = reader.read_next_batch()
        try:
            reader.read_next_batch()
        except StopIteration:
            return rb
        raise RecordError("payload holds more than one record batch")
    except StopIteration:
        raise RecordError("payload holds a schema but no record batch (truncated)") from None
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
        raise RecordError(f"payload is not a readable Arrow IPC stream (truncated or corrupt): {err}") from None


def decode_batch(payload: bytes | memoryview | pa.Buffer, expect_shape: tuple[int, ...] | None = None) -> GuideBatch:
    """IPC bytes -> validated ``GuideBatch`` whose tensors share the payload's memory (treat them as read-only)."""
    return from_record_batch(decode_record_batch(payload), expect_shape)
