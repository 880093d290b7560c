"""The shipped Grafana dashboard queries only metrics the code exports."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def exported_metric_names():
    text = "".join((ROOT / pkg / "metrics.py").read_text() for pkg in ("teachers", "student", "cluster"))
    names = set()
    for kind, name in re.findall(r'(Counter|Histogram|Gauge)\(\s*"(\w+)"', text):
        base = f"ray_{name}"
        names |= (
            {base + "_total"}
            if kind == "Counter"
            else ({base + "_bucket", base + "_count", base + "_sum"} if kind == "Histogram" else {base})
        )
    return names


def test_every_panel_queries_an_exported_metric():
    dash = json.loads((ROOT / "cluster" / "grafana" / "bezier_distill_dashboard.json").read_text())
    exported = exported_metric_names()
    queried = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"ray_bezier_\w+", target["expr"]))
            assert used and used <= exported, (panel["title"], used - exported)
            queried |= used
    # every exported metric family is on the dashboard
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in exported}
    assert families == {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in queried}
