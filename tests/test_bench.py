"""``streamsift bench`` end to end on a tiny stream: every part runs in its own
process, and what it reports must add up.

One run (module fixture) of the harness with every contender, the per-key
state measurement, the model-stage comparison and the profile; the tests then
check the results JSON against the stream and each other, and the Markdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

# ``benchmarks`` is packaged next to ``streamsift``; until the editable install
# is refreshed (pip install -e .) it is only importable from the repository root.
if importlib.util.find_spec("benchmarks") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchSpec, bench_config, payload_digest
from benchmarks.contenders import CONTENDERS
from benchmarks.harness import add_arguments, main
from benchmarks.report import SECTIONS

pytestmark = pytest.mark.slow

EVENTS = 200
KEYS = 3
FEATURES = 8
SEED = 5
KEY_COUNT = 120
EVENTS_PER_KEY = 2
BATCH_SIZES = (1, 4)
PROFILE_EVENTS = 150


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamsift bench")
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    args = _parse(
        [
            "--events", str(EVENTS),
            "--keys", str(KEYS),
            "--features", str(FEATURES),
            "--seed", str(SEED),
            "--history-hours", "1",
            "--key-counts", str(KEY_COUNT),
            "--events-per-key", str(EVENTS_PER_KEY),
            "--batch-sizes", ",".join(map(str, BATCH_SIZES)),
            "--model-rows", "4",
            "--profile-events", str(PROFILE_EVENTS),
            "--out", str(tmp / "RESULTS.md"),
            "--json-out", str(tmp / "results.json"),
            "--work-dir", str(tmp / "work"),
        ]
    )  # fmt: skip
    rc = main(args)
    res = json.loads((tmp / "results.json").read_text(encoding="utf-8"))
    md = (tmp / "RESULTS.md").read_text(encoding="utf-8")
    return rc, res, md, tmp


def test_run_succeeds_and_writes_every_section_in_order(bench):
    rc, res, md, _ = bench
    assert rc == 0, res
    positions = [md.index(s + "\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert f"--events {EVENTS} --keys {KEYS} --features {FEATURES} --seed {SEED}" in md
    assert "apache-beam 2.77" in md and "Python 3." in md and "CPUs (nproc)" in md


def test_every_contender_saw_the_same_seeded_events(bench):
    _, res, _, _ = bench
    from streamsift.synthetic import generate

    cfg = bench_config(BenchSpec(events=EVENTS, keys=KEYS, features=FEATURES, seed=SEED), "m")
    stream = generate(cfg.synthetic, cfg.input)
    assert res["stream"]["payloads"] == len(stream.payloads) == EVENTS
    assert res["stream"]["sha256"] == payload_digest(stream.payloads)
    assert res["stream"]["valid"] == stream.n_valid
    contenders = res["contenders"]
    assert list(contenders) == list(CONTENDERS)
    for name, c in contenders.items():
        assert "error" not in c, (name, c)
        assert c["payload_sha256"] == res["stream"]["sha256"], name
        assert c["events_in"] == EVENTS, name
    # every valid event reached each detector (full: processed or routed late)
    assert contenders["full"]["valid"] == stream.n_valid
    assert contenders["full"]["details"]["dead_lettered"] == stream.n_malformed
    assert contenders["beam_zscore"]["valid"] == contenders["beam_zscore"]["outputs"]
    assert contenders["beam_zscore"]["valid"] == stream.n_valid
    assert contenders["reference"]["valid"] == stream.n_valid
    assert contenders["floor"]["outputs"] == EVENTS
    assert res["consistency"] == {
        "ok": True,
        "problems": [],
        "events_in": EVENTS,
        "valid": stream.n_valid,
    }


def test_alert_counts_are_reported_and_add_up(bench):
    _, res, md, _ = bench
    c = res["contenders"]
    full = c["full"]["details"]
    # new alerts written = alerts opened - the ones the rate limit suppressed
    assert c["full"]["alerts"] == full["alerts_opened"] - full["alerts_suppressed"]
    assert sum(full["alerts_by_severity"].values()) == c["full"]["alerts"]
    assert full["processed"] + full["late"] + full["dead_lettered"] == EVENTS
    # RunInference handed the model exactly the escalated events, in >= 1 batches
    assert full["stage2_rows"] == full["escalated"] == full["stage2_scored"]
    assert 0 < full["stage2_batches"] <= full["stage2_rows"]
    assert 0 <= c["beam_zscore"]["alerts"] <= c["beam_zscore"]["outputs"]
    assert 0 <= c["reference"]["alerts"] <= c["reference"]["valid"]
    assert c["floor"]["alerts"] == c["floor"]["outputs"]
    for name, r in c.items():
        assert r["wall_s"] > 0 and r["peak_rss_mb"] >= r["rss_start_mb"] > 0, name
        row = next(line for line in md.splitlines() if f"(`{name}`) |" in line)
        assert f"| {r['alerts']:,} |" in row, (name, row)


def test_ratios_compare_full_with_each_contender(bench):
    _, res, md, _ = bench
    c = res["contenders"]
    pairs = {r["other"]: r for r in res["ratios"] if r["base"] == "full"}
    assert set(pairs) == {"beam_zscore", "floor", "reference"}
    batched = {r["other"] for r in res["ratios"] if r["base"] == "batched"}
    assert batched == {"beam_zscore", "floor", "reference", "full"}
    # both engines gave the same alerts and detection counters on the bench stream
    assert res["identity"]["alerts_identical"] and res["identity"]["counters_identical"]
    for other, r in pairs.items():
        assert r["throughput"] == pytest.approx(
            c["full"]["events_per_s"] / c[other]["events_per_s"]
        )
        assert r["peak_rss"] == pytest.approx(c["full"]["peak_rss_mb"] / c[other]["peak_rss_mb"])
        assert f"`full / {other}`" in md


def test_state_per_key_matches_the_logic(bench):
    _, res, md, _ = bench
    from streamsift.config import FeatureConfig, PrefilterConfig
    from streamsift.models.keylogic import KeyLogic

    spec = BenchSpec(features=FEATURES)
    size = KeyLogic(spec.fields, FeatureConfig(), PrefilterConfig()).state_size
    b = res["state"]["breakdown"]
    assert b["keylogic"] == size
    assert b["total_min"] == size + b["meta"] + b["alert_empty"] + b["alert_chain"]
    assert b["alert_max"] > b["alert_empty"]
    (scaling,) = res["state"]["scaling"]
    assert scaling["mode"] == "direct"
    assert scaling["n_keys"] == KEY_COUNT
    assert scaling["events"] == KEY_COUNT * EVENTS_PER_KEY
    assert scaling["keylogic_bytes"] == size
    assert scaling["state_bytes_per_key"] >= size + b["meta"] + b["alert_empty"]
    assert f"| {KEY_COUNT:,} | {KEY_COUNT * EVENTS_PER_KEY:,} |" in md


def test_model_stage_scores_every_row_each_way(bench):
    _, res, md, _ = bench
    ms = res["model_stage"]
    assert "error" not in ms, ms
    assert [e["batch_size"] for e in ms["batches"]] == list(BATCH_SIZES)
    for e in ms["batches"]:
        assert e["rows"] >= 16 * e["batch_size"]
        assert e["rows_out"] == e["rows"] == e["baseline_rows_out"]
        for m in ("handler", "decision_function"):
            assert e[f"{m}_us_per_row"] > 0
        # RunInference's net cost is pipeline - baseline, or None within the noise
        net = e["pipeline_s"] - e["baseline_s"]
        if e["runinference_s"] is None:
            assert net <= 0.1 * e["baseline_s"]
        else:
            assert e["runinference_s"] == pytest.approx(net)
    assert "RunInference net us/row" in md


def test_profile_attributes_worker_time_to_stages(bench):
    _, res, md, _ = bench
    pr = res["profile"]
    assert "error" not in pr, pr
    assert pr["full"]["events_in"] == PROFILE_EVENTS
    w = pr["worker"]
    assert sum(w["stages"].values()) == pytest.approx(w["total_s"], rel=1e-3)
    assert sum(w["layers"].values()) == pytest.approx(w["total_s"], rel=1e-3)
    assert w["stages"]["DetectPerKey"] > 0
    assert w["stages"]["Stage2 (RunInference + model)"] > 0
    assert w["top_self"] and w["top_streamsift_inclusive"]
    assert f"pyinstrument {pr['pyinstrument']}" in md


def test_not_measured_yet_names_kafka_and_the_portable_runners(bench):
    _, _, md, _ = bench
    section = md.split("## Not measured yet", 1)[1]
    assert "Kafka" in section and "Prism" in section and "Flink" in section


def test_bad_arguments_fail_before_running_anything(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert main(_parse(["--contenders", "full,zscore", "--out", str(out)])) == 2
    assert "contenders must be a comma list" in capsys.readouterr().err
    assert main(_parse(["--batch-sizes", "1,0", "--out", str(out)])) == 2
    assert main(_parse(["--events", "0", "--out", str(out)])) == 2
    assert not out.exists()


def test_from_json_re_renders_the_same_file(bench):
    _, _, md, tmp = bench
    again = tmp / "again.md"
    args = _parse(["--from-json", str(tmp / "results.json"), "--out", str(again)])
    assert main(args) == 0
    assert again.read_text(encoding="utf-8") == md
