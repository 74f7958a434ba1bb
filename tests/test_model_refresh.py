"""Model refresh without restart by polling the artifact directory (watch_mode="poll")."""

from __future__ import annotations

import logging
import math
import os
import pickle
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.worker import statesampler
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import BeamAssertException, assert_that
from apache_beam.transforms import window
from apache_beam.utils import shared
from apache_beam.utils.counters import CounterFactory

from streamsift.config import ModelConfig
from streamsift.models.artifact import (
    ArtifactError,
    TrainedModel,
    load_artifact,
    save_artifact,
    train_model,
)
from streamsift.records import Event, Reason, Scored
from streamsift.transforms import coders  # noqa: F401  (registers the record coders)
from streamsift.transforms.inference import (
    LiveModel,
    ModelRefresher,
    ModelRefreshState,
    ScoreEscalated,
    StreamsiftModelHandler,
    clear_model_cache,
)

NAMES = ("cpu", "latency_ms")
CFG = ModelConfig(n_estimators=20, max_batch_size=4)
ARTIFACT_LOG = "streamsift.models.artifact"
INFERENCE_LOG = "streamsift.transforms.inference"


def _train(seed: int, scale: float = 1.0) -> TrainedModel:
    X = np.random.default_rng(seed).normal(size=(300, len(NAMES))) * scale
    return train_model(X, NAMES, ModelConfig(n_estimators=20, seed=seed), (0.0, 1.0), [60.0])


@pytest.fixture(scope="module")
def models() -> dict[str, TrainedModel]:
    """Three clearly different models (the later ones trained on wider data)."""
    return {"a": _train(1), "b": _train(2, scale=3.0), "c": _train(3, scale=0.3)}


def _features(n: int, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(NAMES))) * 2.0


def _save_as(model: TrainedModel, directory: str, version: str) -> str:
    """Save ``model`` as ``<directory>/<version>`` (manifest included) in a fresh directory."""
    number = int(version[1:])
    if number > 1:  # save_artifact numbers after the highest version directory present
        os.makedirs(os.path.join(directory, f"v{number - 1:04d}"))
    path = save_artifact(model, directory, created_at=0.0)
    if path != os.path.join(directory, version, "model.joblib"):
        raise RuntimeError(f"expected {version}; save_artifact wrote {path}")
    return path


def _tamper(model_path: str) -> None:
    blob = bytearray(Path(model_path).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    Path(model_path).write_bytes(bytes(blob))


class _FakeClock:
    """A clock the test sets by hand (picklable, so handlers holding it can be copied)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _MkdirOnLoad:
    """Pickle payload that creates a directory when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@contextmanager
def _metrics() -> Iterator[dict[str, int]]:
    """Run the body as a Beam step would and collect its streamsift counters."""
    sampler = statesampler.StateSampler("test", CounterFactory())
    statesampler.set_current_tracker(sampler)
    container = MetricsContainer("ScoreEscalated")
    counts: dict[str, int] = {}
    try:
        with sampler.scoped_state("ScoreEscalated", "process", metrics_container=container):
            yield counts
    finally:
        statesampler.set_current_tracker(None)
        for key, value in container.get_cumulative().counters.items():
            if key.metric.namespace == "streamsift":
                counts[key.metric.name] = value


def _score(handler: StreamsiftModelHandler, live, X: np.ndarray) -> tuple[list[float], set[str]]:
    results = list(handler.run_inference(list(X), live))
    return [r.inference for r in results], {r.model_id for r in results}


def _loaded_messages(caplog, version: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == ARTIFACT_LOG and r.getMessage().startswith(f"loaded model {version} ")
    ]


def _messages(caplog, logger: str, prefix: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger and r.getMessage().startswith(prefix)
    ]


def _rejections(caplog) -> list[str]:
    return _messages(caplog, INFERENCE_LOG, "rejected model artifact")


# --------------------------------------------------------------------- unit tests


def test_swap_happens_only_after_the_interval(tmp_path, models, caplog):
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    clock = _FakeClock(100.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=10.0, clock=clock)
    live = handler.load_model()
    assert live.version == "v0001"
    X = _features(6)
    s1 = load_artifact(p1).calibrated(X).tolist()

    p2 = save_artifact(models["b"], d, created_at=2.0)
    s2 = load_artifact(p2).calibrated(X).tolist()
    assert not np.allclose(s1, s2)  # the models really differ

    caplog.set_level(logging.INFO, logger=ARTIFACT_LOG)
    caplog.set_level(logging.INFO, logger=INFERENCE_LOG)
    with _metrics() as counts:
        clock.now = 109.999  # just short of the interval since the load
        assert _score(handler, live, X) == (s1, {"v0001"})
        clock.now = 110.0
        assert _score(handler, live, X) == (s2, {"v0002"})
        assert live.version == "v0002" and live.path == p2
        served = live.current

        # nothing newer: later checks neither reload nor change the served model
        for now in (120.0, 130.0, 1000.0):
            clock.now = now
            assert _score(handler, live, X) == (s2, {"v0002"})
    assert counts == {"model_refreshed": 1}
    assert live.current is served
    assert len(_loaded_messages(caplog, "v0002")) == 1
    refreshed = [r.getMessage() for r in caplog.records if "model refreshed" in r.getMessage()]
    assert refreshed == [f"model refreshed: now serving v0002 from {p2} (was v0001)"]


def test_tampered_newer_artifact_is_rejected_and_the_old_model_keeps_scoring(
    tmp_path, models, caplog
):
    d = str(tmp_path / "model")
    p1 = save_artifact(models["a"], d, created_at=1.0)
    clock = _FakeClock(0.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=5.0, clock=clock)
    live = handler.load_model()
    X = _features(5, seed=3)
    s1 = load_artifact(p1).calibrated(X).tolist()

    # a newer artifact whose model file was replaced by a live pickle payload
    bad = save_artifact(models["b"], d, created_at=2.0)
    marker = tmp_path / "pwned"
    Path(bad).write_bytes(pickle.dumps(_MkdirOnLoad(str(marker))))

    caplog.set_level(logging.INFO, logger=ARTIFACT_LOG)
    caplog.set_level(logging.INFO, logger=INFERENCE_LOG)
    with _metrics() as counts:
        for now in (5.0, 10.0, 15.0):  # three checks see the bad artifact
            clock.now = now
            assert _score(handler, live, X) == (s1, {"v0001"})
    assert counts == {"model_rejected": 1}
    assert not marker.exists()  # never unpickled
    assert live.version == "v0001"
    rejections = _rejections(caplog)
    assert len(rejections) == 1  # logged once, not once per check
    assert rejections[0].startswith(f"rejected model artifact {bad} (ArtifactError: checksum")
    assert rejections[0].endswith("serving v0001 instead")

    # a valid artifact after the bad one is picked up
    p3 = save_artifact(models["c"], d, created_at=3.0)
    clock.now = 20.0
    s3 = load_artifact(p3).calibrated(X).tolist()
    with _metrics() as counts:
        assert _score(handler, live, X) == (s3, {"v0003"})
    assert counts == {"model_refreshed": 1}
    assert len(_rejections(caplog)) == 1


def test_schema_mismatch_in_a_newer_artifact_is_rejected(tmp_path, models, caplog):
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    other = train_model(
        np.random.default_rng(5).normal(size=(100, 2)),
        ("cpu", "disk"),
        ModelConfig(n_estimators=5),
        (0.0, 1.0),
        [60.0],
    )
    clock = _FakeClock(0.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=1.0, clock=clock)
    live = handler.load_model()
    save_artifact(other, d, created_at=2.0)
    clock.now = 1.0
    caplog.set_level(logging.ERROR, logger=INFERENCE_LOG)
    assert _score(handler, live, _features(2))[1] == {"v0001"}
    (msg,) = _rejections(caplog)
    assert msg.endswith(
        "feature schema mismatch: model expects ['cpu', 'disk'] but pipeline produces "
        "['cpu', 'latency_ms']; missing: ['disk']; extra: ['latency_ms']); serving v0001 instead"
    )


def test_interval_zero_never_polls(tmp_path, models):
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    clock = _FakeClock(0.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=0.0, clock=clock)
    live = handler.load_model()
    save_artifact(models["b"], d, created_at=2.0)
    for now in (1.0, 1e6, 1e12):
        clock.now = now
        assert _score(handler, live, _features(3))[1] == {"v0001"}


def test_load_model_starts_from_the_newest_good_artifact(tmp_path, models, caplog):
    """A worker that builds its model after a refresh does not go back in time."""
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    save_artifact(models["b"], d, created_at=2.0)
    clock = _FakeClock(0.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=60.0, clock=clock)
    assert handler.load_model().version == "v0002"

    # a fresh worker whose newest artifact is bad falls back to the configured one
    bad = save_artifact(models["c"], d, created_at=3.0)
    _tamper(bad)
    clear_model_cache()
    caplog.set_level(logging.ERROR, logger=INFERENCE_LOG)
    assert handler.load_model().version == "v0001"
    (msg,) = _rejections(caplog)
    assert msg.startswith(f"rejected model artifact {bad} (ArtifactError: checksum mismatch")
    assert msg.endswith("serving the configured artifact instead")


def test_dofn_copies_get_one_live_model_without_reloading(tmp_path, models, caplog):
    """RunInference builds a handler copy (and calls ``load_model``) per DoFn set-up;
    BundleBasedDirectRunner does that for every bundle. The copies share one
    LiveModel, so a refreshed model is kept and nothing is loaded again."""
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=5.0)
    caplog.set_level(logging.INFO, logger=ARTIFACT_LOG)
    live = handler.load_model()
    copies = [pickle.loads(pickle.dumps(handler)) for _ in range(3)]
    assert all(c.load_model() is live for c in copies)
    assert len(_loaded_messages(caplog, "v0001")) == 1

    # without polling, a cached model is reused until its files change
    static = StreamsiftModelHandler(p1, NAMES, model_dir=d)
    first = static.load_model()
    assert first is not live and static.load_model() is first
    _tamper(p1)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        pickle.loads(pickle.dumps(static)).load_model()


def test_a_bad_configured_artifact_is_not_masked(tmp_path, models):
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    _tamper(p1)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=1.0)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        handler.load_model()


def test_swap_is_shared_by_handler_copies(tmp_path, models):
    """RunInference gives every DoFn copy the same LiveModel through ``shared.Shared``.

    The swap made while one copy scores a batch is seen by the other copy's
    next batch, although that copy's own clock says no check is due.
    """
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    handler_a = StreamsiftModelHandler(
        p1, NAMES, model_dir=d, watch_interval_s=10.0, clock=_FakeClock(0.0)
    )
    handler_b = pickle.loads(pickle.dumps(handler_a))  # as a DoFn copy on a worker
    handle = shared.Shared()
    live_a = handle.acquire(handler_a.load_model, tag="streamsift:test")
    live_b = handle.acquire(handler_b.load_model, tag="streamsift:test")
    assert isinstance(live_a, LiveModel) and live_b is live_a

    p2 = save_artifact(models["b"], d, created_at=2.0)
    X = _features(4)
    handler_a._clock.now = 10.0
    assert _score(handler_a, live_a, X)[1] == {"v0002"}
    assert handler_b._clock.now == 0.0
    assert _score(handler_b, live_b, X) == (load_artifact(p2).calibrated(X).tolist(), {"v0002"})


def test_concurrent_batches_during_a_swap(tmp_path, models, caplog):
    """Threads scoring while the artifact changes: every batch is scored and labelled
    by one model, the new artifact is loaded once, and every thread ends up on it."""
    d = str(tmp_path)
    p1 = save_artifact(models["a"], d, created_at=1.0)
    handler = StreamsiftModelHandler(p1, NAMES, model_dir=d, watch_interval_s=1e-9)
    live = handler.load_model()
    X = _features(8, seed=21)
    staged = _save_as(models["b"], str(tmp_path / "scratch"), "v0002")
    expected = {
        "v0001": load_artifact(p1).calibrated(X).tolist(),
        "v0002": load_artifact(staged).calibrated(X).tolist(),
    }
    written = threading.Event()
    batches: list[tuple[list[float], set[str]]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5000):
                scores, versions = _score(handler, live, X)
                batches.append((scores, versions))
                if written.is_set() and versions == {"v0002"}:
                    return
            raise AssertionError("thread never saw v0002")
        except BaseException as exc:  # reported in the main thread
            failures.append(exc)

    caplog.set_level(logging.INFO, logger=ARTIFACT_LOG)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    os.rename(os.path.dirname(staged), os.path.join(d, "v0002"))  # appears at once
    written.set()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures
    assert len(batches) >= 4
    for scores, versions in batches:
        assert len(versions) == 1
        assert scores == expected[next(iter(versions))]
    swapped_in = os.path.join(d, "v0002", "model.joblib")
    assert [m for m in _loaded_messages(caplog, "v0002") if m.endswith(swapped_in)] == [
        f"loaded model v0002 from {swapped_in}"
    ]


def test_refresher_state_is_plain_data(tmp_path, models):
    d = str(tmp_path)
    refresher = ModelRefresher(d, NAMES, interval_s=2.0)
    state = ModelRefreshState()
    assert refresher.due(state, 0.0)  # never checked
    assert refresher.check(state).kind == "absent"
    p1 = save_artifact(models["a"], d, created_at=1.0)
    outcome = refresher.check(state)
    assert (outcome.kind, outcome.path) == ("loaded", p1)
    assert state.model is None  # check does not change the state
    refresher.apply(state, outcome, now=3.0)
    assert (state.version, state.path, state.last_check) == ("v0001", p1, 3.0)
    assert not refresher.due(state, 4.999) and refresher.due(state, 5.0)
    assert refresher.check(state).kind == "unchanged"

    # rewriting the served artifact in place counts as a different artifact
    _tamper(p1)
    rejected = refresher.check(state)
    assert rejected.kind == "rejected" and "checksum mismatch" in rejected.error
    refresher.apply(state, rejected, now=5.0)
    assert state.version == "v0001" and rejected.fingerprint in state.rejected
    assert refresher.check(state).kind == "known_bad"


def test_handler_validates_refresh_arguments():
    with pytest.raises(ValueError, match="watch_interval_s must be a finite number >= 0; got nan"):
        StreamsiftModelHandler("m/v0001/model.joblib", NAMES, watch_interval_s=float("nan"))
    with pytest.raises(ValueError, match="model_dir must be a non-empty string or None; got ''"):
        StreamsiftModelHandler("m/v0001/model.joblib", NAMES, model_dir="")
    with pytest.raises(ValueError, match="clock must be callable; got 3"):
        StreamsiftModelHandler("m/v0001/model.joblib", NAMES, clock=3)
    h = StreamsiftModelHandler("/data/model/v0007/model.joblib", NAMES, watch_interval_s=5)
    assert (h.model_dir, h.watch_interval_s) == ("/data/model", 5.0)


# ----------------------------------------------------------------- pipeline tests


def _scored(key: str, feats: np.ndarray, ts: float) -> Scored:
    values = tuple(float(v) for v in feats)
    reason = Reason("cpu", values[0], 0.0, 3.5)
    return Scored(Event(key, ts, values, "", 0.0), values, 4.0, (reason,), True)


class _PublishArtifactOnMarker(beam.DoFn):
    """Writes an artifact into the model directory when it sees a marker record.

    ``plan`` maps a marker key to (expected version, model, tamper). The
    artifact is built in a scratch directory and renamed into place, so it
    appears at once (like :func:`save_artifact` does). Markers are dropped;
    other records pass through.
    """

    def __init__(self, model_dir: str, plan: dict[str, tuple[str, TrainedModel, bool]]):
        self._model_dir = model_dir
        self._plan = plan

    def process(self, record: Scored):
        if record.event.key not in self._plan:
            yield record
            return
        version, model, tamper = self._plan[record.event.key]
        scratch = os.path.join(self._model_dir, f".scratch-{version}")
        built = _save_as(model, scratch, version)
        if tamper:
            _tamper(built)
        os.rename(os.path.dirname(built), os.path.join(self._model_dir, version))
        shutil.rmtree(scratch)


def _chunked_stream(chunks: list[list[Scored]]) -> test_stream.TestStream:
    stream = test_stream.TestStream()
    for i, chunk in enumerate(chunks):
        stream = stream.add_elements(
            [window.TimestampedValue(r, r.event.ts) for r in chunk]
        ).advance_watermark_to(100.0 * (i + 1))
    return stream.advance_watermark_to_infinity()


def _chunks(sizes: list[int], markers: dict[int, str]) -> tuple[list[list[Scored]], np.ndarray]:
    """Records ``c<chunk>-<i>`` with event times inside [100 * chunk, 100 * chunk + 100)."""
    X = _features(sum(sizes), seed=31)
    chunks, row = [], 0
    for c, n in enumerate(sizes):
        chunk = []
        if c in markers:
            chunk.append(_scored(markers[c], np.zeros(len(NAMES)), 100.0 * c))
        for i in range(n):
            chunk.append(_scored(f"c{c}-{i}", X[row], 100.0 * c + 1 + i))
            row += 1
        chunks.append(chunk)
    return chunks, X


def _matches(allowed: dict[str, set[str]], expected: dict[str, dict[str, float]]):
    """Matcher: each key once, with a version it may carry and that version's score."""

    def match(actual):
        got = {}
        for key, score, version in actual:
            if key in got:
                raise BeamAssertException(f"{key} scored twice")
            got[key] = (score, version)
        if set(got) != set(allowed):
            raise BeamAssertException(f"keys {sorted(got)} != {sorted(allowed)}")
        for key, (score, version) in got.items():
            if version not in allowed[key]:
                raise BeamAssertException(f"{key} carries {version}; allowed {allowed[key]}")
            want = expected[version][key]
            if not math.isclose(score, want, abs_tol=1e-12):
                raise BeamAssertException(f"{key}: {score} != {want} ({version})")

    return match


def _expected_scores(
    tmp_path: Path, models_by_version: dict[str, TrainedModel], chunks, X
) -> dict[str, dict[str, float]]:
    keys = [r.event.key for chunk in chunks for r in chunk if r.event.key.startswith("c")]
    out = {}
    for version, model in models_by_version.items():
        ref = load_artifact(_save_as(model, str(tmp_path / f"ref-{version}"), version))
        out[version] = dict(zip(keys, ref.calibrated(X).tolist(), strict=True))
    return out


def _streaming_pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(
        runner=BundleBasedDirectRunner(), options=PipelineOptions([], streaming=True)
    )


def _build(p, chunks, model_dir: str, plan, model_path: str):
    return (
        p
        | _chunked_stream(chunks)
        | "Publish" >> beam.ParDo(_PublishArtifactOnMarker(model_dir, plan))
        | ScoreEscalated(model_path, NAMES, CFG, watch_interval_s=1e-9)
        | beam.Map(lambda r: (r.event.key, r.stage2, r.model_version))
    )


def _loads_from(caplog, path: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == ARTIFACT_LOG
        and r.getMessage().startswith("loaded model ")
        and r.getMessage().endswith(f" from {path}")
    )


def test_model_swapped_mid_stream_on_bundle_based_direct_runner(tmp_path, models, caplog):
    """The artifact written while the pipeline runs scores every later chunk.

    The stream has three chunks separated by watermark advances; a DoFn in the
    pipeline writes v0002 when it sees the marker at the head of chunk 2.

    What orders the chunks: BundleBasedDirectRunner (Beam 2.77) runs every
    bundle on one executor thread and reads the next TestStream event only
    when no bundle is left to execute (``_MonitorTask._add_work_if_necessary``),
    so chunk 1 is scored before the marker is read, and chunk 3 is read after
    the publishing bundle of chunk 2 has finished. Chunk 2 itself may be
    scored by either model, so it is only checked for consistency (its score
    is the score of the version it carries).

    The streamsift counters are not asserted here: this runner commits a
    step's user metrics only from the first bundle its worker thread ran for
    that step (its StateSampler caches the first bundle's MetricsContainer);
    the unit tests above check them with a real MetricsContainer. The log
    shows that each artifact was loaded once, not once per bundle.
    """
    model_dir = str(tmp_path / "model")
    p1 = save_artifact(models["a"], model_dir, created_at=1.0)
    p2 = os.path.join(model_dir, "v0002", "model.joblib")
    chunks, X = _chunks([5, 5, 5], markers={1: "write-v0002"})
    plan = {"write-v0002": ("v0002", models["b"], False)}
    expected = _expected_scores(tmp_path, {"v0001": models["a"], "v0002": models["b"]}, chunks, X)
    keys = {r.event.key: int(r.event.key[1]) for c in chunks for r in c if r.event.key[0] == "c"}
    by_chunk = [{"v0001"}, {"v0001", "v0002"}, {"v0002"}]
    allowed = {k: by_chunk[c] for k, c in keys.items()}
    assert not any(
        math.isclose(expected["v0001"][k], expected["v0002"][k], abs_tol=1e-6) for k in keys
    )

    p = _streaming_pipeline()
    out = _build(p, chunks, model_dir, plan, p1)
    assert_that(out, _matches(allowed, expected))
    caplog.set_level(logging.INFO, logger=ARTIFACT_LOG)
    caplog.set_level(logging.INFO, logger=INFERENCE_LOG)
    p.run().wait_until_finish()
    assert sorted(os.listdir(model_dir)) == [".staging", "v0001", "v0002"]
    assert (_loads_from(caplog, p1), _loads_from(caplog, p2)) == (1, 1)
    assert _messages(caplog, INFERENCE_LOG, "model refreshed") == [
        f"model refreshed: now serving v0002 from {p2} (was v0001)"
    ]


def test_tampered_artifact_mid_stream_is_skipped_then_a_good_one_is_used(tmp_path, models, caplog):
    """v0002 (tampered) appears in chunk 2, v0003 (valid) in chunk 4.

    Chunks are ordered as in the test above: chunks 1-3 are scored with
    v0001 (chunk 3 is read after v0002 was written and rejected), chunk 5 with
    v0003; chunk 4 carries v0001 or v0003. The rejection is logged once
    although every later batch checks the directory.
    """
    model_dir = str(tmp_path / "model")
    p1 = save_artifact(models["a"], model_dir, created_at=1.0)
    chunks, X = _chunks([3, 3, 3, 3, 3], markers={1: "write-v0002", 3: "write-v0003"})
    plan = {
        "write-v0002": ("v0002", models["b"], True),
        "write-v0003": ("v0003", models["c"], False),
    }
    expected = _expected_scores(tmp_path, {"v0001": models["a"], "v0003": models["c"]}, chunks, X)
    keys = {r.event.key: int(r.event.key[1]) for c in chunks for r in c if r.event.key[0] == "c"}
    by_chunk = [{"v0001"}, {"v0001"}, {"v0001"}, {"v0001", "v0003"}, {"v0003"}]
    allowed = {k: by_chunk[c] for k, c in keys.items()}

    p = _streaming_pipeline()
    out = _build(p, chunks, model_dir, plan, p1)
    assert_that(out, _matches(allowed, expected))
    caplog.set_level(logging.INFO, logger=INFERENCE_LOG)
    p.run().wait_until_finish()
    bad = os.path.join(model_dir, "v0002", "model.joblib")
    (msg,) = _rejections(caplog)
    assert msg.startswith(f"rejected model artifact {bad} (ArtifactError: checksum mismatch")
    assert msg.endswith("serving v0001 instead")
    p3 = os.path.join(model_dir, "v0003", "model.joblib")
    assert _messages(caplog, INFERENCE_LOG, "model refreshed") == [
        f"model refreshed: now serving v0003 from {p3} (was v0001)"
    ]
