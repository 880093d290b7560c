"""Every shipped configuration resolves to the same settings as before the schema moved into its packages:
each run file under configs/, and each teacher and variant run of each study's first seed (full and --quick), dumped as
``dump_config`` writes it into a run's folder, against ``data/config_dumps.json``.

The expected dumps were made by the code before the move (``python tests/cluster/test_config_dumps.py``
rewrites them: only do so for a change that is meant to alter what a shipped configuration resolves to)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
EXPECTED = Path(__file__).resolve().parent / "data" / "config_dumps.json"


def _dumps(cwd: Path) -> dict[str, str]:
    """Every shipped configuration's dump, by name; absolute paths shown from ``<ROOT>`` or ``<CWD>``."""
    from cluster.config import dump_config, load_config
    from cluster.study_config import load_study, teacher_config

    out = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "variants" in raw or "extends" in raw:
            for quick in (False, True):
                study, base, runs = load_study(path, quick)
                tag = f"{path.name}{' --quick' if quick else ''}"
                seed = (study.quick.seeds if quick else study.seeds)[0]  # other seeds differ in seed and paths only
                for key in study.teachers:
                    out[f"{tag}: teacher {key} s{seed}"] = dump_config(teacher_config(study, base, key, seed, quick))
                for run in runs:
                    if run.seed == seed:
                        out[f"{tag}: {run.key}"] = dump_config(run.cfg)
        else:
            out[path.name] = dump_config(load_config(path))
    # the cwd may lie inside the repository (the generator runs from it): replace the longer path first
    for a, b in sorted([(str(ROOT), "<ROOT>"), (str(cwd), "<CWD>")], key=lambda p: -len(p[0])):
        out = {k: v.replace(a, b) for k, v in out.items()}
    return out


def test_every_shipped_configuration_dumps_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = json.loads(EXPECTED.read_text())
    got = _dumps(tmp_path)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key] == expected[key], f"{key} dumps differently"


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        EXPECTED.write_text(json.dumps(_dumps(Path(d).resolve()), indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED}")
