"""Pub/Sub and files through Beam's own IO, for runners that are not the DirectRunner's
native source (Dataflow).

- :class:`ReadPubSubBeam`: ``beam.io.ReadFromPubSub`` on the subscription (or on the topic,
  through a subscription the runner creates). With ``source.event_time = "broker"`` the
  element timestamp is the ``pubsub.timestamp_attribute`` (else the publish time) and the
  payload's time field is rewritten to it, as the native source does. With ``"payload"``
  a re-timestamp step stamps each message with its payload's event time.

  Watermark (Dataflow): the Pub/Sub source's watermark estimates the oldest unacknowledged
  *publish time* (or timestamp attribute), not the payload time; re-stamping does not move
  it. For a live stream whose payload times are close to the publish times this is what
  ``event_time`` ordering needs. Payload times far behind it (history replayed into a topic
  now) are already behind the watermark: the per-key stage's timers fire at once, so each
  key's events are taken in arrival order, an event older than what its key already
  processed goes to the late sink, the idle-key expiry timer is already due (per-key
  state is cleared between events), and runner-side event-time windows downstream (the
  one-second ``BatchWindows`` before stage 2) may see them as late data (not verified
  here: no Dataflow). Replaying history on Dataflow therefore needs the publisher to set
  the event time as ``pubsub.timestamp_attribute`` with ``source.event_time = "broker"``.
  Delivery: Dataflow acknowledges a message once its results are durably committed in
  the pipeline (at-least-once end to end; duplicates carry the same ``alert_id``).
- :class:`WritePubSubBeam`: ``beam.io.WriteToPubSub`` with the routing attributes of
  :func:`streamsift.io.sinks.routing_fields` (``alert_id``, ``key``, ``severity`` /
  ``error_kind``).
- :class:`WriteFilesBeam`: JSON lines through Beam's file IO (``fileio.WriteToFiles``,
  one-minute windows, files named after the destination) for ``gs://`` and other Beam
  file systems; never the worker's local disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from streamsift.config import Config, InputConfig
from streamsift.io.clients import BrokerRecord
from streamsift.io.direct import record_info
from streamsift.io.sinks import routing_fields

__all__ = [
    "ReadPubSubBeam",
    "WritePubSubBeam",
    "WriteFilesBeam",
    "is_local_path",
    "pubsub_read_args",
    "to_pubsub_message",
]


def is_local_path(path: str) -> bool:
    """True for paths on the local disk (no scheme, or ``file://``).

    >>> is_local_path("/tmp/a.jsonl"), is_local_path("file:///a"), is_local_path("gs://b/a")
    (True, True, False)
    """
    return "://" not in path or path.startswith("file://")


def pubsub_read_args(cfg: Config) -> dict[str, Any]:
    """Keyword arguments of ``beam.io.ReadFromPubSub`` for a config.

    >>> from streamsift.config import PubSubConfig, SourceConfig
    >>> pubsub_read_args(Config(pubsub=PubSubConfig(project="p", subscription="s")))
    {'subscription': 'projects/p/subscriptions/s'}
    >>> pubsub_read_args(Config(pubsub=PubSubConfig(project="p", topic="t",
    ...     timestamp_attribute="ts"), source=SourceConfig(event_time="broker")))
    {'topic': 'projects/p/topics/t', 'timestamp_attribute': 'ts'}
    """
    p = cfg.pubsub

    def full(kind: str, name: str) -> str:
        if name.startswith("projects/"):
            return name
        if not p.project:
            raise ValueError(f"pubsub.project must be set for the short {kind} name {name!r}")
        return f"projects/{p.project}/{kind}/{name}"

    if p.subscription:
        out: dict[str, Any] = {"subscription": full("subscriptions", p.subscription)}
    elif p.topic:
        out = {"topic": full("topics", p.topic)}
    else:
        raise ValueError("pubsub.subscription or pubsub.topic must be set for --source pubsub")
    if cfg.source.event_time == "broker" and p.timestamp_attribute:
        out["timestamp_attribute"] = p.timestamp_attribute
    return out


class _PayloadTime(beam.DoFn):
    """Stamp each payload with its own event time (``"payload"``) or write the element
    timestamp (Pub/Sub publish time / timestamp attribute) into it (``"broker"``)."""

    def __init__(self, input_cfg: InputConfig, broker_time: bool) -> None:
        self._cfg = input_cfg
        self._broker = broker_time

    def process(self, payload: bytes, ts=beam.DoFn.TimestampParam):
        broker_ts = float(ts.micros) / 1e6 if self._broker else None
        t, _key, out = record_info(BrokerRecord("", 0, broker_ts, payload), self._cfg, self._broker)
        if t is None or self._broker:
            yield out  # broker: keeps the element timestamp; None: the parser dead-letters it
        else:
            yield TimestampedValue(out, t)


class ReadPubSubBeam(beam.PTransform):
    """Payload bytes from Pub/Sub through ``beam.io.ReadFromPubSub``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self._cfg = cfg
        self._args = pubsub_read_args(cfg)

    def expand(self, pbegin):
        broker = self._cfg.source.event_time == "broker"
        msgs = pbegin | "ReadFromPubSub" >> beam.io.ReadFromPubSub(**self._args)
        return msgs | "EventTime" >> beam.ParDo(
            _PayloadTime(self._cfg.input, broker)
        ).with_output_types(bytes)


def _as_obj(element: Any, to_dict: Callable[[Any], Any] | None) -> dict:
    obj = to_dict(element) if to_dict else element
    return json.loads(obj) if isinstance(obj, str) else obj


def to_pubsub_message(element: Any, to_dict: Callable[[Any], Any] | None = None):
    """One output object as a ``PubsubMessage`` with its routing attributes.

    >>> m = to_pubsub_message('{"alert_id": "a1", "key": "k", "severity": "high"}')
    >>> m.data, sorted(m.attributes.items())
    (b'{"alert_id":"a1","key":"k","severity":"high"}', [('alert_id', 'a1'), ('key', 'k'), ('severity', 'high')])
    """
    from apache_beam.io.gcp.pubsub import PubsubMessage

    obj = _as_obj(element, to_dict)
    _key, attrs = routing_fields(obj)
    return PubsubMessage(json.dumps(obj, separators=(",", ":")).encode(), attrs)


class WritePubSubBeam(beam.PTransform):
    """Each element (JSON str or ``to_dict``-able) to a topic via ``beam.io.WriteToPubSub``."""

    def __init__(self, topic: str, to_dict=None, count_alerts: bool = False) -> None:
        super().__init__()
        self._topic = topic
        self._to_dict = to_dict
        self._count_alerts = count_alerts

    def expand(self, pcoll):
        from apache_beam.io.gcp.pubsub import PubsubMessage

        from streamsift.io.sinks import _CountAlertsFn

        if self._count_alerts:
            _ = pcoll | "CountAlerts" >> beam.ParDo(_CountAlertsFn())
        to_dict = self._to_dict
        return (
            pcoll
            | "ToMessage"
            >> beam.Map(lambda e: to_pubsub_message(e, to_dict)).with_output_types(PubsubMessage)
            | "WriteToPubSub" >> beam.io.WriteToPubSub(self._topic, with_attributes=True)
        )


class WriteFilesBeam(beam.PTransform):
    """JSON lines to ``path`` on a Beam file system (``gs://...``) through
    ``fileio.WriteToFiles``: one-minute fixed windows, files
    ``<dir>/<stem>-<window>-<shard>-of-<n>.jsonl``. Local paths are refused."""

    def __init__(
        self, path: str, to_dict=None, parameter: str = "path", window_s: int = 60
    ) -> None:
        super().__init__()
        if is_local_path(path):
            raise ValueError(
                f"{parameter} must be on a Beam file system the workers share (e.g. "
                f"gs://bucket/dir) on Dataflow: a worker's local disk is not kept; got {path!r}"
            )
        self._path = path
        self._to_dict = to_dict
        self._window_s = window_s

    def expand(self, pcoll):
        from apache_beam.io import fileio
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.transforms.window import FixedWindows

        directory, name = FileSystems.split(self._path)
        stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
        to_dict = self._to_dict
        return (
            pcoll
            | "ToJson"
            >> beam.Map(
                lambda e: json.dumps(_as_obj(e, to_dict), separators=(",", ":"))
            ).with_output_types(str)
            | "Window" >> beam.WindowInto(FixedWindows(self._window_s))
            | "WriteToFiles"
            >> fileio.WriteToFiles(
                path=directory,
                file_naming=fileio.default_file_naming(prefix=stem, suffix=".jsonl"),
                shards=1,
            )
        )
