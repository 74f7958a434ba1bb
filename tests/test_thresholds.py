"""Tests for streamsift.models.thresholds: calibration, quantile sketch, thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsift.config import ThresholdConfig
from streamsift.models.thresholds import (
    NBINS,
    AdaptiveThreshold,
    Calibrator,
    QuantileSketch,
    SketchState,
    severity_rank,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
quantile_lists = st.lists(finite, min_size=2, max_size=40).map(sorted)
# include ties (many repeated values), the common case for discrete scores
tied_lists = st.lists(st.sampled_from([-1.0, 0.0, 0.5, 0.5, 2.0]), min_size=2, max_size=20).map(
    sorted
)
raw_values = st.floats(allow_nan=False)  # includes +-inf and huge values


# --------------------------------------------------------------------------- Calibrator


@settings(max_examples=200, deadline=None)
@given(st.one_of(quantile_lists, tied_lists), raw_values, raw_values)
def test_calibration_monotone_and_in_unit_interval(qs, x, y):
    cal = Calibrator(qs)
    lo, hi = sorted((x, y))
    a, b = cal.calibrate(lo), cal.calibrate(hi)
    assert 0.0 <= a <= b <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.one_of(quantile_lists, tied_lists), st.lists(raw_values, min_size=0, max_size=30))
def test_vectorised_equals_scalar_exactly(qs, xs):
    cal = Calibrator(qs)
    arr = np.asarray(xs, dtype=np.float64)
    many = cal.calibrate_many(arr)
    scalar = np.asarray([cal.calibrate(x) for x in xs], dtype=np.float64)
    assert many.shape == arr.shape
    assert np.array_equal(many, scalar)


def test_vectorised_keeps_shape_and_matches_on_dense_grid():
    rng = np.random.default_rng(0)
    cal = Calibrator.from_scores(rng.normal(size=5000), n_quantiles=101)
    grid = np.linspace(-6, 12, 3000).reshape(3, 1000, 1)
    out = cal.calibrate_many(grid)
    assert out.shape == grid.shape
    assert np.array_equal(out.ravel(), np.array([cal.calibrate(x) for x in grid.ravel()]))
    assert np.all(np.diff(out.ravel()) >= 0)


def test_calibrated_training_scores_are_roughly_uniform():
    rng = np.random.default_rng(1)
    train = rng.gamma(2.0, 1.0, size=20000)
    cal = Calibrator.from_scores(train, n_quantiles=1001)
    fresh = cal.calibrate_many(rng.gamma(2.0, 1.0, size=20000))
    for level in (0.1, 0.5, 0.9, 0.99):
        assert abs(np.mean(fresh <= level) - level) < 0.01


def test_interior_levels_are_the_quantile_levels():
    cal = Calibrator([0.0, 1.0, 2.0, 3.0, 4.0])
    assert cal.calibrate(1.0) == 0.25
    assert cal.calibrate(0.5) == 0.125
    # the training maximum keeps half a quantile step for unseen scores
    assert cal.calibrate(4.0) == 1.0 - 0.5 / 4
    assert cal.calibrate(-100.0) == 0.0


def test_ties_are_right_continuous():
    cal = Calibrator([0.0, 1.0, 1.0, 1.0, 2.0])
    assert cal.calibrate(1.0) == 0.75  # highest level of the tied quantiles
    assert cal.calibrate(math.nextafter(1.0, 0.0)) < 0.25 + 1e-9


def test_tail_beyond_training_max_stays_ordered_and_below_one():
    cal = Calibrator.from_scores(np.linspace(0.0, 1.0, 1000), n_quantiles=101)
    xs = [1.0 + k * cal.scale for k in (0.01, 0.5, 1, 2, 5, 10, 20)]
    vals = [cal.calibrate(x) for x in xs]
    assert all(a < b for a, b in zip(vals[:-1], vals[1:], strict=True))
    assert all(v < 1.0 for v in vals)
    assert vals[0] > cal.calibrate(1.0)
    assert cal.calibrate(math.inf) == 1.0
    # smooth join: continuous at the max
    assert cal.calibrate(1.0 + 1e-12) == pytest.approx(cal.calibrate(1.0), abs=1e-9)


def test_default_scale_is_upper_half_spread_with_fallbacks():
    assert Calibrator([0.0, 1.0, 2.0, 3.0, 4.0]).scale == 2.0
    assert Calibrator([0.0, 5.0, 5.0]).scale == 5.0  # max - median = 0 -> max - min
    assert Calibrator([3.0, 3.0]).scale == 1.0
    assert Calibrator([0.0, 1.0], scale=0.25).scale == 0.25


def test_quantiles_round_trip_through_metadata():
    rng = np.random.default_rng(2)
    cal = Calibrator.from_scores(rng.exponential(size=3000), n_quantiles=201)
    again = Calibrator(cal.quantiles)
    xs = rng.exponential(size=500) * 2
    assert np.array_equal(cal.calibrate_many(xs), again.calibrate_many(xs))
    assert len(cal.quantiles) == 201
    assert cal.quantiles == sorted(cal.quantiles)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([2.0, 1.0],), "quantiles must be sorted ascending; got 2.0 before 1.0 at index 1"),
        (([0.0, math.nan],), "quantiles[1] must be finite; got nan"),
        (([0.0, 1.0], 0.0), "scale must be a finite number > 0; got 0.0"),
        (([],), "quantiles must have at least 2 values; got 0"),
    ],
)
def test_calibrator_validation(args, message):
    with pytest.raises(ValueError) as exc:
        Calibrator(*args)
    assert str(exc.value) == message


def test_from_scores_validation_and_nan_input():
    with pytest.raises(ValueError, match="n_quantiles must be an integer >= 2; got 1"):
        Calibrator.from_scores([1.0, 2.0], n_quantiles=1)
    with pytest.raises(ValueError, match="scores must be finite; got 1 non-finite"):
        Calibrator.from_scores([1.0, math.inf])
    cal = Calibrator([0.0, 1.0])
    with pytest.raises(ValueError, match="raw must be numbers"):
        cal.calibrate_many(np.array([0.5, math.nan]))


# --------------------------------------------------------------------------- QuantileSketch


def _learn_all(sk, state, xs):
    for x in xs:
        sk.learn_one(state, float(x))


@pytest.mark.parametrize(
    "sampler",
    [
        lambda rng: rng.uniform(size=20000),
        lambda rng: rng.beta(8.0, 1.0, size=20000),  # mass near 1, like escalated scores
        lambda rng: 1.0 - rng.exponential(0.01, size=20000).clip(max=1.0),
    ],
)
def test_sketch_quantiles_close_to_exact(sampler):
    rng = np.random.default_rng(3)
    xs = sampler(rng)
    sk = QuantileSketch(half_life=None)
    state = sk.new_state()
    _learn_all(sk, state, xs)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = float(np.quantile(xs, q))
        est = sk.quantile(state, q)
        # bins are ~7.5 % wide in 1 - x; interpolation does better than one bin
        assert abs(est - exact) <= 0.075 * (1.0 - exact) + 1e-4, (q, exact, est)


def test_sketch_decay_follows_a_shift():
    rng = np.random.default_rng(4)
    sk = QuantileSketch(half_life=50)
    state = sk.new_state()
    _learn_all(sk, state, rng.uniform(0.0, 0.5, size=1000))
    assert sk.quantile(state, 0.5) < 0.5
    _learn_all(sk, state, rng.uniform(0.9, 0.99, size=500))  # 10 half-lives
    assert 0.9 <= sk.quantile(state, 0.1) <= 0.99
    # without decay the old data still dominates the median
    flat = QuantileSketch(half_life=None)
    fs = flat.new_state()
    _learn_all(flat, fs, rng.uniform(0.0, 0.5, size=1000))
    _learn_all(flat, fs, rng.uniform(0.9, 0.99, size=500))
    assert flat.quantile(fs, 0.5) < 0.5


def test_sketch_rescaling_keeps_quantiles():
    rng = np.random.default_rng(5)
    sk = QuantileSketch(half_life=1.0)  # doubling every score: rescales every ~330 scores
    state = sk.new_state()
    _learn_all(sk, state, rng.uniform(size=2000))
    assert state.inc <= 1e100
    assert all(math.isfinite(w) for w in state.weights)
    sk.learn_one(state, 0.3)
    sk.learn_one(state, 0.3)
    # with half-life 1 the latest scores dominate completely
    assert sk.quantile(state, 0.5) == pytest.approx(0.3, abs=0.03)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=60),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_sketch_quantile_monotone_in_q_and_in_range(xs, q1, q2):
    sk = QuantileSketch()
    state = sk.new_state()
    _learn_all(sk, state, xs)
    lo, hi = sorted((q1, q2))
    a, b = sk.quantile(state, lo), sk.quantile(state, hi)
    assert 0.0 <= a <= b <= 1.0
    # estimate stays within one bin of the data range (the top bin holds all of
    # [1 - 1e-6, 1], so allow that much near 1)
    assert a >= min(xs) - 0.075 * (1 - min(xs)) - 2e-6
    assert b <= max(xs) + 0.075 * (1 - max(xs)) + 2e-6


def test_sketch_encode_decode_round_trip():
    rng = np.random.default_rng(6)
    sk = QuantileSketch(half_life=100)
    state = sk.new_state()
    _learn_all(sk, state, rng.beta(5.0, 1.0, size=700))
    data = state.encode()
    back = SketchState.decode(data)
    assert back == state
    assert back.count == 700
    assert len(data) < 8 * NBINS + 32  # sparse, bounded
    # decoded state continues exactly like the original
    more = rng.uniform(size=50)
    _learn_all(sk, state, more)
    _learn_all(sk, back, more)
    assert back == state
    assert sk.quantile(back, 0.9) == sk.quantile(state, 0.9)


def test_sketch_decode_rejects_corrupt_data():
    data = SketchState().encode()
    with pytest.raises(ValueError, match="data must be 19 bytes for 0 bins; got 20 bytes"):
        SketchState.decode(data + b"\x00")
    with pytest.raises(ValueError, match="SketchState version must be 1; got 7"):
        SketchState.decode(b"\x07" + data[1:])


def test_sketch_validation():
    sk = QuantileSketch()
    state = sk.new_state()
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\]; got nan"):
        sk.learn_one(state, math.nan)
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]; got 1.5"):
        sk.quantile(state, 1.5)
    with pytest.raises(ValueError, match="half_life must be a number > 0 or None; got -1"):
        QuantileSketch(half_life=-1)


# --------------------------------------------------------------------------- AdaptiveThreshold


def test_warmup_then_adaptive_threshold():
    cfg = ThresholdConfig(min_score=0.9, quantile=0.9, warmup=30)
    at = AdaptiveThreshold(cfg, half_life=None)
    noisy = at.new_state()
    rng = np.random.default_rng(7)
    scores = rng.uniform(0.95, 0.99, size=30)
    for i, s in enumerate(scores):
        assert at.threshold(noisy) == 0.9, i  # warm-up: the floor
        at.learn_one(noisy, float(s))
    thr = at.threshold(noisy)
    assert thr > 0.9
    assert thr == pytest.approx(float(np.quantile(scores, 0.9)), abs=0.003)
    # a quiet key keeps the floor after warm-up
    quiet = at.new_state()
    for s in rng.uniform(0.1, 0.5, size=40):
        at.learn_one(quiet, float(s))
    assert at.threshold(quiet) == 0.9


def test_warmup_zero_uses_sketch_as_soon_as_it_has_data():
    at = AdaptiveThreshold(ThresholdConfig(min_score=0.5, warmup=0), half_life=None)
    state = at.new_state()
    assert at.threshold(state) == 0.5  # empty sketch
    at.learn_one(state, 0.8)
    assert 0.79 < at.threshold(state) < 0.81


@pytest.mark.parametrize(
    ("score", "threshold", "expected"),
    [
        (0.89, 0.9, ""),
        (0.9, 0.9, "info"),
        (0.969, 0.9, "info"),
        (0.97, 0.9, "warning"),
        (0.994, 0.9, "warning"),
        (0.995, 0.9, "critical"),
        (1.0, 0.9, "critical"),
        (0.975, 0.98, ""),  # above warning but below the key's threshold
        (0.98, 0.98, "warning"),
        (0.997, 0.998, ""),
        (0.998, 0.998, "critical"),  # threshold above critical: any exceedance is critical
    ],
)
def test_severity_tiers(score, threshold, expected):
    at = AdaptiveThreshold(ThresholdConfig(min_score=0.9, warning=0.97, critical=0.995))
    assert at.severity(score, threshold) == expected


def test_severity_rank_orders_and_validates():
    assert sorted(["critical", "", "warning", "info"], key=severity_rank) == [
        "",
        "info",
        "warning",
        "critical",
    ]
    with pytest.raises(ValueError, match="severity must be one of"):
        severity_rank("fatal")


def test_observe_does_not_learn_continuing_exceedances():
    cfg = ThresholdConfig(min_score=0.6, quantile=0.9, warmup=20)
    at = AdaptiveThreshold(cfg, half_life=None)
    state = at.new_state()
    for _ in range(50):
        at.observe(state, 0.5)
    before = at.threshold(state)
    assert before == 0.6
    thr, sev = at.observe(state, 0.99)  # first exceedance of an episode: learnt
    assert (thr, sev) == (0.6, "warning")
    assert state.count == 51
    for _ in range(200):  # the episode continues: not learnt
        assert at.observe(state, 0.99, continuing=True) == (0.6, "warning")
    assert state.count == 51
    assert at.threshold(state) == before
    # a non-exceeding score is learnt even while an episode is open
    at.observe(state, 0.4, continuing=True)
    assert state.count == 52


def test_first_exceedances_let_a_noisy_key_raise_its_threshold():
    # every score exceeds the floor and each starts a new episode: the threshold adapts
    cfg = ThresholdConfig(min_score=0.9, quantile=0.9, warmup=30)
    at = AdaptiveThreshold(cfg, half_life=None)
    state = at.new_state()
    rng = np.random.default_rng(8)
    for s in rng.uniform(0.92, 0.96, size=200):
        at.observe(state, float(s))
    assert at.threshold(state) > 0.95


def test_threshold_config_type_is_checked():
    with pytest.raises(ValueError, match="config must be a ThresholdConfig; got dict"):
        AdaptiveThreshold({})  # type: ignore[arg-type]
