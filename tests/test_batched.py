"""The micro-batched engine: same alerts and counters as the per-element path.

Logic tests run without a pipeline; the end-to-end tests replay the synthetic
stream (disorder, far-too-late and malformed events) through both engines on
the DirectRunner and compare everything they emit.
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import os
import shutil

import apache_beam as beam
import numpy as np
import pytest

from streamsift import synthetic
from streamsift.config import (
    Config,
    ConfigError,
    EngineConfig,
    EventTimeConfig,
    InputConfig,
    ModelConfig,
    load_config,
)
from streamsift.models.artifact import load_artifact, save_artifact, train_model
from streamsift.models.batch import (
    ChunkParser,
    ForestScorer,
    ShardLogic,
    ShardState,
    shard_of,
)
from streamsift.models.keylogic import KeyLogic
from streamsift.parsing import EventParser
from streamsift.pipeline.build import build_detection
from streamsift.pipeline.options import make_runner, streaming_options
from streamsift.pipeline.run import _counters, run_stream
from streamsift.records import Event
from streamsift.transforms.batched import (
    ChunkPayloads,
    ReplayChunks,
    build_batched_detection,
    decode_chunk,
)
from streamsift.transforms.sinks import (
    WriteJsonLines,
    close_all,
    dead_letter_to_dict,
    late_event_to_dict,
)
from streamsift.transforms.source import ReplayStream

#: counters of the per-element path that are RunInference's own bookkeeping
_RUNINFERENCE_ONLY = ("num_inferences", "model_byte_size", "load_model_latency")
#: counters only the batched engine has
_BATCHED_ONLY = ("stage2_batches",)


# ----------------------------------------------------------------------------- logic


def test_config_engine_section_is_validated():
    assert Config().engine == EngineConfig("batched", 4, 1.0)
    with pytest.raises(ConfigError, match=r"engine.mode must be one of"):
        EngineConfig(mode="vectorised")
    with pytest.raises(ConfigError, match=r"engine.shards must be >= 1; got 0"):
        EngineConfig(shards=0)
    example = os.path.join(os.path.dirname(__file__), "..", "streamsift.example.toml")
    assert load_config(example).engine == EngineConfig()


def test_chunk_parser_returns_exactly_what_the_event_parser_returns():
    cfg = InputConfig(feature_fields=("cpu", "errors"), label_field="label", max_payload_bytes=200)
    payloads = [
        b'{"key": "h1", "ts": 1767225600, "cpu": 1.5, "errors": 2}',
        b'{"key": "h1", "ts": "2026-01-01T00:00:01.250+01:00", "cpu": 1, "errors": 0}',
        b'{"key": "h2", "ts": 1767225600123, "cpu": -0.0, "errors": 1e3, "label": "spike"}',
        b'{"key": "h2", "ts": 1767225600, "cpu": 1, "errors": 1, "label": 7}',
        b'{"key": 42, "ts": 1767225600, "cpu": 1, "errors": 1}',
        b'{"key": "", "ts": 1767225600, "cpu": 1, "errors": 1}',
        b'{"key": "h3", "ts": true, "cpu": 1, "errors": 1}',
        b'{"key": "h3", "ts": "yesterday", "cpu": 1, "errors": 1}',
        b'{"key": "h3", "ts": 12, "cpu": 1, "errors": 1}',
        b'{"key": "h3", "ts": 1767225600, "cpu": true, "errors": 1}',
        b'{"key": "h3", "ts": 1767225600, "cpu": Infinity, "errors": 1}',
        b'{"key": "h3", "ts": 1767225600, "cpu": 1e999, "errors": 1}',
        b'{"key": "h3", "ts": 1767225600, "cpu": 1}',
        b'{"key": "h3", "ts": 1767225600, "cpu": "1", "errors": 1}',
        b'{"key": "h3", "ts": 1767225600, "cpu": 1, "errors": 10' + b"0" * 400 + b"}",
        b"[1, 2]",
        b"not json",
        b"\xff\xfe",
        b"",
    ]
    events, dead = ChunkParser(cfg).parse_many(payloads, ingest=5.0)
    ref = [EventParser(cfg).parse(p, 5.0) for p in payloads]
    assert events == [r for r in ref if isinstance(r, Event)]
    assert dead == [r for r in ref if not isinstance(r, Event)]
    assert len(events) == 5 and {d.error_kind for d in dead} >= {
        "bad_key",
        "bad_time",
        "bad_feature",
        "missing_feature",
        "oversize",
        "not_an_object",
        "malformed_json",
        "bad_encoding",
    }


@pytest.mark.parametrize("detector", ["pyod_iforest", "iforest"])
def test_forest_scorer_is_bit_identical_to_the_model_for_any_batch(detector):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 5))
    m = train_model(
        X, list("abcde"), ModelConfig(detector=detector, n_estimators=30), (0.0, 1.0), [60.0]
    )
    scorer = ForestScorer(m.estimator, detector)
    assert scorer.fast
    Y = np.vstack([X, rng.normal(0.0, 20.0, size=(200, 5)), np.zeros((1, 5))])
    whole = scorer.score(Y)
    assert np.array_equal(whole, m.score(Y))
    for b in (1, 7, 64):
        parts = np.concatenate([scorer.score(Y[i : i + b]) for i in range(0, len(Y), b)])
        assert np.array_equal(parts, whole)


def test_shard_of_is_stable_and_spreads_keys():
    keys = [synthetic.key_name(i, 1000) for i in range(1000)]
    shards = [shard_of(k, 4) for k in keys]
    assert shards == [shard_of(k, 4) for k in keys]
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 200, counts


def _shard_logic(**event_time) -> ShardLogic:
    cfg = dataclasses.replace(
        Config(),
        input=InputConfig(feature_fields=("x",)),
        event_time=dataclasses.replace(EventTimeConfig(), **event_time),
    )
    return ShardLogic.from_config(cfg)


def test_shard_releases_in_event_time_order_and_flags_late_events():
    logic = _shard_logic(allowed_lateness_s=30.0)
    st = ShardState()
    counts: dict[str, int] = {}

    def ev(ts, x=1.0):
        return Event("k", ts, (x,))

    assert logic.accept(st, [ev(100.0), ev(90.0), ev(95.0)], counts) == []
    assert st.next_timer_us() == 130_000_000  # first buffered event + allowed lateness
    logic.advance(st, 129_999_999, counts)
    assert "processed" not in counts
    logic.advance(st, 130_000_000, counts)
    assert counts["processed"] == 3 and st.keys["k"].meta.released_until == 100.0
    # behind what was released: late; within the lateness of the newest: buffered
    late = logic.accept(st, [ev(99.0), ev(120.0), ev(101.0)], counts)
    assert [x.event.ts for x in late] == [99.0]
    assert late[0].processed_until == 100.0 and "allowed_lateness_s=30" in late[0].reason
    # equal to the per-key logic run in event-time order
    ref = KeyLogic(("x",), Config().features, Config().prefilter)
    ref_state = ref.new_state()
    for t in (90.0, 95.0, 100.0, 101.0, 120.0):
        ref.step(ref_state, t, (1.0,))
    logic.advance(st, 150_000_000, counts)
    assert counts["processed"] == 5
    assert ref.encode_state(ref_state) == ref.encode_state(st.keys["k"].logic)


def test_shard_state_round_trip_mid_stream_changes_nothing():
    """Packing, marshalling and unpacking the shard between steps (what the DoFn
    does between bundles) gives the same results as keeping it in memory."""
    logic = _shard_logic(allowed_lateness_s=5.0, idle_ttl_s=120.0)
    rng = np.random.default_rng(8)
    events = [
        Event(f"k{int(k)}", float(t), (float(x),))
        for k, t, x in zip(
            rng.integers(0, 3, 300),
            np.sort(rng.uniform(0, 30000, 300)) + rng.normal(0, 2, 300),
            rng.normal(10, 1, 300),
            strict=True,
        )
    ]

    def run(round_trip: bool):
        st, counts, actions = ShardState(), {}, []
        for i in range(0, len(events), 25):
            chunk = events[i : i + 25]
            actions += logic.advance(st, int(chunk[0].ts * 1e6) - 10_000_000, counts)
            logic.accept(st, chunk, counts)
            if round_trip:
                logic.pack(st)
                st = ShardState.from_plain(marshal.loads(marshal.dumps(st.to_plain())))
        actions += logic.advance(st, 10**13, counts)
        return counts, [
            (a.key, a.scored and a.scored.event.ts, a.scored and a.scored.seq) for a in actions
        ]

    direct = run(False)
    assert direct == run(True)
    counts = direct[0]
    assert counts["keys_expired"] > 3  # keys expired mid-stream and came back
    assert counts["keys_created"] == counts["keys_expired"]


# ----------------------------------------------------------------------------- pipeline


def _alert_view(a: dict) -> str:
    a = dict(a)
    a.pop("detection_time")
    a.pop("detection_time_ms")
    return json.dumps(a, sort_keys=True)


def _run(
    cfg: Config, model_path: str, payloads, out: str, batched: bool, chunk_size: int = 250
) -> tuple[dict, dict]:
    close_all()
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    if batched:
        src = p | "Source" >> ReplayChunks(payloads, cfg.input, chunk_size=chunk_size)
        o = build_batched_detection(src, cfg, model_path)
    else:
        src = p | "Source" >> ReplayStream(payloads, cfg.input, chunk_size=chunk_size)
        o = build_detection(src, cfg, model_path)
    o["alerts"] | "WA" >> WriteJsonLines(f"{out}/alerts.jsonl")
    o["late"] | "WL" >> WriteJsonLines(f"{out}/late.jsonl", late_event_to_dict)
    o["dead_letter"] | "WD" >> WriteJsonLines(f"{out}/dead.jsonl", dead_letter_to_dict)
    o["flagged"] | "WF" >> WriteJsonLines(f"{out}/flagged.jsonl", list)
    result = p.run()
    result.wait_until_finish()
    close_all()

    def read(name):
        try:
            with open(f"{out}/{name}.jsonl") as fh:
                return [json.loads(line) for line in fh]
        except FileNotFoundError:
            return []

    outputs = {n: read(n) for n in ("alerts", "late", "dead", "flagged")}
    outputs["alerts"] = sorted(map(_alert_view, outputs["alerts"]))
    for n in ("late", "dead", "flagged"):
        outputs[n] = sorted(json.dumps(x, sort_keys=True) for x in outputs[n])
    counters = {
        k: v
        for k, v in _counters(result).items()
        if not k.startswith(_RUNINFERENCE_ONLY)
        and k not in _BATCHED_ONLY
        and not k.startswith("inference_")
    }
    return counters, outputs


@pytest.mark.parametrize(
    "event_time",
    [
        {"idle_ttl_s": 150.0},
        {"ordering": "arrival", "idle_ttl_s": 150.0},
    ],
    ids=["event_time", "arrival"],
)
def test_batched_engine_gives_identical_alerts_and_counters(trained, tmp_path, event_time):
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg,
        event_time=dataclasses.replace(cfg.event_time, **event_time),
        synthetic=dataclasses.replace(cfg.synthetic, events=1200),
    )
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    assert stream.n_late > 0 and stream.n_malformed > 0
    # two keys fall silent for a while: they expire mid-stream and come back
    quiet = (b'"key":"host-000"', b'"key":"host-003"')
    payloads = [
        p for i, p in enumerate(stream.payloads) if not (250 <= i < 700 and p.startswith(quiet))
    ]
    runs = [
        _run(cfg, model_path, payloads, str(tmp_path / name), batched, chunk_size=100)
        for name, batched in (("per", False), ("bat", True))
    ]
    (per_c, per_o), (bat_c, bat_o) = runs
    assert per_o["alerts"], "the stream must raise alerts"
    assert bat_o == per_o
    assert bat_c == per_c
    assert per_c["events_in"] == per_c["processed"] + per_c["dead_lettered"] + per_c["late"]
    assert per_c["late"] >= stream.n_late and per_c["dead_lettered"] == stream.n_malformed
    assert per_c["keys_created"] > cfg.synthetic.keys  # expired mid-stream, came back


def test_run_stream_uses_the_configured_engine(trained, tmp_path):
    cfg, model_path = trained
    cfg = dataclasses.replace(
        cfg,
        engine=EngineConfig(mode="batched", shards=2),
        synthetic=dataclasses.replace(cfg.synthetic, events=800),
    )
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    res = run_stream(
        stream.payloads, cfg, model_path, str(tmp_path), print_alerts=False, show_progress=False
    )
    c = res.counters
    assert c["stage2_batches"] >= 1 and "num_inferences" not in c
    assert c["events_in"] == len(stream.payloads)
    assert c["events_in"] == c["processed"] + c["dead_lettered"] + c.get("late", 0)


class _PublishAfter(beam.DoFn):
    """Passes chunks through; writes ``model`` as a new artifact into ``model_dir``
    when the first chunk whose watermark is at or past ``at`` goes by."""

    def __init__(self, model_dir: str, model, at: float) -> None:
        self._dir = model_dir
        self._model = model
        self._at = at

    def process(self, chunk: bytes):
        watermark, _after, _payloads = decode_chunk(chunk)
        if watermark is not None and watermark >= self._at and len(os.listdir(self._dir)) < 3:
            save_artifact(self._model, self._dir, created_at=2.0)
        yield chunk


def test_batched_engine_picks_up_a_new_model_without_restart(trained, tmp_path):
    cfg, model_path = trained
    model_dir = str(tmp_path / "model")
    os.makedirs(os.path.join(model_dir, "v0001"))
    for name in os.listdir(os.path.dirname(model_path)):
        shutil.copy(os.path.join(os.path.dirname(model_path), name), f"{model_dir}/v0001/")
    first = load_artifact(f"{model_dir}/v0001/model.joblib")
    names = first.feature_names
    X = np.random.default_rng(5).normal(size=(300, len(names)))
    other = train_model(X, names, ModelConfig(n_estimators=10, seed=1), (0.0, 1.0), [60.0])
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, dir=model_dir, watch_interval_s=1e-9),
        synthetic=dataclasses.replace(cfg.synthetic, events=1500),
    )
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    start = min(t for t in (e for e in _times(stream.payloads, cfg)) if t is not None)
    switch = start + 0.5 * (max(_times(stream.payloads, cfg), key=lambda t: t or 0) - start)
    close_all()
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    chunks = (
        p
        | "Source" >> ReplayChunks(stream.payloads, cfg.input, chunk_size=100)
        | "Publish" >> beam.ParDo(_PublishAfter(model_dir, other, switch))
    )
    out = build_batched_detection(chunks, cfg, f"{model_dir}/v0001/model.joblib", emit_scored=True)
    path = str(tmp_path / "scored.jsonl")
    out["scored"] | "WS" >> WriteJsonLines(
        path,
        lambda s: {"ts": s.event.ts, "f": list(s.features), "s": s.stage2, "v": s.model_version},
    )
    p.run().wait_until_finish()
    close_all()
    with open(path) as fh:
        rows = [json.loads(line) for line in fh]
    second = load_artifact(f"{model_dir}/v0002/model.joblib")
    models = {"v0001": first, "v0002": second}
    versions = {r["v"] for r in rows}
    assert versions == {"v0001", "v0002"}
    # every row carries the score of the model it names; the swap is one-way in time
    for r in rows:
        assert models[r["v"]].calibrated(np.array([r["f"]]))[0] == r["s"]
    last_old = max(r["ts"] for r in rows if r["v"] == "v0001")
    first_new = min(r["ts"] for r in rows if r["v"] == "v0002")
    assert last_old <= switch + 3600 and first_new >= switch - 3600


def _times(payloads, cfg):
    from streamsift.transforms.source import event_time_hints

    return event_time_hints(payloads, cfg.input)


def test_chunk_payloads_feeds_the_engine_without_watermark_hints(trained, tmp_path):
    """A per-payload source (no watermark hints): shard timers release the events."""
    cfg, model_path = trained
    cfg = dataclasses.replace(cfg, synthetic=dataclasses.replace(cfg.synthetic, events=600))
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    close_all()
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    chunks = (
        p
        | "Source" >> ReplayStream(stream.payloads, cfg.input, chunk_size=200)
        | "Chunk" >> ChunkPayloads(max_size=64)
    )
    out = build_batched_detection(chunks, cfg, model_path)
    out["late"] | "WL" >> WriteJsonLines(str(tmp_path / "late.jsonl"), late_event_to_dict)
    result = p.run()
    result.wait_until_finish()
    close_all()
    c = _counters(result)
    assert c["events_in"] == 600
    assert c["events_in"] == c["processed"] + c["dead_lettered"] + c.get("late", 0)
    assert c["keys_expired"] == c["keys_created"]  # drained at the end of the stream


# ----------------------------------------------------------------------------- shard cache


@pytest.mark.parametrize("lateness", [5.0, 600.0])
def test_change_log_replays_to_the_shard_state_after_every_step(lateness):
    """What :meth:`ShardState.take_changes` reports after each step, replayed onto
    the first snapshot, is the whole state: no changed key goes unmarked
    (arrivals, releases, expiries, alert states). With a long allowed lateness
    buffers grow over several steps: those go as append records."""
    from streamsift.models.batch import apply_changes

    logic = _shard_logic(allowed_lateness_s=lateness, idle_ttl_s=900.0)
    rng = np.random.default_rng(11)
    n = 1200
    ts = np.sort(rng.uniform(0, 60000, n))
    ts = np.where(ts > 30000, ts + 5000, ts)  # a quiet gap: every key expires
    xs = rng.normal(10, 1, n)
    xs[::40] = 60.0  # spikes: escalations, alert states
    events = [
        Event(f"k{int(k)}", float(t), (float(x),))
        for k, t, x in zip(rng.integers(0, 6, n), ts + rng.normal(0, 2, n), xs, strict=True)
    ]
    st = ShardState()
    counts: dict[str, int] = {}
    logic.pack(st)
    replayed = marshal.loads(marshal.dumps(st.to_plain()))
    st.take_changes()
    steps_with_removals = appends = 0
    for i in range(0, n, 20):
        chunk = events[i : i + 20]
        actions = logic.advance(st, int(chunk[0].ts * 1e6) - 10_000_000, counts)
        logic.accept(st, chunk, counts)
        logic.finish(
            st, actions, [0.99] * sum(a.scored is not None for a in actions), "v", 0.0, counts
        )
        logic.pack(st)
        changes = marshal.loads(marshal.dumps(st.take_changes()))
        steps_with_removals += any(v is None for v in changes[1].values())
        # keys whose buffer only grew: just their new events (see take_changes)
        appends += sum(v is not None and v[0] == "+" for v in changes[1].values())
        assert len(changes[1]) <= 20 + len(actions) + 6  # only what the step touched
        apply_changes(replayed, changes)
        assert replayed == marshal.loads(marshal.dumps(st.to_plain()))
    assert steps_with_removals > 0 and counts["keys_expired"] > 0
    if lateness > 100.0:
        assert appends > 0
    assert counts["alerts_opened"] > 0 and counts["alert_keys_expired"] > 0


@pytest.mark.parametrize(
    ("cache", "lateness"),
    [("miss_every_step", None), ("compact_often", None), ("miss_every_step", 900.0)],
)
def test_shard_state_survives_cache_misses_and_compaction(
    trained, tmp_path, monkeypatch, cache, lateness
):
    """The engine gives the same outputs when every step rebuilds its shard from
    Beam state (no cache: as a fresh DoFn in a fresh process would) and when the
    change log is compacted at almost every step. With a long allowed lateness the
    keys' buffers grow over many steps (the log gets append records)."""
    from streamsift.transforms import batched as batched_mod

    cfg, model_path = trained
    event_time = dataclasses.replace(cfg.event_time, idle_ttl_s=150.0)
    if lateness is not None:
        event_time = dataclasses.replace(event_time, allowed_lateness_s=lateness)
    cfg = dataclasses.replace(
        cfg, event_time=event_time, synthetic=dataclasses.replace(cfg.synthetic, events=900)
    )
    payloads = synthetic.generate(cfg.synthetic, cfg.input).payloads
    batched_mod.clear_shard_cache()
    before = batched_mod.shard_cache_info()
    ref = _run(cfg, model_path, payloads, str(tmp_path / "ref"), True, chunk_size=100)
    mid = batched_mod.shard_cache_info()
    assert mid["hits"] - before["hits"] > 0 and mid["changes"] - before["changes"] > 0
    if cache == "miss_every_step":
        monkeypatch.setattr(batched_mod, "SHARD_CACHE_SIZE", 0)
    else:
        monkeypatch.setattr(batched_mod, "_MIN_LOG_RECORDS", 1)
    other = _run(cfg, model_path, payloads, str(tmp_path / "other"), True, chunk_size=100)
    after = batched_mod.shard_cache_info()
    if cache == "miss_every_step":
        assert after["hits"] == mid["hits"] and after["misses"] > mid["misses"]
    else:
        assert after["snapshots"] - mid["snapshots"] > mid["snapshots"] - before["snapshots"]
    assert ref[1]["alerts"], "the stream must raise alerts"
    assert other == ref
