"""``streamsift evaluate``: CSV input, per-event scores, end-to-end runs on tiny series."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from streamsift.config import Config, ModelConfig, PrefilterConfig, SyntheticConfig
from streamsift.evaluation.evaluate import (
    evaluate,
    event_score,
    input_config_for,
    read_series,
    replay_stage_scores,
    series_payloads,
    zscore_to_unit,
)
from streamsift.models.keylogic import KeyLogic, compute_features
from streamsift.parsing import EventParser
from streamsift.records import DeadLetter, Event

_START = datetime(2014, 4, 1, tzinfo=timezone.utc)
_STEP = timedelta(minutes=5)
N_ROWS = 400
SPIKE = 300


def _stamp(i: int) -> str:
    return (_START + i * _STEP).strftime("%Y-%m-%d %H:%M:%S")


def _write_series(path, seed: int, spike: int | None) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for i in range(N_ROWS):
            v = 50.0 + 5.0 * math.sin(2 * math.pi * i / 288) + rng.normal(0.0, 1.0)
            if spike is not None and i == spike:
                v += 80.0
            w.writerow([_stamp(i), round(v, 3)])


def _window(a: int, b: int) -> list[str]:
    return [_stamp(a) + ".000000", _stamp(b) + ".000000"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nabmini")
    data = root / "data"
    _write_series(data / "spiky" / "one.csv", seed=1, spike=SPIKE)
    _write_series(data / "calm.csv", seed=2, spike=None)
    labels = {"spiky/one.csv": [_window(SPIKE - 10, SPIKE + 20)], "calm.csv": []}
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def _small_cfg(model_dir: str) -> Config:
    return dataclasses.replace(
        Config(),
        model=dataclasses.replace(ModelConfig(), dir=model_dir, n_estimators=25, history_hours=3.0),
        synthetic=dataclasses.replace(SyntheticConfig(), keys=8),
    )


@pytest.fixture(scope="module")
def streamsift_run(dataset):
    out = dataset / "out"
    summary = evaluate(
        str(dataset / "data"),
        str(dataset / "labels.json"),
        str(out),
        "streamsift",
        _small_cfg(str(dataset / "unused-model-dir")),
    )
    return out, summary


@pytest.fixture(scope="module")
def zscore_run(dataset):
    out = dataset / "out"
    return out, evaluate(
        str(dataset / "data"), str(dataset / "labels.json"), str(out), "beam-zscore"
    )


def _read_scores(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- pure parts


def test_read_series_keeps_numeric_columns_and_parses_utc(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("timestamp,cpu,host,mem\n2014-04-10 07:15:00,1.5,a,7\n2014-04-10 07:20:00,2,b,\n")
    s = read_series(str(p), "m.csv")
    assert s.fields == ("cpu", "mem")
    assert s.ts == (1397114100.0, 1397114400.0)
    assert s.values == ((1.5, 7.0), (2.0, None))


def test_read_series_names_file_and_line_of_a_bad_timestamp(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("timestamp,value\n2014-04-10 07:15:00,1\nnot a time,2\n")
    with pytest.raises(ValueError, match=r"^bad.csv:3: time 'not a time' is not ISO 8601"):
        read_series(str(p), "bad.csv")
    p.write_text("time,value\n1,2\n")
    with pytest.raises(ValueError, match=r"bad.csv: CSV must have a 'timestamp' column"):
        read_series(str(p), "bad.csv")


def test_payloads_parse_back_to_the_rows_in_event_time_order(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(
        "timestamp,cpu,mem\n2014-04-10 07:20:00,2,3\n2014-04-10 07:15:00,1.5,7\n"
        "2014-04-10 07:25:00,4,\n"
    )
    s = read_series(str(p), "dir/m.csv")
    icfg = input_config_for(s)
    parser = EventParser(icfg)
    got = [parser.parse(b) for b in series_payloads(s, icfg)]
    assert got[0] == Event("dir/m.csv", 1397114100.0, (1.5, 7.0))
    assert got[1] == Event("dir/m.csv", 1397114400.0, (2.0, 3.0))
    assert isinstance(got[2], DeadLetter) and got[2].error_kind == "missing_feature"


def test_event_score_is_monotone_and_ranks_escalated_events_first():
    s1 = [0.0, 0.5, 1.0, 2.9, 3.0, 10.0, 49.0, 50.0]
    low = [event_score(x, -1.0, 3.0) for x in s1]
    assert low == sorted(low) and len(set(low)) == len(low)
    assert all(0.0 <= v < 0.5 for v in low)
    high = [event_score(3.0, s2, 3.0) for s2 in (0.0, 0.3, 0.9, 0.999, 1.0)]
    assert high == sorted(high) and high[0] == 0.5 and high[-1] == 1.0
    with pytest.raises(ValueError, match=r"stage2 must be in \[0, 1\] or negative"):
        event_score(1.0, 1.5, 3.0)


def test_zscore_map_is_monotone_into_unit_interval():
    zs = [0.0, 0.1, 1.0, 3.0, 6.0, 30.0]
    us = [zscore_to_unit(z) for z in zs]
    assert us == sorted(us) and us[0] == 0.0 and us[-1] < 1.0
    assert zscore_to_unit(3.0) == pytest.approx(1 - math.exp(-1))


def test_replay_stage1_equals_the_training_feature_path(tmp_path):
    p = tmp_path / "s.csv"
    _write_series(p, seed=5, spike=200)
    s = read_series(str(p), "s.csv")
    cfg = dataclasses.replace(Config(), prefilter=PrefilterConfig(warmup_events=10))

    class Half:  # stands in for the model: every escalated event scores 0.5
        def calibrated(self, X):
            return np.full(len(X), 0.5)

    r = replay_stage_scores(s, cfg, Half())
    logic = KeyLogic(s.fields, cfg.features, cfg.prefilter)
    _rows, _X, stage1 = compute_features(
        logic, [(s.name, t, v) for t, v in zip(s.ts, s.values, strict=True)]
    )
    assert list(r.stage1) == stage1.tolist()
    assert r.processed == N_ROWS and r.escalated >= 1
    assert r.stage2[200] == 0.5  # the spike is escalated
    assert sum(1 for x in r.stage2 if x >= 0) == r.escalated


# --------------------------------------------------------------------------- end to end


def test_streamsift_anomaly_score_is_the_per_key_detector_score(streamsift_run, dataset):
    _out, summary = streamsift_run

    class Zero:  # stage 2 does not enter anomaly_score while the detector is enabled
        def calibrated(self, X):
            return np.zeros(len(X))

    cfg = Config()
    for name, f in summary["files"].items():
        series = read_series(str(dataset / "data" / name), name)
        replay = replay_stage_scores(series, cfg, Zero())
        written = [float(r["anomaly_score"]) for r in _read_scores(f["scores_csv"])]
        assert written == list(replay.anomaly)
        assert all(a == 0.0 for a in written[: cfg.detector.warmup_events - 1])  # warm-up
    spiky = [
        float(r["anomaly_score"])
        for r in _read_scores(summary["files"]["spiky/one.csv"]["scores_csv"])
    ]
    assert spiky[SPIKE] == 1.0 == max(spiky)  # a new extreme after the warm-up


def test_streamsift_evaluation_writes_scores_and_matches_the_pipeline(streamsift_run, dataset):
    out, summary = streamsift_run
    assert set(summary["files"]) == {"calm.csv", "spiky/one.csv"}
    for f in summary["files"].values():
        # every row's scores come from the pipeline's per-key stage (scores
        # output), and the bounded replay reproduces them exactly
        assert f["consistent"], f["checks"]
        assert f["checks"]["processed"] == [N_ROWS, N_ROWS, N_ROWS]
        assert f["checks"]["scores_unmatched"] == f["checks"]["scores_mismatched"] == 0
        rows = _read_scores(f["scores_csv"])
        assert len(rows) == N_ROWS
        assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "alert"]
        assert rows[0]["timestamp"] == _stamp(0)
        assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows)
        assert {r["alert"] for r in rows} <= {"0", "1"}
        assert sum(int(r["alert"]) for r in rows) == f["alerts"]
    spiky = _read_scores(summary["files"]["spiky/one.csv"]["scores_csv"])
    scores = [float(r["anomaly_score"]) for r in spiky]
    # the spike is escalated by stage 1 and scored by stage 2: it ranks in the top group
    assert scores[SPIKE] >= 0.5
    assert scores[SPIKE] >= sorted(scores)[-5]
    assert summary["files"]["spiky/one.csv"]["scores_csv"].endswith("spiky/streamsift_one.csv")
    on_disk = json.loads((out / "streamsift" / "summary.json").read_text())
    assert on_disk["nab"] == summary["nab"]


def test_streamsift_summary_scores_all_three_profiles(streamsift_run):
    _out, summary = streamsift_run
    assert set(summary["nab"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for p, r in summary["nab"].items():
        assert r["perfect"] == 1.0  # one label window in the corpus
        assert r["null"] == (-2.0 if p == "reward_low_FN_rate" else -1.0)
        assert r["score"] == pytest.approx(100 * (r["raw"] - r["null"]) / (1.0 - r["null"]))
    wm = summary["overall"]["window_metrics"]
    assert wm["windows"] == 1
    assert wm["alerts"] == sum(f["window_metrics"]["alerts"] for f in summary["files"].values())


def test_beam_zscore_baseline_flags_the_spike(zscore_run):
    _out, summary = zscore_run
    rows = _read_scores(summary["files"]["spiky/one.csv"]["scores_csv"])
    scores = [float(r["anomaly_score"]) for r in rows]
    assert len(rows) == N_ROWS
    assert scores[SPIKE] == max(scores)
    assert rows[SPIKE]["alert"] == "1"
    assert scores[0] == 0.0  # warm-up: ZScore cannot score the first point
    nab = summary["nab"]["standard"]
    # the spike is the top score and lies at the window's first third: a clean detection
    assert nab["threshold"] == max(scores)
    assert nab["score"] > 50.0


def test_cli_evaluate_reports_and_fails_cleanly(dataset, tmp_path, capsys):
    from streamsift.pipeline.cli import main

    missing = ["evaluate", "--data", str(tmp_path / "nope"), "--labels", "x.json"]
    assert main(missing) == 2
    assert "--data" in capsys.readouterr().err
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"calm.csv": []}))
    args = ["evaluate", "--data", str(dataset / "data"), "--labels", str(labels)]
    assert main([*args, "--out", str(tmp_path / "o"), "--detector", "beam-zscore"]) == 2
    assert "got none for ['spiky/one.csv']" in capsys.readouterr().err
