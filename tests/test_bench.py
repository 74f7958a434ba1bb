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
from collections import Counter
from pathlib import Path

import pytest

# ``benchmarks`` is packaged next to ``streamsift``; until the editable install
# is refreshed (pip install -e .) it is only importable from the repository root.
if importlib.util.find_spec("benchmarks") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchSpec, bench_config, payload_digest
from benchmarks.contenders import CONTENDERS
from benchmarks.harness import add_arguments, build_command, main
from benchmarks.latency import (
    LatencyMode,
    LatencyPlan,
    Pacer,
    analyse,
    latency_summary,
    pace,
    parse_latency_modes,
    percentile,
    pipeline_command,
    prepare_templates,
)
from benchmarks.report import SECTIONS, render_markdown
from benchmarks.runners import runner_availability

slow = pytest.mark.slow

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
            # the portable runners and Kafka have their own tests (tests/services)
            "--runners", "",
            "--latency-loads", "",
        ]
    )  # fmt: skip
    rc = main(args)
    res = json.loads((tmp / "results.json").read_text(encoding="utf-8"))
    md = (tmp / "RESULTS.md").read_text(encoding="utf-8")
    return rc, res, md, tmp


@slow
def test_run_succeeds_and_writes_every_section_in_order(bench):
    rc, res, md, _ = bench
    assert rc == 0, res
    positions = [md.index(s + "\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert f"--events {EVENTS} --keys {KEYS} --features {FEATURES} --seed {SEED}" in md
    assert "apache-beam 2.77" in md and "Python 3." in md and "CPUs (nproc)" in md


@slow
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


@slow
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


@slow
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


@slow
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


@slow
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


@slow
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


@slow
def test_runners_and_latency_say_they_were_not_measured(bench):
    _, res, md, _ = bench
    assert res["runners"]["runs"] == {}
    assert "not measured" in res["latency"]["skipped"]
    runners = md.split("## Portable runners (Prism, Flink)", 1)[1].split("\n## ", 1)[0]
    assert "Not measured in this run (`--runners` empty)." in runners
    latency = md.split("## Latency from Kafka (ingest to alert)", 1)[1].split("\n## ", 1)[0]
    assert "`--latency-loads` empty" in latency
    section = md.split("## Not measured yet", 1)[1]
    assert "Dataflow" in section


def test_bad_arguments_fail_before_running_anything(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert main(_parse(["--contenders", "full,zscore", "--out", str(out)])) == 2
    assert "contenders must be a comma list" in capsys.readouterr().err
    assert main(_parse(["--batch-sizes", "1,0", "--out", str(out)])) == 2
    assert main(_parse(["--events", "0", "--out", str(out)])) == 2
    assert not out.exists()


@slow
def test_from_json_re_renders_the_same_file(bench):
    _, _, md, tmp = bench
    again = tmp / "again.md"
    args = _parse(["--from-json", str(tmp / "results.json"), "--out", str(again)])
    assert main(args) == 0
    assert again.read_text(encoding="utf-8") == md


# --------------------------------------------------------------------------- latency pieces


@pytest.mark.parametrize("rate", [3.0, 7.0, 1000.0, 5000.0])
def test_pacer_counts_a_message_due_exactly_at_its_time(rate):
    p = Pacer(rate, start=1_767_225_600.25)
    for i in (0, 1, 2, 99, 1234, 49_999):
        assert p.due_count(p.due_at(i)) == i + 1
        assert p.due_count(p.due_at(i) - 1e-6) == i
    assert p.due_count(p.start - 0.5) == 0


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s > 0
        self.t += s


def test_pace_sends_on_schedule_when_sending_is_cheap():
    clock = FakeClock()
    sent = []
    r = pace(lambda i, now, due: sent.append((i, now, due)), 500, 250.0, clock, clock.sleep)
    assert [i for i, _, _ in sent] == list(range(500))
    # every message goes out at its due time (the fake clock only moves by sleeping)
    assert all(abs(now - due) < 1e-9 for _, now, due in sent)
    assert r["achieved_per_s"] == pytest.approx(250.0)
    assert r["last_send"] - r["start"] == pytest.approx(499 / 250.0)
    assert r["send_delay_max_s"] < 1e-9


def test_pace_catches_up_in_bursts_when_the_sender_falls_behind():
    clock = FakeClock()
    sent = []

    def slow_send(i, now, due):
        sent.append((i, now, due))
        clock.t += 0.003 if i < 100 else 0.0001  # 3 ms per message: slower than 1 ms apart

    r = pace(slow_send, 400, 1000.0, clock, clock.sleep)
    assert [i for i, _, _ in sent] == list(range(400))
    assert all(now >= due - 1e-9 for _, now, due in sent)  # never early
    delays = [now - due for _, now, due in sent]
    assert max(delays) == pytest.approx(r["send_delay_max_s"])
    assert max(delays[:100]) > 0.1  # fell behind by 2 ms per message ...
    assert delays[-1] < 1e-3  # ... and caught up once sending got cheap
    assert r["achieved_per_s"] == pytest.approx(399 / (sent[-1][1] - sent[0][1]))
    assert r["achieved_per_s"] < 1000.0


def test_percentile_is_the_nearest_rank_sample():
    import random

    rng = random.Random(3)
    for n in (1, 2, 3, 10, 99, 100, 101, 1000):
        values = sorted(rng.uniform(0, 5) for _ in range(n))
        for q in (1, 50, 90, 99, 100):
            p = percentile(values, q)
            assert p in values
            # at least q% of the values are <= p, and fewer than q% are < p
            assert sum(v <= p for v in values) >= q / 100 * n - 1e-9
            assert sum(v < p for v in values) < q / 100 * n


def test_latency_summary_marks_percentiles_reached_by_censored_events():
    observed = [0.1 * i for i in range(1, 99)]  # 98 exact latencies, 0.1 .. 9.8 s
    s = latency_summary(observed, censored=[30.0, 31.0])
    assert s["count"] == 98 and s["censored"] == 2
    assert s["p50"] == pytest.approx(5.0) and not s["p50_lower_bound"]
    # rank 99 of 100 is the first censored value: a lower bound
    assert s["p99"] == 30.0 and s["p99_lower_bound"]
    assert s["max"] == 31.0 and s["max_lower_bound"]
    assert s["mean"] == pytest.approx(sum(observed) / 98)
    exact = latency_summary(observed)
    assert exact["p99"] == pytest.approx(9.8) and not exact["p99_lower_bound"]


def test_analyse_matches_records_to_sent_events():
    import json as _json

    t0 = 1_767_225_600_000
    sent = Counter({("k1", t0 + 10 * i): 1 for i in range(100)})
    processed = []
    for i in range(95):  # 5 events never processed
        ts = t0 + 10 * i
        processed.append((ts + 200 + i, _json.dumps({"key": "k1", "event_time_ms": ts}).encode()))
    processed.append((t0 - 5, b'{"key":"k1","event_time_ms":1767225599000}'))  # warm-up
    processed.append((t0 + 400, _json.dumps({"key": "k1", "event_time_ms": t0}).encode()))
    alerts = [
        (t0 + 700, _json.dumps({"key": "k1", "last_event_time_ms": t0 + 100, "update": False,
                                "detection_time_ms": t0 + 650}).encode()),
        (t0 + 2000, _json.dumps({"key": "k1", "last_event_time_ms": t0 + 500, "update": True,
                                 "detection_time_ms": t0 + 1990}).encode()),
        (t0 + 9000, _json.dumps({"key": "k1", "last_event_time_ms": t0 + 5000,
                                 "update": False}).encode()),  # tail event: not measured
    ]  # fmt: skip
    end = t0 + 990
    r = analyse(
        sent=sent,
        processed=processed,
        alerts=alerts,
        window=(t0, end),
        stopped_at_ms=end + 10_000,
        rate=100.0,
    )
    assert r["processed_in_window"] == 95 and r["unprocessed"] == 5
    assert r["processed_duplicates"] == 1
    p = r["processed_latency"]
    assert p["count"] == 95 and p["censored"] == 5
    # nearest rank 50 of 100 (95 exact: 0.200 .. 0.294 s, then 5 censored at ~10 s)
    assert p["p50"] == pytest.approx(0.2 + 0.049) and not p["p50_lower_bound"]
    assert p["p99"] >= 10.0 and p["p99_lower_bound"]
    assert (r["alerts_new"], r["alerts_updates"]) == (1, 1)
    assert r["alert_latency"]["count"] == 2
    assert r["alert_latency"]["p50"] == pytest.approx(0.6)
    assert r["alert_latency"]["max"] == pytest.approx(1.5)
    assert r["detection_latency"]["max"] == pytest.approx(1.49)
    # processed after the last send: events whose record came later than `end`, + unprocessed
    after_end = sum(1 for i in range(95) if t0 + 10 * i + 200 + i > end)
    assert r["backlog_at_end"] == after_end + 5
    assert r["kept_up"] == (r["backlog_at_end"] <= 100)


def test_templates_render_the_generator_events_at_the_send_time():
    from streamsift.config import InputConfig
    from streamsift.parsing import EventParser
    from streamsift.records import Event
    from streamsift.synthetic import generate

    spec = BenchSpec(keys=4, features=6, seed=11)
    templates = prepare_templates(spec, 300)
    cfg = bench_config(spec.with_events(300), "m")
    stream = generate(cfg.synthetic, cfg.input)
    parser = EventParser(InputConfig(feature_fields=spec.fields))
    assert len(templates) == len(stream.payloads) == 300
    for i, (t, raw) in enumerate(zip(templates, stream.payloads, strict=True)):
        original = parser.parse(raw)
        ts_ms = 1_800_000_000_000 + i
        ev = parser.parse(t.render(ts_ms))
        if isinstance(original, Event):
            assert isinstance(ev, Event)
            assert (ev.key, ev.values) == (original.key, original.values) == (t.key, ev.values)
            assert ev.ts == ts_ms / 1000.0
        else:
            assert t.key is None and t.render(ts_ms) == raw


def test_latency_modes_and_plan_validate_and_drive_the_pipeline_command():
    modes = parse_latency_modes("event_time, arrival, event_time:5, arrival", 30.0)
    assert [m.name for m in modes] == ["event_time", "arrival", "event_time:5"]
    assert [m.tail_s for m in modes] == [63.0, 3.0, 13.0]
    with pytest.raises(ValueError, match="latency_modes must be"):
        parse_latency_modes("event_time:x")
    with pytest.raises(ValueError, match="allowed_lateness_s must be >= 0"):
        LatencyMode("m", "event_time", -1.0)
    with pytest.raises(ValueError, match="engine must be"):
        LatencyPlan(100, 5, modes[0], engine="fast")
    plan = LatencyPlan(5000, 30, modes[2], engine="batched")
    assert plan.events == 150_000
    cmd = pipeline_command(
        plan, bootstrap="h:9", topic="in", group="g", alerts_topic="al", processed_topic="pr",
        config_path="c.toml", model_dir="m", out_dir="o", summary_path="s.json",
    )  # fmt: skip
    args = dict(zip(cmd[4::2], cmd[5::2], strict=False))
    assert args["--source"] == "kafka" and args["--runner"] == "DirectRunner"
    assert args["--engine"] == "batched" and args["--ordering"] == "event_time"
    assert args["--allowed-lateness"] == "5"
    assert args["--alerts-to"] == "kafka://al" and args["--processed-to"] == "kafka://pr"
    assert "--quiet" in cmd


def test_runner_availability_reports_not_installed(tmp_path):
    assert runner_availability("prism", {}).startswith("not installed: STREAMSIFT_PRISM_BIN")
    fake = tmp_path / "prism"
    fake.write_text("")
    assert runner_availability("prism", {"STREAMSIFT_PRISM_BIN": str(fake)}) is None
    env = {"STREAMSIFT_FLINK_JOB_SERVER_JAR": str(tmp_path / "missing.jar")}
    assert "is not a file" in runner_availability("flink", env)


def test_bench_command_names_the_new_flags():
    args = _parse(
        ["--latency-loads", "1000,5000", "--latency-seconds", "30", "--engine", "batched"]
    )
    cmd = build_command(args)
    for part in (
        "--engine batched",
        "--runners prism,flink",
        "--latency-loads 1000,5000",
        "--latency-seconds 30",
        "--latency-modes event_time,arrival",
    ):
        assert part in cmd
    out = Path("/nonexistent-dir-for-bench") / "R.md"
    assert main(_parse(["--latency-modes", "fifo", "--out", str(out)])) == 2
    assert main(_parse(["--runners", "spark", "--out", str(out)])) == 2


# --------------------------------------------------------------------------- rendering


def _results() -> dict:
    """A results dict as the harness builds it, with measured-looking values."""
    c = {
        "events_in": 1000,
        "valid": 998,
        "alerts": 7,
        "outputs": 7,
        "wall_s": 2.0,
        "setup_s": 0.0,
        "rss_start_mb": 300.0,
        "peak_rss_mb": 320.0,
        "payload_sha256": "ab" * 32,
        "events_per_s": 500.0,
        "details": {
            "late": 2,
            "runner_processes": {
                "tree_peak_mb": 800.0,
                "processes": [{"pid": 1, "name": "java", "peak_rss_mb": 450.0}],
            },
        },
    }
    floor = dict(c, valid=1000, alerts=1000, wall_s=1.0, events_per_s=1000.0)
    detail = {
        "processed": 996,
        "dead_lettered": 2,
        "late": 2,
        "escalated": 30,
        "stage2_scored": 30,
        "flagged": 9,
        "alerts_opened": 7,
        "alerts_suppressed": 0,
        "alerts_upgraded": 1,
        "alerts_by_severity": {"info": 7},
        "run_s": 3.5,
    }
    empty = {
        "name": "empty",
        "events_in": 10,
        "wall_s": 0.5,
        "rss_start_mb": 150.0,
        "peak_rss_mb": 160.0,
        "details": {"runner_processes": {"tree_peak_mb": 600.0, "processes": []}},
    }
    lat = {
        "rate": 5000,
        "mode": "arrival",
        "ordering": "arrival",
        "allowed_lateness_s": 30.0,
        "engine_effective": "per_element",
        "achieved_per_s": 4990.0,
        "sent_valid": 149_000,
        "processed_in_window": 149_000,
        "alerts_new": 12,
        "alerts_updates": 30,
        "alert_latency": latency_summary([0.3, 0.5, 0.9]),
        "processed_latency": latency_summary([0.1] * 98 + [0.2, 0.4]),
        "backlog_at_end": 40,
        "backlog_at_end_s": 0.008,
        "kept_up": True,
        "pipeline_peak_rss_mb": 400.0,
        "pipeline_end": "drained",
        "log_tail": "",
    }
    behind = dict(
        lat,
        mode="event_time",
        ordering="event_time",
        kept_up=False,
        alert_latency=latency_summary([31.0 + i for i in range(20)], censored=[70.0]),
        backlog_at_end=90_000,
        backlog_at_end_s=18.0,
        pipeline_end="interrupted",
        after_sending_s=130.0,
        log_tail="...",
    )
    return {
        "command": "streamsift bench", "invoked_as": "streamsift bench", "date": "2026-11-23",
        "machine": {"nproc": 2, "cpu_model": "cpu", "mem_total_gib": 8.0, "kernel": "Linux",
                    "load_avg": (1.0, 1.0, 1.0)},
        "versions": {"python": "3.11.7", "apache-beam": "2.77.0", "scikit-learn": "1",
                     "pyod": "1", "numpy": "2", "pyinstrument": "5"},
        "spec": {"seed": 7, "events": 1000, "keys": 5, "features": 4, "history_hours": 1.0},
        "fields": ["cpu", "latency_ms", "requests", "errors"],
        "stream": {"valid": 998, "late": 2, "malformed": 2, "incidents": 3, "sha256": "ab" * 32},
        "contenders": {"full": dict(c, wall_s=4.0, events_per_s=250.0, details=detail),
                       "floor": floor},
        "consistency": {"ok": True, "problems": [], "events_in": 1000, "valid": 998},
        "ratios": [],
        "runners": {"engine": "per_element", "runs": {
            "prism": {"runner": "PrismRunner",
                      "skipped": "not installed: STREAMSIFT_PRISM_BIN is not set"},
            "flink": {"runner": "FlinkRunner", "empty": empty, "full": c, "floor": floor,
                      "consistency": {"ok": True, "problems": []}},
        }},
        "latency": {"bootstrap": "127.0.0.1:19092", "engine": "per_element", "seconds": 30.0,
                    "runs": [lat, behind, {"rate": 1000, "mode": "arrival", "error": "boom"}]},
    }  # fmt: skip


def test_report_renders_the_portable_runners_and_latency_sections():
    md = render_markdown(_results())
    positions = [md.index(h + "\n") for h in SECTIONS]
    assert positions == sorted(positions)
    runners = md.split("## Portable runners (Prism, Flink)", 1)[1].split("\n## ", 1)[0]
    assert "| PrismRunner | - | not installed: STREAMSIFT_PRISM_BIN is not set |" in runners
    row = next(x for x in runners.splitlines() if x.startswith("| FlinkRunner | `full`"))
    # events/s net of the trivial job: 1000 events / (2.0 - 0.5) s
    assert "| 1,000 | 998 | 7 | 2.0 | 500 | 667 | 320 | java 450 | 800 |" in row
    assert "| FlinkRunner | trivial job (start-up, teardown) |" in runners
    assert "`full / floor` throughput 0.50x" in runners
    assert "`full` on FlinkRunner / `full` on the DirectRunner 2.00x" in runners
    latency = md.split("## Latency from Kafka (ingest to alert)", 1)[1].split("\n## ", 1)[0]
    assert "| 5,000 | `arrival` | per_element | 4,990 | 149,000 | 149,000 | 12 + 30 |" in latency
    assert "| 0.500 / 0.900 / 0.900 | 0.100 / 0.200 / 0.400 | 40 (0.0 s) | yes | 400 |" in latency
    assert "| 41.0 / >= 70.0 / >= 70.0 |" in latency  # censored percentiles are lower bounds
    assert "| 1,000 | `arrival` | failed: boom |" in latency
    assert "| `arrival` | per_element | 0.900 | met |" in latency
    assert "| `event_time` | per_element | >= 70.0 | not met |" in latency
    assert "Run 5,000/s `event_time` ended `interrupted` (after 130 s of catching up)." in latency
