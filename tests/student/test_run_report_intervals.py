"""The run report's quality rows: the teachers' best carries its row's interval, and the printed table shows
intervals compactly."""

from student.run_report import quality_table, teacher_best


def _row(label, steps, fid, interval=True):
    return {
        "label": label,
        "steps": steps,
        "nfe": steps,
        "fid": fid,
        "kid": 1.0,
        "kid_std": 0.1,
        **({"fid_interval": [fid - 1, fid + 2]} if interval else {}),
    }


def test_teacher_best_keeps_its_interval_and_row_index():
    rows = {"a": [_row("t0/euler", 1, 30.0), _row("t0/rk4", 32, 12.0)], "b": [_row("t1/euler", 1, 20.0)]}
    best = teacher_best(rows, "fid")
    assert (best["value"], best["interval"], best["teacher"], best["index"]) == (12.0, [11.0, 14.0], "a", 1)
    assert "interval" not in teacher_best({"a": [_row("t0/euler", 1, 3.0, interval=False)]}, "fid")


def test_quality_table_shows_intervals():
    student = {
        **_row("student/flow_map", 1, 24.0),
        "fid_to_teacher_best": 2.0,
        "fid_to_teacher_best_interval": [1.8, 2.3],
    }
    best = {**teacher_best({"a": [_row("t0/rk4", 32, 12.0)]}, "fid")}
    text = quality_table(
        {
            "teachers": {"a": [_row("t0/rk4", 32, 12.0)]},
            "student": [student],
            "floor": {"fid": 9.0, "fid_interval": [5.0, 14.0], "kid": 0.1, "kid_std": 0.01},
            "teacher_best": best,
        }
    )
    assert "fid=24 [23, 26]" in text and "fid_to_teacher_best=2 [1.8, 2.3]" in text
    assert "fid=9 [5, 14]" in text and "teachers' best fid: 12 [11, 14]" in text
    assert "fid_interval" not in text
