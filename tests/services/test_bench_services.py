"""``streamsift bench``'s broker and runner parts against the real services.

* the Kafka latency measurement (benchmarks/latency.py) for a few seconds at a
  low rate: a producer paces synthetic events into a fresh topic, ``streamsift
  run --source kafka`` consumes it in a child process, and the latencies are
  read back from the pipeline's alert and processed-audit topics;
* the runner floor on Prism (benchmarks/runners.py), with the prism process's
  RSS sampled next to the contender's.

Small stream and model (5 keys, 4 fields, 1 h of history) to stay well under a
minute; no timing assertions beyond "a latency is a positive number".
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("benchmarks") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import BenchSpec, bench_config, payload_digest, write_payloads

pytestmark = pytest.mark.services

SPEC = BenchSpec(events=600, keys=5, features=4, seed=3, history_hours=1.0)
RATE = 100.0
SECONDS = 4.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    from streamsift.pipeline.run import ensure_model

    d = str(tmp_path_factory.mktemp("bench-model"))
    ensure_model(bench_config(SPEC, d), d)
    return d


def test_kafka_latency_at_a_low_offered_load(kafka_bootstrap, model_dir, tmp_path):
    from benchmarks.latency import LatencyPlan, measure_latency, parse_latency_modes

    (mode,) = parse_latency_modes("arrival")
    plan = LatencyPlan(rate=RATE, seconds=SECONDS, mode=mode, stop_when_idle_s=2.0)
    r = measure_latency(
        plan, SPEC, bootstrap=kafka_bootstrap, model_dir=model_dir, work_dir=str(tmp_path)
    )
    assert r["pipeline_end"] == "drained" and r["pipeline_exit_code"] == 0
    # offered vs achieved: every planned event went out, at the offered pace
    assert r["sent"] == plan.events == 400
    assert 0 < r["sent_valid"] <= r["sent"]
    assert r["achieved_per_s"] == pytest.approx(RATE, rel=0.1)
    assert r["measured_s"] == pytest.approx((plan.events - 1) / RATE, rel=0.1)
    # the pipeline read every record the producer sent: warm-up + measured + tail
    c = r["pipeline_counters"]
    assert c["events_in"] == r["warmup_events"] + r["sent"] + r["tail_events"]
    assert c["source_read"] == c["events_in"]
    # every valid measured event came back on the processed topic, once, at 100/s
    p = r["processed_latency"]
    assert r["processed_in_window"] == r["sent_valid"] == p["count"]
    assert r["unprocessed"] == 0 and p["censored"] == 0
    assert 0 < p["p50"] <= p["p99"] <= p["max"]
    assert r["kept_up"]
    # alerts were raised (injected incidents) and each one's latency measured
    a = r["alert_latency"]
    assert a["count"] == r["alerts_new"] + r["alerts_updates"] > 0
    assert a["count"] <= c["alerts_emitted"]
    assert 0 < a["p50"] <= a["p99"] <= a["max"]
    assert r["engine_effective"] in ("per_element", "batched")
    assert r["pipeline_peak_rss_mb"] > 50


def test_floor_on_prism_reports_the_runner_process(prism_bin, model_dir, tmp_path):
    from benchmarks.contenders import ContenderInputs
    from benchmarks.runners import run_portable
    from streamsift.synthetic import generate

    cfg = bench_config(SPEC, model_dir)
    payloads = generate(cfg.synthetic, cfg.input).payloads
    path = str(tmp_path / "payloads.jsonl")
    write_payloads(path, payloads)
    inputs = ContenderInputs(SPEC, path, "", "", str(tmp_path))
    r = run_portable("floor", "prism", inputs, "per_element")
    assert r["events_in"] == r["outputs"] == SPEC.events
    assert r["payload_sha256"] == payload_digest(payloads)
    assert r["details"]["runner"] == "PrismRunner"
    procs = r["details"]["runner_processes"]
    prism = [p for p in procs["processes"] if p["name"] == "prism"]
    assert prism and prism[0]["peak_rss_mb"] > 0
    assert procs["tree_peak_mb"] > r["rss_start_mb"]
