"""Guide records as Parquet files, for offline reuse.

``ParquetGuideSink`` writes guide batches (one row group each) into
``DIR/guides-NNNNN.parquet``; a new file starts when the layout (number of
guides, record shape, dtype) changes. ``ParquetGuideSource`` reads such a
directory back through the same validating decoder as the live stream and
offers the same ``get``/``ack``/``stats`` calls, so a student trains from
either. The files are plain Parquet: tensors are fixed-size lists carrying
Arrow's ``arrow.fixed_shape_tensor`` extension metadata, and open in pandas or
DuckDB without this package.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from guide_store.atomic import replaced_atomically, write_json_atomically
from guide_store.codec import decode_record_batch
from guide_store.schema import GuideBatch, RecordError, from_record_batch, to_record_batch
from guide_store.source import Delivery

__all__ = ["ParquetGuideSink", "ParquetGuideSource", "export_store"]


class ParquetGuideSink:
    """Writes guide batches into a directory of Parquet files; each file is written beside its name and renamed
    into place when it is closed (``guide_store.atomic``), so a reader never meets one without its footer."""

    def __init__(self, directory: str | Path, dtype: str = "float32", compression: str = "zstd"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype, self.compression = dtype, compression
        self._writer: pq.ParquetWriter | None = None
        self._file: ExitStack | None = None  # the open file's replaced_atomically
        self._schema: pa.Schema | None = None
        self._files = len(list(self.directory.glob("guides-*.parquet")))
        self.records = 0

    def put_record_batch(self, rb: pa.RecordBatch) -> None:
        if self._writer is None or not rb.schema.equals(self._schema, check_metadata=True):
            self.close()
            path = self.directory / f"guides-{self._files:05d}.parquet"
            self._files += 1
            self._file = ExitStack()
            tmp = self._file.enter_context(replaced_atomically(path))
            self._writer = pq.ParquetWriter(tmp, rb.schema, compression=self.compression)
            self._schema = rb.schema
        self._writer.write_batch(rb, row_group_size=rb.num_rows)
        self.records += rb.num_rows

    def put(self, batch: GuideBatch, key: str | None = None) -> None:
        self.put_record_batch(to_record_batch(batch, self.dtype))

    def close(self, *exc) -> None:
        """Finish the open file: renamed into place, or, with an exception (``exc`` as ``__exit__`` gets it),
        removed."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            file, self._file = self._file, None
            assert file is not None  # opened with the writer
            file.__exit__(*(exc or (None, None, None)))

    def __enter__(self) -> "ParquetGuideSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close(*exc)


class ParquetGuideSource:
    """Reads a directory of guide Parquet files, one row group per ``get``, in file and row-group order.

    With ``world_size > 1`` rank ``rank`` reads row groups ``rank, rank + world_size, ...``, so each
    record goes to exactly one rank. ``loop=True`` starts over at the end (for training epochs).
    """

    def __init__(
        self,
        directory: str | Path,
        rank: int = 0,
        world_size: int = 1,
        loop: bool = False,
        expect_shape: tuple[int, ...] | None = None,
    ):
        self.directory = Path(directory)
        self.files = sorted(self.directory.glob("guides-*.parquet"))
        if not self.files:
            raise FileNotFoundError(f"{self.directory}: no guides-*.parquet files")
        self._readers = {f: pq.ParquetFile(f) for f in self.files}  # opened once, read per row group
        self.units = [(f, g) for f in self.files for g in range(self._readers[f].num_row_groups)]
        self.records = sum(r.metadata.num_rows for r in self._readers.values())
        self.mine = self.units[rank::world_size]
        self.loop, self.expect_shape = loop, expect_shape
        self._next, self._epoch = 0, 0
        self.delivered = self.acknowledged = self.bad = 0
        self.bad_reasons: list[dict] = []

    def get(self, consumer: str = "", timeout_s: float = 0.0, count: int = 1) -> list[Delivery]:
        out: list[Delivery] = []
        while len(out) < count:
            if self._next >= len(self.mine):
                if not self.loop or not self.mine:
                    break
                self._next, self._epoch = 0, self._epoch + 1
            path, group = self.mine[self._next]
            self._next += 1
            pf = self._readers[path]
            table = pf.read_row_group(group)
            try:
                rb = table.combine_chunks().to_batches()[0] if table.num_rows else None
                if rb is None:
                    raise RecordError("empty row group")
                batch = from_record_batch(rb, self.expect_shape, schema=pf.schema_arrow)
            except RecordError as err:
                self.bad += 1
                self.bad_reasons.append({"file": str(path), "row_group": group, "reason": str(err)})
                continue
            self.delivered += len(batch)
            out.append(Delivery(f"{path.name}:{group}:{self._epoch}", batch))
        return out

    def ack(self, ids) -> int:
        """Nothing to release for files; counts what was used."""
        n = len(list(ids))
        self.acknowledged += n
        return n

    def settled(self, consumer: str) -> bool:
        return True  # files hold nothing back

    def stats(self) -> dict:
        return {
            "files": len(self.files),
            "row_groups": len(self.units),
            "records": self.records,
            "delivered": self.delivered,
            "acknowledged_batches": self.acknowledged,
            "bad_row_groups": self.bad,
        }


def export_store(store, directory: str | Path, dtype: str | None = None) -> dict:
    """Write every record still held in ``store``'s stream to Parquet (valid ones; bad ones are listed).

    Returns ``{"records", "batches", "skipped": [{"entry", "reason"}], "directory"}``.
    """
    skipped, batches = [], 0
    with ParquetGuideSink(directory, dtype=dtype or store.dtype) as sink:
        for entry_id, fields in store.entries():
            try:
                rb = decode_record_batch(fields.get("payload", b""))
                from_record_batch(rb, store.expect_shape)  # the same validation a consumer applies
            except RecordError as err:
                skipped.append({"entry": entry_id, "reason": str(err)})
                continue
            sink.put_record_batch(rb)
            batches += 1
        records = sink.records
    summary = {"directory": str(directory), "records": records, "batches": batches, "skipped": skipped}
    # a leading underscore: Arrow dataset discovery (pd.read_parquet(DIR), DuckDB globs of *.parquet) skips it
    write_json_atomically(Path(directory, "_export.json"), summary)
    return summary
