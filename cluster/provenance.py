"""What a run report records about where its numbers came from: the code's git commit, the versions of the
packages that computed them, and the seeds."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["PACKAGES", "git_commit", "package_versions", "provenance"]

# report name -> distribution name
PACKAGES = {
    "torch": "torch",
    "ray": "ray",
    "deepspeed": "deepspeed",
    "redis-py": "redis",
    "pyarrow": "pyarrow",
    "numpy": "numpy",
}
_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = _ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding this code (``None`` when
    it is not a git checkout, e.g. an installed package or a Ray job's uploaded working directory)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name, dist in PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(cfg, teacher_seeds: dict[str, int]) -> dict:
    """Git commit, package versions and seeds (``teacher_seeds``: training seed of each teacher the run
    trained itself, by checkpoint directory)."""
    return {
        "git": git_commit(),
        "packages": package_versions(),
        "seeds": {"run": cfg.seed, "data_split": cfg.data.split_seed_for(cfg.seed), "teachers": teacher_seeds},
    }
