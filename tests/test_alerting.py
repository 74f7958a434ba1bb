"""Tests for streamsift.models.alerting: dedup, explanations, state encoding, rate limit."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from streamsift.config import AlertConfig, ThresholdConfig
from streamsift.models.alerting import (
    AlertLogic,
    AlertState,
    RateLimiter,
    RateLimitState,
    alert_id_for,
    format_alert_line,
    iso_ms,
)
from streamsift.records import Event, Reason, Scored

T0 = 1_700_000_000.0
REASONS = (
    Reason("cpu", 97.1, 41.2, 8.3),
    Reason("latency_ms", 950.0, 120.0, 6.1),
    Reason("errors", 12.0, 0.5, 4.0),
    Reason("requests", 10.0, 11.0, -0.2),
)
FEATURES = ("cpu", "latency_ms", "requests", "errors")


def scored(key: str, ts: float, score: float, stage1: float = 5.0, reasons=REASONS) -> Scored:
    ev = Event(key, ts, (1.0, 2.0, 3.0, 4.0))
    return Scored(ev, ev.values, stage1, reasons, True, score, "model-v1")


def make_logic(**alerts) -> AlertLogic:
    cfg = dict(cooldown_s=600.0, top_reasons=3, rate_limit_per_min=120)
    cfg.update(alerts)
    return AlertLogic(ThresholdConfig(), AlertConfig(**cfg), FEATURES)


def run(logic: AlertLogic, state: AlertState, items, detection_offset: float = 2.0):
    out = []
    for key, ts, score in items:
        a = logic.step(state, scored(key, ts, score), ts + detection_offset)
        if a is not None:
            out.append(a)
    return out


# --------------------------------------------------------------------------- dedup


def test_persisting_anomaly_is_one_alert_with_a_count():
    logic = make_logic()
    state = logic.new_state()
    items = [("k", T0 + 60 * i, 0.95) for i in range(40)]  # 40 min, 1/min, same severity
    alerts = run(logic, state, items)
    assert len(alerts) == 1
    assert alerts[0]["count"] == 1 and alerts[0]["update"] is False
    assert state.count == 40
    assert state.first_event_time == T0
    assert state.last_event_time == T0 + 60 * 39
    assert state.alert_id == alerts[0]["alert_id"]


def test_persisting_anomaly_does_not_raise_its_own_threshold():
    logic = make_logic()
    state = logic.new_state()
    rng = np.random.default_rng(0)
    run(logic, state, [("k", T0 + i, float(s)) for i, s in enumerate(rng.uniform(0.2, 0.6, 60))])
    before = logic.threshold(state)
    learnt = state.sketch.count
    run(logic, state, [("k", T0 + 100 + 10 * i, 0.99) for i in range(300)])
    assert state.sketch.count == learnt + 1  # only the first exceedance of the episode
    assert logic.threshold(state) == before
    assert state.count == 300


def test_severity_rise_re_emits_with_same_id_and_update_flag():
    logic = make_logic()
    state = logic.new_state()
    alerts = run(
        logic,
        state,
        [
            ("k", T0, 0.92),
            ("k", T0 + 30, 0.93),
            ("k", T0 + 60, 0.98),
            ("k", T0 + 90, 0.96),
            ("k", T0 + 120, 0.999),
            ("k", T0 + 150, 0.9999),
        ],
    )
    assert [(a["severity"], a["update"], a["count"]) for a in alerts] == [
        ("info", False, 1),
        ("warning", True, 3),
        ("critical", True, 5),
    ]
    assert len({a["alert_id"] for a in alerts}) == 1
    assert all(a["first_event_time_ms"] == int(T0 * 1000) for a in alerts)
    assert alerts[2]["last_event_time_ms"] == int((T0 + 120) * 1000)
    # score is the alert's maximum so far; stage2_score is the triggering event's
    assert alerts[1]["score"] == 0.98 and alerts[1]["stage2_score"] == 0.98
    assert state.count == 6 and state.max_score == 0.9999


def test_severity_drop_is_absorbed_silently():
    logic = make_logic()
    state = logic.new_state()
    alerts = run(logic, state, [("k", T0, 0.999), ("k", T0 + 10, 0.95), ("k", T0 + 20, 0.98)])
    assert [a["severity"] for a in alerts] == ["critical"]
    assert state.severity == "critical" and state.count == 3


def test_new_alert_after_cooldown_with_new_id():
    logic = make_logic(cooldown_s=300.0)
    state = logic.new_state()
    alerts = run(
        logic,
        state,
        [
            ("k", T0, 0.95),
            ("k", T0 + 300, 0.95),  # exactly the cooldown after the last event: absorbed
            ("k", T0 + 500, 0.5),  # below the threshold: does not extend the alert
            ("k", T0 + 601, 0.95),  # 301 s after the last exceedance: new alert
        ],
    )
    assert len(alerts) == 2
    assert alerts[0]["alert_id"] != alerts[1]["alert_id"]
    assert alerts[1]["alert_id"] == alert_id_for("k", T0 + 601)
    assert alerts[1]["count"] == 1 and alerts[1]["update"] is False
    assert alerts[1]["first_event_time_ms"] == int((T0 + 601) * 1000)


def test_zero_cooldown_only_merges_same_timestamp():
    logic = make_logic(cooldown_s=0.0)
    state = logic.new_state()
    alerts = run(logic, state, [("k", T0, 0.95), ("k", T0, 0.95), ("k", T0 + 1, 0.95)])
    assert [a["count"] for a in alerts] == [1, 1]
    assert alerts[0]["alert_id"] != alerts[1]["alert_id"]


def test_keys_are_independent_states():
    logic = make_logic()
    sa, sb = logic.new_state(), logic.new_state()
    a = logic.step(sa, scored("a", T0, 0.95), T0)
    b = logic.step(sb, scored("b", T0, 0.95), T0)
    assert a["alert_id"] != b["alert_id"]
    assert (a["key"], b["key"]) == ("a", "b")


def test_below_threshold_emits_nothing_and_is_learnt():
    logic = make_logic()
    state = logic.new_state()
    assert run(logic, state, [("k", T0 + i, 0.5) for i in range(10)]) == []
    assert state.sketch.count == 10
    assert state.alert_id == ""


def test_stage2_must_be_calibrated():
    logic = make_logic()
    with pytest.raises(ValueError, match=r"scored.stage2 must be in \[0, 1\]; got nan"):
        logic.step(logic.new_state(), scored("k", T0, math.nan), T0)
    with pytest.raises(ValueError, match="feature_names must be a sequence of non-empty strings"):
        AlertLogic(ThresholdConfig(), AlertConfig(), "cpu")


# --------------------------------------------------------------------------- ids and times


def test_alert_id_deterministic_and_independent_of_detection_time():
    items = [("k", T0 + 60 * i, s) for i, s in enumerate([0.5, 0.95, 0.98, 0.5, 0.999])]
    items += [("k", T0 + 5000, 0.96)]
    a1 = run(make_logic(), make_logic().new_state(), items, detection_offset=1.0)
    logic2 = make_logic()
    a2 = run(logic2, logic2.new_state(), items, detection_offset=1234.5)
    assert [a["alert_id"] for a in a1] == [a["alert_id"] for a in a2]
    strip = ("detection_time", "detection_time_ms")
    assert [{k: v for k, v in a.items() if k not in strip} for a in a1] == [
        {k: v for k, v in a.items() if k not in strip} for a in a2
    ]
    assert a1[0]["detection_time_ms"] != a2[0]["detection_time_ms"]
    expected = hashlib.sha1(f"k|{T0 + 60:.6f}".encode()).hexdigest()[:20]
    assert a1[0]["alert_id"] == expected


def test_alert_id_stable_across_processes():
    code = (
        "from streamsift.models.alerting import alert_id_for;"
        "print(alert_id_for('host-ä', 1700000123.25))"
    )
    ids = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        ids.add(out.stdout.strip())
    assert ids == {alert_id_for("host-ä", 1700000123.25)}


def test_time_fields_are_iso_utc_millis():
    logic = make_logic()
    ts = T0 + 0.1234
    a = logic.step(logic.new_state(), scored("k", ts, 0.95), detection_time=ts + 1.5)
    assert a["first_event_time_ms"] == a["last_event_time_ms"] == 1_700_000_000_123
    assert a["first_event_time"] == "2023-11-14T22:13:20.123Z"
    parsed = datetime.strptime(a["last_event_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc  # noqa: UP017
    )
    assert parsed.timestamp() == pytest.approx(ts, abs=5e-4)
    assert a["detection_time_ms"] == 1_700_000_001_623
    assert a["detection_time"] == iso_ms(1_700_000_001_623)


# --------------------------------------------------------------------------- content


def test_alert_dict_shape_is_stable_and_json_serialisable():
    logic = make_logic()
    a = logic.step(logic.new_state(), scored("web-1", T0, 0.98, stage1=7.25), T0 + 2)
    assert list(a) == [
        "alert_id",
        "key",
        "severity",
        "update",
        "count",
        "first_event_time",
        "first_event_time_ms",
        "last_event_time",
        "last_event_time_ms",
        "detection_time",
        "detection_time_ms",
        "score",
        "stage1_score",
        "stage2_score",
        "threshold",
        "model_version",
        "explanation",
        "summary",
    ]
    text = json.dumps(a, allow_nan=False)
    assert json.loads(text) == a
    assert a["stage1_score"] == 7.25
    assert a["threshold"] == 0.9
    assert a["model_version"] == "model-v1"
    assert a["severity"] == "warning"


def test_explanation_top_reasons_and_summary():
    logic = make_logic(top_reasons=2)
    a = logic.step(logic.new_state(), scored("k", T0, 0.95), T0)
    assert a["explanation"] == [
        {"feature": "cpu", "value": 97.1, "baseline": 41.2, "deviation": 8.3},
        {"feature": "latency_ms", "value": 950.0, "baseline": 120.0, "deviation": 6.1},
    ]
    assert (
        a["summary"] == "cpu 97.1 vs baseline 41.2 (+8.3σ); latency_ms 950 vs baseline 120 (+6.1σ)"
    )


def test_explanation_handles_few_and_non_finite_reasons():
    logic = make_logic(top_reasons=5)
    reasons = (Reason("errors", 12345.6, 0.0, math.inf), Reason("cpu", 0.01234, 0.5, -2.04))
    a = logic.step(logic.new_state(), scored("k", T0, 0.95, reasons=reasons), T0)
    assert a["explanation"][0] == {
        "feature": "errors",
        "value": 12345.6,
        "baseline": 0.0,
        "deviation": None,
    }
    assert a["summary"] == "errors 12346 vs baseline 0 (+infσ); cpu 0.0123 vs baseline 0.5 (-2.0σ)"
    json.dumps(a, allow_nan=False)
    b = logic.step(logic.new_state(), scored("k", T0, 0.95, reasons=()), T0)
    assert b["explanation"] == [] and b["summary"] == "no per-feature deviation recorded"


def test_format_alert_line():
    logic = make_logic()
    state = logic.new_state()
    run(logic, state, [("db-2", T0, 0.95)])
    a = logic.step(state, scored("db-2", T0 + 5, 0.9991), T0 + 6)
    line = format_alert_line(a)
    assert line == (
        "2023-11-14T22:13:25.000Z CRITICAL db-2 score=0.9991 thr=0.9000 count=2 (update) | "
        "cpu 97.1 vs baseline 41.2 (+8.3σ); latency_ms 950 vs baseline 120 (+6.1σ); "
        "errors 12 vs baseline 0.5 (+4.0σ)"
    )
    assert "\n" not in line


# --------------------------------------------------------------------------- state encoding


def test_alert_state_round_trip_continues_identically():
    logic = make_logic()
    rng = np.random.default_rng(1)
    times = T0 + np.cumsum(rng.uniform(0.0, 900.0, size=400))
    scores = np.where(rng.uniform(size=400) < 0.2, rng.beta(30, 1, size=400), rng.uniform(size=400))
    items = [("k", float(t), float(s)) for t, s in zip(times, scores, strict=True)]
    ref_state = logic.new_state()
    ref = run(logic, ref_state, items)
    state = logic.new_state()
    got = []
    for key, ts, s in items:  # encode/decode between every event, as a state backend would
        state = AlertState.decode(state.encode())
        a = logic.step(state, scored(key, ts, s), ts + 2.0)
        if a is not None:
            got.append(a)
    assert got == ref
    # the stream exercises opening, absorbing and upgrading
    assert sum(not a["update"] for a in ref) > 3 and sum(a["update"] for a in ref) > 0
    assert max(a["count"] for a in ref) > 1
    assert AlertState.decode(state.encode()) == ref_state


def test_alert_state_decode_rejects_garbage():
    data = AlertState(alert_id="abc", count=1, severity="info").encode()
    with pytest.raises(ValueError, match="data must be"):
        AlertState.decode(data[:-3])
    with pytest.raises(ValueError, match="data must be"):
        AlertState.decode(data + b"\x00")


# --------------------------------------------------------------------------- rate limiter


def _new(ms: int, update: bool = False) -> dict:
    return {"alert_id": f"id{ms}", "last_event_time_ms": ms, "update": update}


def test_rate_limiter_suppresses_and_counts_per_event_minute():
    rl = RateLimiter(AlertConfig(rate_limit_per_min=3))
    state = rl.new_state()
    minute0 = [rl.admit(state, _new(1000 * i)) for i in range(5)]
    assert minute0 == [True, True, True, False, False]
    assert state.suppressed == 2
    assert rl.admit(state, _new(59_999, update=True)) is True  # updates always pass
    minute1 = [rl.admit(state, _new(60_000 + 1000 * i)) for i in range(4)]
    assert minute1 == [True, True, True, False]
    assert state.suppressed == 3
    # a late new alert from minute 0 counts against the current window (minute 1)
    assert rl.admit(state, _new(30_000)) is False
    assert state.suppressed == 4 and state.window == 1


def test_rate_limiter_zero_is_unlimited():
    rl = RateLimiter(AlertConfig(rate_limit_per_min=0))
    state = rl.new_state()
    assert all(rl.admit(state, _new(i)) for i in range(1000))
    assert state.suppressed == 0


def test_rate_limiter_with_alert_logic_over_many_keys():
    logic = make_logic()
    rl = RateLimiter(AlertConfig(rate_limit_per_min=5))
    rstate = rl.new_state()
    states = {f"k{i}": logic.new_state() for i in range(20)}
    emitted = []
    for step in range(3):  # minute 0: 20 keys open alerts; minute 1: upgrades; minute 10: new
        ts = T0 + [0, 60, 600 + 700][step]
        score = [0.95, 0.999, 0.95][step]
        for key, st in states.items():
            a = logic.step(st, scored(key, ts, score), ts)
            if a is not None and rl.admit(rstate, a):
                emitted.append(a)
    new = [a for a in emitted if not a["update"]]
    upd = [a for a in emitted if a["update"]]
    assert len(upd) == 20
    assert len(new) == 10  # 5 per minute in the two minutes with new alerts
    assert rstate.suppressed == 30
    assert len({a["alert_id"] for a in new}) == 10


def test_rate_limit_state_round_trip():
    rl = RateLimiter(AlertConfig(rate_limit_per_min=1))
    state = rl.new_state()
    for i in range(3):
        rl.admit(state, _new(i))
    back = RateLimitState.decode(state.encode())
    assert back == state == RateLimitState(window=0, admitted=1, suppressed=2)
    assert RateLimitState.decode(RateLimitState().encode()).window is None


# --------------------------------------------------------------------------- detector verdicts


def test_detector_verdict_alerts_below_the_stage2_threshold_and_explains_itself():
    from streamsift.models.alerting import detector_verdict
    from streamsift.models.seasonal import DETECTOR_REASON

    verdict = (
        Reason(DETECTOR_REASON, 0.83, 0.5, 14.2),
        Reason("latency_ms.seasonal", 950.0, 120.0, 14.2),
        *REASONS[:2],
    )
    logic = make_logic()
    st = logic.new_state()
    thr = logic.threshold(st)
    low = scored("k", T0, 0.2, reasons=verdict)  # stage 2 far below the threshold
    assert detector_verdict(low) and logic.exceeds(st, low)
    a = logic.step(st, low, T0 + 1.0)
    assert a is not None and not a["update"]
    assert a["score"] == thr and a["stage2_score"] == 0.2 and a["severity"] == "info"
    assert [e["feature"] for e in a["explanation"]] == [
        DETECTOR_REASON,
        "latency_ms.seasonal",
        "cpu",
    ]
    assert a["summary"].startswith(
        "anomaly_score 0.83 vs baseline 0.5 (+14.2σ); latency_ms.seasonal"
    )
    # the same stage-2 score without the detector's verdict is not an alert
    plain = make_logic()
    ps = plain.new_state()
    no = scored("k", T0, 0.2)
    assert not detector_verdict(no) and not plain.exceeds(ps, no)
    assert plain.step(ps, no, T0 + 1.0) is None
    # a verdict below the detector's alert level is not one
    weak = scored("k", T0, 0.2, reasons=(Reason(DETECTOR_REASON, 0.4, 0.5, 3.0),))
    assert not detector_verdict(weak)
    # the threshold sketch learnt the real stage-2 score, not the threshold
    assert st.sketch == ps.sketch
