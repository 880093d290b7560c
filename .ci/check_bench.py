"""Checks the JSON of the README's quick pipeline bench (the ``ci: bench`` block, run by ``.ci/journey.sh``):
every figure is there, the rates are positive, each ratio is recomputed from the JSON's own pairs (a pair's
ratio is its pipeline rate over its plain one; a row's ratio the median of its pairs'; a perfect-scaling
baseline the workers or replicas times the one-worker or best one-thread rate stored beside it) and each
interval is the order statistics around its median. Speed itself is not asserted (a shared CI machine
decides nothing about it)."""

import json
import math
import statistics
import sys

KEYS = (
    "device",
    "precision",
    "student_plain_records_per_s",
    "student_pipeline_records_per_s",
    "student_ratio",
    "production_raw_records_per_s",
    "production_pipeline_records_per_s",
    "production_ratio",
    "device_busy_fraction",
    "plain_busy_fraction",
    "sizes",
    "scale",
    # issue 30: baselines at their best, medians of interleaved pairs with their intervals
    "student_ratio_interval",
    "student_one_worker_records_per_s",
    "student_perfect_scaling_records_per_s",
    "student_ratio_perfect_scaling",
    "student_ratio_perfect_scaling_interval",
    "production_ratio_interval",
    "production_block_sizes_tried",
    "production_best_block_size",
    "production_one_thread_records_per_s",
    "production_perfect_scaling_copies",
    "production_perfect_scaling_records_per_s",
    "production_ratio_perfect_scaling",
    "production_ratio_perfect_scaling_interval",
    "pairs",
    "interval_level",
    "interval_coverage",
    "interval_method",
)
RATIOS = ("ratio", "ratio_perfect_scaling")
STUDENT_RATES = (
    "plain_records_per_s",
    "pipeline_records_per_s",
    "one_worker_records_per_s",
    "perfect_scaling_records_per_s",
)
PRODUCTION_RATES = (
    "plain_records_per_s",
    "pipeline_records_per_s",
    "one_thread_records_per_s",
    "perfect_scaling_records_per_s",
)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.01)


def order_interval(values: list[float], level: float) -> tuple[list[float], float]:
    """The distribution-free interval for the median: [x_(j), x_(n+1-j)], the largest j whose coverage
    P(j <= B <= n-j), B ~ Bin(n, 1/2), reaches ``level`` (else the whole range), and that coverage."""
    xs, n = sorted(values), len(values)
    cover = lambda j: sum(math.comb(n, i) for i in range(j, n - j + 1)) / 2**n
    j = max([j for j in range(1, (n + 1) // 2 + 1) if cover(j) >= level] or [1])
    return [xs[j - 1], xs[n - j]], cover(j)


def check_pair(what: str, row: dict, pair: dict, tried: list[int]) -> None:
    """A pair's ratios from its own rates; its perfect-scaling baseline from the rate stored beside it."""
    assert pair["plain_records_per_s"] > 0 and pair["pipeline_records_per_s"] > 0, (what, pair)
    assert close(pair["ratio"], pair["pipeline_records_per_s"] / pair["plain_records_per_s"]), ("pair ratio", pair)
    if what == "student":
        copies, one = row["workers"], pair["one_worker_records_per_s"]
    else:
        copies, one = row["perfect_scaling_copies"], pair["one_thread_records_per_s"]
        by_size = dict(pair["one_thread_by_block_size"])
        assert sorted(by_size) == sorted(tried), ("block sizes of a pair", sorted(by_size), tried)
        assert close(one, max(by_size.values())) and by_size[pair["best_block_size"]] == max(by_size.values()), (
            "one-thread rate is not the best block size's",
            pair,
        )
    assert one > 0 and close(pair["perfect_scaling_records_per_s"], copies * one), ("pair perfect baseline", pair)
    perfect_ratio = pair["pipeline_records_per_s"] / pair["perfect_scaling_records_per_s"]
    assert close(pair["ratio_perfect_scaling"], perfect_ratio), ("pair perfect-scaling ratio", pair)


def check_row(row: dict, result: dict) -> None:
    """A row's ratios are the medians of its pairs' with their intervals; its rates the medians of theirs."""
    what, pairs = row["what"], row["pairs"]
    assert len(pairs) == result["pairs"] >= 1, ("pairs", what, len(pairs), result["pairs"])
    for pair in pairs:
        check_pair(what, row, pair, result["production_block_sizes_tried"])
    for key in RATIOS:
        ratios = [p[key] for p in pairs]
        assert close(row[key], statistics.median(ratios)), (
            f"{what} {key} is not the median of its pairs'",
            row[key],
            ratios,
        )
        low, high = row[f"{key}_interval"]
        assert low <= row[key] <= high, (f"{what} {key}_interval does not hold the median", low, row[key], high)
        interval, coverage = order_interval(ratios, result["interval_level"])
        assert close(low, interval[0]) and close(high, interval[1]), (
            f"{what} {key}_interval is not the order statistics of its pairs",
            [low, high],
            interval,
        )
        assert close(result["interval_coverage"], coverage), (
            "interval_coverage",
            result["interval_coverage"],
            coverage,
        )
    for key in STUDENT_RATES if what == "student" else PRODUCTION_RATES:
        assert close(row[key], statistics.median(p[key] for p in pairs)), (
            f"{what} {key} is not the pairs' median",
            row[key],
        )


def main(path: str) -> None:
    result = json.load(open(path))
    missing = [k for k in KEYS if k not in result]
    assert not missing, f"{path}: missing {missing}"
    assert result["device"] == "cpu" and result["precision"] == "fp32", result
    assert result["device_busy_fraction"] is None and result["plain_busy_fraction"] is None  # no GPU in CI
    assert result["interval_level"] == 0.9, result["interval_level"]
    sizes = result["sizes"]
    assert sizes["workers"] == 2 and sizes["batch_size"] == 64 and sizes["global_batch"] == 128, sizes
    assert sizes["replicas"] == 2 and sizes["data_shape"] == [1, 8, 8] and sizes["parameters"] > 0, sizes
    rows = {(r["what"], r.get("workers", r.get("replicas"))): r for r in result["scale"]}
    assert set(rows) == {("student", 2), ("production", 2)}, set(rows)  # --quick: the config's own counts
    for row in result["scale"]:
        check_row(row, result)
    tried = result["production_block_sizes_tried"]
    assert sizes["block_size"] in tried and result["production_best_block_size"] in tried, (
        "best block size not among those tried",
        result["production_best_block_size"],
        tried,
    )
    assert result["production_perfect_scaling_copies"] == sizes["replicas"], "on the CPU each actor is one copy"
    for what, plain_key, one_key, copies in (
        ("student", "student_plain_records_per_s", "student_one_worker_records_per_s", sizes["workers"]),
        ("production", "production_raw_records_per_s", "production_one_thread_records_per_s", sizes["replicas"]),
    ):
        row = rows[(what, copies)]  # the headline is the config's own count's row
        pipeline = result[f"{what}_pipeline_records_per_s"]
        assert (result[plain_key], pipeline) == (row["plain_records_per_s"], row["pipeline_records_per_s"]), (
            f"{what} headline rates are not its row's",
            result[plain_key],
            pipeline,
        )
        assert result[plain_key] > 0 and pipeline > 0 and result[one_key] > 0, (what, result[plain_key], pipeline)
        perfect = result[f"{what}_perfect_scaling_records_per_s"]
        assert close(perfect, copies * result[one_key]), (
            f"{what} perfect-scaling baseline is not {copies} x {one_key}",
            perfect,
            result[one_key],
        )
        for key in RATIOS:
            name = f"{what}_{key}"
            low, high = result[f"{name}_interval"]
            assert low <= result[name] <= high, (f"{name}_interval does not hold {name}", low, result[name], high)
            assert result[name] == row[key] and [low, high] == row[f"{key}_interval"], (
                f"{name} is not its row's median",
                result[name],
                row[key],
            )
    print(
        f"bench JSON {path}: every figure there, {result['pairs']} pair(s); student ratio "
        f"{result['student_ratio']:.2f} "
        f"{result['student_ratio_interval']}, perfect scaling {result['student_ratio_perfect_scaling']:.2f}; "
        f"production ratio {result['production_ratio']:.2f} {result['production_ratio_interval']}, perfect scaling "
        f"{result['production_ratio_perfect_scaling']:.2f} (not asserted)"
    )


if __name__ == "__main__":
    main(sys.argv[1])
