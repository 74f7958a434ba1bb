"""Pipeline assembly: parse -> per-key features and stage 1 -> stage 2 -> alerts -> sinks.

Transform labels are fixed strings so the graph is stable across runs (a
streaming job can be updated in place).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows

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

__all__ = ["OutputPaths", "build_detection", "attach_file_sinks", "feature_names_for"]


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
    return KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter).feature_names


def build_detection(
    payloads: beam.PCollection,
    cfg: Config,
    model_path: str,
) -> dict[str, beam.PCollection]:
    """Wire the detection stages onto a PCollection of raw payload bytes.

    Returns the PCollections ``alerts`` (JSON str, rate-limited), ``flagged``
    (key, ts, score, label) tuples, ``dead_letter`` (DeadLetter), ``late``
    (LateEvent) and ``scored`` (stage-2 Scored records). With
    ``model.watch_interval_s > 0`` the model handler picks up newer artifacts
    from ``model.dir`` without a restart (on every runner).
    """
    feature_names = feature_names_for(cfg)
    ordered = cfg.event_time.ordering == "event_time"
    parsed = payloads | "Parse" >> ParseEvents(cfg.input)
    detected = parsed["events"] | "DetectPerKey" >> DetectPerKey(
        cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.event_time
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
    # key exactly when the per-key stage does.
    to_alert = (scored, detected["expired"]) | "WithKeyExpiry" >> beam.Flatten()
    alerting = to_alert | "AlertPerKey" >> AlertPerKey(
        cfg.thresholds,
        cfg.alerts,
        feature_names,
        ordered=ordered,
    )
    alerts = alerting["alerts"] | "RateLimit" >> RateLimitAlerts(cfg.alerts)
    return {
        "alerts": alerts,
        "flagged": alerting["flagged"],
        "dead_letter": parsed["dead_letter"],
        "late": detected["late"],
        "scored": scored,
    }


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
