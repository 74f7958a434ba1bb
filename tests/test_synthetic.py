"""Tests of the embedded synthetic stream (streamsift.synthetic)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import datetime

import numpy as np
import pytest

from streamsift.config import InputConfig, SyntheticConfig
from streamsift.synthetic import (
    ANOMALY_KINDS,
    MALFORMED_KINDS,
    generate,
    history,
    key_name,
    to_jsonl,
)

START = 1_767_225_600.0
LABELLED = InputConfig(label_field="label")


@pytest.fixture(scope="module")
def default_stream():
    return generate(SyntheticConfig(), LABELLED)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse(payload: bytes, icfg: InputConfig) -> tuple[str, float, dict] | None:
    """Independent oracle: (key, ts seconds, object) for a well-formed payload, else None."""
    if len(payload) > icfg.max_payload_bytes:
        return None
    try:
        obj = json.loads(payload)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if not isinstance(obj, dict):
        return None
    key = obj.get(icfg.key_field)
    if not isinstance(key, str) or not key:
        return None
    t = obj.get(icfg.time_field)
    if isinstance(t, str):
        try:
            dt = datetime.fromisoformat(t)
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        ts = dt.timestamp()
    elif _number(t):
        ts = t / 1000.0 if icfg.time_format in ("auto", "epoch_ms") else float(t)
    else:
        return None
    if not all(_number(obj.get(f)) for f in icfg.feature_fields):
        return None
    return key, ts, obj


def valid_events(stream, icfg=LABELLED):
    out = []
    for p in stream.payloads:
        r = parse(p, icfg)
        if r is not None:
            out.append(r)
    return out


def test_deterministic_byte_identical():
    cfg = SyntheticConfig(events=3000, keys=6, seed=5)
    a = generate(cfg, LABELLED)
    b = generate(cfg, LABELLED)
    assert a.payloads == b.payloads
    assert a.labels == b.labels
    assert a.incidents == b.incidents
    c = generate(SyntheticConfig(events=3000, keys=6, seed=6), LABELLED)
    assert c.payloads != a.payloads


def test_counts_and_validity(default_stream):
    cfg = SyntheticConfig()
    s = default_stream
    assert len(s.payloads) == cfg.events
    assert s.n_malformed == round(cfg.malformed_rate * cfg.events)
    assert s.n_late == round(cfg.late_rate * cfg.events)
    assert s.n_valid + s.n_malformed == cfg.events
    good = valid_events(s)
    assert len(good) == s.n_valid
    assert sum(s.malformed_kinds.values()) == s.n_malformed
    # at the default rate every malformed variant occurs
    assert set(s.malformed_kinds) == {kind for _, kind in MALFORMED_KINDS}
    assert any(len(p) > LABELLED.max_payload_bytes for p in s.payloads)
    assert all(b"\n" not in p for p in s.payloads)


def test_every_kind_injected_at_default(default_stream):
    s = default_stream
    assert {i.kind for i in s.incidents} == set(ANOMALY_KINDS)
    assert set(s.labels.values()) == set(ANOMALY_KINDS)
    silences = [i for i in s.incidents if i.detail.startswith("silence")]
    bursts = [i for i in s.incidents if i.detail.startswith("burst")]
    assert silences and bursts
    # roughly anomaly_rate of the events are labelled
    frac = len(s.labels) / SyntheticConfig().events
    assert 0.5 * 0.02 <= frac <= 1.5 * 0.02


def test_labels_match_incidents_and_payloads(default_stream):
    s = default_stream
    by_key = defaultdict(list)
    for inc in s.incidents:
        by_key[inc.key].append(inc)
    per_incident = Counter()
    for (key, ts), kind in s.labels.items():
        owners = [i for i in by_key[key] if i.contains(ts)]
        assert len(owners) == 1, (key, ts)
        assert owners[0].kind == kind
        per_incident[owners[0]] += 1
    for inc in s.incidents:
        assert per_incident[inc] == inc.n_events
        assert inc.start_ts <= inc.end_ts
    # the label field carried in each payload agrees with the labels mapping
    seen = 0
    for key, ts, obj in valid_events(s):
        assert obj["label"] == s.labels.get((key, ts), "")
        seen += bool(obj["label"])
    assert seen == len(s.labels)


def test_no_anomalies_when_rate_zero():
    s = generate(SyntheticConfig(events=1000, keys=3, anomaly_rate=0.0), LABELLED)
    assert s.incidents == [] and s.labels == {}
    assert all(obj["label"] == "" for _, _, obj in valid_events(s))


def test_arrival_order_disorder_and_late(default_stream):
    s = default_stream
    cfg = SyntheticConfig()
    global_max = -math.inf
    key_max: dict[str, float] = {}
    late, small, behind = [], [], 0
    for key, ts, _ in valid_events(s):
        g_lag = global_max - ts
        k_lag = key_max.get(key, -math.inf) - ts
        if g_lag > 30.0 or k_lag > 30.0:
            late.append((key, ts, g_lag, k_lag))
        elif g_lag > 0:
            behind += 1
            small.append(g_lag)
        global_max = max(global_max, ts)
        key_max[key] = max(key_max.get(key, -math.inf), ts)
    assert len(late) == s.n_late
    # delivered far too late, both globally and for their own key, and never labelled
    assert all(g > 3600.0 and k > 3600.0 for _, _, g, k in late)
    assert not any((k, t) in s.labels for k, t, _, _ in late)
    # the displaced ones stay well within the default 30 s allowed lateness
    assert max(small) <= 20.0
    assert 0.5 * cfg.disorder_rate * cfg.events <= behind <= 1.5 * cfg.disorder_rate * cfg.events


def test_time_formats_vary_and_agree():
    cfg = SyntheticConfig(events=800, keys=8, malformed_rate=0.0)
    auto = generate(cfg, InputConfig())
    raw = [json.loads(p)["ts"] for p in auto.payloads]
    assert any(isinstance(t, int) for t in raw)
    assert any(isinstance(t, str) and t.endswith("Z") for t in raw)
    assert any(isinstance(t, str) and t.endswith("+02:00") for t in raw)
    # the same instant whatever the format, at ms resolution
    as_ms = generate(cfg, InputConfig(time_format="epoch_ms"))
    as_iso = generate(cfg, InputConfig(time_format="iso8601"))
    ms = [json.loads(p)["ts"] for p in as_ms.payloads]
    iso = [datetime.fromisoformat(json.loads(p)["ts"]).timestamp() for p in as_iso.payloads]
    assert all(isinstance(t, int) for t in ms)
    assert [t / 1000.0 for t in ms] == iso
    secs = [json.loads(p)["ts"] for p in generate(cfg, InputConfig(time_format="epoch_s")).payloads]
    assert secs == iso


def test_custom_fields_and_oversize_bound():
    icfg = InputConfig(
        key_field="host",
        time_field="time",
        feature_fields=("load", "p99", "qps"),
        max_payload_bytes=512,
        label_field="truth",
    )
    s = generate(SyntheticConfig(events=4000, keys=4, malformed_rate=0.01), icfg)
    good = valid_events(s, icfg)
    assert len(good) == s.n_valid
    assert set(good[0][2]) == {"host", "time", "load", "p99", "qps", "truth"}
    assert {i.feature for i in s.incidents} <= {"", "load", "p99", "qps"}
    assert any(512 < len(p) < 2048 for p in s.payloads)


def test_label_field_clash_is_rejected():
    with pytest.raises(ValueError, match="input.label_field must differ"):
        generate(SyntheticConfig(events=10, keys=1), InputConfig(label_field="cpu"))


def _series(stream_or_payloads, icfg=LABELLED):
    by_key = defaultdict(list)
    payloads = getattr(stream_or_payloads, "payloads", stream_or_payloads)
    for p in payloads:
        r = parse(p, icfg)
        if r is not None:
            by_key[r[0]].append((r[1], r[2]))
    return {k: sorted(v, key=lambda x: x[0]) for k, v in by_key.items()}


def test_injected_anomalies_are_visible(default_stream):
    s = default_stream
    series = _series(s)
    interval = SyntheticConfig().interval_s
    for inc in s.incidents:
        evs = series[inc.key]
        ts = np.array([t for t, _ in evs])
        inside = np.array([inc.contains(t) for t in ts])
        if inc.kind == "rate_change":
            gaps = np.diff(ts)
            if inc.detail.startswith("burst"):
                assert np.median(gaps[inside[1:]]) < interval / 5
            else:
                first = int(np.flatnonzero(inside)[0])
                assert ts[first] - ts[first - 1] > 5 * interval
            continue
        if inc.kind == "broken_correlation":
            continue
        x = np.array([o[inc.feature] for _, o in evs], dtype=float)
        first = int(np.flatnonzero(inside)[0])
        normal = x[max(0, first - 60) : first]  # the recent past, as a detector sees it
        med = np.median(normal)
        spread = 1.4826 * np.median(np.abs(normal - med)) + 1e-9
        if inc.kind == "drift":  # a slow ramp: judge its last quarter
            z = abs(np.mean(x[inside][-max(1, inside.sum() // 4) :]) - med) / spread
        else:
            z = abs(np.mean(x[inside]) - med) / spread
        assert z > 3.0, (inc, z)


def test_broken_correlation_stays_in_range_but_decouples(default_stream):
    s = default_stream
    series = _series(s)
    hist = _series(history(SyntheticConfig(), LABELLED, 24.0, START, seed=1))
    broken = [i for i in s.incidents if i.kind == "broken_correlation"]
    assert broken
    for inc in broken:
        evs = series[inc.key]
        cpu = np.array([o["cpu"] for _, o in evs])
        req = np.array([o["requests"] for _, o in evs], dtype=float)
        inside = np.array([inc.contains(t) for t, _ in evs])
        h_cpu = np.array([o["cpu"] for _, o in hist[inc.key]])
        h_req = np.array([o["requests"] for _, o in hist[inc.key]])
        # marginally normal: inside the key's range over a day of history
        assert h_cpu.min() <= cpu[inside].min() and cpu[inside].max() <= h_cpu.max()
        assert h_req.min() <= req[inside].min() and req[inside].max() <= h_req.max()
        # jointly abnormal: cpu is far from what requests predict
        slope, icpt = np.polyfit(h_req, h_cpu, 1)
        resid = cpu - (slope * req + icpt)
        h_sd = np.std(h_cpu - (slope * h_req + icpt))
        assert abs(resid[inside].mean()) > 2.0 * h_sd


def test_features_are_correlated():
    hist = _series(history(SyntheticConfig(keys=5), InputConfig(), 24.0, START, seed=2))
    for evs in hist.values():
        cpu = [o["cpu"] for _, o in evs]
        lat = [o["latency_ms"] for _, o in evs]
        req = [o["requests"] for _, o in evs]
        err = [o["errors"] for _, o in evs]
        assert np.corrcoef(req, cpu)[0, 1] > 0.8
        assert np.corrcoef(req, lat)[0, 1] > 0.5
        assert all(isinstance(e, int) and 0 <= e < 20 for e in err)
        assert all(0.0 <= c <= 100.0 for c in cpu)


def test_history_is_clean_ordered_and_matches_population():
    cfg = SyntheticConfig(keys=10, events=4000)
    h = history(cfg, LABELLED, 6.0, START, seed=3)
    assert h == history(cfg, LABELLED, 6.0, START, seed=3)
    assert h != history(cfg, LABELLED, 6.0, START, seed=4)
    parsed = [parse(p, LABELLED) for p in h]
    assert all(r is not None for r in parsed)
    assert all(obj["label"] == "" for _, _, obj in parsed)
    ts = [t for _, t, _ in parsed]
    assert ts == sorted(ts)
    assert START - 6 * 3600 <= ts[0] and ts[-1] < START
    assert {k for k, _, _ in parsed} == {key_name(i, 10) for i in range(10)}

    # per-key levels continue into the stream generated with the same cfg.seed:
    # compare the last hour of history with the first hour of the stream
    def levels(payloads, lo, hi):
        return {
            k: np.median([o["requests"] for t, o in v if lo <= t < hi])
            for k, v in _series(payloads).items()
        }

    after = levels(generate(cfg, LABELLED), START, START + 3600)
    before = levels(h, START - 3600, START)
    for k in after:
        assert 0.75 < after[k] / before[k] < 1.33
    # a different population seed gives different levels
    cfg20 = SyntheticConfig(keys=20, seed=7)
    base = levels(history(cfg20, LABELLED, 1.0, START, seed=3), START - 3600, START)
    other = levels(
        history(SyntheticConfig(keys=20, seed=99), LABELLED, 1.0, START, seed=3),
        START - 3600,
        START,
    )
    assert sum(0.75 < other[k] / base[k] < 1.33 for k in base) < 15


def test_history_rejects_bad_hours():
    with pytest.raises(ValueError, match="hours must be > 0 and finite; got -1"):
        history(SyntheticConfig(), InputConfig(), -1, START, seed=0)


def test_to_jsonl_roundtrip(tmp_path):
    s = generate(SyntheticConfig(events=300, keys=2, malformed_rate=0.02), InputConfig())
    path = tmp_path / "sub" / "stream.jsonl"
    assert to_jsonl(s.payloads, path) == 300
    assert path.read_bytes().split(b"\n")[:-1] == s.payloads
