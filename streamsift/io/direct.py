"""An unbounded broker source for streamsift's DirectRunner (``BundleBasedDirectRunner``).

Beam's splittable-DoFn sources do not run on that runner, so :class:`ReadFromBroker`
is a root transform the runner executes natively through its own evaluator,
registered in ``TransformEvaluatorRegistry`` (as ``TestStream`` and the
runner's Pub/Sub read are). Each evaluation is one step of the source:

1. The runner schedules a root only when nothing else is executing and no timer
   is due, so at that point every record emitted earlier has gone as far
   through the pipeline as the watermark allows. A record is committed (Kafka) /
   acknowledged (Pub/Sub) once every transform's input watermark is past the
   point where the per-key stage has certainly released it
   (:class:`~streamsift.io.watermark.CommitLedger`: its event time, or its key's
   newest event time when the key's release timer was re-armed, plus the allowed
   lateness and a margin, plus ``release_delay_s`` on the batched engine, whose
   shard timers fire up to ``engine.release_quantum_s`` late): then all its
   results have been emitted and flushed by the sinks. Both engines
   (``engine.mode``) read the source the same way; the batched one chunks each
   bundle of it (``ChunkPayloads``). Delivery is at-least-once: records read but not committed are read
   again after a crash.
2. Poll a batch; each record is emitted with its event time as timestamp (the
   payload's time field, or the broker time; see ``source.event_time``).
3. Report the watermark (:class:`~streamsift.io.watermark.PartitionWatermark`)
   as the transform's watermark hold, and reschedule itself.

With ``source.stop_when_idle_s > 0`` the source drains after that many wall
seconds without a record: its watermark jumps far ahead (all timers fire,
everything is emitted and committed), then to infinity, and the run ends.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import coders
from apache_beam.runners.direct import transform_evaluator as te
from apache_beam.runners.direct.util import TransformResult
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

from streamsift.config import InputConfig, KafkaConfig, PubSubConfig, SourceConfig
from streamsift.io.clients import BrokerClient, BrokerRecord, KafkaClient, PubSubClient
from streamsift.io.watermark import CommitLedger, LedgerState, PartitionWatermark, WatermarkState
from streamsift.parsing import parse_time

__all__ = [
    "ReadFromBroker",
    "SourceStats",
    "register_direct_evaluators",
    "source_stats",
    "close_all",
    "event_time_of",
]

_LOG = logging.getLogger(__name__)
#: the drain watermark is this far past the newest event time (as in ReplayStream).
DRAIN_S = 366 * 86400.0
#: event-time seconds the commit ledger waits past an event's release (stage 2's
#: one-second event-time windows on the per-element engine, and slack)
COMMIT_MARGIN_S = 2.0


#: broker kind -> client factory (cfg, source config) -> BrokerClient; tests may add kinds
CLIENT_FACTORIES: dict[str, Any] = {
    "kafka": lambda cfg, source: KafkaClient(cfg, source.connect_timeout_s),
    "pubsub": lambda cfg, source: PubSubClient(cfg, source.connect_timeout_s),
}


def make_client(kind: str, cfg: Any, source: SourceConfig) -> BrokerClient:
    factory = CLIENT_FACTORIES.get(kind)
    if factory is None:
        raise ValueError(f"broker kind must be one of {sorted(CLIENT_FACTORIES)}; got {kind!r}")
    return factory(cfg, source)


def event_time_of(
    record: BrokerRecord, input_cfg: InputConfig, use_broker_time: bool
) -> tuple[float | None, bytes]:
    """(event time or None, payload to emit) of one record (see :func:`record_info`)."""
    ts, _key, payload = record_info(record, input_cfg, use_broker_time)
    return ts, payload


def record_info(
    record: BrokerRecord, input_cfg: InputConfig, use_broker_time: bool
) -> tuple[float | None, str | None, bytes]:
    """(event time or None, key or None, payload to emit) of one record.

    With broker time the payload's time field is set to the broker time (in the
    configured ``input.time_format``), so the parser and every later stage see it.

    >>> r = BrokerRecord("p", 0, 1767225660.5, b'{"key": "a", "ts": 1767225600}')
    >>> record_info(r, InputConfig(), False)
    (1767225600.0, 'a', b'{"key": "a", "ts": 1767225600}')
    >>> record_info(r, InputConfig(), True)
    (1767225660.5, 'a', b'{"key":"a","ts":1767225660500}')
    >>> record_info(BrokerRecord("p", 0, None, b"junk"), InputConfig(), False)
    (None, None, b'junk')
    """
    try:
        obj = json.loads(record.payload)
    except Exception:
        return None, None, record.payload
    if not isinstance(obj, dict):
        return None, None, record.payload
    raw_key = obj.get(input_cfg.key_field)
    key = (
        str(raw_key) if isinstance(raw_key, (str, int)) and not isinstance(raw_key, bool) else None
    )
    if use_broker_time:
        if record.broker_ts is None:
            return None, key, record.payload
        obj[input_cfg.time_field] = _format_time(record.broker_ts, input_cfg.time_format)
        return record.broker_ts, key, json.dumps(obj, separators=(",", ":")).encode()
    try:
        ts = parse_time(obj[input_cfg.time_field], input_cfg.time_format)
    except Exception:
        return None, key, record.payload
    return ts, key, record.payload


def _format_time(ts: float, time_format: str) -> Any:
    if time_format == "iso8601":
        from datetime import datetime, timezone

        return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
    if time_format == "epoch_s":
        return ts
    return int(round(ts * 1000))


@dataclass
class SourceStats:
    """What the source did (read by the driver for the summary)."""

    read: int = 0
    committed: int = 0
    polls: int = 0
    watermark: float = -math.inf
    draining: bool = False
    done: bool = False


@dataclass
class _Runtime:
    client: BrokerClient
    wm_logic: PartitionWatermark
    wm: WatermarkState
    ledger_logic: CommitLedger
    ledger: LedgerState
    started_wall: float
    last_input_wall: float
    stats: SourceStats = field(default_factory=SourceStats)
    drain_to: float | None = None


_RUNTIMES: dict[str, _Runtime] = {}
_STATS: dict[str, SourceStats] = {}
_LOCK = threading.Lock()


class ReadFromBroker(beam.PTransform):
    """Unbounded source of raw payload bytes from Kafka or Pub/Sub (DirectRunner only)."""

    def __init__(
        self,
        kind: str,
        broker_cfg: KafkaConfig | PubSubConfig,
        source_cfg: SourceConfig,
        input_cfg: InputConfig,
        allowed_lateness_s: float,
        run_id: str | None = None,
        release_delay_s: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in CLIENT_FACTORIES:
            raise ValueError(f"kind must be one of {sorted(CLIENT_FACTORIES)}; got {kind!r}")
        if not release_delay_s >= 0:
            raise ValueError(f"release_delay_s must be >= 0; got {release_delay_s}")
        self.kind = kind
        self.broker_cfg = broker_cfg
        self.source_cfg = source_cfg
        self.input_cfg = input_cfg
        self.allowed_lateness_s = allowed_lateness_s
        #: how much later than its key's timer the detection stage may release an
        #: event (the batched engine's ``engine.release_quantum_s``); the commit
        #: ledger waits that much longer
        self.release_delay_s = release_delay_s
        #: identifies this source's runtime state (survives the runner-API round trip)
        self.run_id = run_id or uuid.uuid4().hex
        register_direct_evaluators()

    def _infer_output_coder(self, unused_input_type=None, unused_input_coder=None):
        return coders.BytesCoder()

    def get_windowing(self, unused_inputs):
        return beam.Windowing(GlobalWindows())

    def expand(self, pbegin):
        return pvalue.PCollection(pbegin.pipeline, element_type=bytes, is_bounded=False)


def source_stats(run_id: str) -> SourceStats:
    with _LOCK:
        return _STATS.setdefault(run_id, SourceStats())


def close_all() -> None:
    """Close every open broker client (the driver calls this when a run ends)."""
    with _LOCK:
        runtimes = list(_RUNTIMES.items())
        _RUNTIMES.clear()
    for _, rt in runtimes:
        try:
            rt.client.close()
        except Exception as exc:  # closing is best effort
            _LOG.warning("closing broker client: %s", exc)


def _runtime(t: ReadFromBroker) -> _Runtime:
    with _LOCK:
        rt = _RUNTIMES.get(t.run_id)
        if rt is not None:
            return rt
    client = make_client(t.kind, t.broker_cfg, t.source_cfg)
    client.open()  # raises BrokerUnavailable with a clear message
    now = time.time()
    rt = _Runtime(
        client=client,
        wm_logic=PartitionWatermark(t.source_cfg.watermark_lag_s, t.source_cfg.idle_partition_s),
        wm=WatermarkState(),
        ledger_logic=CommitLedger(
            t.allowed_lateness_s, margin_s=COMMIT_MARGIN_S + t.release_delay_s
        ),
        ledger=LedgerState(),
        started_wall=now,
        last_input_wall=now,
        stats=source_stats(t.run_id),
    )
    for partition in client.partitions():
        rt.wm_logic.declare(rt.wm, partition, now)
    with _LOCK:
        _RUNTIMES[t.run_id] = rt
    return rt


def _seconds(ts: Timestamp) -> float:
    if ts >= MAX_TIMESTAMP:
        return math.inf
    if ts <= MIN_TIMESTAMP:
        return -math.inf
    return ts.micros / 1e6


def _stamp(seconds: float) -> Timestamp:
    if seconds == -math.inf:
        return MIN_TIMESTAMP
    if seconds == math.inf:
        return MAX_TIMESTAMP
    return Timestamp(micros=int(round(seconds * 1e6)))


class _BrokerReadEvaluator(te._TransformEvaluator):
    """One step of a :class:`ReadFromBroker`: commit what is done, poll, emit, hold."""

    def __init__(self, evaluation_context, applied_ptransform, input_committed_bundle, side_inputs):
        super().__init__(
            evaluation_context, applied_ptransform, input_committed_bundle, side_inputs
        )
        self.t: ReadFromBroker = applied_ptransform.transform

    def start_bundle(self) -> None:
        pass

    def process_element(self, element) -> None:
        pass

    def _done_until(self) -> float:
        """Event time up to which every other transform has seen all its input."""
        ctx = self._evaluation_context
        manager = ctx._watermark_manager
        low = math.inf
        for applied in ctx._step_names:
            if applied is self._applied_ptransform:
                continue
            low = min(low, _seconds(manager.get_watermarks(applied).input_watermark))
        return low

    def _log_lagging(self, target: float) -> None:
        ctx = self._evaluation_context
        for applied in ctx._step_names:
            wm = _seconds(ctx._watermark_manager.get_watermarks(applied).input_watermark)
            if wm < target and applied is not self._applied_ptransform:
                _LOG.debug("draining: %s input watermark %s < %s", applied.full_label, wm, target)

    def _reschedule(self, bundles, hold: float) -> TransformResult:
        again = self._evaluation_context.create_bundle(pvalue.PBegin(self.t.pipeline))
        again.add(GlobalWindows.windowed_value(b"", timestamp=_stamp(hold)))
        return TransformResult(self, bundles, [again], None, {None: _stamp(hold)})

    def finish_bundle(self) -> TransformResult:
        t = self.t
        cfg = t.source_cfg
        rt = _runtime(t)
        now = time.time()
        done_until = self._done_until()
        ready = rt.ledger_logic.ready(rt.ledger, done_until)
        if ready:
            rt.client.commit(ready)
            rt.stats.committed += len(ready)
        rt.client.keepalive(now)

        if rt.drain_to is not None:
            # (the heartbeat element holds downstream 1 µs behind the hold)
            if rt.ledger.size() == 0 and done_until >= rt.drain_to - 1e-3:
                rt.client.commit(())
                rt.client.close()
                with _LOCK:
                    _RUNTIMES.pop(t.run_id, None)
                rt.stats.done = True
                rt.stats.watermark = math.inf
                _LOG.info(
                    "source drained: %d read, %d committed", rt.stats.read, rt.stats.committed
                )
                return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
            time.sleep(0.01)
            if _LOG.isEnabledFor(logging.DEBUG):
                self._log_lagging(rt.drain_to)
            return self._reschedule([], rt.drain_to)

        records = rt.client.poll(cfg.max_batch, cfg.poll_timeout_s)
        rt.stats.polls += 1
        now = time.time()
        before = rt.wm.watermark
        bundles = []
        emitted: list[tuple[BrokerRecord, float | None, str | None]] = []
        if records:
            rt.last_input_wall = now
            use_broker = cfg.event_time == "broker"
            out = self._evaluation_context.create_bundle(list(self._outputs)[0])
            for rec in records:
                ts, key, payload = record_info(rec, t.input_cfg, use_broker)
                rt.wm_logic.learn_one(rt.wm, rec.partition, ts, now)
                # Payloads without a usable time ride at the watermark; the parser
                # dead-letters them.
                stamp = ts if ts is not None else (before if before > -math.inf else 0.0)
                out.output(GlobalWindows.windowed_value(payload, timestamp=_stamp(stamp)))
                emitted.append((rec, ts, key))
            bundles.append(out)
            rt.stats.read += len(records)
        watermark = rt.wm_logic.current(rt.wm, now, rt.client.busy_partitions())
        for rec, ts, key in emitted:
            rt.ledger_logic.learn_one(rt.ledger, rec.partition, rec.token, ts, key)
        rt.stats.watermark = watermark

        idle_for = now - rt.last_input_wall
        if cfg.stop_when_idle_s > 0 and idle_for >= cfg.stop_when_idle_s:
            rt.stats.draining = True
            newest = rt.wm.newest_any if rt.wm.newest_any > -math.inf else now
            rt.drain_to = max(watermark, newest) + DRAIN_S
            _LOG.info(
                "source idle for %.1f s (source.stop_when_idle_s): draining to %s",
                idle_for,
                rt.drain_to,
            )
            return self._reschedule(bundles, rt.drain_to)
        return self._reschedule(bundles, watermark)


_REGISTERED = False


def register_direct_evaluators() -> None:
    """Teach the BundleBasedDirectRunner to execute :class:`ReadFromBroker` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    te.TransformEvaluatorRegistry._test_evaluators_overrides[ReadFromBroker] = _BrokerReadEvaluator
    _REGISTERED = True
