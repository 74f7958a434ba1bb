"""Running the pipeline: model bootstrap, the streaming run, progress and summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from streamsift.config import Config
from streamsift.models.artifact import (
    ArtifactError,
    latest_artifact,
    load_artifact,
    save_artifact,
    train_model,
)
from streamsift.models.keylogic import KeyLogic, compute_features
from streamsift.models.thresholds import Calibrator
from streamsift.parsing import EventParser
from streamsift.pipeline.build import OutputPaths, attach_file_sinks, replay_and_detect
from streamsift.pipeline.console import console
from streamsift.pipeline.options import make_runner, start_pipeline, streaming_options
from streamsift.records import Event
from streamsift.transforms import sinks

__all__ = [
    "RunResult",
    "ensure_model",
    "synthetic_history",
    "train_on_synthetic_history",
    "train_from_payloads",
    "run_stream",
    "read_jsonl",
    "format_summary",
]

_LOG = logging.getLogger(__name__)
_MIN_CALIBRATION_ROWS = 200
NAMESPACE = "streamsift"

#: the synthetic stream starts here (2026-01-01T00:00:00Z); history ends here.
SYNTHETIC_START_TS = 1_767_225_600.0


def train_from_payloads(payloads: Iterable[bytes], cfg: Config, model_dir: str) -> str:
    """Compute features with the streaming code path and write a model artifact."""
    parser = EventParser(cfg.input)
    events = [e for e in (parser.parse(p) for p in payloads) if isinstance(e, Event)]
    if not events:
        raise ValueError("training input has no valid events")
    logic = KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.detector)
    rows, X, _stage1 = compute_features(logic, [(e.key, e.ts, e.values) for e in events])
    # Skip each key's warm-up: its features describe an empty baseline.
    seen: Counter[str] = Counter()
    keep = []
    for i, (key, _ts) in enumerate(rows):
        seen[key] += 1
        if seen[key] > cfg.prefilter.warmup_events:
            keep.append(i)
    if len(keep) < 50:
        keep = list(range(len(rows)))
    X = X[keep]
    stage1 = _stage1[keep]
    period = (min(e.ts for e in events), max(e.ts for e in events))
    model = train_model(X, logic.feature_names, cfg.model, period, cfg.features.horizons_s)
    # Stage 2 only ever sees what stage 1 escalates, so calibrate its scores
    # against the escalated part of the (normal) history: a calibrated 0.99
    # then means "more anomalous than 99% of the normal events stage 1 escalates".
    escalated = X[stage1 >= cfg.prefilter.escalate_score]
    if len(escalated) >= _MIN_CALIBRATION_ROWS:
        quantiles = Calibrator.from_scores(model.score(escalated)).quantiles
        model = dataclasses.replace(model, score_quantiles=tuple(quantiles))
    return save_artifact(model, model_dir)


def synthetic_history(cfg: Config) -> list[bytes]:
    """``model.history_hours`` of clean synthetic history (same keys as the
    synthetic stream) that ends where the stream starts: the training data."""
    from streamsift import synthetic

    return synthetic.history(
        cfg.synthetic,
        cfg.input,
        hours=cfg.model.history_hours,
        start_ts=SYNTHETIC_START_TS,
        seed=cfg.synthetic.seed + 1,
    )


def train_on_synthetic_history(cfg: Config, model_dir: str | None = None) -> str:
    """Train a new artifact on :func:`synthetic_history`."""
    return train_from_payloads(synthetic_history(cfg), cfg, model_dir or cfg.model.dir)


def ensure_model(cfg: Config, model_dir: str | None = None) -> str:
    """Reuse the newest valid artifact for this feature schema, or train one on
    a synthetic history."""
    model_dir = model_dir or cfg.model.dir
    logic = KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.detector)
    path = latest_artifact(model_dir)
    if path is not None:
        try:
            load_artifact(path, logic.feature_names)
            return path
        except ArtifactError as exc:
            _LOG.warning("not reusing %s: %s; training a new model", path, exc)
    return train_on_synthetic_history(cfg, model_dir)


@dataclass
class RunResult:
    counters: dict[str, int]
    alerts: list[dict[str, Any]]
    flagged: list[dict[str, Any]]
    elapsed_s: float
    paths: OutputPaths
    extra: dict[str, Any] = field(default_factory=dict)

    def counter(self, name: str) -> int:
        return int(self.counters.get(name, 0))


def read_jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _counters(result) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        res = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # metrics are best effort while running
        return out
    for c in res["counters"]:
        name = c.key.metric.name
        value = c.committed if c.committed is not None else c.attempted
        out[name] = out.get(name, 0) + int(value or 0)
    return out


def _progress_text(c: dict[str, int], total: int | None, elapsed: float) -> str:
    n = c.get("events_in", 0)
    pct = f" {100.0 * n / total:5.1f}%" if total else ""
    rate = n / elapsed if elapsed > 0 else 0.0
    return (
        f"[{elapsed:6.1f}s]{pct} in {n}  processed {c.get('processed', 0)}  "
        f"dead {c.get('dead_lettered', 0)}  late {c.get('late', 0)}  "
        f"escalated {c.get('escalated', 0)}  alerts {c.get('alerts_emitted', 0)}  "
        f"{rate:,.0f} ev/s"
    )


def wait_with_progress(
    result: Any,
    tick: Callable[[], None] | None = None,
    on_interrupt: Callable[[], None] | None = None,
) -> tuple[BaseException | None, bool]:
    """Wait for a started pipeline ``result``, calling ``tick()`` (the progress line)
    every 0.5 s; return ``(the exception the run failed with or None, interrupted)``.

    The run is waited for in a daemon thread, so the caller's thread stays
    responsive to Ctrl-C. Without ``on_interrupt`` a Ctrl-C propagates; with it,
    ``on_interrupt()`` is called, the run is cancelled and ``interrupted`` is True.
    """
    error: list[BaseException] = []

    def _wait() -> None:
        try:
            result.wait_until_finish()
        except BaseException as exc:  # re-raised by the caller, in its thread
            error.append(exc)

    waiter = threading.Thread(target=_wait, name="streamsift-wait", daemon=True)
    waiter.start()
    while waiter.is_alive():
        try:
            waiter.join(0.5)
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            on_interrupt()
            result.cancel()
            return (error[0] if error else None), True
        if tick is not None:
            tick()
    return (error[0] if error else None), False


def run_stream(
    payloads: Sequence[bytes],
    cfg: Config,
    model_path: str,
    out_dir: str,
    *,
    runner: str = "DirectRunner",
    beam_args: Sequence[str] = (),
    print_alerts: bool = True,
    show_progress: bool = True,
    chunk_size: int = 500,
    emit_scores: bool = False,
) -> RunResult:
    """Replay ``payloads`` in arrival order through the streaming pipeline.

    ``emit_scores`` (per-element engine only): also write every processed
    event's stage-1 and detector scores to ``<out_dir>/scores.jsonl`` and return
    them in ``extra["scores"]`` (dicts: key, ts, values, stage1, anomaly, escalated).
    """
    paths = OutputPaths.in_dir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    sinks.close_all()
    scores_path = os.path.join(out_dir, "scores.jsonl")
    for p in (*paths.all(), scores_path):
        if os.path.exists(p):
            os.remove(p)
    options = streaming_options(list(beam_args))
    pipeline = beam.Pipeline(runner=make_runner(runner), options=options)
    # engine.mode picks the per-element or the micro-batched stages
    outputs = replay_and_detect(
        pipeline, payloads, cfg, model_path, chunk_size=chunk_size, emit_scores=emit_scores
    )
    attach_file_sinks(outputs, paths, print_alerts=print_alerts)
    if emit_scores:
        outputs["scores"] | "WriteScores" >> sinks.WriteJsonLines(scores_path, _score_row_dict)

    start = time.monotonic()
    result = start_pipeline(pipeline)
    total = len(payloads)

    def _tick() -> None:
        console.progress(_progress_text(_counters(result), total, time.monotonic() - start))

    error, _ = wait_with_progress(result, _tick if show_progress else None)
    elapsed = time.monotonic() - start
    counters = _counters(result)
    if show_progress:
        console.progress(_progress_text(counters, total, elapsed), now=float("inf"))
        console.end_progress()
    sinks.close_all()
    if error is not None:
        raise error
    return RunResult(
        counters=counters,
        alerts=read_jsonl(paths.alerts),
        flagged=read_jsonl(paths.flagged),
        elapsed_s=elapsed,
        paths=paths,
        extra={"scores": read_jsonl(scores_path)} if emit_scores else {},
    )


def _score_row_dict(row: tuple) -> dict[str, Any]:
    key, ts, values, stage1, anomaly, escalated = row
    return {
        "key": key,
        "ts": ts,
        "values": list(values),
        "stage1": stage1,
        "anomaly": anomaly,
        "escalated": escalated,
    }


def _pct(x: float) -> str:
    return f"{100.0 * x:5.1f}%"


def format_summary(res: RunResult, evaluation: dict[str, Any] | None = None) -> str:
    c = res.counters
    n_in = res.counter("events_in")
    processed = res.counter("processed")
    dead = res.counter("dead_lettered")
    late = res.counter("late")
    escalated = res.counter("escalated")
    ok = "reconciled" if n_in == processed + dead + late else "DOES NOT RECONCILE"
    by_sev = Counter(a["severity"] for a in res.alerts if not a.get("update"))
    lines = [
        "",
        "== streamsift summary ==",
        f"events in      {n_in:>9,}",
        f"  processed    {processed:>9,}",
        f"  dead-letter  {dead:>9,}",
        f"  late         {late:>9,}",
        f"  ({ok}: in = processed + dead-lettered + late)",
        f"stage 1 escalated {escalated:,} ({_pct(escalated / processed if processed else 0.0)})"
        f"; stage 2 scored {c.get('stage2_scored', escalated):,}",
        f"alerts {sum(by_sev.values()):,}: "
        + ", ".join(f"{s} {by_sev.get(s, 0)}" for s in ("critical", "warning", "info"))
        + f"; severity upgrades {res.counter('alerts_upgraded')}; "
        f"rate-limited {res.counter('alerts_suppressed')}",
        f"keys created {res.counter('keys_created'):,}, expired {res.counter('keys_expired'):,}",
    ]
    if evaluation:
        ev, inc = evaluation.get("event"), evaluation.get("incident")
        if ev:
            lines.append(
                f"per event:    precision {ev['precision']:.3f}  recall {ev['recall']:.3f}  "
                f"f1 {ev['f1']:.3f}  (tp {ev['tp']}, fp {ev['fp']}, fn {ev['fn']})"
            )
        if inc:
            lines.append(
                f"per incident: precision {inc['precision']:.3f}  recall {inc['recall']:.3f}  "
                f"f1 {inc['f1']:.3f}"
            )
            per_kind = inc.get("recall_by_kind")
            if per_kind:
                lines.append(
                    "  recall by kind: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_kind.items()))
                )
    rate = n_in / res.elapsed_s if res.elapsed_s > 0 else 0.0
    lines.append(f"throughput {rate:,.0f} events/s ({n_in:,} events in {res.elapsed_s:.1f} s)")
    lines.append(f"outputs: {os.path.dirname(res.paths.alerts)}/")
    return "\n".join(lines)
