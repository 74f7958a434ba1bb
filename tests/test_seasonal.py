"""SeasonalDetector and AnomalyLikelihood: causality, scale invariance, weekly seasonality,
level shifts, new extremes, flagged points held out, one alert per incident."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from streamsift.config import ConfigError, DetectorConfig, FeatureConfig, PrefilterConfig
from streamsift.models.keylogic import KeyLogic
from streamsift.models.likelihood import AnomalyLikelihood, tail_to_score
from streamsift.models.seasonal import FLAG_WARMUP, SeasonalDetector

STEP_S = 300.0
DAY = int(86400 / STEP_S)  # 288 events per day
T0 = 1_396_310_400.0  # 2014-04-01 00:00 UTC


def daily(n_days: int, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Square-ish daily pattern (low at night, high 08:00-18:00) plus noise."""
    rng = np.random.default_rng(seed)
    n = n_days * DAY
    ts = T0 + STEP_S * np.arange(n)
    hour = (ts % 86400) / 3600
    x = np.where((hour >= 8) & (hour < 18), 60.0, 20.0) + 5.0 * np.sin(2 * np.pi * hour / 24)
    return ts, x + rng.normal(0.0, noise, n)


def scores(values, ts, cfg: DetectorConfig | None = None) -> np.ndarray:
    cfg = cfg or DetectorConfig()
    det = SeasonalDetector(("x",), cfg)
    buf = det.new_buffer()
    return np.array(
        [det.step(buf, float(t), [float(v)]).score for t, v in zip(ts, values, strict=True)]
    )


def test_scores_are_causal_truncation_leaves_earlier_scores_unchanged():
    ts, x = daily(6, seed=1)
    x[4 * DAY + 100 : 4 * DAY + 160] += 30.0  # an incident late in the stream
    full = scores(x, ts)
    for cut in (DAY, 3 * DAY + 17, 4 * DAY + 120):
        assert np.array_equal(scores(x[:cut], ts[:cut]), full[:cut])
    # the same through KeyLogic (the pipeline's per-key step)
    logic = KeyLogic(("x",), FeatureConfig(), PrefilterConfig())
    st_full, st_cut = logic.new_state(), logic.new_state()
    a = [logic.step(st_full, float(t), [float(v)]).anomaly for t, v in zip(ts, x, strict=True)]
    cut = 4 * DAY + 120
    b = [
        logic.step(st_cut, float(t), [float(v)]).anomaly
        for t, v in zip(ts[:cut], x[:cut], strict=True)
    ]
    assert a[:cut] == b
    assert a == pytest.approx(full.tolist(), abs=0.0)


def test_scores_do_not_depend_on_the_unit_or_offset_of_the_stream():
    ts, x = daily(4, seed=2)
    x[3 * DAY + 50] = 120.0
    base = scores(x, ts)
    scaled = scores(1000.0 * x + 7.0, ts)
    assert np.allclose(base, scaled, atol=1e-6)


def test_quiet_seasonal_stream_raises_no_alert_after_warm_up():
    ts, x = daily(8, seed=3)
    s = scores(x, ts)
    assert np.all(s[:299] == 0.0)  # warm-up: the 300th event is the first scored
    assert np.mean(s >= 0.5) <= 1 / DAY  # at most a handful over 8 days
    assert np.all(np.isfinite(s)) and np.all((s >= 0.0) & (s <= 1.0))


def test_seasonal_break_inside_the_usual_range_is_detected_early():
    # day 6: the daytime plateau stays at the night level (flat middle): every value
    # is inside the seen range, only the time-of-day baselines know it is wrong
    ts, x = daily(8, seed=4)
    start = 6 * DAY + 8 * 12  # 08:00 on day 6
    x[start : start + 10 * 12] = 20.0 + np.random.default_rng(5).normal(0.0, 1.0, 120)
    s = scores(x, ts)
    hits = np.flatnonzero(s >= 0.5)
    inside = hits[(hits >= start) & (hits < start + 120)]
    assert inside.size and inside[0] - start <= 12  # within an hour
    assert hits[hits < start].size == 0


def test_level_shift_alerts_once_then_readapts():
    rng = np.random.default_rng(6)
    n = 2000
    ts = T0 + STEP_S * np.arange(n)
    x = 50.0 + rng.normal(0.0, 1.0, n)
    x[1200:] += 15.0  # sustained shift
    cfg = DetectorConfig(spatial_margin=0.0)  # the baselines alone, not the range rule
    s = scores(x, ts, cfg)
    hits = np.flatnonzero(s >= cfg.alert_score)
    assert hits.size >= 1 and 1200 <= hits[0] <= 1210
    assert np.all(hits >= 1200)  # nothing before the shift
    # one alert for the incident, and the new level is normal once re-adapted
    assert np.sum(s[1200 : 1200 + cfg.suppress_events] >= cfg.alert_score) == 1
    assert np.all(s[1600:] < cfg.alert_score)


def test_new_extreme_scores_one_and_spikes_are_not_learnt():
    rng = np.random.default_rng(7)
    ts = T0 + STEP_S * np.arange(600)
    x = 10.0 + rng.uniform(-1.0, 1.0, 600)  # bounded: the range is known after warm-up
    det = SeasonalDetector(("x",), DetectorConfig())
    buf = det.new_buffer()
    for t, v in zip(ts[:500], x[:500], strict=True):
        det.step(buf, float(t), [float(v)])
    b = int((ts[500] % 86400) // (86400 / 48))
    visits, mean_before, var_before, run = det.bin_state(buf, 0, b)
    assert run == 0 and visits >= 3
    res = det.step(buf, float(ts[500]), [100.0])
    assert res.spatial and res.score == 1.0 and res.z > FLAG_WARMUP
    after = det.bin_state(buf, 0, b)
    # flagged: not learnt by its bin (its codes are re-based on the new range: the
    # mean moves by at most one code step), but counted in its run toward re-adaptation
    step = (100.0 - float(np.min(x[:500]))) / 2700.0
    assert abs(after[1] - mean_before) <= step and after[3] == 1


def test_suppression_caps_the_quiet_period_below_the_alert_score():
    rng = np.random.default_rng(8)
    ts = T0 + STEP_S * np.arange(900)
    x = 10.0 + rng.uniform(-1.0, 1.0, 900)
    x[400] = 100.0
    x[450] = 150.0  # a new extreme inside the quiet period
    x[800] = 200.0  # a new extreme again, after the quiet period
    cfg = DetectorConfig(suppress_events=100)
    s = scores(x, ts, cfg)
    assert s[400] == 1.0  # the first one alerts
    assert s[450] < cfg.alert_score  # inside the quiet period
    assert s[800] == 1.0  # after it, alerts are possible again
    assert np.sum(s >= cfg.alert_score) == 2
    none = scores(x, ts, dataclasses.replace(cfg, suppress_events=0))
    assert none[450] == 1.0 > s[450]


def test_weekly_period_learns_day_of_week():
    # weekdays busy, weekends quiet: with a weekly period a busy Saturday stands out
    n_days = 21
    ts = T0 + 3600.0 * np.arange(24 * n_days)  # hourly
    dow = ((ts // 86400) + 1) % 7  # 2014-04-01 was a Tuesday: 0 = Monday
    rng = np.random.default_rng(9)
    x = np.where(dow < 5, 80.0, 20.0) + rng.normal(0.0, 1.0, ts.size)
    weekend = np.flatnonzero((dow == 5) & (np.arange(ts.size) >= 24 * 16))[:24]
    x[weekend] = 80.0 + rng.normal(0.0, 1.0, weekend.size)
    cfg = DetectorConfig(
        season_period_s=7 * 86400.0, season_bins=7, warmup_events=24 * 7, spatial_margin=0.0
    )
    s = scores(x, ts, cfg)
    assert np.max(s[weekend]) >= cfg.alert_score
    assert np.all(s[24 * 7 : weekend[0]] < cfg.alert_score)


def test_likelihood_is_scale_free_and_causal():
    lik = AnomalyLikelihood(window=5, half_life=100.0)
    rng = np.random.default_rng(10)
    raw = rng.uniform(0.0, 0.2, 500).tolist() + [0.9] * 5
    buf = lik.new_buffer()
    tails = [lik.step(buf, 0, r, n) for n, r in enumerate(raw)]
    assert tails[-1] < 1e-9 < min(tails[:500])
    buf2 = lik.new_buffer()
    assert [lik.step(buf2, 0, r, n) for n, r in enumerate(raw[:300])] == tails[:300]
    assert tail_to_score(tails[-1]) > 0.75


def test_config_errors_name_the_field_bound_and_value():
    with pytest.raises(ConfigError, match=r"detector.season_bins must be >= 1; got 0"):
        DetectorConfig(season_bins=0)
    with pytest.raises(ConfigError, match=r"detector.alert_score must be in \(0, 1\); got 1.5"):
        DetectorConfig(alert_score=1.5)
    with pytest.raises(ConfigError, match="detector.enabled must be true or false; got 1"):
        DetectorConfig(enabled=1)
    with pytest.raises(ValueError, match="cfg must be a DetectorConfig; got dict"):
        SeasonalDetector(("x",), {})


def test_keylogic_without_detector_reports_zero_and_keeps_escalation():
    ts, x = daily(2, seed=11)
    # escalate = false: the detector only reports, stage 1 escalates as without it
    on = KeyLogic(("x",), FeatureConfig(), PrefilterConfig(), DetectorConfig(escalate=False))
    off = KeyLogic(("x",), FeatureConfig(), PrefilterConfig(), DetectorConfig(enabled=False))
    s_on, s_off = on.new_state(), off.new_state()
    for t, v in zip(ts, x, strict=True):
        a = on.step(s_on, float(t), [float(v)])
        b = off.step(s_off, float(t), [float(v)])
        assert b.anomaly == 0.0
        assert (a.features, a.stage1, a.escalated) == (b.features, b.stage1, b.escalated)
    assert off.decode_state(off.encode_state(s_off)) == s_off
    assert on.decode_state(on.encode_state(s_on)) == s_on
    assert math.isfinite(on.step(s_on, float(ts[-1]) + 300.0, [1e300]).anomaly)


def _run_split(det, ts, rows, cut):
    """Scores of one state kept in memory, and of one encoded/decoded before every
    event from ``cut`` on (the per-element engine's pattern)."""
    a, b = det.new_buffer(), det.new_buffer()
    out_a, out_b = [], []
    for k, (t, row) in enumerate(zip(ts, rows, strict=True)):
        if k >= cut:
            b = det.decode(det.encode(b))
            assert b == a
        out_a.append(det.step(a, float(t), row))
        out_b.append(det.step(b, float(t), row))
    return out_a, out_b


@pytest.mark.parametrize("readapt_after", [12, 100])
def test_encoded_state_round_trips_exactly_through_rebases_and_readaptation(readapt_after):
    # 3 fields: seasonal, growing range (re-bases its codes), a level shift (re-adapts)
    ts, x = daily(4, seed=12)
    rng = np.random.default_rng(12)
    grow = np.cumsum(rng.exponential(1.0, ts.size)) * (1.0 + (np.arange(ts.size) % 97 == 0) * 50)
    shift = 5.0 + rng.normal(0.0, 0.1, ts.size)
    shift[2 * DAY :] += 3.0
    rows = [[float(a), float(b), float(c)] for a, b, c in zip(x, grow, shift, strict=True)]
    cfg = DetectorConfig(readapt_after=readapt_after, warmup_events=DAY)
    det = SeasonalDetector(("a", "b", "c"), cfg)
    a, b = _run_split(det, ts, rows, cut=DAY // 2)
    assert a == b  # every score, z and deviation identical
    assert len(det.encode(det.new_buffer())) == det.nbytes
    # the shifted field's bins re-adapted to the new level (readapt_after 12 only)
    st = det.new_buffer()
    for t, row in zip(ts, rows, strict=True):
        det.step(st, float(t), row)
    means = [det.bin_state(st, 2, k)[1] for k in range(48)]
    if readapt_after == 12:
        assert all(abs(m - 8.0) < 0.2 for m in means)


def test_state_size_default_config_fits_the_2_kib_budget():
    det_cfg = DetectorConfig()
    det = SeasonalDetector(("cpu", "latency_ms", "requests", "errors"), det_cfg)
    window = det_cfg.likelihood_window
    assert det.nbytes == 8 + 4 * (2 + window) + 44 * 4 + 4 * 4 * det_cfg.season_bins
    logic = KeyLogic(
        ("cpu", "latency_ms", "requests", "errors"), FeatureConfig(), PrefilterConfig()
    )
    off = KeyLogic(
        ("cpu", "latency_ms", "requests", "errors"),
        FeatureConfig(),
        PrefilterConfig(),
        DetectorConfig(enabled=False),
    )
    assert logic.state_size == off.state_size + det.nbytes
    # room for the alert state's typical size (a sketch with ~5-15 bins, 100-200 bytes)
    assert logic.state_size <= 2048 - 128
    # long runs or many visits: 8 bytes per bin
    wide = SeasonalDetector(("x",), dataclasses.replace(det_cfg, readapt_after=65))
    assert wide.nbytes == 16 + 4 * (2 + window) + 44 + 8 * det_cfg.season_bins


def test_bin_codes_track_mean_and_spread_without_bias():
    # a stationary bin: its decoded mean and variance match float64 statistics of
    # the same weighted updates (the dithered codes do not drift)
    rng = np.random.default_rng(13)
    n = 48 * 200
    ts = T0 + 1800.0 * np.arange(n)  # one event per bin: 200 visits each
    x = 1000.0 + rng.normal(0.0, 2.0, n)
    x[::701] += 60.0  # spikes: the range (and the code step) is much wider than the spread
    det = SeasonalDetector(("x",), DetectorConfig())
    st = det.new_buffer()
    for t, v in zip(ts, x, strict=True):
        det.step(st, float(t), [float(v)])
    means = np.array([det.bin_state(st, 0, k)[1] for k in range(48)])
    sds = np.sqrt([det.bin_state(st, 0, k)[2] for k in range(48)])
    assert abs(means.mean() - 1000.0) < 0.3
    assert 1.6 < np.median(sds) < 2.4


def test_slow_season_half_life_with_wide_counts_builds_fast_and_learns_as_the_full_table(
    monkeypatch,
):
    # readapt_after > 64 needs wide count codes; a half-life of 1e5 visits then asks
    # for ~3e6 learning rates (1e9: ~4e10, which used to hang the constructor):
    # past RATE_TABLE_MAX they are computed by the table's own expression
    from streamsift.models import seasonal

    cfg = DetectorConfig(season_half_life=1e5, readapt_after=100, season_bins=1)
    slow = SeasonalDetector(("x",), DetectorConfig(season_half_life=1e9, readapt_after=100))
    assert len(slow._rates) == seasonal.RATE_TABLE_MAX
    xs = [10.0 + (i % 7) * 0.5 for i in range(5000)]  # one bin: visits reach 5,000

    def run():
        det = SeasonalDetector(("x",), cfg)
        st = det.new_buffer()
        out = [det.step(st, 0.0, [x]) for x in xs]
        assert det.bin_state(st, 0, 0)[0] > 4096  # visits past the table
        return out, det.encode(st), len(det._rates)

    small, small_state, n_small = run()
    monkeypatch.setattr(seasonal, "RATE_TABLE_MAX", 10_000)
    full, full_state, n_full = run()
    assert (n_small, n_full) == (4096, 10_000)
    assert small == full and small_state == full_state
