"""Broker source / sink pipeline options (Dataflow flex template parameters)."""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["BrokerOptions", "broker_overrides"]

#: option name -> dotted config key
_CONFIG_KEYS = {
    "pubsub_project": "pubsub.project",
    "pubsub_subscription": "pubsub.subscription",
    "pubsub_topic": "pubsub.topic",
    "pubsub_timestamp_attribute": "pubsub.timestamp_attribute",
    "event_time": "source.event_time",
    "kafka_bootstrap_servers": "kafka.bootstrap_servers",
    "kafka_topics": "kafka.topics",
    "kafka_group_id": "kafka.group_id",
    "alerts_sink": "sinks.alerts",
    "dead_letter_sink": "sinks.dead_letter",
    "late_sink": "sinks.late",
}


class BrokerOptions(PipelineOptions):
    """Broker sources and sinks as pipeline options; each overrides one config key.

    >>> o = PipelineOptions(["--pubsub_subscription=projects/p/subscriptions/s",
    ...     "--alerts_sink=pubsub://projects/p/topics/alerts"])
    >>> broker_overrides(o)
    {'pubsub.subscription': 'projects/p/subscriptions/s', 'sinks.alerts': 'pubsub://projects/p/topics/alerts'}
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--pubsub_project", default=None, help="Pub/Sub project.")
        parser.add_argument(
            "--pubsub_subscription", default=None, help="Pub/Sub subscription to read."
        )
        parser.add_argument(
            "--pubsub_topic", default=None, help="Pub/Sub topic to read (without a subscription)."
        )
        parser.add_argument(
            "--pubsub_timestamp_attribute",
            default=None,
            help="Pub/Sub attribute with the event time (with --event_time=broker).",
        )
        parser.add_argument(
            "--event_time",
            default=None,
            choices=["payload", "broker"],
            help="Event time from the payload field or from the broker.",
        )
        parser.add_argument(
            "--kafka_bootstrap_servers", default=None, help="Kafka bootstrap servers."
        )
        parser.add_argument("--kafka_topics", default=None, help="Kafka topics, comma-separated.")
        parser.add_argument("--kafka_group_id", default=None, help="Kafka consumer group id.")
        for name in ("alerts", "dead_letter", "late"):
            parser.add_argument(
                f"--{name}_sink",
                default=None,
                help=f"Where {name} go: pubsub://projects/P/topics/T, kafka://TOPIC, file://URL.",
            )


def broker_overrides(options: PipelineOptions) -> dict[str, Any]:
    """The config overrides (dotted keys) given as :class:`BrokerOptions`."""
    own = options.view_as(BrokerOptions)
    return {
        key: getattr(own, name)
        for name, key in _CONFIG_KEYS.items()
        if getattr(own, name) is not None
    }
