"""The run's id ledger from ids alone: the trainers' surviving history, dead letters by ids or by block, and
the verdict that fails a run for a lost id, a record left pending or too many ids trained twice."""

import json

from cluster.ledger import build_ledger, failures
from student.id_ledger import RankLedger, pool_history, trained_steps

PLAN = {b: [16 * b, 16] for b in range(4)}  # 4 blocks of 16 ids: 0..63


def _steps(ledger, first, last, per=8, offset=0):
    for s in range(first, last + 1):
        ledger.step(s, list(range(offset + per * (s - 1), offset + per * s)))


def test_a_resumed_attempt_keeps_only_the_steps_its_checkpoint_held(tmp_path):
    first = RankLedger(tmp_path, 0, 1, resumed_at=0)
    _steps(first, 1, 6)  # ids 0..47; it dies after step 6, its checkpoint was at step 4
    first.flush()
    second = RankLedger(tmp_path, 0, 1, resumed_at=4)
    _steps(second, 5, 8)  # steps 5 and 6 again (ids 32..47), then 7 and 8 (ids 48..63)
    second.flush()
    kept = sorted((s, runs[0][0]) for _, s, runs in trained_steps(tmp_path))
    assert kept == [(s, 8 * (s - 1)) for s in range(1, 9)]  # one history: steps 1-4 of the first, 5-8 of the second
    ledger = build_ledger(PLAN, PLAN, trained_steps(tmp_path), [], [])
    assert ledger["trained"] == 64 and ledger["trained_twice"] == 0 and ledger["lost"] == 0


def test_an_attempt_that_died_before_its_first_checkpoint_counts_nothing(tmp_path):
    a = RankLedger(tmp_path, 1, 2, resumed_at=10)
    _steps(a, 11, 12)
    a.flush()
    b = RankLedger(tmp_path, 1, 2, resumed_at=10)  # the same checkpoint again
    _steps(b, 11, 11)
    b.flush()
    assert [(r, s) for r, s, _ in trained_steps(tmp_path)] == [(1, 11)]


def test_every_planned_id_is_trained_dead_lettered_or_named_lost(tmp_path):
    trained = [(0, 1, [[0, 16]]), (1, 1, [[16, 8]]), (0, 2, [[16, 4]])]  # ids 16..19 twice
    letters = [
        {"key": "block-2", "ids": ""},  # undecodable: its block's ids
        {"key": "", "ids": json.dumps([[24, 8]])},  # decoded: its own ids
        {"key": "", "ids": json.dumps([[10**9, 4]])},
    ]  # a malformed entry's ids, not planned
    ledger = build_ledger(PLAN, {0: {}, 1: {}, 2: {}, 3: {}}, trained, letters, pending_ids=[50, 51])
    assert ledger == {
        "planned": 64,
        "written": 64,
        "trained": 24,
        "dead_lettered": 24,
        "lost": 16,
        "trained_twice": 4,
        "left_pending": 2,
        "trained_unplanned": 0,
        "lost_blocks": [3],
    }
    why = failures(ledger, faults_landed=0, batch_size=8)
    assert len(why) == 3 and "blocks [3]" in why[0] and "left pending" in why[1] and "twice" in why[2], why


def test_the_verdict_fails_each_way_and_allows_one_batch_per_fault():
    clean = {"planned": 64, "lost": 0, "lost_blocks": [], "left_pending": 0, "trained_twice": 0}
    assert failures(clean, 0, 8) == []
    assert failures({**clean, "lost": 16, "lost_blocks": [3]}, 0, 8)
    assert failures({**clean, "left_pending": 1}, 0, 8)
    assert failures({**clean, "trained_twice": 1}, 0, 8)  # no fault: no id may be trained twice
    assert failures({**clean, "trained_twice": 8}, 1, 8) == []  # one batch per fault that landed
    assert failures({**clean, "trained_twice": 9}, 1, 8)


def test_an_elastic_pool_keeps_one_history_across_world_sizes(tmp_path):
    """Two ranks to step 6 (checkpoint at 4), host lost: one rank resumes at 4 (taking over rank 1's records) and
    trains to 8 (checkpoint at 8), the host back: two ranks resume at 8. Rank 1's steps 5 and 6 of the first group
    were thrown away with it, although rank 1's next header (in the third group) resumed at 8."""
    g1 = [RankLedger(tmp_path, r, 2, resumed_at=0, group=1) for r in range(2)]
    for r, led in enumerate(g1):
        for s in range(1, 7):
            led.step(s, [100 * r + s])
        led.flush()
    g2 = RankLedger(tmp_path, 0, 1, resumed_at=4, group=2)
    for s in range(5, 9):
        g2.step(s, [200 + s])
    g2.flush()
    g3 = [RankLedger(tmp_path, r, 2, resumed_at=8, group=3) for r in range(2)]
    for r, led in enumerate(g3):
        for s in range(9, 11):
            led.step(s, [300 + 100 * r + s])
        led.flush()
    kept = sorted((r, s) for r, s, _ in trained_steps(tmp_path))
    assert kept == ([(0, s) for s in range(1, 11)] + [(1, s) for s in (1, 2, 3, 4, 9, 10)]), kept
    assert [(g["resumed_at"], g["world"]) for g in pool_history(tmp_path)] == [(0, 2), (4, 1), (8, 2)]
