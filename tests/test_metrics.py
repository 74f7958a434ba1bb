"""Tests of self-evaluation metrics (streamsift.evaluation.metrics)."""

from __future__ import annotations

import pytest

from streamsift.config import InputConfig, SyntheticConfig
from streamsift.evaluation.metrics import PR, event_metrics, incident_metrics, summarize
from streamsift.synthetic import Incident, generate


def alert(key: str, first_s: float, last_s: float) -> dict:
    return {
        "key": key,
        "first_event_time_ms": round(first_s * 1000),
        "last_event_time_ms": round(last_s * 1000),
    }


# ----------------------------------------------------------------------------- events


def test_event_metrics_counts():
    labels = {
        ("a", 10.0): "spike",
        ("a", 11.0): "level_shift",
        ("a", 12.0): "level_shift",
        ("b", 10.0): "drift",
    }
    flagged = [("a", 10.0), ("a", 12.0), ("b", 99.0), ("c", 1.0), ("a", 10.0)]
    m = event_metrics(labels, flagged)
    assert (m.tp, m.fp, m.fn) == (2, 2, 2)
    assert m.precision == 0.5
    assert m.recall == 0.5
    assert m.f1 == 0.5
    assert m.per_kind_recall == {"drift": 0.0, "level_shift": 0.5, "spike": 1.0}


def test_event_metrics_matches_at_millisecond_resolution():
    labels = {("k", 1767225600.123): "spike"}
    assert event_metrics(labels, [("k", 1767225600.1234)]).tp == 1
    assert event_metrics(labels, [("k", 1767225600.125)]).tp == 0
    # the key must match too
    assert event_metrics(labels, [("other", 1767225600.123)]).fp == 1


def test_event_metrics_perfect_and_empty():
    labels = {("a", 1.0): "spike", ("a", 2.0): "spike"}
    m = event_metrics(labels, list(labels))
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    m = event_metrics(labels, [])
    assert (m.precision, m.recall, m.f1, m.fn) == (0.0, 0.0, 0.0, 2)
    m = event_metrics({}, [("a", 1.0)])
    assert (m.precision, m.recall, m.fp, m.per_kind_recall) == (0.0, 0.0, 1, {})


def test_event_metrics_rejects_bad_time():
    with pytest.raises(ValueError, match="flagged time must be a number of seconds; got 'x'"):
        event_metrics({}, [("a", "x")])
    with pytest.raises(ValueError, match="labels time must be finite; got nan"):
        event_metrics({("a", float("nan")): "spike"}, [])


def test_pr_from_counts():
    pr = PR.from_counts(tp=1, fp=3, fn=0)
    assert (pr.precision, pr.recall, pr.f1) == (0.25, 1.0, 0.4)
    assert PR.from_counts(0, 0, 0).f1 == 0.0


# ----------------------------------------------------------------------------- incidents


def test_incident_window_boundaries():
    inc = Incident("a", "level_shift", 1000.0, 2000.0)
    # [start, end + grace] = [1000, 2300]
    cases = [
        ((900.0, 1000.0), True),  # ends exactly at the start
        ((900.0, 999.0), False),  # ends just before
        ((2300.0, 2400.0), True),  # begins exactly at end + grace
        ((2301.0, 2400.0), False),  # begins just after
        ((1500.0, 1500.0), True),  # inside
        ((500.0, 5000.0), True),  # covers it
    ]
    for (first, last), detected in cases:
        m = incident_metrics([inc], [alert("a", first, last)], grace_s=300.0)
        assert (m.tp == 1) is detected, (first, last)
        assert m.precision == (1.0 if detected else 0.0)
        assert m.fp == (0 if detected else 1)


def test_incident_grace_zero_and_other_key():
    inc = Incident("a", "spike", 100.0, 100.0)
    assert incident_metrics([inc], [alert("a", 101.0, 110.0)], grace_s=0.0).tp == 0
    assert incident_metrics([inc], [alert("a", 101.0, 110.0)], grace_s=1.0).tp == 1
    m = incident_metrics([inc], [alert("b", 100.0, 100.0)])
    assert (m.tp, m.fp, m.fn, m.precision, m.recall) == (0, 1, 1, 0.0, 0.0)


def test_incident_precision_recall_per_kind_and_ttd():
    incs = [
        Incident("a", "spike", 100.0, 100.0),
        Incident("a", "drift", 1000.0, 3000.0),
        Incident("b", "spike", 500.0, 520.0),
        Incident("c", "rate_change", 50.0, 50.0),
    ]
    alerts = [
        alert("a", 90.0, 130.0),  # began before the spike: ttd 0
        alert("a", 1800.0, 1900.0),  # drift, ttd 800
        alert("a", 1200.0, 1250.0),  # drift again, earlier: ttd 200
        alert("b", 9000.0, 9100.0),  # false
        alert("d", 0.0, 100000.0),  # false: no incident on d
    ]
    m = incident_metrics(incs, alerts, grace_s=300.0)
    assert (m.tp, m.fp, m.fn) == (2, 2, 2)
    assert m.precision == 3 / 5
    assert m.recall == 2 / 4
    assert m.f1 == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    assert m.per_kind_recall == {"drift": 1.0, "rate_change": 0.0, "spike": 0.5}
    assert m.time_to_detect_s == {incs[0]: 0.0, incs[1]: 200.0}


def test_one_alert_covering_two_incidents():
    incs = [Incident("a", "spike", 100.0, 100.0), Incident("a", "spike", 200.0, 200.0)]
    m = incident_metrics(incs, [alert("a", 150.0, 250.0)], grace_s=60.0)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall) == (2, 0, 0, 1.0, 1.0)
    assert m.time_to_detect_s == {incs[0]: 50.0, incs[1]: 0.0}


def test_incident_metrics_empty():
    m = incident_metrics([], [])
    assert (m.precision, m.recall, m.f1, m.tp, m.fp, m.fn) == (0.0, 0.0, 0.0, 0, 0, 0)


def test_incident_metrics_validation():
    inc = [Incident("a", "spike", 1.0, 1.0)]
    with pytest.raises(ValueError, match="alerts\\[0\\] must have a 'last_event_time_ms' field"):
        incident_metrics(inc, [{"key": "a", "first_event_time_ms": 1}])
    with pytest.raises(ValueError, match="must be >= first_event_time_ms \\(2000\\); got 1000"):
        incident_metrics(
            inc, [{"key": "a", "first_event_time_ms": 2000, "last_event_time_ms": 1000}]
        )
    with pytest.raises(ValueError, match="alerts\\[0\\].first_event_time_ms must be a finite"):
        incident_metrics(inc, [{"key": "a", "first_event_time_ms": "1", "last_event_time_ms": 1}])
    with pytest.raises(ValueError, match="grace_s must be >= 0 and finite; got -1"):
        incident_metrics(inc, [], grace_s=-1)


# ----------------------------------------------------------------------------- summary


def test_summarize_structure_and_ttd_stats():
    incs = [Incident("k", "spike", float(10 * i), float(10 * i)) for i in range(10)]
    # alert i fires i seconds after incident i (none for incident 9), plus an alert on key z
    alerts = [alert("k", 10.0 * i + i, 10.0 * i + i) for i in range(9)]
    alerts.append(alert("z", 0.0, 1.0))
    labels = {("k", float(10 * i)): "spike" for i in range(10)}
    flagged = [("k", 0.0), ("k", 10.0), ("k", 5.0)]
    out = summarize(labels, incs, flagged, alerts, grace_s=0.0, counts={"dead_letters": 3})
    assert out["events"] == {
        "precision": 0.6667,
        "recall": 0.2,
        "f1": 0.3077,
        "tp": 2,
        "fp": 1,
        "fn": 8,
        "per_kind_recall": {"spike": 0.2},
    }
    inc = out["incidents"]
    # without grace, alert i (a point at 11 i) hits incident window [10 j, 10 j] only for i == 0
    assert inc["detected"] == 1 and inc["missed"] == 9
    assert inc["alerts"] == 10 and inc["false_alerts"] == 9
    assert inc["alert_precision"] == 0.1 and inc["recall"] == 0.1
    assert inc["time_to_detect_s"] == {"median": 0.0, "p90": 0.0, "max": 0.0}
    assert out["stream"] == {"dead_letters": 3}

    # with a grace period each alert i detects incident i, i seconds late
    out = summarize(labels, incs, flagged, alerts, grace_s=9.0)
    inc = out["incidents"]
    assert inc["detected"] == 9 and inc["false_alerts"] == 1
    assert inc["time_to_detect_s"] == {"median": 4.0, "p90": 8.0, "max": 8.0}
    assert "stream" not in out


def test_summarize_without_alerts():
    out = summarize({}, [Incident("a", "drift", 0.0, 1.0)], [], [])
    assert out["incidents"]["alert_precision"] == 0.0
    assert out["incidents"]["recall"] == 0.0
    assert out["incidents"]["time_to_detect_s"] == {}


# ----------------------------------------------------------------------------- with the synthetic stream


def test_oracle_on_synthetic_stream_scores_perfectly():
    s = generate(SyntheticConfig(events=6000, keys=10, seed=2), InputConfig())
    assert s.incidents
    flagged = list(s.labels)
    alerts = [alert(i.key, i.start_ts, i.end_ts) for i in s.incidents]
    ev = event_metrics(s.labels, flagged)
    assert (ev.precision, ev.recall, ev.fp, ev.fn) == (1.0, 1.0, 0, 0)
    inc = incident_metrics(s.incidents, alerts)
    assert (inc.precision, inc.recall, inc.fp, inc.fn) == (1.0, 1.0, 0, 0)
    assert set(inc.time_to_detect_s.values()) == {0.0}
    # flagging only the first event of each incident: full incident recall, partial events
    firsts = [(i.key, i.start_ts) for i in s.incidents]
    ev = event_metrics(s.labels, firsts)
    assert ev.precision == 1.0
    assert ev.tp == len(s.incidents) and ev.fn == len(s.labels) - len(s.incidents)
