"""The NAB scorer against hand-built examples and an independent brute-force reference."""

from __future__ import annotations

import json
import math
import random

import pytest

from streamsift.evaluation.nab import (
    PROFILES,
    NABScorer,
    Profile,
    load_labels,
    optimize_threshold,
    pool_window_metrics,
    probationary_length,
    scaled_sigmoid,
    score_at_threshold,
    scores_by_threshold,
    sweep_points,
    window_indices,
    window_metrics,
)


def _s(x: float) -> float:
    """NAB's scaled sigmoid, written out independently of the module."""
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _reference_score(ts, scores, windows, profile, threshold, probation_percent=0.15):
    """Brute force, straight from NAB's rules: detections are rows with
    score >= threshold after the probationary period; a window earns its earliest
    detection's weight or -A_FN; each detection outside windows costs its sigmoid
    relative to the preceding window (or the full A_FP without one)."""
    n = len(ts)
    prob = min(math.floor(probation_percent * n), probation_percent * 5000)
    bounds = []
    for a, b in windows:
        rows = [i for i, t in enumerate(ts) if a <= t <= b]
        if rows:
            bounds.append((rows[0], rows[-1]))
    total = 0.0
    for left, right in bounds:
        if right < prob:
            continue
        width = right - left + 1
        hits = [i for i in range(left, right + 1) if i >= prob and scores[i] >= threshold]
        if hits:
            i = hits[0]
            total += _s(-(right - i + 1) / width) * profile.tp_weight / _s(-1.0)
        else:
            total -= profile.fn_weight
    for i in range(n):
        if i < prob or scores[i] < threshold:
            continue
        if any(left <= i <= right for left, right in bounds):
            continue
        before = [(left, right) for left, right in bounds if right < i]
        if not before:
            total -= profile.fp_weight
        else:
            left, right = before[-1]
            total += _s((i - right) / max(right - left, 1)) * profile.fp_weight
    return total


def _hourly(n):
    return [3600.0 * i for i in range(n)]


# --------------------------------------------------------------------------- building blocks


def test_scaled_sigmoid_matches_nab_definition():
    for x in (-1.0, -0.5, -0.1, 0.0, 0.2, 1.0, 2.9, 3.0):
        assert scaled_sigmoid(x) == pytest.approx(2.0 / (1.0 + math.exp(5.0 * x)) - 1.0, abs=1e-15)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866142981514303)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(3.01) == -1.0


def test_probationary_period_is_15_percent_capped_at_750_rows():
    assert probationary_length(4032) == 604
    assert probationary_length(5000) == 750
    assert probationary_length(20000) == 750
    assert probationary_length(7) == 1


def test_profiles_have_nab_weights():
    assert PROFILES["standard"] == Profile("standard", 1.0, 0.11, 1.0)
    assert PROFILES["reward_low_FP_rate"] == Profile("reward_low_FP_rate", 1.0, 0.22, 1.0)
    assert PROFILES["reward_low_FN_rate"] == Profile("reward_low_FN_rate", 1.0, 0.11, 2.0)


def test_profile_rejects_bad_weights_naming_them():
    with pytest.raises(ValueError, match=r"tp_weight must be > 0; got 0"):
        Profile("x", tp_weight=0)
    with pytest.raises(ValueError, match=r"fn_weight must be a finite number >= 0; got nan"):
        Profile("x", fn_weight=float("nan"))


def test_sweep_scores_false_positives_relative_to_preceding_window():
    ts = _hourly(40)
    pts = sweep_points(ts, [0.0] * 40, [(3600.0 * 10, 3600.0 * 19)], "f", PROFILES["standard"], 0.0)
    # before any window: the full A_FP
    assert pts[5].sweep_score == pytest.approx(-0.11)
    # inside: earliest row worth exactly A_TP, decreasing towards the right edge
    assert pts[10].sweep_score == 1.0
    inside = [pts[i].sweep_score for i in range(10, 20)]
    assert inside == sorted(inside, reverse=True) and inside[-1] > 0
    # after: small penalty right after the window, growing with the distance
    after = [pts[i].sweep_score for i in range(20, 40)]
    assert after == sorted(after, reverse=True)
    assert pts[20].sweep_score == pytest.approx(0.11 * _s(1 / 9))
    assert -0.11 <= after[-1] < -0.10
    assert [p.window for p in pts[9:21]] == [None] + ["f|0"] * 10 + [None]


def test_probationary_rows_are_marked_and_never_scored():
    ts = _hourly(100)
    scores = [1.0 if i < 15 else 0.0 for i in range(100)]
    pts = sweep_points(ts, scores, [(3600.0 * 50, 3600.0 * 59)], "f", PROFILES["standard"])
    assert [p.window for p in pts[:15]] == ["probationary"] * 15
    assert pts[15].window is None
    best = optimize_threshold(pts, PROFILES["standard"])
    # the detections at 1.0 are all probationary: detecting "them" changes nothing
    assert best.score == -1.0 and best.tp == 0 and best.fp == 0


# --------------------------------------------------------------------------- hand-built corpus


def _mixed_file():
    """100 hourly rows, window rows 50..59; detections (score 1) at row 10
    (probationary), 30 (FP, no window before), 55 and 57 (in the window), 62 (FP
    just after the window)."""
    ts = _hourly(100)
    scores = [1.0 if i in (10, 30, 55, 57, 62) else 0.0 for i in range(100)]
    return ts, scores, [(3600.0 * 50, 3600.0 * 59)]


@pytest.mark.parametrize(
    "profile_name,fp,fn",
    [("standard", 0.11, 1.0), ("reward_low_FP_rate", 0.22, 1.0), ("reward_low_FN_rate", 0.11, 2.0)],
)
def test_known_tp_fp_mix_gives_exact_raw_and_normalized_scores(profile_name, fp, fn):
    ts, scores, windows = _mixed_file()
    scorer = NABScorer()
    scorer.learn_file("mixed.csv", ts, scores, windows)
    res = scorer.score(PROFILES[profile_name])
    tp_part = _s(-(59 - 55 + 1) / 10) / _s(-1.0)  # only the earliest detection counts
    fp_part = -fp + fp * _s((62 - 59) / 9)
    expected_raw = tp_part + fp_part
    assert res.threshold == 1.0
    assert res.raw == pytest.approx(expected_raw, abs=1e-12)
    assert res.null == -fn and res.perfect == 1.0
    assert res.normalized == pytest.approx(100 * (expected_raw + fn) / (1.0 + fn), abs=1e-9)
    assert res.per_file["mixed.csv"].raw == pytest.approx(expected_raw, abs=1e-12)
    assert res.per_file["mixed.csv"].detections == 4  # 30, 55, 57, 62


def test_standard_profile_of_the_mix_in_numbers():
    ts, scores, windows = _mixed_file()
    scorer = NABScorer()
    scorer.learn_file("mixed.csv", ts, scores, windows)
    res = scorer.score(PROFILES["standard"])
    # 0.859793 (TP at half the window) - 0.11 (FP, no window before) - 0.075049 (FP 3 rows after)
    assert round(res.raw, 6) == 0.674744
    assert round(res.normalized, 4) == 83.7372


def test_perfect_detector_scores_100_and_null_detectors_score_0():
    files = {
        "a.csv": (_hourly(300), [(3600.0 * 100, 3600.0 * 129), (3600.0 * 200, 3600.0 * 209)]),
        "b.csv": (_hourly(200), [(3600.0 * 150, 3600.0 * 160)]),
        "c.csv": (_hourly(120), []),
    }
    for profile in PROFILES.values():
        perfect, null, zero = NABScorer(), NABScorer(), NABScorer()
        for name, (ts, windows) in files.items():
            starts = {i for a, _b in windows for i, t in enumerate(ts) if t == a}
            perfect.learn_file(
                name, ts, [1.0 if i in starts else 0.0 for i in range(len(ts))], windows
            )
            null.learn_file(name, ts, [0.5] * len(ts), windows)
            zero.learn_file(name, ts, [0.0] * len(ts), windows)
        p, n, z = perfect.score(profile), null.score(profile), zero.score(profile)
        assert p.normalized == 100.0
        assert p.raw == p.perfect == 3 * profile.tp_weight
        assert n.normalized == 0.0 and z.normalized == 0.0
        assert n.raw == n.null == -3 * profile.fn_weight
        assert p.per_file["a.csv"].normalized == 100.0
        assert p.per_file["c.csv"].normalized is None  # no window: perfect == null


def test_more_detections_inside_a_window_do_not_change_the_score():
    ts = _hourly(200)
    windows = [(3600.0 * 100, 3600.0 * 119)]
    one = [1.0 if i == 105 else 0.0 for i in range(200)]
    many = [1.0 if 105 <= i <= 119 else 0.0 for i in range(200)]
    a = sweep_points(ts, one, windows, "f", PROFILES["standard"])
    b = sweep_points(ts, many, windows, "f", PROFILES["standard"])
    assert score_at_threshold(a, PROFILES["standard"], 1.0).score == pytest.approx(
        score_at_threshold(b, PROFILES["standard"], 1.0).score, abs=1e-15
    )


def test_one_threshold_is_optimised_over_all_files_and_per_file_scores_sum_to_it():
    rng = random.Random(3)
    scorer = NABScorer()
    data = {}
    for k in range(4):
        n = rng.randrange(150, 400)
        ts = _hourly(n)
        a = rng.randrange(80, n - 30)
        windows = [(ts[a], ts[a + rng.randrange(5, 25)])]
        scores = [round(rng.random() ** 4, 3) for _ in range(n)]
        for i in range(a, a + 5):
            scores[i] = min(1.0, scores[i] + 0.6)
        scorer.learn_file(f"f{k}.csv", ts, scores, windows)
        data[f"f{k}.csv"] = (ts, scores, windows)
    prof = PROFILES["standard"]
    res = scorer.score(prof)
    candidates = sorted({s for _ts, sc, _w in data.values() for s in sc} | {1.1})
    corpus = {t: sum(_reference_score(*d, prof, t) for d in data.values()) for t in candidates}
    best = max(corpus.values())
    assert res.raw == pytest.approx(best, abs=1e-9)
    assert corpus[res.threshold] == pytest.approx(best, abs=1e-9)
    assert sum(f.raw for f in res.per_file.values()) == pytest.approx(res.raw, abs=1e-9)
    for name, (ts, sc, w) in data.items():
        assert res.per_file[name].raw == pytest.approx(
            _reference_score(ts, sc, w, prof, res.threshold), abs=1e-9
        )


@pytest.mark.parametrize("seed", range(12))
def test_sweep_matches_brute_force_reference_at_every_threshold(seed):
    rng = random.Random(seed)
    n = rng.randrange(20, 160)
    ts = _hourly(n)
    windows = []
    i = rng.randrange(0, 10)
    while i < n - 2:
        j = min(n - 1, i + rng.randrange(0, 12))
        windows.append((ts[i], ts[j]))
        i = j + 1 + rng.randrange(1, 30)
    scores = [rng.choice([0.0, 0.1, 0.5, 0.5, 0.9, 1.0, rng.random()]) for _ in range(n)]
    for profile in PROFILES.values():
        pts = sweep_points(ts, scores, windows, "f", profile)
        table = scores_by_threshold(pts, profile)
        assert [t.threshold for t in table] == sorted({t.threshold for t in table}, reverse=True)
        for row in table:
            expected = _reference_score(ts, scores, windows, profile, row.threshold)
            assert row.score == pytest.approx(expected, abs=1e-9), (seed, profile.name, row)


# --------------------------------------------------------------------------- windows and labels


def test_windows_are_mapped_to_rows_by_time():
    ts = [0.0, 300.0, 600.0, 900.0, 1200.0]
    assert window_indices(ts, [(250.0, 700.0), (1000.0, 1100.0), (1150.0, 5000.0)]) == [
        (1, 2),
        (4, 4),
    ]


def test_unsorted_timestamps_and_bad_scores_are_rejected_naming_the_value():
    with pytest.raises(ValueError, match=r"timestamps must be sorted ascending; got 1.0 after 2.0"):
        window_indices([2.0, 1.0], [])
    with pytest.raises(ValueError, match=r"scores\[1\] of 'f' must be in \[0, 1\]; got 1.5"):
        NABScorer().learn_file("f", [0.0, 1.0], [0.0, 1.5], [])
    with pytest.raises(ValueError, match=r"probation_percent must be in \[0, 1\]; got 2"):
        NABScorer(probation_percent=2)
    with pytest.raises(ValueError, match=r"score needs at least one file"):
        NABScorer().score(PROFILES["standard"])


def test_load_labels_parses_nab_format_as_utc(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(
        json.dumps(
            {
                "dir/b.csv": [
                    ["2014-04-11 00:00:00.000000", "2014-04-11 01:00:00.000000"],
                    ["2014-04-10 07:15:00.000000", "2014-04-10 08:00:00.000000"],
                ],
                "a.csv": [],
            }
        )
    )
    labels = load_labels(str(path))
    assert labels["a.csv"] == []
    # 2014-04-10T07:15:00Z = 1397114100, sorted by start
    assert labels["dir/b.csv"] == [(1397114100.0, 1397116800.0), (1397174400.0, 1397178000.0)]


def test_load_labels_rejects_reversed_window(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"a.csv": [["2014-04-11 00:00:00", "2014-04-10 00:00:00"]]}))
    with pytest.raises(ValueError, match=r"labels\['a.csv'\]\[0\] must have start <= end"):
        load_labels(str(path))


def test_window_metrics_skip_the_probationary_period():
    ts = _hourly(100)  # probation: rows 0..14
    alerts = [i in (5, 40, 52, 53, 80) for i in range(100)]
    windows = [(3600.0 * 2, 3600.0 * 8), (3600.0 * 50, 3600.0 * 59), (3600.0 * 70, 3600.0 * 75)]
    m = window_metrics(ts, alerts, windows)
    assert m.windows == 2  # the first window lies inside the probationary period
    assert (m.detected, m.alerts, m.true_alerts, m.false_alerts) == (1, 4, 2, 2)
    assert m.time_to_detect_s == (7200.0, None)
    assert m.scored_days == pytest.approx((99 - 15) / 24)
    assert m.false_alerts_per_day == pytest.approx(2 / ((99 - 15) / 24))
    assert (m.precision, m.recall) == (0.5, 0.5)
    pooled = pool_window_metrics([m, m])
    assert (pooled.windows, pooled.false_alerts, pooled.precision) == (4, 4, 0.5)
    assert pooled.false_alerts_per_day == pytest.approx(m.false_alerts_per_day)
