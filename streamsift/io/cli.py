"""``streamsift run`` flags for broker sources and sinks, and the broker run command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from streamsift.config import Config

__all__ = ["add_arguments", "overrides", "cmd_run_broker", "SOURCES"]

SOURCES = ("synthetic", "file", "kafka", "pubsub")
_LOG = logging.getLogger("streamsift")


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--kafka-property must be KEY=VALUE; got {text!r}")
    return key, value


def add_arguments(run: argparse.ArgumentParser) -> None:
    g = run.add_argument_group("broker sources and sinks (--source kafka|pubsub)")
    g.add_argument(
        "--bootstrap-servers", help="Kafka brokers host:port[,...] (kafka.bootstrap_servers)"
    )
    g.add_argument(
        "--topic", action="append", help="Kafka topic to read; repeatable (kafka.topics)"
    )
    g.add_argument("--group-id", help="Kafka consumer group (kafka.group_id)")
    g.add_argument(
        "--kafka-property",
        action="append",
        type=_kv,
        metavar="KEY=VALUE",
        help="client property passed through (security.protocol, sasl.*, ssl.*); repeatable",
    )
    g.add_argument("--project", help="Pub/Sub project (pubsub.project)")
    g.add_argument("--subscription", help="Pub/Sub subscription to read (pubsub.subscription)")
    g.add_argument(
        "--pubsub-topic", help="Pub/Sub topic: read it through a subscription created on it"
    )
    g.add_argument(
        "--event-time", choices=["payload", "broker"], help="event time source (source.event_time)"
    )
    g.add_argument("--watermark-lag", type=float, help="source.watermark_lag_s")
    g.add_argument("--idle-partition", type=float, help="source.idle_partition_s")
    g.add_argument(
        "--stop-when-idle",
        type=float,
        help="drain and end after this many seconds without input (source.stop_when_idle_s)",
    )
    for name, what in (
        ("alerts", "alerts"),
        ("dead-letters", "dead letters"),
        ("late", "late events"),
        ("processed", "processed-event audit"),
    ):
        g.add_argument(
            f"--{name}-to",
            metavar="URL",
            help=f"where {what} go: file://PATH | kafka://TOPIC | pubsub://projects/P/topics/T",
        )
    g.add_argument(
        "--kafka-impl",
        choices=["auto", "native", "xlang"],
        default="auto",
        help="Kafka I/O: native (DirectRunner) or Beam's cross-language KafkaIO; auto follows the runner",
    )
    g.add_argument(
        "--pubsub-impl",
        choices=["auto", "native", "beam"],
        default="auto",
        help="Pub/Sub I/O: native pull source (DirectRunner; at-least-once) or Beam's "
        "ReadFromPubSub (Dataflow; on the DirectRunner at-most-once: Beam acknowledges on "
        "pull); auto follows the runner",
    )
    g.add_argument(
        "--max-records",
        type=int,
        help="xlang Kafka: stop after reading this many records (bounded read)",
    )
    g.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective config (secrets redacted) and exit",
    )


def overrides(args: argparse.Namespace, base: Config | None = None) -> dict[str, Any]:
    """Dotted config overrides from the broker flags (None = not given);
    ``--kafka-property`` adds to (or replaces single keys of) ``base``'s properties."""
    props = getattr(args, "kafka_property", None)
    merged = {**dict(base.kafka.properties if base else ()), **dict(props or ())}
    return {
        "kafka.bootstrap_servers": getattr(args, "bootstrap_servers", None),
        "kafka.topics": getattr(args, "topic", None),
        "kafka.group_id": getattr(args, "group_id", None),
        "kafka.properties": merged if props else None,
        "pubsub.project": getattr(args, "project", None),
        "pubsub.subscription": getattr(args, "subscription", None),
        "pubsub.topic": getattr(args, "pubsub_topic", None),
        "source.event_time": getattr(args, "event_time", None),
        "source.watermark_lag_s": getattr(args, "watermark_lag", None),
        "source.idle_partition_s": getattr(args, "idle_partition", None),
        "source.stop_when_idle_s": getattr(args, "stop_when_idle", None),
        "sinks.alerts": getattr(args, "alerts_to", None),
        "sinks.dead_letter": getattr(args, "dead_letters_to", None),
        "sinks.late": getattr(args, "late_to", None),
        "sinks.processed": getattr(args, "processed_to", None),
    }


def print_config(cfg: Config) -> int:
    from streamsift.io.run import redacted_config

    print(json.dumps(redacted_config(cfg), indent=2, default=list))
    return 0


def cmd_run_broker(args: argparse.Namespace, cfg: Config, beam_args: list[str]) -> int:
    """``streamsift run --source kafka|pubsub``: run until drained, print the summary."""
    from streamsift.io.clients import BrokerUnavailable
    from streamsift.io.run import kafka_impl_for, pubsub_impl_for, run_broker, summary_extra
    from streamsift.pipeline.console import console
    from streamsift.pipeline.run import (
        ensure_model,
        format_summary,
        train_on_synthetic_history,
    )

    try:
        if args.source == "kafka":
            impl = kafka_impl_for(args.kafka_impl, args.runner)
        else:
            impl = pubsub_impl_for(args.runner, getattr(args, "pubsub_impl", "auto"))
    except ValueError as exc:
        print(f"streamsift run: {exc}", file=sys.stderr)
        return 2
    from streamsift.io.run import check_broker

    try:  # fail fast, before any model training
        if impl == "native":
            check_broker(cfg, args.source)
        elif impl == "beam" and args.runner == "DirectRunner":
            from streamsift.io.beam_pubsub import check_subscription

            check_subscription(cfg)
    except BrokerUnavailable as exc:
        print(f"streamsift run: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"streamsift run: {exc}", file=sys.stderr)
        return 2
    model_path = train_on_synthetic_history(cfg) if args.retrain else ensure_model(cfg)
    where = (
        f"{cfg.kafka.bootstrap_servers} topics {list(cfg.kafka.topics)} group {cfg.kafka.group_id}"
        if args.source == "kafka"
        else (cfg.pubsub.subscription or cfg.pubsub.topic)
    )
    console.line(
        f"streamsift: {args.source} {where} on {args.runner} ({impl} I/O); model {model_path}"
    )
    try:
        res = run_broker(
            cfg,
            model_path,
            args.source,
            cfg.output.dir,
            runner=args.runner,
            beam_args=beam_args,
            print_alerts=cfg.output.print_alerts and not args.no_print and not args.quiet,
            show_progress=not args.quiet,
            kafka_impl=args.kafka_impl,
            max_records=args.max_records or 0,
            pubsub_impl=getattr(args, "pubsub_impl", "auto"),
        )
    except BrokerUnavailable as exc:
        print(f"streamsift run: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"streamsift run: {exc}", file=sys.stderr)
        return 2
    print(format_summary(res))
    print(summary_extra(res))
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "counters": res.counters,
                    "elapsed_s": res.elapsed_s,
                    "alerts": len([a for a in res.alerts if not a.get("update")]),
                    "destinations": res.extra.get("destinations"),
                },
                fh,
                indent=2,
            )
    return 0
