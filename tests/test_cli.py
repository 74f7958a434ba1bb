"""The command line, end to end (small synthetic stream on the DirectRunner)."""

from __future__ import annotations

import json
import os

import pytest

from streamsift import synthetic
from streamsift.config import Config
from streamsift.pipeline.cli import main


def test_bad_config_fails_at_start_naming_field_bound_value(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[thresholds]\nquantile = 1.5\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "thresholds.quantile must be in (0, 1); got 1.5" in err


def test_train_writes_a_versioned_artifact(tmp_path, capsys):
    history = synthetic.history(
        Config().synthetic, Config().input, hours=3.0, start_ts=1_767_225_600.0, seed=1
    )
    path = tmp_path / "history.jsonl"
    synthetic.to_jsonl(history, str(path))
    model_dir = tmp_path / "models"
    assert main(["train", "--input", str(path), "--model-dir", str(model_dir)]) == 0
    assert main(["train", "--input", str(path), "--model-dir", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "v0001" in out and "v0002" in out
    meta = json.loads((model_dir / "v0002" / "metadata.json").read_text())
    assert meta["feature_names"] and meta["sha256"]
    assert meta["training_period"][0] < meta["training_period"][1]


@pytest.mark.slow
def test_run_prints_alerts_and_a_reconciled_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.json"
    code = main(
        [
            "run",
            "--events",
            "2500",
            "--keys",
            "10",
            "--seed",
            "5",
            "--summary-json",
            str(summary),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "== streamsift summary ==" in out
    assert "(reconciled: in = processed + dead-lettered + late)" in out
    assert "per event:" in out and "per incident:" in out and "throughput" in out
    data = json.loads(summary.read_text())
    c = data["counters"]
    assert c["events_in"] == 2500
    assert c["events_in"] == c["processed"] + c["dead_lettered"] + c.get("late", 0)
    alerts = [json.loads(line) for line in open(os.path.join("streamsift-out", "alerts.jsonl"))]
    # each alert was printed as one line with its key and severity
    for a in alerts[:5]:
        assert any(a["key"] in line and a["severity"].upper() in line for line in out.splitlines())
    # the model was trained on first use and is reused afterwards
    assert os.path.exists("streamsift-out/model/v0001/model.joblib")
    # pipeline options after `--` carry the same flags (StreamsiftOptions)
    assert main(["run", "--events", "500", "--keys", "5", "--quiet", "--", "--out_dir=second"]) == 0
    assert os.path.isdir("second")
    assert not os.path.exists("streamsift-out/model/v0002")


def test_file_source_needs_an_existing_path(tmp_path, capsys):
    assert main(["run", "--source", "file"]) == 2
    assert main(["run", "--source", "file", "--path", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
