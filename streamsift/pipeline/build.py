"""Pipeline assembly: parse -> per-key features and stage 1 -> stage 2 -> alerts -> sinks.

Transform labels are fixed strings so the graph is stable across runs (a
streaming job can be updated in place).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows, GlobalWindows

from streamsift.config import Config
from streamsift.models.keylogic import KeyLogic
from streamsift.transforms.alerts import AlertPerKey, RateLimitAlerts
from streamsift.transforms.inference import ScoreEscalated
from streamsift.transforms.keyed import DetectPerKey
from streamsift.transforms.parse import ParseEvents
from streamsift.transforms.sinks import (
    PrintAlerts,
    WriteJsonLines,
    dead_letter_to_dict,
    late_event_to_dict,
)

__all__ = [
    "OutputPaths",
    "build_detection",
    "build_engine_detection",
    "attach_file_sinks",
    "feature_names_for",
    "replay_and_detect",
]


@dataclass(frozen=True)
class OutputPaths:
    alerts: str
    dead_letter: str
    late: str
    flagged: str

    @classmethod
    def in_dir(cls, out_dir: str) -> OutputPaths:
        return cls(
            alerts=os.path.join(out_dir, "alerts.jsonl"),
            dead_letter=os.path.join(out_dir, "dead_letter.jsonl"),
            late=os.path.join(out_dir, "late.jsonl"),
            flagged=os.path.join(out_dir, "flagged.jsonl"),
        )

    def all(self) -> tuple[str, ...]:
        return (self.alerts, self.dead_letter, self.late, self.flagged)


def feature_names_for(cfg: Config) -> tuple[str, ...]:
    return KeyLogic(
        cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.detector
    ).feature_names


def build_detection(
    payloads: beam.PCollection,
    cfg: Config,
    model_path: str,
    *,
    emit_scores: bool = False,
) -> dict[str, beam.PCollection]:
    """Wire the detection stages onto a PCollection of raw payload bytes.

    Returns the PCollections ``alerts`` (JSON str, rate-limited), ``flagged``
    (key, ts, score, label) tuples, ``dead_letter`` (DeadLetter), ``late``
    (LateEvent) and ``scored`` (stage-2 Scored records). With
    ``model.watch_interval_s > 0`` the model handler picks up newer artifacts
    from ``model.dir`` without a restart (on every runner). With ``emit_scores``
    there is also ``scores``: one :data:`~streamsift.transforms.keyed.ScoreRow`
    per processed event (stage-1 and detector scores; for evaluation).
    """
    feature_names = feature_names_for(cfg)
    ordered = cfg.event_time.ordering == "event_time"
    parsed = payloads | "Parse" >> ParseEvents(cfg.input)
    detected = parsed["events"] | "DetectPerKey" >> DetectPerKey(
        cfg.input.feature_fields,
        cfg.features,
        cfg.prefilter,
        cfg.event_time,
        cfg.detector,
        emit_scores=emit_scores,
    )
    # Small event-time windows let RunInference batch across keys while its
    # batches keep timestamps that hold the watermark (see transforms/alerts.py).
    scored = (
        detected["escalated"]
        | "BatchWindows" >> beam.WindowInto(FixedWindows(1))
        | "Stage2"
        >> ScoreEscalated(
            model_path,
            feature_names,
            cfg.model,
            watch_interval_s=cfg.model.watch_interval_s,
            model_dir=cfg.model.dir,
        )
    )
    # Key-expired markers join the scored records so the alert stage forgets a
    # key exactly when the per-key stage does. Flatten needs one windowing for
    # all its inputs (portable runners decode the output with the first input's
    # window coder), so the scored records go back to the global window first;
    # the alert stage works in the global window anyway.
    scored_global = scored | "ScoredToGlobal" >> beam.WindowInto(GlobalWindows())
    to_alert = (scored_global, detected["expired"]) | "WithKeyExpiry" >> beam.Flatten()
    alerting = to_alert | "AlertPerKey" >> AlertPerKey(
        cfg.thresholds,
        cfg.alerts,
        feature_names,
        ordered=ordered,
    )
    alerts = alerting["alerts"] | "RateLimit" >> RateLimitAlerts(cfg.alerts)
    extra = {"scores": detected["scores"]} if emit_scores else {}
    return {
        **extra,
        "alerts": alerts,
        "flagged": alerting["flagged"],
        "dead_letter": parsed["dead_letter"],
        "late": detected["late"],
        "scored": scored,
        # parsed events (the broker runner's optional processed-ids audit)
        "events": parsed["events"],
    }


def build_engine_detection(
    payloads: beam.PCollection,
    cfg: Config,
    model_path: str,
    *,
    emit_events: bool = False,
    chunk_size: int = 500,
) -> dict[str, beam.PCollection]:
    """Wire the detection stages of ``cfg.engine.mode`` onto a PCollection of
    single raw payloads (a broker source): per element (:func:`build_detection`)
    or micro-batched (``ChunkPayloads`` of at most ``chunk_size`` payloads of one
    bundle, then :func:`streamsift.transforms.batched.build_batched_detection`).
    Both return ``alerts``, ``flagged``, ``dead_letter`` and ``late``; ``events``
    (parsed events) always on the per-element engine, with ``emit_events`` on the
    batched one."""
    if cfg.engine.mode == "batched":
        from streamsift.transforms.batched import ChunkPayloads, build_batched_detection

        chunks = payloads | "ChunkPayloads" >> ChunkPayloads(chunk_size)
        return build_batched_detection(chunks, cfg, model_path, emit_events=emit_events)
    return build_detection(payloads, cfg, model_path)


def attach_file_sinks(
    outputs: dict[str, beam.PCollection], paths: OutputPaths, print_alerts: bool
) -> None:
    outputs["alerts"] | "WriteAlerts" >> WriteJsonLines(paths.alerts)
    outputs["dead_letter"] | "WriteDeadLetters" >> WriteJsonLines(
        paths.dead_letter, dead_letter_to_dict
    )
    outputs["late"] | "WriteLate" >> WriteJsonLines(paths.late, late_event_to_dict)
    outputs["flagged"] | "WriteFlagged" >> WriteJsonLines(
        paths.flagged,
        lambda f: {"key": f[0], "ts": f[1], "score": f[2], "label": f[3]},
    )
    if print_alerts:
        outputs["alerts"] | "PrintAlerts" >> PrintAlerts()


def replay_and_detect(
    pipeline: beam.Pipeline,
    payloads,
    cfg: Config,
    model_path: str,
    chunk_size: int = 500,
    *,
    emit_scores: bool = False,
) -> dict[str, beam.PCollection]:
    """Replay ``payloads`` (arrival order) and wire the detection stages of
    ``cfg.engine.mode``: per element (:func:`build_detection`) or micro-batched
    (:func:`streamsift.transforms.batched.build_batched_detection`, which has no
    ``scored`` / ``events`` outputs here, nor ``scores``: ``emit_scores`` needs
    the per-element engine)."""
    from streamsift.transforms.source import ReplayStream

    if cfg.engine.mode == "batched":
        if emit_scores:
            raise ValueError(
                "emit_scores needs engine.mode = 'per_element'; got engine.mode = 'batched'"
            )
        from streamsift.transforms.batched import ReplayChunks, build_batched_detection

        chunks = pipeline | "Source" >> ReplayChunks(payloads, cfg.input, chunk_size=chunk_size)
        return build_batched_detection(chunks, cfg, model_path)
    source = pipeline | "Source" >> ReplayStream(payloads, cfg.input, chunk_size=chunk_size)
    return build_detection(source, cfg, model_path, emit_scores=emit_scores)
