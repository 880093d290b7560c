"""Files written whole or not at all: every artifact and JSON file of a run goes through here.

The bottom layer holds it because the store's own export summary is the lowest file written this way; the
teachers, the student and the cluster use the same helper."""

from __future__ import annotations

import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["replaced_atomically", "write_json_atomically", "write_text_atomically", "copy_atomically"]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform or file system that cannot open a folder: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, of this process and thread only, to write to; when the block ends
    without error it is fsynced and renamed onto ``path`` (``os.replace``), then the folder is fsynced; it is
    removed otherwise. A reader sees the old file or the new one, never half of one, even with two writers of
    the same file at once, and a finished write survives a power cut."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomically(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON to ``path`` (the text ``json.dumps(obj, indent=indent, sort_keys=sort_keys)``)
    through ``replaced_atomically``: an error while encoding leaves the old file as it was."""
    path = Path(path)
    with replaced_atomically(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through ``replaced_atomically``: YAML, markdown, rewritten JSON lines."""
    path = Path(path)
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def copy_atomically(source: str | Path, path: str | Path) -> Path:
    """Copy the file ``source`` to ``path`` through ``replaced_atomically`` (its bytes; not its mode)."""
    path = Path(path)
    with replaced_atomically(path) as tmp:
        shutil.copyfile(source, tmp)
    return path
