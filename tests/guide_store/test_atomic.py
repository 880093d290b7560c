"""The atomic writers (``guide_store.atomic``) leave the old file or the new one, never part of one."""

import json
import os

import pyarrow.parquet as pq
import pytest

from guide_store.atomic import copy_atomically, replaced_atomically, write_json_atomically, write_text_atomically
from guide_store.parquet import ParquetGuideSink

from guide_factory import make_batch


def test_the_new_content_replaces_the_old_as_json_dumps_writes_it(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    doc = {"b": [1, 2.5, None], "a": {"x": "é"}}
    assert write_json_atomically(path, doc) == path
    assert path.read_text() == json.dumps(doc, indent=2)
    write_json_atomically(path, doc, indent=None, sort_keys=True)
    assert path.read_text() == json.dumps(doc, sort_keys=True)
    assert os.listdir(tmp_path) == ["report.json"]


def test_a_write_that_fails_midway_leaves_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "model.json"
    path.write_text('{"old": true}')

    def failing(self, o, _one_shot=False):  # yields part of the document, then fails
        yield '{"new": '
        raise RuntimeError("encoder failed midway")

    monkeypatch.setattr(json.JSONEncoder, "iterencode", failing)
    with pytest.raises(RuntimeError, match="midway"):
        write_json_atomically(path, {"new": 1})
    assert path.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["model.json"]  # the partial temporary file is gone


def test_replaced_atomically_renames_on_success_and_leaves_the_old_file_on_error(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replaced_atomically(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    with replaced_atomically(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name != target.name
        tmp.write_text("new")
        assert target.read_text() == "old"  # a reader sees the old file until the block ends
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_text_and_copies_are_written_whole_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old: 1\n")
    assert write_text_atomically(path, "new: é\n") == path
    assert path.read_text(encoding="utf-8") == "new: é\n"
    with pytest.raises(UnicodeEncodeError):  # fails midway, after part of the text
        write_text_atomically(path, "half: \ud800\n")
    assert path.read_text(encoding="utf-8") == "new: é\n"
    source = tmp_path / "source.jsonl"
    source.write_bytes(b'{"step": 1}\n')
    copy = tmp_path / "metrics.jsonl"
    copy.write_text("old")
    assert copy_atomically(source, copy) == copy and copy.read_bytes() == b'{"step": 1}\n'
    with pytest.raises(FileNotFoundError):
        copy_atomically(tmp_path / "missing", copy)
    assert copy.read_bytes() == b'{"step": 1}\n'  # a failed copy leaves the old file
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "metrics.jsonl", "source.jsonl"]


def test_a_parquet_file_appears_only_once_it_is_whole(tmp_path):
    """A reader of the export folder never meets a Parquet file still being written (it has no footer yet);
    a sink left by an error leaves no file at all."""
    with ParquetGuideSink(tmp_path / "guides") as sink:
        sink.put(make_batch(0, guides=1))
        assert list((tmp_path / "guides").glob("*.parquet")) == []
    (done,) = (tmp_path / "guides").iterdir()
    assert done.name == "guides-00000.parquet" and pq.read_table(done).num_rows == 4
    with pytest.raises(RuntimeError):
        with ParquetGuideSink(tmp_path / "failed") as sink:
            sink.put(make_batch(0, guides=1))
            raise RuntimeError("the export failed")
    assert list((tmp_path / "failed").iterdir()) == []
