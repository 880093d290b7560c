"""Ray (2.60, OpenTelemetry export) drops a gauge that is not set again within two metrics export intervals
(about 20 s): a student rank's gauges are set again each step, so the dashboard's panels do not go blank in a
long log interval. (The run's store gauges are set again each second until the students end:
tests/cluster/test_progress.py.)"""

import student.metrics as student_metrics


class _Gauge:
    def __init__(self, name, *args, **kwargs):
        self.sets = []

    def set(self, value, tags=None):
        self.sets.append(value)


class _Quiet:
    def __init__(self, *args, **kwargs):
        pass

    def inc(self, *args, **kwargs):
        pass

    observe = inc


def test_a_student_rank_sets_its_gauges_again_each_step(monkeypatch):
    monkeypatch.setattr(student_metrics, "Gauge", _Gauge)
    monkeypatch.setattr(student_metrics, "Counter", _Quiet)
    monkeypatch.setattr(student_metrics, "Histogram", _Quiet)
    m = student_metrics.StudentMetrics("r", 0)
    m.record_step(64, 0.01)
    assert m.loss.sets == []  # nothing to repeat before the first log interval
    m.record_interval(25, 0.5, 3.0)
    m.record_step(0, 0.01)
    m.record_step(64, 0.01)
    assert m.loss.sets == [0.5, 0.5, 0.5] and m.step.sets == [25, 25, 25] and m.speed.sets == [3.0] * 3
