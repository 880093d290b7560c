"""Checks the JSON of the README's quick pipeline bench (the ``ci: bench`` block, run by ``.ci/journey.sh``):
every figure is there, the rates are positive and each ratio is the pipeline's rate over the plain one.
Speed itself is not asserted (a shared CI machine decides nothing about it)."""

import json
import math
import sys

KEYS = ("device", "precision", "student_plain_records_per_s", "student_pipeline_records_per_s", "student_ratio",
        "production_raw_records_per_s", "production_pipeline_records_per_s", "production_ratio",
        "device_busy_fraction", "plain_busy_fraction", "sizes", "scale")


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.01)


def main(path: str) -> None:
    result = json.load(open(path))
    missing = [k for k in KEYS if k not in result]
    assert not missing, f"{path}: missing {missing}"
    assert result["device"] == "cpu" and result["precision"] == "fp32", result
    assert result["device_busy_fraction"] is None and result["plain_busy_fraction"] is None  # no GPU in CI
    for what, plain_key in (("student", "student_plain_records_per_s"), ("production", "production_raw_records_per_s")):
        plain, pipeline = result[plain_key], result[f"{what}_pipeline_records_per_s"]
        assert plain > 0 and pipeline > 0, (what, plain, pipeline)
        assert close(result[f"{what}_ratio"], pipeline / plain), (what, result[f"{what}_ratio"], pipeline / plain)
    sizes = result["sizes"]
    assert sizes["workers"] == 2 and sizes["batch_size"] == 64 and sizes["global_batch"] == 128, sizes
    assert sizes["replicas"] == 2 and sizes["data_shape"] == [1, 8, 8] and sizes["parameters"] > 0, sizes
    rows = {(r["what"], r.get("workers", r.get("replicas"))) for r in result["scale"]}
    assert rows == {("student", 2), ("production", 2)}, rows  # --quick: the config's own counts
    for row in result["scale"]:
        assert close(row["ratio"], row["pipeline_records_per_s"] / row["plain_records_per_s"]), row
        if row["what"] == "student":  # the plain loop brackets the pool: its figure is the mean of both runs
            assert row["plain_before_records_per_s"] > 0 and row["plain_after_records_per_s"] > 0, row
            assert close(row["plain_records_per_s"],
                         (row["plain_before_records_per_s"] + row["plain_after_records_per_s"]) / 2), row
    print(f"bench JSON {path}: every figure there; student ratio {result['student_ratio']:.2f}, "
          f"production ratio {result['production_ratio']:.2f} (not asserted)")


if __name__ == "__main__":
    main(sys.argv[1])
