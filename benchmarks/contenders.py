"""The four contenders, each run on the same payload file in its own process.

* ``full``: streamsift's whole pipeline (parse, per-key features and stage 1,
  RunInference stage 2, per-key alerting, rate limit, JSONL sinks) through
  :func:`streamsift.pipeline.run.run_stream` on the DirectRunner
  (``BundleBasedDirectRunner``) in streaming mode, alert printing and progress off;
* ``beam_zscore``: Beam's ``AnomalyDetection`` with ``ZScore`` (univariate: it
  scores the first feature field) on the same runner, options and replay
  source, after parsing each payload into ``(key, beam.Row(features))``;
* ``reference``: the reference design, a service loop that parses each message,
  builds its feature row (the event's own values: no per-key state) and scores
  that single row with a scikit-learn Isolation Forest ``decision_function``;
* ``floor``: the runner's floor, the same replay source keyed by the payload's
  key field into a trivial stateful pass-through DoFn (one
  ``ReadModifyWriteState`` counter per key).

Each ``run_*`` function returns a :class:`ContenderResult`. Wall time covers
pipeline construction (the replay source parses every payload's time), the run
and, for ``full``, loading the model artifact (inside RunInference's set-up)
and reading its JSONL outputs back; it excludes the stream generation, the
model training (done once beforehand) and library imports (done before the
clock starts; the reference's model load counts as its ``setup_s``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.common import (
    BenchSpec,
    bench_config,
    current_rss_mb,
    payload_digest,
    peak_rss_mb,
    read_payloads,
    ru_maxrss_mb,
)

__all__ = [
    "CONTENDERS",
    "ContenderInputs",
    "ContenderResult",
    "run_beam_zscore",
    "run_contender",
    "run_floor",
    "run_full",
    "run_batched",
    "run_reference",
    "train_reference_model",
    "warm_model_imports",
]

log = logging.getLogger(__name__)

#: name -> (short label, what it runs)
CONTENDERS: dict[str, tuple[str, str]] = {
    "full": (
        "streamsift full pipeline, per-element engine",
        "run_stream with engine.mode = per_element: Parse -> DetectPerKey (event-time ordering, rolling features, "
        "stage-1 pre-filter) -> 1 s windows -> RunInference (PyOD Isolation Forest, "
        "batches up to 256) -> AlertPerKey -> RateLimit -> JSONL sinks; "
        "DirectRunner (BundleBasedDirectRunner), streaming",
    ),
    "batched": (
        "streamsift full pipeline, batched engine (the default)",
        "run_stream with engine.mode = batched (streamsift's default engine): ReplayChunks (one element per chunk of "
        "500 payloads) -> ParseChunks (chunk parser, events split by shard) -> DetectShards "
        "(4 shards, one stateful DoFn per shard: event-time buffering and release, rolling "
        "features, stage 1, one vectorised forest call per step, per-key alerts) -> "
        "RateLimit -> JSONL sinks; DirectRunner (BundleBasedDirectRunner), streaming",
    ),
    "beam_zscore": (
        "Beam AnomalyDetection(ZScore)",
        "ReplayStream -> parse (streamsift EventParser) to (key, beam.Row of all feature "
        "fields) -> apache_beam.ml.anomaly AnomalyDetection(ZScore(features=[first field])) "
        "with its default FixedThreshold(3); same runner and streaming options",
    ),
    "reference": (
        "reference: per-message IForest service",
        "in-process loop: EventParser.parse -> feature row = the event's values -> "
        "sklearn IsolationForest.decision_function on that one row (alert when < 0); "
        "no Beam, no per-key state",
    ),
    "floor": (
        "runner floor: stateful pass-through",
        "ReplayStream -> key by json.loads(payload)[key_field] -> DoFn with one "
        "ReadModifyWriteState counter per key, emitting every element; same runner "
        "and streaming options",
    ),
}


@dataclass(frozen=True)
class ContenderInputs:
    """What a contender process gets from the harness (paths in its work directory).

    >>> ContenderInputs(BenchSpec(events=10), "p.jsonl", "m/model.joblib", "r.joblib", "w").spec.events
    10
    """

    spec: BenchSpec
    payloads_path: str
    model_path: str
    reference_model_path: str
    work_dir: str


@dataclass
class ContenderResult:
    """Measurements of one contender run.

    ``events_in`` counts the payloads the contender's own code received,
    ``valid`` those that parsed into an event, ``alerts`` what it flagged
    (for ``floor``: elements out), ``outputs`` the elements it emitted.

    >>> r = ContenderResult("floor", 100, 98, 100, 100, 2.0, 0.0, 80.0, 90.0, "ab")
    >>> r.events_per_s, r.to_dict()["events_per_s"]
    (50.0, 50.0)
    """

    name: str
    events_in: int
    valid: int
    alerts: int
    outputs: int
    wall_s: float
    setup_s: float
    rss_start_mb: float
    peak_rss_mb: float
    payload_sha256: str
    details: dict[str, Any] = field(default_factory=dict)
    #: ``ru_maxrss`` of the process (see :func:`benchmarks.common.ru_maxrss_mb`)
    ru_maxrss_mb: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events_in / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events_per_s"] = self.events_per_s
        return d


# ------------------------------------------------------------------ shared helpers


def _beam_counters(result: Any) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    from benchmarks.beam_fns import NAMESPACE

    out: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def _run_streaming(
    build, runner: str = "DirectRunner", beam_args: tuple[str, ...] = ()
) -> tuple[dict[str, int], float]:
    """Build (``build(pipeline)``) and run a streaming pipeline on ``runner`` (streamsift's
    :func:`~streamsift.pipeline.options.make_runner`); return the benchmark counters and
    the wall time of construction + run."""
    import apache_beam as beam

    from streamsift.pipeline.options import make_runner, start_pipeline, streaming_options

    t0 = time.perf_counter()
    pipeline = beam.Pipeline(runner=make_runner(runner), options=streaming_options(list(beam_args)))
    build(pipeline)
    result = start_pipeline(pipeline)
    result.wait_until_finish()
    wall = time.perf_counter() - t0
    return _beam_counters(result), wall


def warm_model_imports() -> None:
    """Import the model libraries before the clock starts, as a running service has:
    the first model load would otherwise pay for importing scikit-learn and PyOD."""
    import pyod.models.iforest  # noqa: F401
    import sklearn.ensemble  # noqa: F401


def _load(inputs: ContenderInputs) -> tuple[list[bytes], str]:
    payloads = read_payloads(inputs.payloads_path)
    return payloads, payload_digest(payloads)


# ------------------------------------------------------------------ a. full pipeline


def _count_stage2_batches() -> list[int]:
    """Count the batches (and rows) RunInference hands to streamsift's model handler
    in this process: ``[batches, rows]``, updated as the pipeline runs. Two integer
    increments per batch; the batches themselves are untouched."""
    from streamsift.transforms import inference

    handler_cls = inference.StreamsiftModelHandler
    original = getattr(handler_cls, "_bench_original_run_inference", handler_cls.run_inference)
    counts = [0, 0]

    def run_inference(self, batch, model, inference_args=None):
        counts[0] += 1
        counts[1] += len(batch)
        return original(self, batch, model, inference_args)

    handler_cls._bench_original_run_inference = original
    handler_cls.run_inference = run_inference
    return counts


def run_full(
    inputs: ContenderInputs,
    engine: str = "per_element",
    runner: str = "DirectRunner",
    beam_args: tuple[str, ...] = (),
    name: str | None = None,
) -> ContenderResult:
    """streamsift's full pipeline via ``run_stream`` (print and progress off), with
    the per-element stages or (``engine="batched"``) the micro-batched engine, on
    ``runner`` (default the DirectRunner)."""
    import dataclasses
    import os

    from streamsift.config import EngineConfig
    from streamsift.pipeline.run import run_stream

    spec = inputs.spec
    cfg = bench_config(spec, os.path.dirname(os.path.dirname(inputs.model_path)))
    cfg = dataclasses.replace(cfg, engine=EngineConfig(mode=engine))
    if name is None:
        name = "full" if engine == "per_element" else "batched"
    payloads, digest = _load(inputs)
    out_dir = os.path.join(inputs.work_dir, f"{name}-out")
    warm_model_imports()
    batches = _count_stage2_batches()
    rss0 = current_rss_mb()
    t0 = time.perf_counter()
    res = run_stream(
        payloads,
        cfg,
        inputs.model_path,
        out_dir,
        print_alerts=False,
        show_progress=False,
        chunk_size=spec.chunk_size,
        runner=runner,
        beam_args=list(beam_args),
    )
    wall = time.perf_counter() - t0
    new_alerts = [a for a in res.alerts if not a.get("update")]
    c = res.counters
    if engine == "batched":  # one model call per shard step, not RunInference batches
        batches = [c.get("stage2_batches", 0), c.get("stage2_scored", 0)]
    return ContenderResult(
        name=name,
        events_in=res.counter("events_in"),
        valid=res.counter("processed") + res.counter("late"),
        alerts=len(new_alerts),
        outputs=len(res.alerts),
        wall_s=wall,
        setup_s=0.0,
        rss_start_mb=rss0,
        peak_rss_mb=peak_rss_mb(),
        payload_sha256=digest,
        details={
            "run_s": res.elapsed_s,
            "processed": res.counter("processed"),
            "dead_lettered": res.counter("dead_lettered"),
            "late": res.counter("late"),
            "escalated": res.counter("escalated"),
            "stage2_scored": res.counter("stage2_scored"),
            "flagged": res.counter("flagged"),
            "alerts_opened": res.counter("alerts_opened"),
            "alerts_upgraded": res.counter("alerts_upgraded"),
            "alerts_suppressed": res.counter("alerts_suppressed"),
            "alert_lines": len(res.alerts),
            "stage2_batches": batches[0],
            "stage2_rows": batches[1],
            "stage2_mean_batch": batches[1] / batches[0] if batches[0] else 0.0,
            "alerts_by_severity": {
                s: sum(1 for a in new_alerts if a.get("severity") == s)
                for s in ("info", "warning", "critical")
            },
            "counters": dict(sorted(c.items())),
            "alerts_path": res.paths.alerts,
            "engine": engine,
            "runner": runner,
        },
    )


def run_batched(inputs: ContenderInputs) -> ContenderResult:
    """streamsift's full pipeline on the micro-batched engine (``engine.mode = batched``)."""
    return run_full(inputs, engine="batched")


# ------------------------------------------------------------------ b. Beam ZScore


def run_beam_zscore(inputs: ContenderInputs) -> ContenderResult:
    """Beam's built-in ``AnomalyDetection(ZScore)`` on the replayed stream."""
    import apache_beam as beam
    from apache_beam.ml.anomaly.detectors.zscore import ZScore
    from apache_beam.ml.anomaly.transforms import AnomalyDetection

    from benchmarks.beam_fns import CountResults, ToKeyedRow
    from streamsift.config import InputConfig
    from streamsift.transforms.source import ReplayStream

    spec = inputs.spec
    fields = spec.fields
    input_cfg = InputConfig(feature_fields=fields)
    payloads, digest = _load(inputs)

    def build(p):
        (
            p
            | "Source" >> ReplayStream(payloads, input_cfg, chunk_size=spec.chunk_size)
            | "ToKeyedRow" >> beam.ParDo(ToKeyedRow(input_cfg)).with_output_types(tuple[str, Any])
            | "ZScore" >> AnomalyDetection(ZScore(features=[fields[0]]))
            | "Count" >> beam.ParDo(CountResults())
        )

    rss0 = current_rss_mb()
    counters, wall = _run_streaming(build)
    return ContenderResult(
        name="beam_zscore",
        events_in=counters.get("events_in", 0),
        valid=counters.get("valid", 0),
        alerts=counters.get("alerts", 0),
        outputs=counters.get("outputs", 0),
        wall_s=wall,
        setup_s=0.0,
        rss_start_mb=rss0,
        peak_rss_mb=peak_rss_mb(),
        payload_sha256=digest,
        details={
            "scored_feature": fields[0],
            "threshold": "FixedThreshold(3) (ZScore default)",
            "unscored_warmup": counters.get("unscored", 0),
        },
    )


# ------------------------------------------------------------------ c. reference design


def train_reference_model(spec: BenchSpec, path: str) -> dict[str, Any]:
    """Fit the reference service's Isolation Forest on the raw values of the same
    synthetic history streamsift's model is trained on; save it with joblib.

    Same trees, contamination and seed as streamsift's model config.
    """
    import joblib
    import numpy as np
    from sklearn.ensemble import IsolationForest

    from streamsift.parsing import EventParser
    from streamsift.pipeline.run import synthetic_history
    from streamsift.records import Event

    cfg = bench_config(spec, "unused")
    history = synthetic_history(cfg)
    parser = EventParser(cfg.input)
    rows = [e.values for e in (parser.parse(p) for p in history) if isinstance(e, Event)]
    X = np.asarray(rows, dtype=np.float64)
    t0 = time.perf_counter()
    model = IsolationForest(
        n_estimators=cfg.model.n_estimators,
        contamination=cfg.model.contamination,
        random_state=cfg.model.seed,
    ).fit(X)
    fit_s = time.perf_counter() - t0
    joblib.dump(model, path)
    return {"rows": int(X.shape[0]), "fit_s": fit_s, "n_estimators": cfg.model.n_estimators}


def run_reference(inputs: ContenderInputs) -> ContenderResult:
    """Per-message scoring loop: parse, feature row, one-row ``decision_function``."""
    import joblib
    import numpy as np

    from streamsift.config import InputConfig
    from streamsift.parsing import EventParser
    from streamsift.records import Event

    spec = inputs.spec
    payloads, digest = _load(inputs)
    t0 = time.perf_counter()
    model = joblib.load(inputs.reference_model_path)
    parser = EventParser(InputConfig(feature_fields=spec.fields))
    setup = time.perf_counter() - t0
    rss0 = current_rss_mb()
    n_in = valid = alerts = 0
    score_s = 0.0
    t0 = time.perf_counter()
    for raw in payloads:
        n_in += 1
        ev = parser.parse(raw)
        if not isinstance(ev, Event):
            continue
        valid += 1
        row = np.asarray(ev.values, dtype=np.float64).reshape(1, -1)
        ts = time.perf_counter()
        score = model.decision_function(row)[0]
        score_s += time.perf_counter() - ts
        if score < 0.0:
            alerts += 1
    wall = time.perf_counter() - t0
    return ContenderResult(
        name="reference",
        events_in=n_in,
        valid=valid,
        alerts=alerts,
        outputs=valid,
        wall_s=wall,
        setup_s=setup,
        rss_start_mb=rss0,
        peak_rss_mb=peak_rss_mb(),
        payload_sha256=digest,
        details={
            "decision_function_s": score_s,
            "decision_function_share": score_s / wall if wall > 0 else 0.0,
            "us_per_decision_function": 1e6 * score_s / valid if valid else 0.0,
        },
    )


# ------------------------------------------------------------------ d. runner floor


def run_floor(
    inputs: ContenderInputs,
    runner: str = "DirectRunner",
    beam_args: tuple[str, ...] = (),
    name: str = "floor",
) -> ContenderResult:
    """Same source, one trivial stateful DoFn: what the runner costs per element."""

    import apache_beam as beam

    from benchmarks.beam_fns import KeyByField, PassThrough
    from streamsift.config import InputConfig
    from streamsift.transforms.source import ReplayStream

    spec = inputs.spec
    input_cfg = InputConfig(feature_fields=spec.fields)
    payloads, digest = _load(inputs)

    def build(p):
        (
            p
            | "Source" >> ReplayStream(payloads, input_cfg, chunk_size=spec.chunk_size)
            | "KeyByField"
            >> beam.ParDo(KeyByField(input_cfg.key_field)).with_output_types(tuple[str, bytes])
            | "PassThrough" >> beam.ParDo(PassThrough())
        )

    rss0 = current_rss_mb()
    counters, wall = _run_streaming(build, runner, beam_args)
    out = counters.get("outputs", 0)
    return ContenderResult(
        name=name,
        events_in=counters.get("events_in", 0),
        valid=out,
        alerts=out,
        outputs=out,
        wall_s=wall,
        setup_s=0.0,
        rss_start_mb=rss0,
        peak_rss_mb=peak_rss_mb(),
        payload_sha256=digest,
        details={
            "note": "alerts = elements out (every payload passes through)",
            "runner": runner,
        },
    )


_RUNNERS = {
    "full": run_full,
    "batched": run_batched,
    "beam_zscore": run_beam_zscore,
    "reference": run_reference,
    "floor": run_floor,
}


def run_contender(name: str, inputs: ContenderInputs) -> ContenderResult:
    """Run contender ``name`` (one of :data:`CONTENDERS`).

    >>> run_contender("nope", None)
    Traceback (most recent call last):
    ...
    ValueError: contender must be one of ['full', 'batched', 'beam_zscore', 'reference', 'floor']; got 'nope'
    """
    if name not in _RUNNERS:
        raise ValueError(f"contender must be one of {list(_RUNNERS)}; got {name!r}")
    result = _RUNNERS[name](inputs)
    result.ru_maxrss_mb = ru_maxrss_mb()
    return result
