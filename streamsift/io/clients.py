"""Broker clients behind one small protocol: poll a batch, commit tokens, close.

:class:`KafkaClient` (confluent-kafka) reads every partition of the topics with
manual assignment, so a restarted process resumes from the group's committed
offsets at once (no rebalance wait for the killed member's session to expire);
offsets are committed only through :meth:`commit` (``enable.auto.commit`` is
off). :class:`PubSubClient` pulls from a subscription, acknowledges only through
:meth:`commit`, and extends the ack deadline of messages still pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from streamsift.config import KafkaConfig, PubSubConfig, redact_pairs

__all__ = [
    "BrokerRecord",
    "BrokerClient",
    "BrokerUnavailable",
    "KafkaClient",
    "PubSubClient",
    "kafka_client_config",
    "pubsub_subscription_path",
]

_LOG = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached or the topic / subscription does not exist."""


class BrokerRecord(NamedTuple):
    """One record read from a broker."""

    #: ordering unit: "topic/partition" for Kafka, "" for Pub/Sub
    partition: str
    #: what :meth:`BrokerClient.commit` needs: (topic, partition, offset) or an ack id
    token: Any
    #: broker time, epoch seconds (Kafka record timestamp, Pub/Sub attribute or publish time)
    broker_ts: float | None
    payload: bytes


class BrokerClient(Protocol):
    def open(self) -> None: ...

    def partitions(self) -> list[str]: ...

    def busy_partitions(self) -> set[str]: ...

    def poll(self, max_records: int, timeout_s: float) -> list[BrokerRecord]: ...

    def commit(self, tokens: Iterable[Any]) -> None: ...

    def keepalive(self, now: float) -> None: ...

    def close(self) -> None: ...


def kafka_client_config(cfg: KafkaConfig, **extra: Any) -> dict[str, Any]:
    """confluent-kafka settings: the pass-through properties, then ours.

    >>> c = kafka_client_config(KafkaConfig("b:9092", ("t",), properties={"sasl.password": "x"}))
    >>> c["bootstrap.servers"], c["sasl.password"]
    ('b:9092', 'x')
    """
    conf: dict[str, Any] = dict(cfg.properties)
    conf["bootstrap.servers"] = cfg.bootstrap_servers
    conf.update(extra)
    return conf


def _describe(conf: dict[str, Any]) -> str:
    return repr(redact_pairs(tuple(sorted((k, str(v)) for k, v in conf.items()))))


class KafkaClient:
    """Consumer of all partitions of ``cfg.topics`` for group ``cfg.group_id``."""

    def __init__(self, cfg: KafkaConfig, connect_timeout_s: float = 15.0) -> None:
        if not cfg.bootstrap_servers:
            raise ValueError("kafka.bootstrap_servers must be set for --source kafka; got ''")
        if not cfg.topics:
            raise ValueError("kafka.topics must name at least one topic; got []")
        self.cfg = cfg
        self.connect_timeout_s = connect_timeout_s
        self._consumer = None
        self._to_commit: dict[tuple[str, int], int] = {}
        self._last_error_log = 0.0

    def open(self) -> None:
        try:
            from confluent_kafka import Consumer, KafkaException, TopicPartition
        except ImportError:
            raise BrokerUnavailable(
                "the Kafka source needs confluent-kafka: pip install 'streamsift[kafka]'"
            ) from None

        conf = kafka_client_config(
            self.cfg,
            **{
                "group.id": self.cfg.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": self.cfg.auto_offset_reset,
                "enable.partition.eof": False,
            },
        )
        _LOG.info("kafka consumer config %s", _describe(conf))
        consumer = Consumer(conf, logger=_LOG)
        try:
            meta = consumer.list_topics(timeout=self.connect_timeout_s)
        except KafkaException as exc:
            consumer.close()
            raise BrokerUnavailable(
                f"Kafka at kafka.bootstrap_servers={self.cfg.bootstrap_servers!r} did not answer "
                f"within source.connect_timeout_s={self.connect_timeout_s:g} s: {exc}"
            ) from None
        parts = []
        for topic in self.cfg.topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                consumer.close()
                raise BrokerUnavailable(
                    f"Kafka topic {topic!r} (kafka.topics) does not exist on "
                    f"{self.cfg.bootstrap_servers}"
                )
            parts.extend(TopicPartition(topic, p) for p in sorted(tmeta.partitions))
        # Resume from the group's committed offsets (else auto.offset.reset).
        committed = consumer.committed(parts, timeout=self.connect_timeout_s)
        consumer.assign(committed)
        self._tps = committed
        self._start = {f"{tp.topic}/{tp.partition}": tp.offset for tp in committed}
        _LOG.info(
            "kafka: reading %d partitions of %s as group %s from %s",
            len(parts),
            list(self.cfg.topics),
            self.cfg.group_id,
            {f"{tp.topic}/{tp.partition}": tp.offset for tp in committed},
        )
        self._consumer = consumer
        self._partitions = [f"{tp.topic}/{tp.partition}" for tp in parts]

    def partitions(self) -> list[str]:
        return list(self._partitions)

    def busy_partitions(self) -> set[str]:
        """Partitions whose last known end offset is past the read position."""
        out = set()
        for tp in self._consumer.position(self._tps):
            name = f"{tp.topic}/{tp.partition}"
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                continue  # not known yet
            pos = tp.offset if tp.offset >= 0 else self._start.get(name, -1)
            if pos < 0:
                pos = low if self.cfg.auto_offset_reset == "earliest" else high
            if pos < high:
                out.add(name)
        return out

    def poll(self, max_records: int, timeout_s: float) -> list[BrokerRecord]:
        from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError

        out: list[BrokerRecord] = []
        for msg in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise RuntimeError(f"Kafka consumer failed: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    self._log_transient(err)
                continue
            ts_type, ts_ms = msg.timestamp()
            broker_ts = None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts_ms / 1000.0
            topic, part, offset = msg.topic(), msg.partition(), msg.offset()
            out.append(
                BrokerRecord(
                    f"{topic}/{part}", (topic, part, offset), broker_ts, msg.value() or b""
                )
            )
        return out

    def _log_transient(self, err) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 5.0:
            self._last_error_log = now
            _LOG.warning("kafka consumer: %s (retrying)", err)

    def commit(self, tokens: Iterable[Any]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        for topic, part, offset in tokens:
            key = (topic, part)
            if offset + 1 > self._to_commit.get(key, -1):
                self._to_commit[key] = offset + 1
        if not self._to_commit:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._to_commit.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # broker away: keep them, retry at the next commit
            self._log_transient(exc.args[0] if exc.args else exc)
            return
        self._to_commit.clear()

    def keepalive(self, now: float) -> None:
        pass

    def close(self) -> None:
        if self._consumer is not None:
            if self._to_commit:
                self.commit(())
            self._consumer.close()
            self._consumer = None


def pubsub_subscription_path(cfg: PubSubConfig) -> tuple[str, str]:
    """(subscription path, topic path or "") for a config.

    >>> pubsub_subscription_path(PubSubConfig(project="p", topic="t"))
    ('projects/p/subscriptions/streamsift-t', 'projects/p/topics/t')
    >>> pubsub_subscription_path(PubSubConfig(subscription="projects/q/subscriptions/s"))
    ('projects/q/subscriptions/s', '')
    """

    def full(kind: str, name: str) -> str:
        if name.startswith("projects/"):
            return name
        if not cfg.project:
            raise ValueError(f"pubsub.project must be set for the short {kind} name {name!r}")
        return f"projects/{cfg.project}/{kind}/{name}"

    topic = full("topics", cfg.topic) if cfg.topic else ""
    if cfg.subscription:
        return full("subscriptions", cfg.subscription), topic
    if not topic:
        raise ValueError("pubsub.subscription or pubsub.topic must be set for --source pubsub")
    short = topic.rsplit("/", 1)[-1]
    project = topic.split("/")[1]
    return f"projects/{project}/subscriptions/streamsift-{short}", topic


class PubSubClient:
    """Pull subscriber; acks only through :meth:`commit`; extends pending deadlines."""

    def __init__(self, cfg: PubSubConfig, connect_timeout_s: float = 15.0) -> None:
        self.cfg = cfg
        self.subscription, self.topic = pubsub_subscription_path(cfg)
        self.connect_timeout_s = connect_timeout_s
        self._client = None
        self._pending: dict[str, float] = {}  # ack id -> wall time of its last deadline
        self._last_extend = 0.0

    def open(self) -> None:
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry
        from google.cloud import pubsub_v1

        client = pubsub_v1.SubscriberClient()
        t = self.connect_timeout_s
        # bounded: retry transient errors for at most connect_timeout_s in total
        retry = Retry(initial=0.2, maximum=1.0, timeout=t)
        try:
            if self.topic:
                try:
                    client.create_subscription(
                        request={
                            "name": self.subscription,
                            "topic": self.topic,
                            "ack_deadline_seconds": self.cfg.ack_deadline_s,
                        },
                        retry=retry,
                        timeout=t,
                    )
                    _LOG.info("pubsub: created %s on %s", self.subscription, self.topic)
                except gexc.AlreadyExists:
                    pass
            client.get_subscription(
                request={"subscription": self.subscription}, retry=retry, timeout=t
            )
        except gexc.NotFound as exc:
            client.close()
            raise BrokerUnavailable(
                f"Pub/Sub subscription or topic not found ({self.subscription}, "
                f"topic {self.topic or '-'}): {exc.message}"
            ) from None
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            client.close()
            raise BrokerUnavailable(
                f"Pub/Sub did not answer within source.connect_timeout_s={t:g} s "
                f"({self.subscription}): {exc}"
            ) from None
        self._client = client

    def partitions(self) -> list[str]:
        return [""]

    def busy_partitions(self) -> set[str]:
        return set()  # unknown for Pub/Sub: idleness is by wall time

    def poll(self, max_records: int, timeout_s: float) -> list[BrokerRecord]:
        from google.api_core import exceptions as gexc

        try:
            resp = self._client.pull(
                request={"subscription": self.subscription, "max_messages": max_records},
                timeout=max(timeout_s, 1.0),
            )
        except (gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.RetryError):
            return []
        out = []
        now = time.time()
        attr = self.cfg.timestamp_attribute
        for rm in resp.received_messages:
            m = rm.message
            broker_ts = None
            if attr and attr in m.attributes:
                broker_ts = _parse_attr_time(m.attributes[attr])
            if broker_ts is None and m.publish_time is not None:
                broker_ts = m.publish_time.timestamp()
            self._pending[rm.ack_id] = now
            out.append(BrokerRecord("", rm.ack_id, broker_ts, bytes(m.data)))
        return out

    def commit(self, tokens: Iterable[Any]) -> None:
        ids = list(tokens)
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            self._client.acknowledge(request={"subscription": self.subscription, "ack_ids": chunk})
            for a in chunk:
                self._pending.pop(a, None)

    def keepalive(self, now: float) -> None:
        """Extend the deadline of messages read but not acknowledged yet."""
        period = self.cfg.ack_deadline_s / 3.0
        if not self._pending or now - self._last_extend < period:
            return
        self._last_extend = now
        ids = list(self._pending)
        for i in range(0, len(ids), 1000):
            self._client.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": ids[i : i + 1000],
                    "ack_deadline_seconds": self.cfg.ack_deadline_s,
                }
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _parse_attr_time(value: str) -> float | None:
    """Epoch milliseconds or RFC 3339.

    >>> _parse_attr_time("1767225600000"), _parse_attr_time("2026-01-01T00:00:00Z")
    (1767225600.0, 1767225600.0)
    """
    from streamsift.parsing import parse_time

    try:
        if value.strip().lstrip("-").isdigit():
            return int(value) / 1000.0
        return parse_time(value, "iso8601")
    except ValueError:
        return None
