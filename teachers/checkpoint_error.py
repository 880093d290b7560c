"""The error every model-folder reader raises, and the JSON reading they share. Its own module so that what
``teachers.checkpoint`` builds (a diffusers student, ``teachers.diffusers_adapter``) can raise it without an
import cycle; ``teachers.checkpoint`` re-exports both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guide_store.errors import BezierDistillError

__all__ = ["CheckpointError", "read_json_object"]


class CheckpointError(BezierDistillError, ValueError):
    """A checkpoint is missing, truncated or does not match its description."""


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; ``CheckpointError`` naming the file otherwise."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return doc
