"""Per-key logic: rolling statistics, stage-1 detectors, KeyLogic behaviour."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsift.config import DetectorConfig, FeatureConfig, PrefilterConfig
from streamsift.models.features import DecayedMoments, DecayedRate, RollingFeatures
from streamsift.models.keylogic import KeyLogic, KeyState, StepResult, compute_features
from streamsift.models.prefilter import EWMAZScore, MADZScore, Prefilter
from streamsift.records import Reason

FIELDS4 = ("cpu", "latency_ms", "requests", "errors")
METHODS = ("ewma", "mad")


def make_logic(
    fields=FIELDS4, method="ewma", horizons=(60.0, 900.0, 3600.0), detector=None, **pf
) -> KeyLogic:
    # stage-1 tests: by default the detector does not take over escalation after
    # its warm-up (tests of that path pass a detector config)
    return KeyLogic(
        fields,
        FeatureConfig(horizons_s=horizons),
        PrefilterConfig(method=method, **pf),
        detector if detector is not None else DetectorConfig(escalate=False),
    )


def gaussian_stream(n, seed=0, n_fields=4, interval=60.0, jitter=0.1):
    """Jittered regular arrivals, independent Gaussian fields (mean 100*(i+1), sd 5)."""
    rng = random.Random(seed)
    t = 1_700_000_000.0
    out = []
    for _ in range(n):
        t += interval * (1.0 + jitter * (2.0 * rng.random() - 1.0))
        out.append((t, [rng.gauss(100.0 * (i + 1), 5.0) for i in range(n_fields)]))
    return out


def run(logic, events, state=None):
    state = state if state is not None else logic.new_state()
    return state, [logic.step(state, ts, vals) for ts, vals in events]


def signal_slot(logic: KeyLogic, name: str) -> int:
    pf = logic._prefilter
    return pf.signal_names.index(name) * pf.width


# ---------------------------------------------------------------------------
# scalar statistics
# ---------------------------------------------------------------------------


def test_decayed_moments_without_elapsed_time_are_plain_population_moments():
    s = DecayedMoments(tau=60.0)
    xs = [4.0, 7.0, 1.0, 9.0, 5.0]
    for x in xs:
        s.learn_one(x, 10.0)
    assert s.count == 5.0
    assert s.mean == pytest.approx(5.2, rel=1e-15)
    assert s.std**2 == pytest.approx(float(np.var(xs)), rel=1e-12)
    assert (s.min, s.max) == (1.0, 9.0)


def test_decayed_moments_match_explicit_exponential_weights():
    tau = 100.0
    rng = random.Random(3)
    times = np.cumsum([rng.uniform(0.0, 80.0) for _ in range(40)])
    xs = [rng.gauss(3.0, 2.0) for _ in times]
    s = DecayedMoments(tau=tau)
    for t, x in zip(times, xs, strict=True):
        s.learn_one(x, float(t))
    w = np.exp(-(times[-1] - times) / tau)
    mean = float(np.sum(w * xs) / np.sum(w))
    var = float(np.sum(w * (np.asarray(xs) - mean) ** 2) / np.sum(w))
    assert s.count == pytest.approx(float(np.sum(w)), rel=1e-12)
    assert s.mean == pytest.approx(mean, rel=1e-12)
    assert s.std**2 == pytest.approx(var, rel=1e-10)


def test_decayed_max_relaxes_toward_the_mean_with_the_horizon():
    s = DecayedMoments(tau=60.0)
    s.learn_one(0.0, 0.0)
    s.learn_one(10.0, 0.0)
    assert (s.mean, s.max, s.min) == (5.0, 10.0, 0.0)
    s.learn_one(5.0, 60.0)  # at the mean: the mean stays, extremes relax by e^-1
    assert s.mean == 5.0
    assert s.max == pytest.approx(5.0 + 5.0 * math.exp(-1.0), rel=1e-15)
    assert s.min == pytest.approx(5.0 - 5.0 * math.exp(-1.0), rel=1e-15)


def test_decayed_rate_of_a_regular_stream_and_after_silence():
    r = DecayedRate(tau=900.0)
    for i in range(500):
        r.learn_one(30.0 * i)
    last = 30.0 * 499
    assert r.rate_at(last + 15.0) == pytest.approx(1.0 / 30.0, rel=0.01)
    assert r.rate_at(last + 900.0) == pytest.approx(r.rate_at(last) * math.exp(-1.0), rel=1e-6)
    young = DecayedRate(tau=3600.0)
    young.learn_one(0.0)
    young.learn_one(60.0)
    young.learn_one(120.0)
    # bias correction: 3 events over two minutes, not 3 per hour
    assert 1.0 / 60.0 < young.rate_at(120.0) < 2.0 / 60.0


def test_ewma_zscore_exact_values_and_half_life_weights():
    det = EWMAZScore(half_life=10.0, warmup=100)
    for t, x in [(0.0, 2.0), (10.0, 5.0), (20.0, 3.0)]:  # weights 1/4, 1/2, 1
        det.learn_one(x, t=t)
    assert det.state.stats[0] == 1.75
    mean = (0.25 * 2.0 + 0.5 * 5.0 + 3.0) / 1.75
    var = (0.25 * (2.0 - mean) ** 2 + 0.5 * (5.0 - mean) ** 2 + (3.0 - mean) ** 2) / 1.75
    assert det.center == pytest.approx(mean, rel=1e-15)
    assert det.state.quantum == 2.0  # smallest step: 5 -> 3; floor 1.0 < sd
    assert det.zscore_one(6.0) == pytest.approx((6.0 - mean) / math.sqrt(var), rel=1e-12)
    assert det.score_one(0.0) == pytest.approx(mean / math.sqrt(var), rel=1e-12)


def test_resolution_floor_keeps_one_unit_steps_below_two():
    det = EWMAZScore(half_life=100.0, warmup=10)
    for i in range(300):
        det.learn_one(1.0 if i % 50 == 0 else 0.0)
    assert det.state.quantum == 1.0
    assert det.score_one(1.0) < 2.0  # raw sd ~0.14 would give z ~ 7
    assert det.score_one(2.0) >= 3.0


def test_mad_zscore_bootstrap_exact_and_tracks_median_and_mad():
    det = MADZScore(half_life=50.0, warmup=10_000)
    det.learn_one(0.0, t=0.0)
    det.learn_one(2.0, t=0.0)
    # the first deviation (2) sets the step: the median moves by 2/W = 1, the MAD
    # by half a step toward |2 - 0|; the mean absolute deviation becomes 2/W = 1
    assert det.center == 1.0
    assert det.state.stats[2:4] == [0.5, 1.0]
    z = det.zscores_at(det.state.stats, 0, [4.0])[0]  # without the resolution floor
    assert z == pytest.approx(3.0 / (1.4826 * 0.5), rel=1e-12)
    assert det.zscore_one(4.0) == 3.0  # floor: half the step 0 -> 2
    rng = random.Random(5)
    det = MADZScore(half_life=200.0, warmup=10_000)
    for _ in range(5000):
        det.learn_one(rng.gauss(10.0, 2.0))
    assert det.center == pytest.approx(10.0, abs=0.4)
    assert det.scale_at(det.state.stats, 0) == pytest.approx(2.0, rel=0.2)


@pytest.mark.parametrize("cls", [EWMAZScore, MADZScore])
def test_scalar_detector_does_not_learn_flagged_points_and_readapts(cls):
    det = cls(half_life=100.0, threshold=3.0, warmup=20, readapt_after=5)
    rng = random.Random(1)
    for _ in range(200):
        det.learn_one(rng.gauss(0.0, 1.0))
    center = det.center
    det.learn_one(1e9)
    assert det.center == center
    assert det.run_length_at(det.state.stats, 0) == 1
    det.learn_one(rng.gauss(0.0, 1.0))  # a normal point ends the run
    assert det.run_length_at(det.state.stats, 0) == 0
    scores = []
    for _ in range(12):
        x = rng.gauss(50.0, 1.0)
        scores.append(det.score_one(x))
        det.learn_one(x)
    assert all(s >= 3.0 for s in scores[:5])
    assert det.center == pytest.approx(50.0, abs=1.5)
    assert max(scores[6:]) < 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"half_life": 0.0}, "half_life must be > 0; got 0.0"),
        ({"threshold": -1.0}, "threshold must be > 0; got -1.0"),
        ({"warmup": 1.5}, "warmup must be an integer >= 0; got 1.5"),
        ({"readapt_after": 0}, "readapt_after must be >= 1; got 0"),
    ],
)
def test_detector_parameter_errors_name_the_bound(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EWMAZScore(**kwargs)


# ---------------------------------------------------------------------------
# rolling features
# ---------------------------------------------------------------------------


def test_rolling_buffer_matches_scalar_statistics_bit_for_bit():
    horizons = (60.0, 900.0, 3600.0)
    logic = make_logic(fields=("a", "b"), horizons=horizons)
    stats = {(f, h): DecayedMoments(h) for f in ("a", "b") for h in horizons}
    state = logic.new_state()
    for ts, vals in gaussian_stream(300, seed=2, n_fields=2, jitter=0.9):
        logic.step(state, ts, vals)
        for i, f in enumerate(("a", "b")):
            for h in horizons:
                stats[(f, h)].learn_one(vals[i], ts)
    rf = logic._rolling
    for hi, h in enumerate(horizons):
        base = hi * rf.stride
        for i, f in enumerate(("a", "b")):
            s = stats[(f, h)].state
            p = base + 1 + 4 * i
            assert state.rolling[base] == s.weight
            assert list(state.rolling[p : p + 4]) == [s.mean, s.var, s.lo, s.hi]


def test_describe_reports_raw_rolling_statistics():
    logic = make_logic(fields=("a",), horizons=(60.0, 600.0))
    ref = DecayedMoments(600.0)
    rate = DecayedRate(60.0)
    state = logic.new_state()
    for ts, vals in gaussian_stream(50, seed=4, n_fields=1):
        logic.step(state, ts, vals)
        ref.learn_one(vals[0], ts)
        rate.learn_one(ts)
    d = logic.describe(state, state.last_ts, [2.0 * ref.mean])
    assert d["a.mean_600s"] == ref.mean
    assert d["a.std_600s"] == ref.std
    assert (d["a.min_600s"], d["a.max_600s"]) == (ref.min, ref.max)
    assert d["a.ratio_to_baseline"] == pytest.approx(2.0, rel=1e-12)
    assert d["rate_60s"] == pytest.approx(rate.rate_at(state.last_ts), rel=1e-12)
    assert d["time_since_prev_s"] == 0.0
    assert d["burstiness"] > 0.0


def test_feature_names_are_stable_unique_and_match_the_vector():
    logic = make_logic()
    names = logic.feature_names
    # rolling: log ratio per field, gap, 2 bursts;
    # stage 1: one per field, the gap, one per adjacent pair
    assert len(names) == len(set(names)) == 4 + 1 + 2 + (4 + 1 + 3)
    assert names[:4] == (
        "cpu.log_ratio",
        "latency_ms.log_ratio",
        "requests.log_ratio",
        "errors.log_ratio",
    )
    assert names[4:7] == ("log_gap_rel", "log_burst_60s", "log_burst_900s")
    assert names[7:] == tuple("s1." + n for n in logic.signal_names)
    _, results = run(logic, gaussian_stream(30))
    assert all(len(r.features) == len(names) for r in results)
    assert all(type(v) is float for r in results for v in r.features)
    assert make_logic().feature_names == names


def test_features_see_a_spike_in_z_and_ratio_and_a_silence_in_the_gap():
    logic = make_logic(fields=("a",))
    state, _ = run(logic, gaussian_stream(200, n_fields=1))
    names = logic.feature_names
    spike = logic.step(copy.deepcopy(state), state.last_ts + 60.0, [200.0])
    f = dict(zip(names, spike.features, strict=True))
    assert f["s1.a"] > 10.0 and f["a.log_ratio"] == pytest.approx(math.log(2.0), abs=0.1)
    assert logic.describe(state, state.last_ts + 60.0, [200.0])["a.ratio_to_baseline"] > 1.8
    normal = logic.step(copy.deepcopy(state), state.last_ts + 60.0, [100.0])
    silent = logic.step(copy.deepcopy(state), state.last_ts + 7200.0, [100.0])
    g = dict(zip(names, normal.features, strict=True))
    s = dict(zip(names, silent.features, strict=True))
    assert abs(g["log_gap_rel"]) < 0.5
    assert s["log_gap_rel"] > g["log_gap_rel"] + 4.0
    assert s["log_burst_60s"] < g["log_burst_60s"]


# ---------------------------------------------------------------------------
# KeyLogic contract
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_step_is_causal_truncating_the_stream_keeps_earlier_outputs(method):
    logic = make_logic(method=method)
    events = gaussian_stream(400, seed=9)
    events[250] = (events[250][0], [1e6, 0.0, -5.0, 3.0])
    _, full = run(logic, events)
    for cut in (1, 2, 21, 100, 251, 399):
        _, part = run(logic, events[:cut])
        assert part == full[:cut]
    # changing a future event never changes an earlier output
    changed = list(events)
    changed[300] = (changed[300][0], [0.0, 0.0, 0.0, 0.0])
    _, other = run(logic, changed)
    assert other[:300] == full[:300]
    assert other[300] != full[300]


@pytest.mark.parametrize("method", METHODS)
def test_compute_features_equals_the_streaming_step_loop(method):
    logic = make_logic(method=method)
    rng = random.Random(11)
    per_key = {f"k{i}": gaussian_stream(120 + 10 * i, seed=i) for i in range(4)}
    per_key["k1"][5] = (per_key["k1"][4][0], per_key["k1"][5][1])  # equal timestamps
    per_key["k2"][7] = (per_key["k2"][6][0], per_key["k2"][6][1])  # duplicate event
    events = [(k, ts, vals) for k, evs in per_key.items() for ts, vals in evs]
    rng.shuffle(events)
    rows, X, s1 = compute_features(logic, events)
    exp_rows, exp_x, exp_s1 = [], [], []
    for key in sorted(per_key):
        # ties in ts are ordered by values, as the pipeline's DoFn does
        evs = sorted((ts, tuple(v)) for k, ts, v in events if k == key)
        state = logic.new_state()
        for ts, vals in evs:
            res = logic.step(state, ts, vals)
            exp_rows.append((key, ts))
            exp_x.append(res.features)
            exp_s1.append(res.stage1)
    assert rows == exp_rows
    assert X.dtype == np.float64 and X.shape == (len(events), len(logic.feature_names))
    assert np.array_equal(X, np.array(exp_x))
    assert np.array_equal(s1, np.array(exp_s1))
    rng.shuffle(events)  # the input order does not matter
    rows2, X2, s2 = compute_features(logic, events)
    assert rows2 == rows and np.array_equal(X2, X) and np.array_equal(s2, s1)


def test_compute_features_of_nothing_has_the_right_shape():
    logic = make_logic()
    rows, X, s1 = compute_features(logic, [])
    assert rows == [] and X.shape == (0, len(logic.feature_names)) and s1.shape == (0,)


def test_step_validates_its_inputs():
    logic = make_logic()
    state = logic.new_state()
    with pytest.raises(ValueError, match="values must have 4 items"):
        logic.step(state, 0.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="ts must be a finite number of seconds; got nan"):
        logic.step(state, float("nan"), [1.0] * 4)
    assert state == logic.new_state()


def test_out_of_order_event_counts_as_no_elapsed_time():
    logic = make_logic()
    state, _ = run(logic, gaussian_stream(50))
    last = state.last_ts
    res = logic.step(state, last - 500.0, [100.0, 200.0, 300.0, 400.0])
    assert isinstance(res, StepResult)
    assert state.last_ts == last and state.n == 51
    twin, _ = run(logic, gaussian_stream(50))
    assert logic.step(twin, last, [100.0, 200.0, 300.0, 400.0]) == res


def test_step_returns_plain_types():
    logic = make_logic()
    state, results = run(logic, gaussian_stream(60))
    res = logic.step(state, state.last_ts + 60.0, np.array([1e4, 200.0, 300.0, 400.0]))
    assert res.escalated is True
    assert type(res.stage1) is float
    assert all(type(v) is float for v in res.features)
    assert res.reasons and all(isinstance(r, Reason) for r in res.reasons)
    assert all(type(x) is float for r in res.reasons for x in r[1:])
    assert len(res.reasons) <= 5
    devs = [abs(r.deviation) for r in res.reasons]
    assert devs == sorted(devs, reverse=True)


# ---------------------------------------------------------------------------
# state encoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_state_of_8_fields_and_3_horizons_fits_in_2_kib(method):
    fields = tuple(f"f{i}" for i in range(8))
    logic = KeyLogic(
        fields, FeatureConfig(), PrefilterConfig(method=method), DetectorConfig(enabled=False)
    )
    state, _ = run(logic, gaussian_stream(100, n_fields=8))
    data = logic.encode_state(state)
    assert len(data) == logic.state_size <= 2048
    # the seasonal detector adds 8 + 4 * (2 + window) + 44 F + 4 F season_bins bytes
    with_det = make_logic(fields=fields, method=method)
    assert with_det.state_size - logic.state_size == 8 + 4 * 12 + 44 * 8 + 4 * 8 * 48
    state, _ = run(with_det, gaussian_stream(100, n_fields=8))
    assert len(with_det.encode_state(state)) == with_det.state_size


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    n=st.integers(min_value=0, max_value=60),
    seed=st.integers(min_value=0, max_value=10_000),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_encode_decode_round_trip(method, n, seed, jitter):
    logic = make_logic(method=method, warmup_events=5, readapt_after=3)
    events = gaussian_stream(n + 20, seed=seed, jitter=jitter)
    rng = random.Random(seed)
    for i in rng.sample(range(len(events)), 4):  # some flagged points and runs
        events[i] = (events[i][0], [v * rng.choice([1.0, 50.0, -3.0]) for v in events[i][1]])
    state, _ = run(logic, events[:n])
    data = logic.encode_state(state)
    assert isinstance(data, bytes) and len(data) == logic.state_size
    back = logic.decode_state(data)
    assert isinstance(back, KeyState) and back == state
    _, a = run(logic, events[n:], state)
    _, b = run(logic, events[n:], back)
    assert a == b


def test_decode_rejects_other_layouts():
    logic = make_logic()
    data = logic.encode_state(run(logic, gaussian_stream(5))[0])
    with pytest.raises(ValueError, match=f"must be {len(data)} bytes .*; got {len(data) - 1}"):
        logic.decode_state(data[:-1])
    other = make_logic(method="mad")
    assert other.state_size != logic.state_size
    same_size = make_logic(fields=("w", "x", "y", "z"))
    assert same_size.decode_state(data) is not None  # field names are not encoded
    with pytest.raises(ValueError, match="state format version must be 4; got 9"):
        logic.decode_state(b"\x09" + data[1:])


# ---------------------------------------------------------------------------
# stage 1 behaviour
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_no_escalation_during_warmup(method):
    logic = make_logic(method=method, warmup_events=20)
    events = gaussian_stream(40)
    for i in (3, 10, 19):
        events[i] = (events[i][0], [1e7, 1e7, 1e7, 1e7])
    _, results = run(logic, events)
    assert not any(r.escalated for r in results[:20])
    assert all(r.stage1 >= 0.0 for r in results)


@pytest.mark.parametrize("method", METHODS)
def test_spike_is_escalated_with_its_field_as_first_reason(method):
    logic = make_logic(method=method)
    state, results = run(logic, gaussian_stream(300, seed=1))
    assert sum(r.escalated for r in results[20:]) <= 0.05 * 280  # 8 signals at 3 sd
    res = logic.step(state, state.last_ts + 60.0, [100.0, 200.0 + 60.0, 300.0, 400.0])
    assert res.escalated and res.stage1 >= 10.0
    top = res.reasons[0]
    assert top.feature == "latency_ms" and top.value == 260.0
    assert top.baseline == pytest.approx(200.0, abs=2.0) and top.deviation > 10.0


@pytest.mark.parametrize("method", METHODS)
def test_single_huge_spike_does_not_move_the_baseline(method):
    logic = make_logic(method=method)
    state, _ = run(logic, gaussian_stream(300, seed=3))
    twin = copy.deepcopy(state)
    slot = signal_slot(logic, "cpu")
    det = logic._prefilter.detector
    center, scale = det.center_at(state.prefilter, slot), det.scale_at(state.prefilter, slot)
    assert logic.step(state, state.last_ts + 60.0, [1e9, 200.0, 300.0, 400.0]).escalated
    assert det.center_at(state.prefilter, slot) == center
    assert det.scale_at(state.prefilter, slot) == scale
    # the baseline scores a normal value as if the spike had never happened
    z_after = det.zscores_at(state.prefilter, slot, [101.0])
    assert z_after == det.zscores_at(twin.prefilter, slot, [101.0])
    after = logic.step(state, state.last_ts + 60.0, [101.0, 199.0, 302.0, 398.0])
    assert not after.escalated


@pytest.mark.parametrize("method", METHODS)
def test_level_shift_is_detected_then_becomes_the_new_normal(method):
    readapt = 15
    logic = make_logic(method=method, readapt_after=readapt)
    events = gaussian_stream(700, seed=5)
    shift_at = 300
    for i in range(shift_at, len(events)):
        ts, vals = events[i]
        events[i] = (ts, [vals[0] + 60.0, *vals[1:]])  # +12 sd on cpu, for good
    state, results = run(logic, events)
    assert all(r.escalated for r in results[shift_at : shift_at + readapt])
    assert results[shift_at].reasons[0].feature == "cpu"
    settled = results[shift_at + readapt + 1 :]
    # the shifted field no longer leads escalations; the key is back to its usual rate
    assert not any(r.escalated and "cpu" in r.reasons[0].feature for r in settled[:50])
    assert sum(r.escalated for r in settled) <= 0.05 * len(settled)
    det = logic._prefilter.detector
    assert det.center_at(state.prefilter, signal_slot(logic, "cpu")) == pytest.approx(
        160.0, abs=2.0
    )


@pytest.mark.parametrize("method", METHODS)
def test_silence_is_escalated_on_the_first_event_after_it(method):
    logic = make_logic(method=method)
    state, _ = run(logic, gaussian_stream(300, seed=6))
    res = logic.step(state, state.last_ts + 7200.0, [100.0, 200.0, 300.0, 400.0])
    assert res.escalated
    assert res.reasons[0].feature == "interarrival_s"
    assert res.reasons[0].value == 7200.0 and res.reasons[0].deviation > 3.0
    assert res.reasons[0].baseline == pytest.approx(60.0, rel=0.1)


@pytest.mark.parametrize("method", METHODS)
def test_burst_needs_two_short_gaps_in_a_row(method):
    logic = make_logic(method=method)
    state, _ = run(logic, gaussian_stream(300, seed=7))
    vals = [100.0, 200.0, 300.0, 400.0]
    one = copy.deepcopy(state)
    first = logic.step(one, one.last_ts + 1.0, vals)
    assert not first.escalated  # one short gap happens with random arrivals
    normal = logic.step(one, one.last_ts + 60.0, vals)
    assert not normal.escalated
    ts = state.last_ts
    results = []
    for _ in range(10):
        ts += 1.0
        results.append(logic.step(state, ts, vals))
    assert not results[0].escalated
    assert all(r.escalated for r in results[1:])
    assert results[1].reasons[0].feature == "interarrival_s"
    assert results[1].reasons[0].deviation < -3.0


@pytest.mark.parametrize("method", METHODS)
def test_broken_correlation_is_escalated_while_each_field_is_in_range(method):
    logic = make_logic(fields=("a", "b", "c"), method=method)
    rng = random.Random(8)
    t = 0.0
    state = logic.new_state()
    for _ in range(400):
        t += 60.0
        load = rng.gauss(0.0, 1.0)
        logic.step(state, t, [50.0 + 5.0 * load, 20.0 + 2.0 * load + rng.gauss(0, 0.2), 7.0])
    before = copy.deepcopy(state)
    res = logic.step(state, t + 60.0, [50.0 + 10.0, 20.0 - 4.0, 7.0])  # +2 sd vs -2 sd
    assert res.escalated
    devs = {r.feature: r.deviation for r in res.reasons}
    assert res.reasons[0].feature == "corr(a,b)"
    assert abs(devs["a"]) < 3.0 and abs(devs["b"]) < 3.0
    # the same +2 sd move on both (correlation intact) is not escalated
    ok = logic.step(before, t + 60.0, [50.0 + 10.0, 20.0 + 4.0, 7.0])
    assert not ok.escalated


@pytest.mark.parametrize("method", METHODS)
def test_count_field_does_not_collapse_its_own_spread(method):
    # errors in {0, 1}: a single 1 must stay normal for thousands of events
    logic = make_logic(method=method)
    rng = random.Random(12)
    t = 0.0
    state = logic.new_state()
    escalated = by_errors = 0
    for i in range(3000):
        t += 60.0
        vals = [rng.gauss(50, 5), rng.gauss(100, 10), rng.gauss(80, 8), float(rng.random() < 0.1)]
        r = logic.step(state, t, vals)
        if i >= 20 and r.escalated:
            escalated += 1
            by_errors += "errors" in r.reasons[0].feature
    assert by_errors <= 0.005 * 3000
    assert escalated <= 0.05 * 3000


def test_prefilter_rejects_a_bad_config_type():
    with pytest.raises(ValueError, match="cfg must be a PrefilterConfig; got dict"):
        Prefilter(("a",), {"method": "ewma"})
    with pytest.raises(ValueError, match="horizons_s must be non-empty and strictly increasing"):
        RollingFeatures(("a",), (60.0, 60.0))


# ---------------------------------------------------------------------------
# numerical robustness
# ---------------------------------------------------------------------------

extreme = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-308, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308]),
)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    rows=st.lists(
        st.tuples(
            st.one_of(
                st.floats(min_value=0.0, max_value=1e13), st.sampled_from([0.0, 1e-9, -50.0])
            ),
            st.lists(extreme, min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_no_nan_or_inf_ever_leaves_step(method, rows):
    logic = make_logic(fields=("a", "b", "c"), method=method, warmup_events=3, readapt_after=2)
    state = logic.new_state()
    ts = 1e9
    for gap, vals in rows:
        ts += gap
        res = logic.step(state, ts, vals)
        assert all(math.isfinite(v) and abs(v) <= 50.0 for v in res.features)
        assert math.isfinite(res.stage1) and 0.0 <= res.stage1 <= 50.0
        for r in res.reasons:
            assert all(math.isfinite(x) for x in r[1:])
    assert all(math.isfinite(v) for v in state.rolling + state.prefilter)
    assert logic.decode_state(logic.encode_state(state)) == state


def test_non_finite_values_are_clamped_not_propagated():
    logic = make_logic(fields=("a",))
    state, _ = run(logic, gaussian_stream(30, n_fields=1))
    for v in (float("inf"), float("-inf"), float("nan")):
        res = logic.step(state, state.last_ts + 60.0, [v])
        assert all(math.isfinite(x) for x in res.features)
        assert math.isfinite(res.stage1)


@settings(max_examples=50, deadline=None)
@given(
    cls=st.sampled_from([EWMAZScore, MADZScore]),
    xs=st.lists(st.one_of(extreme, st.sampled_from([math.nan, math.inf])), min_size=1, max_size=40),
)
def test_scalar_detectors_stay_finite_on_extreme_inputs(cls, xs):
    det = cls(half_life=5.0, warmup=3, readapt_after=2)
    for x in xs:
        s = det.score_one(x)
        assert math.isfinite(s) and 0.0 <= s <= 50.0
        det.learn_one(x)
    assert all(math.isfinite(v) for v in det.state.stats)


# ---------------------------------------------------------------------------
# the seasonal detector takes over escalation after its warm-up
# ---------------------------------------------------------------------------


def test_detector_decides_escalation_after_its_warm_up_with_its_own_reasons():
    from streamsift.models.seasonal import DETECTOR_REASON

    det_cfg = DetectorConfig(suppress_events=0)  # escalate = true by default
    on = make_logic(detector=det_cfg)
    off = make_logic(detector=DetectorConfig(escalate=False))
    events = gaussian_stream(700, seed=21)
    events[600] = (events[600][0], [100.0, 200.0 + 80.0, 300.0, 400.0])  # +16 sd on latency
    s_on, a = run(on, events)
    _, b = run(off, events)
    warm = det_cfg.warmup_events - 1  # index of the detector's first scored event
    # before the detector's warm-up: stage 1 escalates exactly as without it
    assert [r.escalated for r in a[:warm]] == [r.escalated for r in b[:warm]]
    assert any(r.escalated for r in b[20:warm])
    # after it: only detector verdicts and event-rate deviations are escalated
    for r in a[warm:]:
        if r.escalated:
            first = r.reasons[0]
            assert (first.feature == DETECTOR_REASON and r.anomaly >= 0.5) or (
                first.feature == "interarrival_s"
            )
    assert sum(r.escalated for r in a[warm:]) < sum(r.escalated for r in b[warm:])
    spike = a[600]
    assert spike.escalated and spike.anomaly >= det_cfg.alert_score
    verdict, field = spike.reasons[0], spike.reasons[1]
    assert verdict == Reason(DETECTOR_REASON, spike.anomaly, 0.5, verdict.deviation)
    assert verdict.deviation > 10.0
    assert field.feature in ("latency_ms.seasonal", "latency_ms.level")
    assert field.value == 280.0 and field.baseline == pytest.approx(200.0, abs=3.0)
    assert field.deviation == verdict.deviation
    # the stage-1 reasons follow the detector's
    assert any(r.feature == "latency_ms" for r in spike.reasons[2:])
    # a gap in the event rate is still escalated by stage 1 (the detector models values)
    gap = on.step(s_on, s_on.last_ts + 6 * 3600.0, [100.0, 200.0, 300.0, 400.0])
    assert gap.escalated and gap.reasons[0].feature == "interarrival_s"
    assert gap.anomaly < det_cfg.alert_score


def test_detector_state_is_compact_and_round_trips_mid_stream():
    logic = make_logic(detector=DetectorConfig())
    events = gaussian_stream(400, seed=4)
    state, _ = run(logic, events[:350])
    assert state.detector.words.typecode == "I" and state.detector.floats.typecode == "f"
    data = logic.encode_state(state)
    fields = len(FIELDS4)
    assert len(data) == logic.state_size
    assert logic.state_size - make_logic(detector=DetectorConfig(enabled=False)).state_size == (
        8 + 4 * 12 + 44 * fields + 4 * fields * 48
    )
    back = logic.decode_state(data)
    assert back == state
    # continuing from the decoded state gives exactly the same results
    _, a = run(logic, events[350:], state)
    _, b = run(logic, events[350:], back)
    assert a == b
