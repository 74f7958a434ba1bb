"""Running the pipeline on a broker source (Kafka, Pub/Sub) and broker sinks."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from streamsift.config import Config, redact_pairs
from streamsift.io import direct
from streamsift.io import sinks as io_sinks
from streamsift.io.clients import BrokerUnavailable
from streamsift.io.sinks import Destination, WriteToDestination, parse_destination
from streamsift.pipeline.build import OutputPaths, build_engine_detection
from streamsift.pipeline.console import console
from streamsift.pipeline.options import make_runner, start_pipeline, streaming_options
from streamsift.pipeline.run import (
    RunResult,
    _counters,
    _progress_text,
    read_jsonl,
    wait_with_progress,
)
from streamsift.transforms import sinks as file_sinks
from streamsift.transforms.sinks import PrintAlerts, dead_letter_to_dict, late_event_to_dict

__all__ = [
    "redacted_config",
    "destinations",
    "build_broker_pipeline",
    "broker_source",
    "attach_sinks",
    "pubsub_impl_for",
    "run_broker",
    "check_broker",
    "BrokerUnavailable",
]

_LOG = logging.getLogger(__name__)


def redacted_config(cfg: Config) -> dict[str, dict[str, Any]]:
    """The config as a dict with secret Kafka properties shown as ``"***"``.

    >>> from streamsift.config import KafkaConfig
    >>> c = Config(kafka=KafkaConfig(properties={"sasl.password": "hunter2"}))
    >>> redacted_config(c)["kafka"]["properties"]
    {'sasl.password': '***'}
    """
    return cfg.to_dict()


def destinations(cfg: Config, out_dir: str) -> dict[str, Destination]:
    """Where each output goes: ``[sinks]`` URLs, else the files in ``out_dir``.

    >>> d = destinations(Config(), "/o")
    >>> str(d["alerts"]), "processed" in d
    ('file:///o/alerts.jsonl', False)
    """
    paths = OutputPaths.in_dir(out_dir)
    out = {
        "alerts": cfg.sinks.alerts or paths.alerts,
        "dead_letter": cfg.sinks.dead_letter or paths.dead_letter,
        "late": cfg.sinks.late or paths.late,
    }
    if cfg.sinks.processed:
        out["processed"] = cfg.sinks.processed
    defaults = set(paths.all())  # out_dir files, also on gs:// (no file:// prefix)
    return {
        k: Destination("file", v) if v in defaults else parse_destination(v) for k, v in out.items()
    }


def _processed_to_dict(event) -> dict:
    return {"key": event.key, "event_time_ms": int(round(event.ts * 1000))}


def kafka_impl_for(requested: str, runner: str) -> str:
    """``native`` (streamsift's source, DirectRunner) or ``xlang`` (Beam's KafkaIO).

    >>> kafka_impl_for("auto", "DirectRunner"), kafka_impl_for("auto", "PrismRunner")
    ('native', 'xlang')
    """
    if requested not in ("auto", "native", "xlang"):
        raise ValueError(f"--kafka-impl must be auto, native or xlang; got {requested!r}")
    if requested == "auto":
        return "native" if runner == "DirectRunner" else "xlang"
    if requested == "native" and runner != "DirectRunner":
        raise ValueError(
            f"--kafka-impl native runs on the DirectRunner only; got --runner {runner} "
            "(use --kafka-impl xlang or auto)"
        )
    if requested == "xlang" and runner == "DirectRunner":
        raise ValueError(
            "--kafka-impl xlang needs a portable runner (PrismRunner, FlinkRunner, "
            "DataflowRunner); the DirectRunner cannot run cross-language transforms"
        )
    return requested


def pubsub_impl_for(runner: str, requested: str = "auto") -> str:
    """``native`` (streamsift's pull source, DirectRunner) or ``beam`` (Beam's Pub/Sub IO:
    Dataflow, and ``--pubsub-impl beam`` on the DirectRunner, where streamsift holds its
    watermark and delivery is at-most-once; see :mod:`streamsift.io.beam_pubsub`).

    >>> pubsub_impl_for("DirectRunner"), pubsub_impl_for("DataflowRunner")
    ('native', 'beam')
    >>> pubsub_impl_for("DirectRunner", "beam")
    'beam'
    >>> pubsub_impl_for("DataflowRunner", "native")
    Traceback (most recent call last):
    ...
    ValueError: --pubsub-impl native runs on the DirectRunner only; got --runner DataflowRunner (use --pubsub-impl beam or auto)
    >>> pubsub_impl_for("FlinkRunner")
    Traceback (most recent call last):
    ...
    ValueError: --source pubsub runs on the DirectRunner (native pull source) or the DataflowRunner (Beam's Pub/Sub IO); got --runner FlinkRunner. Kafka runs on every runner (native on the DirectRunner, xlang KafkaIO on Prism/Flink/Dataflow)
    """
    if requested not in ("auto", "native", "beam"):
        raise ValueError(f"--pubsub-impl must be auto, native or beam; got {requested!r}")
    if runner == "DirectRunner":
        return "native" if requested == "auto" else requested
    if runner == "DataflowRunner":
        if requested == "native":
            raise ValueError(
                f"--pubsub-impl native runs on the DirectRunner only; got --runner {runner} "
                "(use --pubsub-impl beam or auto)"
            )
        return "beam"
    raise ValueError(
        "--source pubsub runs on the DirectRunner (native pull source) or the DataflowRunner "
        f"(Beam's Pub/Sub IO); got --runner {runner}. Kafka runs on every runner (native on "
        "the DirectRunner, xlang KafkaIO on Prism/Flink/Dataflow)"
    )


def broker_source(
    pipeline: beam.Pipeline,
    cfg: Config,
    source: str,
    impl: str,
    max_records: int = 0,
    runner: str = "",
) -> tuple[direct.ReadFromBroker | None, beam.PCollection]:
    """(native source, the DirectRunner's held Beam Pub/Sub read, or None; payload bytes)
    of a Kafka / Pub/Sub source, labelled ``Source``. ``impl``: ``native``, ``xlang``
    (Kafka) or ``beam`` (Pub/Sub). Both sources have a ``run_id`` for their stats."""
    if impl == "xlang":
        from streamsift.io.xlang import ReadKafkaXlang

        return None, pipeline | "Source" >> ReadKafkaXlang(cfg, max_records, runner)
    if impl == "beam":
        from streamsift.io.beam_pubsub import ReadPubSubBeam

        if source != "pubsub":
            raise ValueError(f"impl 'beam' reads Pub/Sub only; got source {source!r}")
        beam_read = ReadPubSubBeam(cfg)
        # DirectRunner: the read's watermark is held by streamsift; its stats are the
        # source's (read = acknowledged by Beam on pull)
        held = beam_read if runner == "DirectRunner" else None
        return held, pipeline | "Source" >> beam_read
    broker_cfg = cfg.kafka if source == "kafka" else cfg.pubsub
    read = direct.ReadFromBroker(
        source,
        broker_cfg,
        cfg.source,
        cfg.input,
        cfg.event_time.allowed_lateness_s,
        # the batched engine's shard timers fire up to one quantum late
        release_delay_s=cfg.engine.release_quantum_s if cfg.engine.mode == "batched" else 0.0,
    )
    return read, pipeline | "Source" >> read


_SINK_PARAMETERS = {
    "alerts": "sinks.alerts (alerts_sink)",
    "dead_letter": "sinks.dead_letter (dead_letter_sink)",
    "late": "sinks.late (late_sink)",
    "processed": "sinks.processed",
}


def attach_sinks(
    outputs: dict[str, beam.PCollection],
    cfg: Config,
    dests: dict[str, Destination],
    out_dir: str,
    *,
    runner: str = "DirectRunner",
    print_alerts: bool = False,
) -> None:
    """The outputs to their destinations, labelled ``WriteAlerts``, ``WriteDeadLetters``,
    ``WriteLate``, ``WriteFlagged`` (and ``WriteProcessed``, ``PrintAlerts``).

    DirectRunner: the native writers. Other runners: Kafka through the xlang KafkaIO;
    Pub/Sub through ``beam.io.WriteToPubSub`` (Dataflow only); files through Beam's file
    IO on Dataflow (local paths are refused: a worker's disk is not kept) and the local
    writer elsewhere (Prism / Flink run their workers on this machine)."""
    direct_runner = runner == "DirectRunner"
    dataflow = runner == "DataflowRunner"
    outputs_for = dict(outputs)
    if "processed" in dests:
        if "events" not in outputs:
            raise RuntimeError("the detection stages do not expose the parsed events")
        outputs_for["processed"] = outputs["events"]

    def write(name: str, label: str, to_dict=None, count_alerts: bool = False, dest=None):
        dest, pcoll = dest or dests[name], outputs_for[name]
        parameter = _SINK_PARAMETERS[name] if name in _sink_urls(cfg) else "out_dir"
        if dest.kind == "kafka" and not direct_runner:
            from streamsift.io.xlang import WriteKafkaXlang

            return pcoll | label >> WriteKafkaXlang(dest, cfg, to_dict, runner)
        if dest.kind == "pubsub" and not direct_runner:
            if not dataflow:
                raise ValueError(
                    f"{parameter} = {dest} on --runner {runner}: Pub/Sub sinks run on the "
                    "DirectRunner (native) and the DataflowRunner (beam.io.WriteToPubSub) only"
                )
            from streamsift.io.beam_pubsub import WritePubSubBeam

            return pcoll | label >> WritePubSubBeam(dest.target, to_dict, count_alerts)
        if dest.kind == "file" and dataflow:
            from streamsift.io.beam_pubsub import WriteFilesBeam

            return pcoll | label >> WriteFilesBeam(dest.target, to_dict, parameter)
        return pcoll | label >> WriteToDestination(
            dest, cfg.kafka, to_dict, count_alerts=count_alerts
        )

    write("alerts", "WriteAlerts", count_alerts=True)
    write("dead_letter", "WriteDeadLetters", dead_letter_to_dict)
    write("late", "WriteLate", late_event_to_dict)
    write(
        "flagged",
        "WriteFlagged",
        lambda f: {"key": f[0], "ts": f[1], "score": f[2], "label": f[3]},
        dest=Destination("file", OutputPaths.in_dir(out_dir).flagged),
    )
    if "processed" in dests:
        write("processed", "WriteProcessed", _processed_to_dict)
    if print_alerts and not dataflow:
        outputs["alerts"] | "PrintAlerts" >> PrintAlerts()


def _sink_urls(cfg: Config) -> set[str]:
    return {n for n in ("alerts", "dead_letter", "late", "processed") if getattr(cfg.sinks, n)}


def build_broker_pipeline(
    pipeline: beam.Pipeline,
    cfg: Config,
    model_path: str,
    source: str,
    out_dir: str,
    print_alerts: bool,
    impl: str = "native",
    max_records: int = 0,
    runner: str | None = None,
) -> tuple[direct.ReadFromBroker | None, dict[str, Destination]]:
    """Source -> detection -> sinks on ``pipeline``; returns the native source (None
    otherwise) and the destinations. ``runner`` defaults to the DirectRunner for the
    native source and to a portable runner for xlang."""
    if runner is None:
        runner = "DirectRunner" if impl == "native" else "PortableRunner"
    dests = destinations(cfg, out_dir)
    read, payloads = broker_source(pipeline, cfg, source, impl, max_records, runner)
    # engine.mode: the per-element stages or micro-batches (chunks of each bundle)
    outputs = build_engine_detection(payloads, cfg, model_path, emit_events="processed" in dests)
    attach_sinks(outputs, cfg, dests, out_dir, runner=runner, print_alerts=print_alerts)
    return read, dests


def check_broker(cfg: Config, source: str) -> None:
    """Open and close a client: raises :class:`BrokerUnavailable` (clear message) in bounded time."""
    client = direct.make_client(source, cfg.kafka if source == "kafka" else cfg.pubsub, cfg.source)
    client.open()
    client.close()


def run_broker(
    cfg: Config,
    model_path: str,
    source: str,
    out_dir: str,
    *,
    runner: str = "DirectRunner",
    beam_args: Sequence[str] = (),
    print_alerts: bool = True,
    show_progress: bool = True,
    kafka_impl: str = "auto",
    max_records: int = 0,
    pubsub_impl: str = "auto",
) -> RunResult:
    """Run the streaming pipeline on a Kafka / Pub/Sub source until it drains
    (``source.stop_when_idle_s``; xlang: ``max_records`` read) or the process is stopped."""
    import contextlib

    from apache_beam.utils import subprocess_server

    if source not in ("kafka", "pubsub"):
        raise ValueError(f"source must be 'kafka' or 'pubsub'; got {source!r}")
    impl = (
        kafka_impl_for(kafka_impl, runner)
        if source == "kafka"
        else pubsub_impl_for(runner, pubsub_impl)
    )
    _LOG.info(
        "broker run: source %s (%s), kafka properties %s",
        source,
        impl,
        redact_pairs(cfg.kafka.properties),
    )
    if impl == "native":
        check_broker(cfg, source)
    elif impl == "beam" and runner == "DirectRunner":
        from streamsift.io.beam_pubsub import AT_MOST_ONCE_NOTICE, check_subscription

        _LOG.warning(AT_MOST_ONCE_NOTICE)
        check_subscription(cfg)
    if runner == "DataflowRunner":
        return _submit_dataflow(cfg, model_path, source, out_dir, impl, beam_args, max_records)
    os.makedirs(out_dir, exist_ok=True)
    paths = OutputPaths.in_dir(out_dir)
    file_sinks.close_all()
    for p in paths.all():
        if os.path.exists(p):
            os.remove(p)
    options = streaming_options(list(beam_args))
    services = contextlib.ExitStack()
    # keep the expansion service (and its loopback Java worker) alive for the run
    services.enter_context(subprocess_server.SubprocessServer.cache_subprocesses())
    pipeline = beam.Pipeline(runner=make_runner(runner), options=options)
    try:
        read, dests = build_broker_pipeline(
            pipeline, cfg, model_path, source, out_dir, print_alerts, impl, max_records, runner
        )
    except BaseException:
        services.close()
        raise
    stats = direct.source_stats(read.run_id) if read is not None else direct.SourceStats()
    start = time.monotonic()
    result = start_pipeline(pipeline)

    def _tick() -> None:
        text = _progress_text(_counters(result), None, time.monotonic() - start)
        console.progress(f"{text}  committed {stats.committed}")

    def _interrupted() -> None:  # Ctrl-C: stop; what was not committed is read again
        console.line("streamsift: interrupted; stopping (uncommitted input is re-read)")

    error, interrupted = None, False
    try:
        error, interrupted = wait_with_progress(
            result, _tick if show_progress else None, on_interrupt=_interrupted
        )
    finally:
        elapsed = time.monotonic() - start
        counters = _counters(result)
        if read is not None:
            counters["source_read"] = stats.read
            counters["source_committed"] = stats.committed
        if show_progress:
            console.progress(_progress_text(counters, None, elapsed), now=float("inf"))
            console.end_progress()
        direct.close_all()
        io_sinks.close_all()
        file_sinks.close_all()
        services.close()
    if error is not None and not interrupted:
        raise error
    if dests["alerts"].kind == "file":
        alerts = read_jsonl(dests["alerts"].target)
    else:  # only the per-severity counts are known here
        alerts = [
            {"severity": name[len("alerts_out_") :]}
            for name, n in counters.items()
            if name.startswith("alerts_out_")
            for _ in range(n)
        ]
    return RunResult(
        counters=counters,
        alerts=alerts,
        flagged=read_jsonl(paths.flagged),
        elapsed_s=elapsed,
        paths=paths,
        extra={"destinations": {k: str(v) for k, v in dests.items()}},
    )


def _submit_dataflow(
    cfg: Config,
    model_path: str,
    source: str,
    out_dir: str,
    impl: str,
    beam_args: Sequence[str],
    max_records: int,
) -> RunResult:
    """Submit a streaming Dataflow job and return at once (it runs until cancelled);
    ``model_path`` and ``out_dir`` must be on a file system the workers share."""
    from streamsift.io.beam_pubsub import is_local_path

    if is_local_path(model_path):
        raise ValueError(
            f"model.dir must be on a file system Dataflow workers share (gs://...); "
            f"got the local artifact {model_path!r}"
        )
    pipeline = beam.Pipeline(runner="DataflowRunner", options=streaming_options(list(beam_args)))
    _read, dests = build_broker_pipeline(
        pipeline, cfg, model_path, source, out_dir, False, impl, max_records, "DataflowRunner"
    )
    result = pipeline.run()
    job_id = getattr(result, "job_id", lambda: "")()
    console.line(f"streamsift: submitted Dataflow job {job_id}")
    return RunResult(
        counters={},
        alerts=[],
        flagged=[],
        elapsed_s=0.0,
        paths=OutputPaths.in_dir(out_dir),
        extra={"destinations": {k: str(v) for k, v in dests.items()}, "job_id": job_id},
    )


def summary_extra(res: RunResult) -> str:
    """Extra summary lines for a broker run."""
    c = res.counters
    dests = res.extra.get("destinations", {})
    return (
        f"source: read {c.get('source_read', 0):,}, committed {c.get('source_committed', 0):,}\n"
        + "destinations: "
        + json.dumps(dests)
    )
