"""Per-key stateful stage: event-time ordering, features and the stage-1 pre-filter.

The DoFn is thin: it reads state, calls :class:`~streamsift.models.keylogic.KeyLogic`,
writes state. All state is bytes with an explicit layout (no cloudpickle).

Event-time semantics (``ordering = "event_time"``, the default): each event is
buffered until the watermark passes ``ts + allowed_lateness`` (one timer per key
covers all pending events, so an event may wait up to one more allowed
lateness); then the key's ready events are processed in event-time order (ties
broken by the values), so
out-of-order arrival within the allowed lateness gives exactly the same
features, scores and alerts as in-order arrival. An event older than what its
key has already processed cannot be placed in order: it is *late* and goes to
the late output (counted, never dropped silently); so does an event older than
its key's newest event by more than the allowed lateness.

``ordering = "arrival"`` processes each event at once (lower latency); an event
more than the allowed lateness older than its key's newest event is late.

Idle keys: an event-time timer clears all of a key's state ``idle_ttl_s`` after
its last event, so memory stays bounded under key churn.

The per-key :class:`~streamsift.models.seasonal.SeasonalDetector` runs inside
:class:`~streamsift.models.keylogic.KeyLogic` with the ``[detector]`` settings
passed in. With ``emit_scores=True`` (off by default: the streaming job pays
nothing for it) every processed event also goes to the ``scores`` output as a
:data:`ScoreRow` ``(key, ts, values, stage1, anomaly, escalated)``, so a bounded
evaluation reads every event's scores from the pipeline itself.
"""

from __future__ import annotations

import struct

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from streamsift.config import DetectorConfig, EventTimeConfig, FeatureConfig, PrefilterConfig
from streamsift.models.keylogic import KeyLogic
from streamsift.records import Event, LateEvent, Scored, key_expired_marker
from streamsift.transforms.coders import EventCoder

__all__ = [
    "DetectPerKey",
    "DetectPerKeyFn",
    "LATE_TAG",
    "EXPIRED_TAG",
    "SCORES_TAG",
    "Meta",
    "ScoreRow",
    "score_row",
]

NAMESPACE = "streamsift"
LATE_TAG = "late"
EXPIRED_TAG = "expired"
SCORES_TAG = "scores"

#: one processed event on the ``scores`` output:
#: (key, ts, values, stage1, anomaly, escalated)
ScoreRow = tuple[str, float, tuple[float, ...], float, float, bool]

_INF = float("inf")
_META = struct.Struct("<dddddq")
# Latest event time Beam can hold a timer for (seconds).
_MAX_TIMER_S = MAX_TIMESTAMP.micros / 1e6 - 1.0


class Meta:
    """Small per-key bookkeeping, encoded as 5 doubles and a counter.

    >>> m = Meta.decode(Meta(1.0, 2.0, 3.0, 4.0, 5.0, 6).encode())
    >>> (m.released_until, m.timer_at, m.last_ts, m.expire_at, m.max_seen, m.next_seq)
    (1.0, 2.0, 3.0, 4.0, 5.0, 6)
    """

    __slots__ = ("released_until", "timer_at", "last_ts", "expire_at", "max_seen", "next_seq")

    def __init__(
        self,
        released_until: float = -_INF,
        timer_at: float = _INF,
        last_ts: float = -_INF,
        expire_at: float = -_INF,
        max_seen: float = -_INF,
        next_seq: int = 0,
    ) -> None:
        self.released_until = released_until
        self.timer_at = timer_at
        self.last_ts = last_ts
        self.expire_at = expire_at
        self.max_seen = max_seen
        self.next_seq = next_seq

    def encode(self) -> bytes:
        return _META.pack(
            self.released_until,
            self.timer_at,
            self.last_ts,
            self.expire_at,
            self.max_seen,
            self.next_seq,
        )

    @classmethod
    def decode(cls, data: bytes) -> Meta:
        return cls(*_META.unpack(data))


def _micros(seconds: float) -> int:
    return int(round(seconds * 1e6))


def _sort_key(e: Event) -> tuple:
    return (e.ts, e.values, e.label)


def score_row(event: Event, stage1: float, anomaly: float, escalated: bool) -> ScoreRow:
    """The ``scores`` output row of a processed event (plain values only).

    >>> score_row(Event("k", 60.0, (1.0, 2.0)), 0.5, 0.25, False)
    ('k', 60.0, (1.0, 2.0), 0.5, 0.25, False)
    """
    return (
        event.key,
        float(event.ts),
        tuple(event.values),
        float(stage1),
        float(anomaly),
        bool(escalated),
    )


class DetectPerKeyFn(beam.DoFn):
    """(key, Event) -> Scored (escalated only) | LateEvent (tagged ``late``) |
    key-expired markers (tagged ``expired``) | with ``emit_scores``, a
    :data:`ScoreRow` per processed event (tagged ``scores``)."""

    META = ReadModifyWriteStateSpec("meta", coders.BytesCoder())
    LOGIC = ReadModifyWriteStateSpec("logic", coders.BytesCoder())
    BUFFER = BagStateSpec("buffer", EventCoder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(
        self,
        field_names: tuple[str, ...],
        features: FeatureConfig,
        prefilter: PrefilterConfig,
        event_time: EventTimeConfig,
        detector: DetectorConfig | None = None,
        emit_scores: bool = False,
    ) -> None:
        self._field_names = tuple(field_names)
        self._features = features
        self._prefilter = prefilter
        self._detector = detector if detector is not None else DetectorConfig()
        self._emit_scores = bool(emit_scores)
        self._lateness = float(event_time.allowed_lateness_s)
        self._ttl = float(event_time.idle_ttl_s)
        self._ordered = event_time.ordering == "event_time"

    def setup(self) -> None:
        self._logic = KeyLogic(self._field_names, self._features, self._prefilter, self._detector)
        self._logic.warm_up()  # compile / load the numba kernels before the first bundle
        self._processed = Metrics.counter(NAMESPACE, "processed")
        self._escalated = Metrics.counter(NAMESPACE, "escalated")
        self._late = Metrics.counter(NAMESPACE, "late")
        self._created = Metrics.counter(NAMESPACE, "keys_created")
        self._expired = Metrics.counter(NAMESPACE, "keys_expired")

    # -- helpers ---------------------------------------------------------
    def _read_meta(self, meta_state) -> tuple[Meta, bool]:
        raw = meta_state.read()
        if raw is None:
            self._created.inc()
            return Meta(), True
        return Meta.decode(raw), False

    def _late_event(self, event: Event, processed_until: float) -> pvalue.TaggedOutput:
        self._late.inc()
        return pvalue.TaggedOutput(
            LATE_TAG,
            TimestampedValue(
                LateEvent(
                    event,
                    processed_until,
                    f"event time {event.ts:.3f} is behind its key's event time "
                    f"{processed_until:.3f} by more than allowed_lateness_s={self._lateness:g}",
                ),
                event.ts,
            ),
        )

    def _arm_expiry(self, meta: Meta, expire_timer) -> None:
        # Re-arm only when the deadline moved by more than half a TTL: a timer
        # set per event would cost more than it saves.
        target = min(meta.last_ts + self._ttl, _MAX_TIMER_S)
        if meta.expire_at < meta.last_ts + self._ttl / 2.0:
            meta.expire_at = target
            expire_timer.set(Timestamp(micros=_micros(target)))

    def _step(self, state, event: Event, meta: Meta, rows: list | None = None):
        res = self._logic.step(state, event.ts, event.values)
        self._processed.inc()
        if rows is not None:
            rows.append(score_row(event, res.stage1, res.anomaly, res.escalated))
        if res.escalated:
            self._escalated.inc()
            seq = meta.next_seq
            meta.next_seq += 1
            return Scored(event, res.features, res.stage1, res.reasons, True, seq=seq)
        return None

    # -- element path ----------------------------------------------------
    def process(
        self,
        element: tuple[str, Event],
        meta_state=beam.DoFn.StateParam(META),
        logic_state=beam.DoFn.StateParam(LOGIC),
        buffer=beam.DoFn.StateParam(BUFFER),
        release_timer=beam.DoFn.TimerParam(RELEASE),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        event = element[1]
        meta, new = self._read_meta(meta_state)
        if self._ordered:
            # Late: older than its key's newest event by more than the allowed
            # lateness, or older than what the key has already processed (then
            # it can no longer be placed in order).
            if event.ts < meta.max_seen - self._lateness or event.ts < meta.released_until:
                yield self._late_event(event, max(meta.released_until, meta.max_seen))
                return
            buffer.add(event)
            dirty = new
            if event.ts > meta.max_seen:
                meta.max_seen = event.ts
                dirty = True
            if meta.timer_at == _INF:
                meta.timer_at = min(event.ts + self._lateness, _MAX_TIMER_S)
                release_timer.set(Timestamp(micros=_micros(meta.timer_at)))
                dirty = True
            if dirty:
                meta_state.write(meta.encode())
            return
        # arrival order
        if event.ts < meta.last_ts - self._lateness:
            yield self._late_event(event, meta.last_ts)
            return
        raw = logic_state.read()
        state = self._logic.decode_state(raw) if raw is not None else self._logic.new_state()
        rows = [] if self._emit_scores else None
        scored = self._step(state, event, meta, rows)
        logic_state.write(self._logic.encode_state(state))
        meta.last_ts = max(meta.last_ts, event.ts)
        meta.released_until = meta.last_ts - self._lateness
        self._arm_expiry(meta, expire_timer)
        meta_state.write(meta.encode())
        if rows:
            yield pvalue.TaggedOutput(SCORES_TAG, TimestampedValue(rows[0], event.ts))
        if scored is not None:
            yield TimestampedValue(scored, event.ts)

    # -- timers ----------------------------------------------------------
    @on_timer(RELEASE)
    def on_release(
        self,
        fire_ts=beam.DoFn.TimestampParam,
        meta_state=beam.DoFn.StateParam(META),
        logic_state=beam.DoFn.StateParam(LOGIC),
        buffer=beam.DoFn.StateParam(BUFFER),
        release_timer=beam.DoFn.TimerParam(RELEASE),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        fire_us = fire_ts.micros
        raw_meta = meta_state.read()
        meta = Meta.decode(raw_meta) if raw_meta is not None else Meta()
        pending = list(buffer.read())
        ready = []
        later = []
        for e in pending:
            if _micros(e.ts + self._lateness) <= fire_us:
                ready.append(e)
            else:
                later.append(e)
        out = []
        rows = [] if self._emit_scores else None
        if ready:
            ready.sort(key=_sort_key)
            raw = logic_state.read()
            state = self._logic.decode_state(raw) if raw is not None else self._logic.new_state()
            for e in ready:
                scored = self._step(state, e, meta, rows)
                if scored is not None:
                    out.append(scored)
            logic_state.write(self._logic.encode_state(state))
            meta.released_until = max(meta.released_until, ready[-1].ts)
            meta.last_ts = max(meta.last_ts, ready[-1].ts)
            buffer.clear()
            for e in later:
                buffer.add(e)
        if later:
            # One timer for everything still pending: a timer per event would
            # cost a firing per event (they fire in sequence when the watermark
            # jumps); the price is up to one more allowed lateness of latency.
            due = min(max(e.ts for e in later) + self._lateness, _MAX_TIMER_S)
            meta.timer_at = due
            release_timer.set(Timestamp(micros=_micros(due)))
        else:
            meta.timer_at = _INF
        if meta.last_ts > -_INF:
            self._arm_expiry(meta, expire_timer)
        meta_state.write(meta.encode())
        # Stamped with the firing time; the alert stage restores per-key order
        # from Scored.seq (a timer set in the past fires behind the watermark).
        for s in out:
            yield TimestampedValue(s, fire_ts)
        if rows:
            for r in rows:
                yield pvalue.TaggedOutput(SCORES_TAG, TimestampedValue(r, fire_ts))

    @on_timer(EXPIRE)
    def on_expire(
        self,
        key=beam.DoFn.KeyParam,
        fire_ts=beam.DoFn.TimestampParam,
        meta_state=beam.DoFn.StateParam(META),
        logic_state=beam.DoFn.StateParam(LOGIC),
        buffer=beam.DoFn.StateParam(BUFFER),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        raw_meta = meta_state.read()
        if raw_meta is None:
            return
        meta = Meta.decode(raw_meta)
        fire_s = fire_ts.micros / 1e6
        if meta.timer_at < _INF:
            target = meta.timer_at + self._ttl  # events still buffered
        elif meta.last_ts + self._ttl > fire_s + 1e-6:
            target = meta.last_ts + self._ttl  # seen again since the timer was set
        else:
            target = None
        if target is not None:
            meta.expire_at = min(target, _MAX_TIMER_S)
            expire_timer.set(Timestamp(micros=_micros(meta.expire_at)))
            meta_state.write(meta.encode())
            return
        meta_state.clear()
        logic_state.clear()
        buffer.clear()
        self._expired.inc()
        if meta.next_seq:
            # the alert stage forgets the key at the same point of its sequence
            yield pvalue.TaggedOutput(
                EXPIRED_TAG,
                TimestampedValue(key_expired_marker(key, fire_s, meta.next_seq), fire_ts),
            )


def _key_event(e: Event) -> tuple[str, Event]:
    return (e.key, e)


class DetectPerKey(beam.PTransform):
    """PCollection[Event] -> {"escalated": PCollection[Scored], "late": PCollection[LateEvent],
    "expired": key-expired markers (Scored, see :func:`streamsift.records.key_expired_marker`)}
    and, with ``emit_scores=True``, "scores": a :data:`ScoreRow` per processed event.

    ``detector`` configures the per-key seasonal detector (default ``DetectorConfig()``).
    """

    def __init__(
        self,
        field_names: tuple[str, ...],
        features: FeatureConfig,
        prefilter: PrefilterConfig,
        event_time: EventTimeConfig,
        detector: DetectorConfig | None = None,
        *,
        emit_scores: bool = False,
    ) -> None:
        super().__init__()
        self._emit_scores = bool(emit_scores)
        self._fn = DetectPerKeyFn(
            field_names, features, prefilter, event_time, detector, emit_scores=emit_scores
        )

    def expand(self, events):
        keyed = events | "KeyByKey" >> beam.Map(_key_event).with_output_types(tuple[str, Event])
        tags = (LATE_TAG, EXPIRED_TAG, SCORES_TAG) if self._emit_scores else (LATE_TAG, EXPIRED_TAG)
        res = keyed | "Stateful" >> beam.ParDo(self._fn).with_output_types(Scored).with_outputs(
            *tags, main="escalated"
        )
        out = {
            "escalated": res["escalated"],
            "late": res[LATE_TAG],
            "expired": res[EXPIRED_TAG],
        }
        if self._emit_scores:
            out["scores"] = res[SCORES_TAG]
        return out
