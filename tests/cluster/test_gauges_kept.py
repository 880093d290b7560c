"""Ray (2.60, OpenTelemetry export) drops a gauge that is not set again within two metrics export intervals
(about 20 s): the run's store gauges and a student rank's gauges are set again while the run goes on, so the
dashboard's panels do not go blank between production's end and the students', or in a long log interval."""

import time

import cluster.guide_stage as guide_stage
import student.metrics as student_metrics
from cluster.guide_stage import _Production


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class _Controller:
    """Reports production finished at once, and counts the reports asked for."""

    def __init__(self):
        self.reports = 0
        self.report = _Remote(self._report)

    def _report(self):
        self.reports += 1
        return {"finished": True, "store": {"produced": 8, "backlog": 0}, "live_teachers": 0, "workers": {},
                "queued": 0}


def test_the_run_gauges_are_refreshed_after_production_until_the_students_end(monkeypatch):
    monkeypatch.setattr(guide_stage.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(guide_stage, "GAUGE_REFRESH_S", 0.05)
    controller = _Controller()
    cfg = type("Cfg", (), {"name": "r", "guides": type("G", (), {"num_samples": 8})()})()
    with _Production(cfg, controller, print, False) as production:
        time.sleep(0.6)  # the students train on
        assert production.report["finished"]
        during = controller.reports
        assert during >= 4, during  # production ended after the first report; the later ones refresh the gauges
    after = controller.reports
    time.sleep(0.3)
    assert controller.reports == after  # none once the students are done


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
