"""Dataflow flex template launcher main (``FLEX_TEMPLATE_PYTHON_PY_FILE``).

The launcher container runs ``python main.py --runner=DataflowRunner --project=...
--<template parameters>``. This file builds the same detection pipeline as
``streamsift run`` (:func:`streamsift.pipeline.build.build_engine_detection`,
``engine.mode`` of the config) from
streamsift's declared pipeline options and submits it without waiting: a
streaming job never finishes, and the launcher must exit once the job is
created. Worker dependencies come from the project's wheel, staged with
``--extra_package`` (``FLEX_TEMPLATE_PYTHON_EXTRA_PACKAGES`` in the Dockerfile).

Offline check (no credentials, nothing submitted)::

    python templates/main.py --runner=DataflowRunner --dry_run=True --project=p \\
        --region=europe-west1 --temp_location=gs://bucket/tmp --model_dir=/models \\
        --out_dir=gs://bucket/out --source=pubsub \\
        --pubsub_subscription=projects/p/subscriptions/events \\
        --alerts_sink=pubsub://projects/p/topics/alerts
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from streamsift.config import apply_overrides, load_config
from streamsift.models.artifact import latest_artifact
from streamsift.pipeline.build import build_engine_detection
from streamsift.pipeline.options import StreamsiftOptions
from streamsift.transforms.source import ReplayStream

__all__ = ["build_pipeline", "run"]

_LOG = logging.getLogger("streamsift.template")


def _payloads(own: StreamsiftOptions, cfg) -> list[bytes]:
    source = own.source or "synthetic"
    if source == "synthetic":
        from streamsift import synthetic

        return list(synthetic.generate(cfg.synthetic, cfg.input).payloads)
    if source == "file":
        if not own.path:
            raise ValueError("source 'file' needs the path parameter; got none")
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(own.path) as fh:
            return [line.rstrip(b"\r\n") for line in fh.read().splitlines() if line.strip()]
    raise ValueError(f"source must be 'synthetic', 'file', 'pubsub' or 'kafka'; got {source!r}")


def _runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return runner if isinstance(runner, str) else type(runner).__name__


def build_pipeline(argv: Sequence[str]) -> beam.Pipeline:
    """The streaming detection pipeline for the template parameters in ``argv``.

    ``source``: ``pubsub`` (Beam's ``ReadFromPubSub``) or ``kafka`` (the cross-language
    KafkaIO, expansion service jar in ``STREAMSIFT_EXPANSION_SERVICE_JAR``), or the
    ``synthetic`` / ``file`` replay (a ``TestStream``: the offline demo, which Dataflow
    itself does not run). Sinks: ``alerts_sink`` / ``dead_letter_sink`` / ``late_sink``
    (Pub/Sub, Kafka or ``gs://...``), else files in ``out_dir``, which on Dataflow
    must be on a shared file system (``gs://``).
    """
    from streamsift.io.options import broker_overrides
    from streamsift.io.run import (
        attach_sinks,
        broker_source,
        destinations,
        kafka_impl_for,
        pubsub_impl_for,
    )

    options = PipelineOptions(list(argv))
    options.view_as(StandardOptions).streaming = True
    own = options.view_as(StreamsiftOptions)
    runner = _runner_name(options)
    cfg = apply_overrides(
        load_config(own.streamsift_config),
        {"model.dir": own.model_dir, "output.dir": own.out_dir, **broker_overrides(options)},
    )
    # The artifact is chosen at launch (no training on the launcher); the path
    # is handed to the workers, which load and verify it from the same path
    # (gs://... through Beam's FileSystems).
    model_path = latest_artifact(cfg.model.dir)
    if model_path is None:
        raise ValueError(
            "model_dir must hold a trained artifact (vNNNN/model.joblib + metadata.json); "
            f"got {cfg.model.dir!r} with none"
        )
    if runner == "DataflowRunner" and "://" not in model_path:
        raise ValueError(
            "model_dir must be on a file system the Dataflow workers share (gs://bucket/models); "
            f"got the local directory {cfg.model.dir!r}"
        )
    pipeline = beam.Pipeline(options=options)
    source = own.source or "synthetic"
    if source in ("pubsub", "kafka"):
        impl = pubsub_impl_for(runner) if source == "pubsub" else kafka_impl_for("auto", runner)
        _read, payloads = broker_source(pipeline, cfg, source, impl)
    else:
        payloads = pipeline | "Source" >> ReplayStream(_payloads(own, cfg), cfg.input)
    dests = destinations(cfg, cfg.output.dir)
    # engine.mode (streamsift_config's [engine]): per-element stages or micro-batches
    outputs = build_engine_detection(payloads, cfg, model_path, emit_events="processed" in dests)
    attach_sinks(outputs, cfg, dests, cfg.output.dir, runner=runner)
    return pipeline


def run(argv: Sequence[str] | None = None):
    """Submit the job and return its ``PipelineResult`` (without waiting)."""
    pipeline = build_pipeline(sys.argv[1:] if argv is None else argv)
    result = pipeline.run()
    _LOG.info("submitted: %s", getattr(result, "job_id", lambda: "")())
    return result


if __name__ == "__main__":  # pragma: no cover - the launcher entry point
    logging.basicConfig(level=logging.INFO)
    run()
