"""The store is opened in one place: ``guide_store.open_store.open_store`` (no server needed here)."""

import inspect
import re
from pathlib import Path

from guide_store import open_store as open_store_module
from guide_store.open_store import open_store
from guide_store.redis_store import RedisGuideStore

ROOT = Path(__file__).resolve().parents[2]


def test_open_store_takes_the_stores_keywords_with_its_defaults():
    ours = inspect.signature(open_store).parameters
    theirs = inspect.signature(RedisGuideStore.__init__).parameters
    assert list(ours) == [p for p in theirs if p != "self"]
    for name, p in ours.items():
        assert p.default == theirs[name].default, name


def test_open_store_passes_every_keyword_on(monkeypatch):
    got = {}

    def fake(*args, **kwargs):
        got.update(args=args, kwargs=kwargs)
        return "store"

    monkeypatch.setattr(open_store_module, "RedisGuideStore", fake)
    assert (
        open_store(
            "redis://x",
            "r",
            dtype="float16",
            expect_shape=(1, 8, 8),
            expect_guides=3,
            max_backlog_bytes=5,
            claim_idle_s=2.0,
        )
        == "store"
    )
    assert got["args"] == ("redis://x", "r", "students")
    kw = got["kwargs"]
    assert (kw["dtype"], kw["expect_shape"], kw["expect_guides"], kw["max_backlog_bytes"], kw["claim_idle_s"]) == (
        "float16",
        (1, 8, 8),
        3,
        5,
        2.0,
    )


def test_no_package_builds_the_store_itself():
    built = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("guide_store", "teachers", "student", "cluster")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "open_store.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bRedisGuideStore\(", line)
    ]
    assert built == []
