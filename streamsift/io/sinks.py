"""Destinations for alerts, dead letters, late events and the processed audit.

A destination is a URL: ``file://PATH`` (JSON Lines, as the default files),
``kafka://TOPIC`` (brokers and security settings from ``[kafka]``) or
``pubsub://projects/P/topics/T``. Every message is one JSON object; Kafka
messages carry the routing fields (alert ``key``, ``severity``, ``alert_id``;
dead letter ``error_kind``) as the record key and headers, Pub/Sub messages as
attributes. Each bundle is flushed (Kafka: delivered and acknowledged by the
broker; Pub/Sub: publish futures resolved) before the bundle completes, so the
source commits input only after its results are durable.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from streamsift.config import KafkaConfig
from streamsift.io.clients import kafka_client_config
from streamsift.transforms.sinks import WriteJsonLines

__all__ = ["Destination", "parse_destination", "WriteToDestination", "routing_fields"]

_LOG = logging.getLogger(__name__)
_PRODUCERS: dict[str, Any] = {}
_PUBLISHERS: dict[str, Any] = {}
_LOCK = threading.Lock()
FLUSH_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Destination:
    kind: str  # "file" | "kafka" | "pubsub"
    target: str

    def __str__(self) -> str:
        if self.kind == "file" and "://" in self.target:
            return self.target  # gs://, s3://, ... as given
        return f"{self.kind}://{self.target}"


def parse_destination(url: str) -> Destination:
    """Parse a destination URL.

    >>> parse_destination("kafka://alerts")
    Destination(kind='kafka', target='alerts')
    >>> parse_destination("pubsub://projects/p/topics/t").target
    'projects/p/topics/t'
    >>> parse_destination("/tmp/a.jsonl")
    Destination(kind='file', target='/tmp/a.jsonl')
    >>> parse_destination("gs://bucket/out/alerts.jsonl")
    Destination(kind='file', target='gs://bucket/out/alerts.jsonl')
    >>> parse_destination("pubsub://t")
    Traceback (most recent call last):
    ...
    ValueError: a pubsub:// destination must be pubsub://projects/P/topics/T; got 'pubsub://t'
    """
    if "://" not in url:
        return Destination("file", url)
    kind, _, target = url.partition("://")
    if not target or not kind.replace("-", "").replace("+", "").isalnum():
        raise ValueError(
            f"destination must be file://PATH, kafka://TOPIC, pubsub://projects/P/topics/T "
            f"or a Beam file system URL (gs://BUCKET/PATH, ...); got {url!r}"
        )
    if kind not in ("file", "kafka", "pubsub"):
        # another Beam file system (gs://, s3://, hdfs://, ...): written with Beam's file IO
        return Destination("file", url)
    if kind == "pubsub":
        parts = target.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics":
            raise ValueError(
                f"a pubsub:// destination must be pubsub://projects/P/topics/T; got {url!r}"
            )
    return Destination(kind, target)


def routing_fields(obj: dict) -> tuple[str | None, dict[str, str]]:
    """(record key, headers / attributes) of one output object.

    >>> routing_fields({"alert_id": "a1", "key": "web-1", "severity": "critical", "score": 1})
    ('web-1', {'alert_id': 'a1', 'key': 'web-1', 'severity': 'critical'})
    >>> routing_fields({"error_kind": "malformed_json", "payload": "x"})
    (None, {'error_kind': 'malformed_json'})
    """
    attrs = {
        k: str(obj[k])
        for k in ("alert_id", "key", "severity", "error_kind", "reason")
        if k in obj and obj[k] is not None
    }
    key = obj.get("key")
    return (str(key) if key is not None else None), attrs


def _shared_producer(cfg: KafkaConfig):
    from confluent_kafka import Producer

    ident = repr((cfg.bootstrap_servers, cfg.properties))
    with _LOCK:
        p = _PRODUCERS.get(ident)
        if p is None:
            conf = kafka_client_config(
                cfg, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5}
            )
            p = Producer(conf, logger=_LOG)
            _PRODUCERS[ident] = p
        return p


def _shared_publisher():
    from google.cloud import pubsub_v1

    with _LOCK:
        p = _PUBLISHERS.get("default")
        if p is None:
            p = pubsub_v1.PublisherClient()
            _PUBLISHERS["default"] = p
        return p


def close_all() -> None:
    """Flush and drop the shared producers (the driver calls this when a run ends)."""
    with _LOCK:
        producers = list(_PRODUCERS.values())
        _PRODUCERS.clear()
        _PUBLISHERS.clear()
    for p in producers:
        p.flush(30)


def _as_obj(element: Any, to_dict: Callable[[Any], Any] | None) -> dict:
    obj = to_dict(element) if to_dict else element
    return json.loads(obj) if isinstance(obj, str) else obj


class _WriteKafkaFn(beam.DoFn):
    def __init__(self, topic: str, cfg: KafkaConfig, to_dict, counter: str) -> None:
        self._topic = topic
        self._cfg = cfg
        self._to_dict = to_dict
        self._counter = counter

    def setup(self) -> None:
        self._written = Metrics.counter("streamsift", self._counter) if self._counter else None

    def start_bundle(self) -> None:
        self._producer = _shared_producer(self._cfg)
        self._errors: list[str] = []
        self._n = 0

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self._errors.append(str(err))

    def process(self, element):
        obj = _as_obj(element, self._to_dict)
        key, attrs = routing_fields(obj)
        value = json.dumps(obj, separators=(",", ":")).encode()
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value=value,
                    key=key.encode() if key is not None else None,
                    headers=[(k, v.encode()) for k, v in attrs.items()],
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.5)
        self._producer.poll(0)
        self._n += 1

    def finish_bundle(self) -> None:
        if not self._n:
            return
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while self._producer.flush(5.0) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Kafka topic {self._topic!r}: messages not delivered within "
                    f"{FLUSH_TIMEOUT_S:g} s"
                )
        if self._errors:
            raise RuntimeError(f"Kafka topic {self._topic!r}: delivery failed: {self._errors[:3]}")
        if self._written is not None:
            self._written.inc(self._n)
        self._n = 0


class _WritePubSubFn(beam.DoFn):
    def __init__(self, topic: str, to_dict, counter: str) -> None:
        self._topic = topic
        self._to_dict = to_dict
        self._counter = counter

    def setup(self) -> None:
        self._written = Metrics.counter("streamsift", self._counter) if self._counter else None

    def start_bundle(self) -> None:
        self._publisher = _shared_publisher()
        self._futures: list[Any] = []

    def process(self, element):
        obj = _as_obj(element, self._to_dict)
        _key, attrs = routing_fields(obj)
        data = json.dumps(obj, separators=(",", ":")).encode()
        self._futures.append(self._publisher.publish(self._topic, data, **attrs))

    def finish_bundle(self) -> None:
        for f in self._futures:
            f.result(timeout=FLUSH_TIMEOUT_S)
        if self._written is not None and self._futures:
            self._written.inc(len(self._futures))
        self._futures = []


class _CountAlertsFn(beam.DoFn):
    """Counts new alerts per severity (``alerts_out_<severity>``) for the summary."""

    def process(self, alert_json: str):
        a = json.loads(alert_json)
        if not a.get("update"):
            Metrics.counter("streamsift", f"alerts_out_{a.get('severity', 'unknown')}").inc()


class WriteToDestination(beam.PTransform):
    """Write each element (a JSON string, or anything ``to_dict`` maps to a dict)."""

    def __init__(
        self,
        destination: Destination | str,
        kafka_cfg: KafkaConfig | None = None,
        to_dict: Callable[[Any], Any] | None = None,
        counter: str = "",
        count_alerts: bool = False,
    ) -> None:
        super().__init__()
        dest = destination if isinstance(destination, Destination) else None
        self._dest = dest or parse_destination(destination)
        self._kafka_cfg = kafka_cfg or KafkaConfig()
        if self._dest.kind == "kafka" and not self._kafka_cfg.bootstrap_servers:
            raise ValueError(
                f"kafka.bootstrap_servers must be set to write to {self._dest}; got ''"
            )
        self._to_dict = to_dict
        self._counter = counter
        self._count_alerts = count_alerts

    def expand(self, pcoll):
        if self._count_alerts:
            _ = pcoll | "CountAlerts" >> beam.ParDo(_CountAlertsFn())
        kind, target = self._dest.kind, self._dest.target
        if kind == "file":
            return pcoll | "File" >> WriteJsonLines(target, self._to_dict, self._counter)
        if kind == "kafka":
            fn = _WriteKafkaFn(target, self._kafka_cfg, self._to_dict, self._counter)
            return pcoll | "Kafka" >> beam.ParDo(fn)
        return pcoll | "PubSub" >> beam.ParDo(_WritePubSubFn(target, self._to_dict, self._counter))
