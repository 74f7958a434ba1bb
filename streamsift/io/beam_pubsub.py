"""Pub/Sub and files through Beam's own IO: Dataflow, and ``--pubsub-impl beam`` on the
DirectRunner.

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

  DirectRunner (``streamsift run --source pubsub --pubsub-impl beam``): the runner replaces
  ``ReadFromPubSub`` with its own reader, which pulls, acknowledges at once and holds the
  watermark at the *wall clock*. Replayed history (payload times in the past) would then
  all be behind the watermark: the per-key stage's release and idle-key expiry timers
  fire at once, per-key state is cleared between events, and events are judged late
  against whatever happened to arrive first. streamsift handles this deliberately by
  **re-stamping each message with its event time and holding the watermark itself**
  (:class:`HeldWatermark`, the native source's rule: newest event time seen minus
  ``source.watermark_lag_s``; after ``source.idle_partition_s`` without messages, event
  time follows the wall clock; ``source.stop_when_idle_s`` drains and ends the run). It
  does so by replacing only the *watermark* of Beam's DirectRunner reader
  (:class:`_HeldPubSubReadEvaluator`, a subclass of Beam's ``_PubSubReadEvaluator``):
  pulling, message decoding, the timestamp attribute and the acknowledgement stay
  Beam's code; the pull is bounded (``source.max_batch`` messages, a deadline of
  ``max(source.poll_timeout_s, 1)`` s instead of Beam's 10 messages and 30 s) so an idle
  subscription does not block the drain (this subclasses DirectRunner internals of
  Beam 2.77, the version pinned in ``pyproject.toml``). Why this option rather than the other two:
  broker time (publish time) as event time would make the results depend on when the
  history was published, so they could not equal a replay of the same events; arrival
  order with per-key lateness still leaves the idle-key expiry timer due at once
  (state cleared between a key's events) and the one-second event-time windows before
  stage 2 behind the watermark. Holding the watermark gives exactly the native
  source's event-time semantics, so the alerts equal those of a file replay and every
  event is processed, dead-lettered or late (counted; nothing is dropped silently).

  **Delivery on the DirectRunner: at-most-once.** Beam's DirectRunner reader
  acknowledges every message as soon as it is pulled, before it is processed. A run
  that is killed (SIGKILL, crash, Ctrl-C) loses the messages it had read but not yet
  finished: the events waiting in the per-key stage for the watermark, and anything
  in flight. They are not redelivered. Use the native source (``--pubsub-impl
  native``, the default on the DirectRunner) for at-least-once delivery.
- :class:`WritePubSubBeam`: ``beam.io.WriteToPubSub`` with the routing attributes of
  :func:`streamsift.io.sinks.routing_fields` (``alert_id``, ``key``, ``severity`` /
  ``error_kind``).
- :class:`WriteFilesBeam`: JSON lines through Beam's file IO (``fileio.WriteToFiles``,
  one-minute windows, files named after the destination) for ``gs://`` and other Beam
  file systems; never the worker's local disk.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.runners.direct import transform_evaluator as te
from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
from apache_beam.runners.direct.util import TransformResult
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP

from streamsift.config import Config, InputConfig, SourceConfig
from streamsift.io import direct
from streamsift.io.clients import BrokerRecord
from streamsift.io.direct import DRAIN_S, record_info
from streamsift.io.sinks import routing_fields
from streamsift.io.watermark import PartitionWatermark, WatermarkState

__all__ = [
    "AT_MOST_ONCE_NOTICE",
    "HeldReadState",
    "HeldWatermark",
    "ReadPubSubBeam",
    "WritePubSubBeam",
    "WriteFilesBeam",
    "check_subscription",
    "is_local_path",
    "pubsub_read_args",
    "to_pubsub_message",
]

_LOG = logging.getLogger(__name__)

#: what ``--pubsub-impl beam`` on the DirectRunner guarantees (startup warning, README)
AT_MOST_ONCE_NOTICE = (
    "--pubsub-impl beam on the DirectRunner: Beam's Pub/Sub reader acknowledges each "
    "message when it is pulled, before it is processed: delivery is AT-MOST-ONCE (a killed "
    "or crashed run loses the messages it had read but not finished; they are not "
    "redelivered). The event-time watermark is held by streamsift from the messages' event "
    "times (not the wall clock). Use --pubsub-impl native for at-least-once delivery."
)


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


@dataclass
class HeldReadState:
    """What the held watermark knows: the watermark state of the one Pub/Sub
    "partition", the wall time of the last message and the drain point (None until
    the read drains)."""

    wm: WatermarkState = field(default_factory=WatermarkState)
    last_input_wall: float = -math.inf
    drain_to: float | None = None


class HeldWatermark:
    """The watermark streamsift holds for Beam's DirectRunner Pub/Sub read: the newest
    event time seen minus ``lag_s`` (never the wall clock while messages arrive), event
    time following the wall clock once no message came for ``idle_s``, and a drain
    (far past the newest event time) after ``stop_when_idle_s`` without messages
    (0 = never). Wall times are passed in.

    >>> hw = HeldWatermark(lag_s=5.0, idle_s=10.0, stop_when_idle_s=30.0)
    >>> s = hw.new_state(now=0.0)
    >>> hw.hold(s, now=1.0)                 # nothing read yet
    -inf
    >>> hw.learn_one(s, 1000.0, now=2.0); hw.learn_one(s, 990.0, now=2.0)
    >>> hw.learn_one(s, None, now=2.0)      # no readable time: does not move it
    >>> hw.hold(s, now=3.0)                 # newest event time - lag, not the wall clock
    995.0
    >>> hw.hold(s, now=14.0)                # idle for 12 s: follows the wall clock
    1007.0
    >>> hw.hold(s, now=32.0) - 366 * 86400  # idle for 30 s: drain far past the watermark
    1025.0
    >>> hw.drained(s, done_until=1025.0), hw.drained(s, done_until=1025.0 + 366 * 86400)
    (False, True)
    """

    PARTITION = ""

    def __init__(self, lag_s: float, idle_s: float, stop_when_idle_s: float = 0.0) -> None:
        if not stop_when_idle_s >= 0:
            raise ValueError(f"stop_when_idle_s must be >= 0; got {stop_when_idle_s}")
        self._wm = PartitionWatermark(lag_s, idle_s)
        self.stop_when_idle_s = stop_when_idle_s

    @classmethod
    def from_config(cls, source: SourceConfig) -> HeldWatermark:
        return cls(source.watermark_lag_s, source.idle_partition_s, source.stop_when_idle_s)

    def new_state(self, now: float) -> HeldReadState:
        state = HeldReadState(last_input_wall=now)
        self._wm.declare(state.wm, self.PARTITION, now)
        return state

    def learn_one(self, state: HeldReadState, event_time: float | None, now: float) -> None:
        """One message read at wall time ``now`` (event time None = not readable)."""
        self._wm.learn_one(state.wm, self.PARTITION, event_time, now)
        state.last_input_wall = max(state.last_input_wall, now)

    def hold(self, state: HeldReadState, now: float) -> float:
        """The watermark to hold at wall time ``now`` (monotone); starts the drain once
        the read has been idle for ``stop_when_idle_s``."""
        if state.drain_to is not None:
            return state.drain_to
        wm = self._wm.current(state.wm, now)
        if self.stop_when_idle_s > 0 and now - state.last_input_wall >= self.stop_when_idle_s:
            newest = state.wm.newest_any if state.wm.newest_any > -math.inf else now
            state.drain_to = max(wm, newest) + DRAIN_S
            return state.drain_to
        return wm

    def drained(self, state: HeldReadState, done_until: float) -> bool:
        """True once every other transform has seen all its input up to the drain point."""
        return state.drain_to is not None and done_until >= state.drain_to - 1e-3


@dataclass(frozen=True)
class _HeldSpec:
    run_id: str
    source: SourceConfig
    input: InputConfig


@dataclass
class _HeldRuntime:
    logic: HeldWatermark
    state: HeldReadState
    stats: direct.SourceStats


#: full subscription (or topic) path -> the streamsift read that owns it in this process
_HELD: dict[str, _HeldSpec] = {}
_RUNTIMES: dict[str, _HeldRuntime] = {}
_LOCK = threading.Lock()
_REGISTERED = False


def _source_path(args: dict[str, Any]) -> str:
    return args.get("subscription") or args["topic"]


class _BoundedPull:
    """Beam's subscriber client with a bounded pull: ``max_messages`` and ``timeout``
    replace Beam's fixed 10 messages and 30 s (everything else passes through)."""

    def __init__(self, client: Any, max_messages: int, timeout_s: float) -> None:
        self._client = client
        self._max = max_messages
        self._timeout = timeout_s

    def pull(self, **kwargs):
        kwargs["max_messages"] = self._max
        kwargs["timeout"] = self._timeout
        return self._client.pull(**kwargs)

    def __getattr__(self, name: str):
        return getattr(self._client, name)


class _HeldPubSubReadEvaluator(te._PubSubReadEvaluator):
    """Beam's DirectRunner Pub/Sub read with streamsift's watermark hold (for reads
    registered by :class:`ReadPubSubBeam`; any other ``ReadFromPubSub`` in the process
    keeps Beam's behaviour): each message stamped with its event time, the hold from
    :class:`HeldWatermark`, a drain after ``source.stop_when_idle_s``."""

    def __init__(self, evaluation_context, applied_ptransform, input_committed_bundle, side_inputs):
        super().__init__(
            evaluation_context, applied_ptransform, input_committed_bundle, side_inputs
        )
        with _LOCK:
            key = self.source.full_subscription or self.source.full_topic
            self._spec = _HELD.get(key)

    def _get_subscriber_client(self, transform):
        client = super()._get_subscriber_client(transform)
        if self._spec is None:
            return client
        cfg = self._spec.source
        return _BoundedPull(client, min(cfg.max_batch, 1000), max(cfg.poll_timeout_s, 1.0))

    def _runtime(self) -> _HeldRuntime:
        spec = self._spec
        with _LOCK:
            rt = _RUNTIMES.get(spec.run_id)
            if rt is None:
                logic = HeldWatermark.from_config(spec.source)
                rt = _HeldRuntime(
                    logic, logic.new_state(time.time()), direct.source_stats(spec.run_id)
                )
                _RUNTIMES[spec.run_id] = rt
                _LOG.info(
                    "pubsub (beam reader): %s; watermark held from event times", self._sub_name
                )
        return rt

    def _done_until(self) -> float:
        """Event time up to which every other transform has seen all its input."""
        ctx = self._evaluation_context
        manager = ctx._watermark_manager
        low = math.inf
        for applied in ctx._step_names:
            if applied is not self._applied_ptransform:
                wm = manager.get_watermarks(applied).input_watermark
                low = min(low, direct._seconds(wm))
        return low

    def _result(self, bundles: list, hold: float | None) -> TransformResult:
        if hold is None:  # drained: no more work, the watermark goes to infinity
            return TransformResult(self, bundles, [], None, {None: MAX_TIMESTAMP})
        again = self._evaluation_context.create_bundle(
            beam.pvalue.PBegin(self._applied_ptransform.transform.pipeline)
        )
        return TransformResult(self, bundles, [again], None, {None: direct._stamp(hold)})

    def finish_bundle(self) -> TransformResult:
        if self._spec is None:
            return super().finish_bundle()
        from google.api_core import exceptions as gexc

        rt = self._runtime()
        logic, state, stats = rt.logic, rt.state, rt.stats
        if state.drain_to is not None:
            if logic.drained(state, self._done_until()):
                with _LOCK:
                    _RUNTIMES.pop(self._spec.run_id, None)
                stats.done = True
                stats.watermark = math.inf
                _LOG.info("pubsub (beam reader) drained: %d read and acknowledged", stats.read)
                return self._result([], None)
            time.sleep(0.01)
            return self._result([], state.drain_to)
        try:  # Beam's pull, decoding, timestamp attribute and acknowledgement
            data = self._read_from_pubsub(self.source.timestamp_attribute)
        except (gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.RetryError):
            data = []  # an empty pull (the emulator answers it with DEADLINE_EXCEEDED)
        stats.polls += 1
        now = time.time()
        before = state.wm.watermark
        bundles = []
        if data:
            use_broker = self._spec.source.event_time == "broker"
            out = self._evaluation_context.create_bundle(list(self._outputs)[0])
            for ts, message in data:
                raw = message.data
                element = message if self.source.with_attributes else raw
                record = BrokerRecord("", 0, ts.micros / 1e6, raw)
                t, _key, _payload = record_info(record, self._spec.input, use_broker)
                logic.learn_one(state, t, now)
                # no readable time: rides at the watermark; the parser dead-letters it
                stamp = t if t is not None else (before if before > -math.inf else 0.0)
                out.output(GlobalWindows.windowed_value(element, timestamp=direct._stamp(stamp)))
            bundles.append(out)
            stats.read += len(data)
            stats.committed += len(data)  # Beam acknowledged them when it pulled them
        hold = logic.hold(state, now)
        stats.watermark = hold
        if state.drain_to is not None:
            stats.draining = True
            _LOG.info(
                "pubsub (beam reader) idle for %.1f s (source.stop_when_idle_s): draining",
                now - state.last_input_wall,
            )
        return self._result(bundles, hold)


def check_subscription(cfg: Config) -> None:
    """Fail fast (:class:`~streamsift.io.clients.BrokerUnavailable`, within
    ``source.connect_timeout_s``) when the subscription Beam's reader is to pull does not
    exist or Pub/Sub does not answer. A topic-only config is not checked: Beam's
    DirectRunner reader creates a temporary subscription on the topic."""
    import dataclasses

    from streamsift.io.clients import PubSubClient

    if not cfg.pubsub.subscription:
        return
    client = PubSubClient(dataclasses.replace(cfg.pubsub, topic=""), cfg.source.connect_timeout_s)
    client.open()
    client.close()


def register_held_read() -> None:
    """Teach the BundleBasedDirectRunner to hold the watermark of the Pub/Sub reads that
    :class:`ReadPubSubBeam` registers (idempotent; other reads keep Beam's evaluator)."""
    global _REGISTERED
    if _REGISTERED:
        return
    te.TransformEvaluatorRegistry._test_evaluators_overrides[_DirectReadFromPubSub] = (
        _HeldPubSubReadEvaluator
    )
    _REGISTERED = True


class ReadPubSubBeam(beam.PTransform):
    """Payload bytes from Pub/Sub through ``beam.io.ReadFromPubSub``.

    ``hold_watermark`` (the default): on the DirectRunner the watermark is held from
    the messages' event times (:class:`HeldWatermark`, see the module doc); the stats of
    the read are ``streamsift.io.direct.source_stats(self.run_id)``. Other runners
    ignore it (Dataflow keeps its own Pub/Sub watermark)."""

    def __init__(self, cfg: Config, hold_watermark: bool = True) -> None:
        super().__init__()
        self._cfg = cfg
        self._args = pubsub_read_args(cfg)
        self.run_id = uuid.uuid4().hex
        if hold_watermark:
            register_held_read()
            with _LOCK:
                _HELD[_source_path(self._args)] = _HeldSpec(self.run_id, cfg.source, cfg.input)

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
