"""End-to-end transform tests on the DirectRunner in streaming mode (TestStream)."""

from __future__ import annotations

import dataclasses
import json
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from streamsift import synthetic
from streamsift.config import EventTimeConfig
from streamsift.models.keylogic import KeyLogic, compute_features
from streamsift.parsing import EventParser
from streamsift.pipeline.build import build_detection
from streamsift.pipeline.options import make_runner, streaming_options
from streamsift.pipeline.run import run_stream
from streamsift.records import Event
from streamsift.transforms.keyed import DetectPerKey
from streamsift.transforms.sinks import WriteJsonLines, close_all
from streamsift.transforms.source import ReplayStream

pytestmark = pytest.mark.slow


def _scored_dict(s):
    return {
        "key": s.event.key,
        "ts": s.event.ts,
        "features": list(s.features),
        "stage1": s.stage1,
        "stage2": s.stage2,
        "model_version": s.model_version,
    }


def _run_with_scored(payloads, cfg, model_path, out_dir):
    """Run the detection stages; return (alerts, scored) read back from files."""
    close_all()
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    src = p | "Source" >> ReplayStream(payloads, cfg.input, chunk_size=250)
    outs = build_detection(src, cfg, model_path)
    outs["alerts"] | "WA" >> WriteJsonLines(f"{out_dir}/alerts.jsonl")
    outs["scored"] | "WS" >> WriteJsonLines(f"{out_dir}/scored.jsonl", _scored_dict)
    p.run().wait_until_finish()
    close_all()

    def read(name):
        try:
            with open(f"{out_dir}/{name}") as fh:
                return [json.loads(line) for line in fh]
        except FileNotFoundError:
            return []

    return read("alerts.jsonl"), read("scored.jsonl")


def _alert_view(a):
    a = dict(a)
    for k in ("detection_time", "detection_time_ms"):
        a.pop(k, None)
    return json.dumps(a, sort_keys=True)


def test_counters_reconcile_and_every_output_accounted(trained, tmp_path):
    cfg, model_path = trained
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    res = run_stream(
        stream.payloads, cfg, model_path, str(tmp_path), print_alerts=False, show_progress=False
    )
    c = res.counters
    assert c["events_in"] == len(stream.payloads) == cfg.synthetic.events
    assert c["events_in"] == c["processed"] + c["dead_lettered"] + c.get("late", 0)
    assert c["dead_lettered"] == stream.n_malformed
    assert c.get("late", 0) == stream.n_late
    with open(res.paths.dead_letter) as fh:
        dead = [json.loads(line) for line in fh]
    assert len(dead) == stream.n_malformed
    assert all(d["error_kind"] and d["message"] and "payload" in d for d in dead)
    with open(res.paths.late) as fh:
        assert sum(1 for _ in fh) == stream.n_late
    assert c["escalated"] < c["processed"] * 0.5
    # the alert stage saw every escalated event in sequence and forgot each key
    # together with the per-key stage (at the end of the stream all keys expire)
    assert c["stage2_scored"] == c["escalated"]
    assert c.get("alert_order_gaps", 0) == 0
    assert 0 < c["alert_keys_expired"] <= c["keys_expired"] == c["keys_created"]
    assert res.alerts, "the injected anomalies must raise alerts"
    for a in res.alerts:
        for field in (
            "alert_id",
            "key",
            "first_event_time",
            "last_event_time",
            "detection_time",
            "severity",
            "stage1_score",
            "stage2_score",
            "threshold",
            "model_version",
            "explanation",
        ):
            assert field in a
        assert a["severity"] in ("info", "warning", "critical")
        assert a["explanation"]


def test_out_of_order_within_lateness_gives_identical_results(trained, tmp_path):
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg,
        synthetic=dataclasses.replace(
            cfg.synthetic, disorder_rate=0.0, late_rate=0.0, malformed_rate=0.0, events=2500
        ),
    )
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    parser = EventParser(cfg.input)
    ts = [parser.parse(p).ts for p in stream.payloads]
    in_order = [p for _, p in sorted(zip(ts, stream.payloads, strict=True), key=lambda x: x[0])]
    rng = random.Random(3)
    lateness = cfg.event_time.allowed_lateness_s
    # Every event is delayed by up to 90% of the allowed lateness.
    shuffled = [
        p
        for _, p in sorted(
            zip((t + rng.uniform(0, 0.9 * lateness) for t in ts), stream.payloads, strict=True),
            key=lambda x: x[0],
        )
    ]
    assert shuffled != in_order
    a1, s1 = _run_with_scored(in_order, cfg, model_path, str(tmp_path / "ordered"))
    a2, s2 = _run_with_scored(shuffled, cfg, model_path, str(tmp_path / "shuffled"))
    assert s1, "stage 2 must have scored something"
    key = lambda d: (d["key"], d["ts"])  # noqa: E731
    assert sorted(s1, key=key) == sorted(s2, key=key)
    assert sorted(map(_alert_view, a1)) == sorted(map(_alert_view, a2))
    assert a1


def test_arrival_ordering_reconciles(trained, tmp_path):
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg, event_time=dataclasses.replace(cfg.event_time, ordering="arrival")
    )
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    res = run_stream(
        stream.payloads, cfg, model_path, str(tmp_path), print_alerts=False, show_progress=False
    )
    c = res.counters
    assert c["events_in"] == c["processed"] + c["dead_lettered"] + c.get("late", 0)
    assert c.get("late", 0) == stream.n_late
    assert res.alerts


def test_streaming_features_equal_batch_features(trained, tmp_path):
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg, synthetic=dataclasses.replace(cfg.synthetic, malformed_rate=0.0, late_rate=0.0)
    )
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    _, scored = _run_with_scored(stream.payloads, cfg, model_path, str(tmp_path))
    parser = EventParser(cfg.input)
    events = [parser.parse(p) for p in stream.payloads]
    logic = KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter)
    rows, X, _ = compute_features(logic, [(e.key, e.ts, e.values) for e in events])
    batch = {row: X[i] for i, row in enumerate(rows)}
    assert len(scored) > 20
    for s in scored:
        np.testing.assert_array_equal(np.asarray(s["features"]), batch[(s["key"], s["ts"])])


class _CountFn(beam.DoFn):
    def process(self, x):
        return []


def test_idle_keys_expire_at_ttl(tmp_path):
    """100,000 keys seen once each leave no state after the TTL.

    Wave 1 touches 100,000 keys; the watermark then passes the TTL; wave 2 touches
    the same keys again. Each key is *created* twice (its state was cleared by the
    event-time expiry timer in between) and expired twice.
    """
    from streamsift.config import FeatureConfig, PrefilterConfig

    n = 100_000
    t0 = 1_767_225_600.0
    ttl = 600.0
    et = EventTimeConfig(allowed_lateness_s=5.0, idle_ttl_s=ttl)
    stream = TestStream()
    for wave, base in enumerate((t0, t0 + 2 * ttl)):
        batch = [
            TimestampedValue(Event(f"k{i}", base + i * 1e-3, (1.0, 2.0)), base + i * 1e-3)
            for i in range(n)
        ]
        for start in range(0, n, 10_000):
            stream = stream.add_elements(batch[start : start + 10_000])
        stream = stream.advance_watermark_to(Timestamp.of(base + n * 1e-3 + ttl + 60 * (wave + 1)))
    stream = stream.advance_watermark_to_infinity()
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    events = p | stream.with_output_types(Event)
    out = events | DetectPerKey(("a", "b"), FeatureConfig(), PrefilterConfig(), et)
    out["escalated"] | "Drop" >> beam.ParDo(_CountFn())
    result = p.run()
    result.wait_until_finish()
    from streamsift.pipeline.run import _counters

    c = _counters(result)
    assert c["processed"] == 2 * n
    assert c["keys_created"] == 2 * n
    assert c["keys_expired"] == 2 * n


def test_key_expiring_mid_stream_restarts_both_stages_in_step(trained, tmp_path):
    """A key idle for longer than the TTL is forgotten by the per-key stage and,
    through its key-expired marker, by the alert stage at the same point of
    its sequence; the key's second life is handled in order, with no gap."""
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg, event_time=dataclasses.replace(cfg.event_time, idle_ttl_s=1800.0)
    )
    t0 = 1_767_225_600.0
    rng = random.Random(5)
    payloads = []
    for start in (t0, t0 + 4 * 3600.0):  # a 2.3 h silence between the two lives
        for i in range(80):
            spike = i in (50, 65)
            values = {
                "cpu": 400.0 if spike else 40.0 + rng.gauss(0, 2),
                "latency_ms": 900.0 if spike else 80.0 + rng.gauss(0, 4),
                "requests": 100.0 + rng.gauss(0, 5),
                "errors": float(rng.random() < 0.05),
            }
            payloads.append(json.dumps({"key": "a", "ts": (start + 60.0 * i) * 1000, **values}))
    res = run_stream(
        [p.encode() for p in payloads],
        cfg,
        model_path,
        str(tmp_path),
        print_alerts=False,
        show_progress=False,
        chunk_size=20,
    )
    c = res.counters
    assert c["processed"] == 160
    assert c["keys_created"] == 2 and c["keys_expired"] == 2
    assert c["escalated"] >= 4
    assert c["stage2_scored"] == c["escalated"]
    assert c["alert_keys_expired"] == 2
    assert c.get("alert_order_gaps", 0) == 0


def test_scores_output_gives_every_processed_event_the_per_key_scores(trained, tmp_path):
    """DetectPerKey(emit_scores=True): one row per processed event, out-of-order
    arrival within the allowed lateness included, with exactly the stage-1 score,
    detector score and escalation that KeyLogic gives the key's events in
    event-time order; a detector alert becomes a pipeline alert explained by it."""
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg,
        detector=dataclasses.replace(cfg.detector, warmup_events=100, suppress_events=0),
        # the per-event scores output exists on the per-element engine only
        engine=dataclasses.replace(cfg.engine, mode="per_element"),
    )
    t0 = 1_767_225_600.0
    rng = random.Random(17)
    events = []
    for key in ("a", "b"):
        for i in range(160):
            spike = key == "a" and i == 140
            values = {
                "cpu": 40.0 + rng.gauss(0, 2) + (300.0 if spike else 0.0),
                "latency_ms": 80.0 + rng.gauss(0, 4),
                "requests": 100.0 + rng.gauss(0, 5),
                "errors": float(rng.random() < 0.05),
            }
            events.append((t0 + 60.0 * i, key, values))
    events.sort(key=lambda e: e[0])
    for i in range(0, len(events) - 1, 7):  # swap neighbours: disorder within lateness
        events[i], events[i + 1] = events[i + 1], events[i]
    payloads = [json.dumps({"key": k, "ts": ts * 1000, **v}).encode() for ts, k, v in events]
    res = run_stream(
        payloads,
        cfg,
        model_path,
        str(tmp_path),
        print_alerts=False,
        show_progress=False,
        chunk_size=50,
        emit_scores=True,
    )
    rows = res.extra["scores"]
    assert len(rows) == res.counters["processed"] == len(payloads)
    assert sum(r["escalated"] for r in rows) == res.counters["escalated"]
    parser = EventParser(cfg.input)
    logic = KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.detector)
    for key in ("a", "b"):
        mine = sorted((r for r in rows if r["key"] == key), key=lambda r: (r["ts"], r["values"]))
        evs = sorted(
            (e for e in (parser.parse(p) for p in payloads) if e.key == key),
            key=lambda e: (e.ts, e.values),
        )
        state = logic.new_state()
        expect = []
        for e in evs:
            r = logic.step(state, e.ts, e.values)
            expect.append((e.ts, list(e.values), r.stage1, r.anomaly, r.escalated))
        got = [(r["ts"], r["values"], r["stage1"], r["anomaly"], r["escalated"]) for r in mine]
        assert got == expect
    spike = next(r for r in rows if r["key"] == "a" and r["ts"] == t0 + 60.0 * 140)
    assert spike["anomaly"] >= cfg.detector.alert_score and spike["escalated"]
    alert = next(
        a for a in res.alerts if a["key"] == "a" and a["first_event_time_ms"] == spike["ts"] * 1000
    )
    assert alert["explanation"][0]["feature"] == "anomaly_score"
    assert alert["explanation"][1]["feature"].startswith("cpu.")
    # off by default: no scores output, nothing written
    plain = run_stream(
        payloads[:50],
        cfg,
        model_path,
        str(tmp_path / "plain"),
        print_alerts=False,
        show_progress=False,
    )
    assert plain.extra == {} and not (tmp_path / "plain" / "scores.jsonl").exists()
