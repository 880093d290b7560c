"""``write_json_atomically`` leaves the old file or the new one, never part of one."""

import json
import os

import pytest

from guide_store.atomic import replaced_atomically, write_json_atomically


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
