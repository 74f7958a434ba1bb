"""Per-key adaptive thresholds, severity and deduplicated alerts; a global rate limit.

Input: stage-2 scored events. In ``event_time`` ordering each key's events are
handled in the order the per-key stage numbered them (``Scored.seq``, which is
event-time order), so alerts are the same whatever the arrival order or the
runner's bundling. Outputs alert JSON strings (main) and one ``flagged`` record
per event whose score crossed its key's threshold (for self-evaluation).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Sequence

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
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from streamsift.config import AlertConfig, ThresholdConfig
from streamsift.models.alerting import AlertLogic, AlertState, RateLimiter, RateLimitState
from streamsift.records import Scored, is_key_expired_marker
from streamsift.transforms.coders import ScoredCoder

__all__ = ["AlertPerKey", "RateLimitAlerts", "FLAGGED_TAG"]

NAMESPACE = "streamsift"
FLAGGED_TAG = "flagged"


def _scored_order(s: Scored) -> tuple:
    return (s.event.ts, s.event.values, s.event.label)


_CHAIN = struct.Struct("<qq")
#: records a key may hold back while waiting for a missing predecessor
_MAX_WAITING = 256
_END_OF_TIME = Timestamp(micros=MAX_TIMESTAMP.micros - 1_000_000)


class _Chain:
    """Per-key order bookkeeping: next expected ``Scored.seq`` and how many
    records wait in the buffer."""

    __slots__ = ("next_seq", "buffered")

    def __init__(self, next_seq: int = 0, buffered: int = 0) -> None:
        self.next_seq = next_seq
        self.buffered = buffered

    def encode(self) -> bytes:
        return _CHAIN.pack(self.next_seq, self.buffered)

    @classmethod
    def decode(cls, raw: bytes | None) -> _Chain:
        return cls(*_CHAIN.unpack(raw)) if raw is not None else cls()


def take_in_sequence(pool: list[Scored], next_seq: int) -> tuple[list[Scored], list[Scored], int]:
    """Split ``pool`` into the records that continue the sequence from
    ``next_seq`` (in order) and the rest; a key-expired marker restarts the
    sequence at 0 (a new generation of the key).

    >>> from streamsift.records import Event, key_expired_marker
    >>> def s(n, ts):
    ...     return Scored(Event("k", ts, (1.0,)), (1.0,), 4.0, (), True, 0.5, "v", n)
    >>> ready, rest, nxt = take_in_sequence([s(2, 2.0), s(0, 0.0), s(3, 3.0)], 0)
    >>> [r.seq for r in ready], [r.seq for r in rest], nxt
    ([0], [2, 3], 1)
    >>> pool = [s(1, 11.0), s(0, 0.0), key_expired_marker("k", 9.0, 1), s(0, 10.0)]
    >>> ready, rest, nxt = take_in_sequence(pool, 0)
    >>> [(r.seq, r.event.ts) for r in ready], rest, nxt
    ([(0, 0.0), (1, 9.0), (0, 10.0), (1, 11.0)], [], 2)
    """
    ready: list[Scored] = []
    # equal seq numbers of two generations of a key: the older one first
    pool = sorted(pool, key=lambda x: (x.seq, _scored_order(x), x.escalated))
    expected = next_seq
    progress = True
    while progress and pool:
        progress = False
        for i, x in enumerate(pool):
            if x.seq == expected:
                ready.append(pool.pop(i))
                expected = 0 if is_key_expired_marker(x) else expected + 1
                progress = True
                break
    return ready, pool, expected


class AlertPerKeyFn(beam.DoFn):
    """(key, Scored) -> alert JSON | flagged tuples.

    Ordered mode restores each key's event-time order from ``Scored.seq`` (the
    per-key stage numbers escalated events in event-time order): a record whose
    predecessor has not arrived yet waits in a buffer. A key's state is cleared
    when its key-expired marker (sent by the per-key stage when that stage
    forgets the key) comes up in the sequence, so both stages forget a key
    together. Records stamped by a timer that fired behind the watermark can
    arrive in any order and any time later, so the wait is not bounded by the
    watermark: if more than 256 records wait (a lost predecessor) or the stream
    ends, they are handled in event-time order and counted as
    ``alert_order_gaps``; nothing waits forever, nothing is dropped.
    """

    STATE = ReadModifyWriteStateSpec("alert", coders.BytesCoder())
    CHAIN = ReadModifyWriteStateSpec("chain", coders.BytesCoder())
    BUFFER = BagStateSpec("buffer", ScoredCoder())
    GAP = TimerSpec("gap", TimeDomain.WATERMARK)

    def __init__(
        self,
        thresholds: ThresholdConfig,
        alerts: AlertConfig,
        feature_names: Sequence[str],
        ordered: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._thresholds = thresholds
        self._alerts = alerts
        self._names = tuple(feature_names)
        self._ordered = ordered
        self._clock = clock

    def setup(self) -> None:
        self._logic = AlertLogic(self._thresholds, self._alerts, self._names)
        self._new = Metrics.counter(NAMESPACE, "alerts_opened")
        self._upd = Metrics.counter(NAMESPACE, "alerts_upgraded")
        self._flagged = Metrics.counter(NAMESPACE, "flagged")
        self._scored = Metrics.counter(NAMESPACE, "stage2_scored")
        self._gaps = Metrics.counter(NAMESPACE, "alert_order_gaps")
        self._expired = Metrics.counter(NAMESPACE, "alert_keys_expired")
        self._sev = {
            s: Metrics.counter(NAMESPACE, f"alerts_{s}") for s in ("info", "warning", "critical")
        }

    def _handle(self, state_spec, items: Sequence[Scored]):
        """Run the alert logic over ``items`` in order; returns the outputs and
        whether the key ended (its state was cleared by an expiry marker)."""
        now = self._clock()
        raw = state_spec.read()
        state = AlertState.decode(raw) if raw is not None else self._logic.new_state()
        out = []
        ended = False
        for s in items:
            if is_key_expired_marker(s):
                state = self._logic.new_state()
                self._expired.inc()
                ended = True
                continue
            ended = False
            self._scored.inc()
            flagged = self._logic.exceeds(state, s)
            alert = self._logic.step(state, s, now)
            if flagged:
                self._flagged.inc()
                out.append(
                    pvalue.TaggedOutput(
                        FLAGGED_TAG, (s.event.key, s.event.ts, s.stage2, s.event.label)
                    )
                )
            if alert is not None:
                if alert["update"]:
                    self._upd.inc()
                else:
                    self._new.inc()
                    self._sev[alert["severity"]].inc()
                out.append(TimestampedValue(json.dumps(alert, separators=(",", ":")), s.event.ts))
        if ended:
            state_spec.clear()
        else:
            state_spec.write(state.encode())
        return out, ended

    def _give_up(self, rest: list[Scored], chain: _Chain) -> list[Scored]:
        """Stop waiting for missing predecessors: ``rest`` in event-time order,
        the sequence continuing after its last record; counted as a gap."""
        self._gaps.inc()
        rest = sorted(rest, key=_scored_order)
        last = rest[-1]
        chain.next_seq = 0 if is_key_expired_marker(last) else last.seq + 1
        return rest

    def process(
        self,
        element: tuple[str, Scored],
        state_spec=beam.DoFn.StateParam(STATE),
        chain_spec=beam.DoFn.StateParam(CHAIN),
        buffer=beam.DoFn.StateParam(BUFFER),
        gap_timer=beam.DoFn.TimerParam(GAP),
    ):
        scored = element[1]
        if not self._ordered:
            out, _ = self._handle(state_spec, [scored])
            yield from out
            return
        chain = _Chain.decode(chain_spec.read())
        pool = [scored]
        if chain.buffered:
            pool.extend(buffer.read())
        ready, rest, chain.next_seq = take_in_sequence(pool, chain.next_seq)
        if len(rest) > _MAX_WAITING:
            # a predecessor that never comes (a lost record): stop waiting
            ready.extend(self._give_up(rest, chain))
            rest = []
        elif rest and not chain.buffered:
            # flush whatever still waits when the stream ends
            gap_timer.set(_END_OF_TIME)
        if chain.buffered or rest:
            buffer.clear()
            for x in rest:
                buffer.add(x)
        chain.buffered = len(rest)
        ended = False
        if ready:
            out, ended = self._handle(state_spec, ready)
            yield from out
        if ended and not rest:
            chain_spec.clear()
        else:
            chain_spec.write(chain.encode())

    @on_timer(GAP)
    def on_gap(
        self,
        state_spec=beam.DoFn.StateParam(STATE),
        chain_spec=beam.DoFn.StateParam(CHAIN),
        buffer=beam.DoFn.StateParam(BUFFER),
    ):
        chain = _Chain.decode(chain_spec.read())
        if not chain.buffered:
            return
        ready, rest, chain.next_seq = take_in_sequence(list(buffer.read()), chain.next_seq)
        buffer.clear()
        if rest:
            ready.extend(self._give_up(rest, chain))
        chain.buffered = 0
        out, ended = self._handle(state_spec, ready)
        yield from out
        if ended:
            chain_spec.clear()
        else:
            chain_spec.write(chain.encode())


class AlertPerKey(beam.PTransform):
    """PCollection[Scored] (stage 2 done) -> {"alerts": JSON str, "flagged": tuples}."""

    def __init__(
        self,
        thresholds: ThresholdConfig,
        alerts: AlertConfig,
        feature_names: Sequence[str],
        ordered: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._fn = AlertPerKeyFn(thresholds, alerts, feature_names, ordered, clock)

    def expand(self, scored):
        keyed = (
            scored
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "KeyByKey"
            >> beam.Map(lambda s: (s.event.key, s)).with_output_types(tuple[str, Scored])
        )
        res = keyed | "Stateful" >> beam.ParDo(self._fn).with_outputs(FLAGGED_TAG, main="alerts")
        return {"alerts": res["alerts"], "flagged": res[FLAGGED_TAG]}


class _RateLimitFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("limit", coders.BytesCoder())

    def __init__(self, alerts: AlertConfig) -> None:
        self._alerts = alerts

    def setup(self) -> None:
        self._limiter = RateLimiter(self._alerts)
        self._suppressed = Metrics.counter(NAMESPACE, "alerts_suppressed")
        self._emitted = Metrics.counter(NAMESPACE, "alerts_emitted")

    def process(self, element: tuple[str, str], state_spec=beam.DoFn.StateParam(STATE)):
        alert_json = element[1]
        raw = state_spec.read()
        state = RateLimitState.decode(raw) if raw is not None else self._limiter.new_state()
        admitted = self._limiter.admit(state, json.loads(alert_json))
        state_spec.write(state.encode())
        if admitted:
            self._emitted.inc()
            yield alert_json
        else:
            self._suppressed.inc()


class RateLimitAlerts(beam.PTransform):
    """Global cap on new alerts per minute of event time; counts what it suppressed."""

    def __init__(self, alerts: AlertConfig) -> None:
        super().__init__()
        self._alerts = alerts

    def expand(self, alerts):
        if self._alerts.rate_limit_per_min == 0:
            return alerts
        return (
            alerts
            | "ToOneKey" >> beam.Map(lambda a: ("all", a)).with_output_types(tuple[str, str])
            | "Limit" >> beam.ParDo(_RateLimitFn(self._alerts)).with_output_types(str)
        )
