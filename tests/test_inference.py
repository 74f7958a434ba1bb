"""RunInference model handler, ScoreEscalated, and model refresh."""

from __future__ import annotations

import logging
import math
import pickle
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import ModelMetadata, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import BeamAssertException, assert_that
from apache_beam.transforms import window

from streamsift.config import ModelConfig
from streamsift.models.artifact import ArtifactError, load_artifact, save_artifact, train_model
from streamsift.records import Event, Reason, Scored
from streamsift.transforms import coders  # noqa: F401  (registers the record coders)
from streamsift.transforms.inference import ScoreEscalated, StreamsiftModelHandler

NAMES = ("cpu", "latency_ms")
CFG = ModelConfig(n_estimators=20, max_batch_size=4)


def _train(seed: int, scale: float = 1.0):
    X = np.random.default_rng(seed).normal(size=(300, len(NAMES))) * scale
    return train_model(X, NAMES, ModelConfig(n_estimators=20, seed=seed), (0.0, 1.0), [60.0])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    p1 = save_artifact(_train(1), str(d), created_at=1.0)
    p2 = save_artifact(_train(2, scale=3.0), str(d), created_at=2.0)
    return str(d), p1, p2


def _features(n: int, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(NAMES))) * 2.0


def _scored(i: int, feats: np.ndarray, ts: float) -> Scored:
    values = tuple(float(v) for v in feats)
    reason = Reason("cpu", values[0], 0.0, 3.5)
    return Scored(Event(f"k{i}", ts, values, "", 0.0), values, 4.0 + i, (reason,), True)


def _close_to(expected):
    """Matcher: same multiset of (key, score, version) with scores equal to 1e-12."""

    def match(actual):
        got = sorted(actual)
        want = sorted(expected)
        if len(got) != len(want):
            raise BeamAssertException(f"expected {len(want)} elements, got {len(got)}: {got}")
        for g, w in zip(got, want, strict=True):
            if g[0] != w[0] or g[2] != w[2] or not math.isclose(g[1], w[1], abs_tol=1e-12):
                raise BeamAssertException(f"expected {w}, got {g}")

    return match


def _streaming_pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(
        runner=BundleBasedDirectRunner(), options=PipelineOptions([], streaming=True)
    )


def test_handler_scores_a_batch_in_one_call(artifacts):
    _, p1, _ = artifacts
    handler = StreamsiftModelHandler(p1, NAMES)
    model = handler.load_model()
    X = _features(6)
    batch = list(X)
    results = list(handler.run_inference(batch, model))
    expected = load_artifact(p1).calibrated(X)
    assert [r.model_id for r in results] == ["v0001"] * 6
    assert [r.inference for r in results] == [float(v) for v in expected]
    assert all(type(r.inference) is float for r in results)
    assert all(r.example is x for r, x in zip(results, batch, strict=True))


def test_handler_refuses_a_bad_initial_artifact(tmp_path):
    path = save_artifact(_train(1), str(tmp_path), created_at=0.0)
    handler = StreamsiftModelHandler(path, ("cpu", "disk"))
    with pytest.raises(ArtifactError, match=r"missing: \['latency_ms'\]; extra: \['disk'\]"):
        handler.load_model()


def test_handler_keeps_last_good_model_when_refresh_fails(tmp_path):
    good = save_artifact(_train(1), str(tmp_path), created_at=0.0)
    bad = save_artifact(_train(2), str(tmp_path), created_at=1.0)
    Path(bad).write_bytes(b"not the bytes the manifest describes")
    handler = StreamsiftModelHandler(good, NAMES)
    assert handler.load_model().version == "v0001"
    handler.update_model_path(bad)
    assert handler.load_model().version == "v0001"
    # a copy shipped to a new worker carries no model; it falls back to the
    # artifact it was built with
    fresh = pickle.loads(pickle.dumps(handler))
    assert fresh.model_path == bad
    assert fresh.load_model().version == "v0001"


def test_handler_validates_arguments():
    with pytest.raises(ValueError, match="model_path must be a non-empty string; got ''"):
        StreamsiftModelHandler("", NAMES)
    with pytest.raises(ValueError, match=r"max_batch_size must be >= min_batch_size \(4\); got 2"):
        StreamsiftModelHandler("p", NAMES, min_batch_size=4, max_batch_size=2)
    with pytest.raises(ValueError, match="inference_args must be empty"):
        StreamsiftModelHandler("p", NAMES).validate_inference_args({"x": 1})


def test_run_inference_in_pipeline_matches_direct_scoring(artifacts):
    _, p1, _ = artifacts
    X = _features(10)
    direct = load_artifact(p1).calibrated(X)
    expected = [(tuple(x), float(s), "v0001") for x, s in zip(X, direct, strict=True)]
    handler = StreamsiftModelHandler.from_config(p1, NAMES, CFG)
    with test_pipeline.TestPipeline(
        runner=BundleBasedDirectRunner(), options=PipelineOptions([])
    ) as p:
        out = (
            p
            | beam.Create(list(X))
            | RunInference(handler, model_identifier="test-direct")
            | beam.Map(lambda r: (tuple(float(v) for v in r.example), r.inference, r.model_id))
        )
        assert_that(out, _close_to(expected))


def test_score_escalated_fills_stage2_and_keeps_the_record(artifacts):
    _, p1, _ = artifacts
    X = _features(9, seed=3)
    records = [_scored(i, x, 100.0 + i) for i, x in enumerate(X)]
    direct = load_artifact(p1).calibrated(X)
    expected = [
        r._replace(stage2=float(s), model_version="v0001")
        for r, s in zip(records, direct, strict=True)
    ]

    def check(actual):
        got = sorted(actual, key=lambda r: r.event.key)
        want = sorted(expected, key=lambda r: r.event.key)
        if [r._replace(stage2=0.0) for r in got] != [r._replace(stage2=0.0) for r in want]:
            raise BeamAssertException(f"records changed: {got} != {want}")
        for g, w in zip(got, want, strict=True):
            if not math.isclose(g.stage2, w.stage2, abs_tol=1e-12):
                raise BeamAssertException(f"stage2 {g.stage2} != {w.stage2} for {g.event.key}")

    with test_pipeline.TestPipeline(
        runner=BundleBasedDirectRunner(), options=PipelineOptions([])
    ) as p:
        out = p | beam.Create(records) | ScoreEscalated(p1, NAMES, CFG)
        assert out.element_type is Scored
        assert_that(out, check)


def test_model_refresh_mid_stream(artifacts):
    """A new artifact announced mid-stream is used for every later score.

    The BundleBasedDirectRunner only releases a side input window once the side
    input's watermark has passed its end, so the refresh is expressed with
    matching fixed windows on the main input and the model-metadata stream.
    """
    _, p1, p2 = artifacts
    X = _features(10, seed=5)
    records = [_scored(i, x, float(i) if i < 5 else 60.0 + i) for i, x in enumerate(X)]
    s1 = load_artifact(p1).calibrated(X[:5])
    s2 = load_artifact(p2).calibrated(X[5:])
    expected = [(f"k{i}", float(s), "v0001") for i, s in enumerate(s1)] + [
        (f"k{i + 5}", float(s), "v0002") for i, s in enumerate(s2)
    ]
    assert not np.allclose(s2, load_artifact(p1).calibrated(X[5:]))  # the models differ

    tv = window.TimestampedValue
    stream = (
        test_stream.TestStream(output_tags={"events", "models"})
        .add_elements([tv(ModelMetadata(p1, "v0001"), 0)], tag="models")
        .advance_watermark_to(60, tag="models")
        .add_elements([tv(r, r.event.ts) for r in records[:5]], tag="events")
        .advance_watermark_to(60, tag="events")
        .add_elements([tv(ModelMetadata(p2, "v0002"), 60)], tag="models")
        .advance_watermark_to(120, tag="models")
        .add_elements([tv(r, r.event.ts) for r in records[5:]], tag="events")
        .advance_watermark_to_infinity(tag="events")
        .advance_watermark_to_infinity(tag="models")
    )
    with _streaming_pipeline() as p:
        streams = p | stream
        models = streams["models"] | "WindowModels" >> beam.WindowInto(window.FixedWindows(60))
        out = (
            streams["events"]
            | "WindowEvents" >> beam.WindowInto(window.FixedWindows(60))
            | ScoreEscalated(p1, NAMES, CFG, model_metadata=models, watch_mode="side_input")
            | beam.Map(lambda r: (r.event.key, r.stage2, r.model_version))
        )
        assert_that(out, _close_to(expected))


def test_refresh_to_a_tampered_artifact_keeps_the_old_model(tmp_path, caplog):
    good = save_artifact(_train(1), str(tmp_path), created_at=0.0)
    bad = save_artifact(_train(2), str(tmp_path), created_at=1.0)
    Path(bad).write_bytes(b"tampered")
    X = _features(6, seed=8)
    records = [_scored(i, x, float(i) if i < 3 else 60.0 + i) for i, x in enumerate(X)]
    direct = load_artifact(good).calibrated(X)
    expected = [(f"k{i}", float(s), "v0001") for i, s in enumerate(direct)]
    tv = window.TimestampedValue
    stream = (
        test_stream.TestStream(output_tags={"events", "models"})
        .add_elements([tv(ModelMetadata(good, "v0001"), 0)], tag="models")
        .advance_watermark_to(60, tag="models")
        .add_elements([tv(r, r.event.ts) for r in records[:3]], tag="events")
        .advance_watermark_to(60, tag="events")
        .add_elements([tv(ModelMetadata(bad, "v0002"), 60)], tag="models")
        .advance_watermark_to(120, tag="models")
        .add_elements([tv(r, r.event.ts) for r in records[3:]], tag="events")
        .advance_watermark_to_infinity(tag="events")
        .advance_watermark_to_infinity(tag="models")
    )
    p = _streaming_pipeline()
    streams = p | stream
    models = streams["models"] | "WindowModels" >> beam.WindowInto(window.FixedWindows(60))
    out = (
        streams["events"]
        | "WindowEvents" >> beam.WindowInto(window.FixedWindows(60))
        | ScoreEscalated(good, NAMES, CFG, model_metadata=models, watch_mode="side_input")
        | beam.Map(lambda r: (r.event.key, r.stage2, r.model_version))
    )
    assert_that(out, _close_to(expected))
    # (the streamsift/model_rejected counter is not asserted: BundleBasedDirectRunner
    # drops the metrics of bundles that waited for a side input)
    with caplog.at_level(logging.ERROR, logger="streamsift.transforms.inference"):
        p.run().wait_until_finish()
    rejections = [
        r.getMessage() for r in caplog.records if "rejected model artifact" in r.getMessage()
    ]
    assert rejections
    assert all(f"{bad} (checksum mismatch" in m for m in rejections)
    assert all(m.endswith("serving v0001 instead") for m in rejections)


def test_watch_pattern_is_refused_on_bundle_based_direct_runner(artifacts):
    model_dir, p1, _ = artifacts
    p = _streaming_pipeline()
    events = p | beam.Create([_scored(0, _features(1)[0], 0.0)])
    with pytest.raises(
        ValueError, match="watch_pattern is not supported on BundleBasedDirectRunner"
    ):
        _ = events | ScoreEscalated(
            p1,
            NAMES,
            CFG,
            watch_pattern=f"{model_dir}/*/model.joblib",
            watch_interval_s=1.0,
            watch_stop_timestamp=time.time() + 5,
            watch_mode="side_input",
        )


def test_score_escalated_validates_watch_arguments(artifacts):
    _, p1, _ = artifacts
    side = {"watch_mode": "side_input"}
    with pytest.raises(ValueError, match="watch_interval_s must be > 0 when watch_pattern is set"):
        ScoreEscalated(p1, NAMES, CFG, watch_pattern="x/*/model.joblib", **side)
    with pytest.raises(ValueError, match="alternatives"):
        ScoreEscalated(
            p1, NAMES, CFG, watch_pattern="x", watch_interval_s=1, model_metadata=1, **side
        )
    with pytest.raises(ValueError, match="needs watch_pattern or model_metadata; got neither"):
        ScoreEscalated(p1, NAMES, CFG, **side)
    with pytest.raises(ValueError, match=r"watch_mode must be one of \['poll', 'side_input'\]"):
        ScoreEscalated(p1, NAMES, CFG, watch_mode="watch")
    # poll mode (the default) refuses the side-input arguments
    with pytest.raises(ValueError, match="watch_pattern needs watch_mode='side_input'"):
        ScoreEscalated(p1, NAMES, CFG, watch_pattern="x/*/model.joblib", watch_interval_s=1)
    with pytest.raises(ValueError, match="model_metadata needs watch_mode='side_input'"):
        ScoreEscalated(p1, NAMES, CFG, model_metadata=1)
    with pytest.raises(ValueError, match="watch_stop_timestamp only applies"):
        ScoreEscalated(p1, NAMES, CFG, watch_interval_s=1, watch_stop_timestamp=5.0)
    with pytest.raises(ValueError, match="watch_interval_s must be a finite number >= 0; got -1"):
        ScoreEscalated(p1, NAMES, CFG, watch_interval_s=-1)


def test_prediction_result_model_id_is_the_version(artifacts):
    _, _, p2 = artifacts
    handler = StreamsiftModelHandler(p2, NAMES)
    (result,) = handler.run_inference([_features(1)[0]], handler.load_model())
    assert isinstance(result, PredictionResult)
    assert result.model_id == "v0002"
