"""Per-key adaptive thresholds, severity and deduplicated alerts; a global rate limit.

Input: stage-2 scored events. In ``event_time`` ordering each key's events are
handled in the order the per-key stage numbered them (``Scored.seq``, which is
event-time order), so alerts are the same whatever the arrival order or the
runner's bundling. Outputs alert JSON strings (main) and one ``flagged`` record
per event whose score crossed its key's threshold (for self-evaluation).
"""

from __future__ import annotations

import json
import math
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
from apache_beam.utils.timestamp import Timestamp

from streamsift.config import AlertConfig, ThresholdConfig
from streamsift.models.alerting import AlertLogic, AlertState, RateLimiter, RateLimitState
from streamsift.records import Scored
from streamsift.transforms.coders import ScoredCoder

__all__ = ["AlertPerKey", "RateLimitAlerts", "FLAGGED_TAG"]

NAMESPACE = "streamsift"
FLAGGED_TAG = "flagged"


def _scored_order(s: Scored) -> tuple:
    return (s.event.ts, s.event.values, s.event.label)


_CHAIN = struct.Struct("<qqdd")


class _Chain:
    """Per-key order bookkeeping: next expected ``Scored.seq``, buffered count,
    expiry deadline and newest event time handled."""

    __slots__ = ("next_seq", "buffered", "expire_at", "last_ts")

    def __init__(self, next_seq=0, buffered=0, expire_at=-math.inf, last_ts=-math.inf):
        self.next_seq = next_seq
        self.buffered = buffered
        self.expire_at = expire_at
        self.last_ts = last_ts

    def encode(self) -> bytes:
        return _CHAIN.pack(self.next_seq, self.buffered, self.expire_at, self.last_ts)

    @classmethod
    def decode(cls, raw: bytes | None) -> _Chain:
        return cls(*_CHAIN.unpack(raw)) if raw is not None else cls()


class AlertPerKeyFn(beam.DoFn):
    """(key, Scored) -> alert JSON | flagged tuples.

    Ordered mode restores each key's event-time order from ``Scored.seq`` (the
    per-key stage numbers escalated events in event-time order): an element
    whose predecessor has not arrived yet waits in a buffer. A gap that is
    still open when the watermark passes the waiting element's timestamp plus
    ``gap_grace_s`` (a lost element) is flushed in event-time order and counted
    as ``alert_order_gaps``; nothing waits forever, nothing is dropped.
    """

    STATE = ReadModifyWriteStateSpec("alert", coders.BytesCoder())
    CHAIN = ReadModifyWriteStateSpec("chain", coders.BytesCoder())
    BUFFER = BagStateSpec("buffer", ScoredCoder())
    GAP = TimerSpec("gap", TimeDomain.WATERMARK)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(
        self,
        thresholds: ThresholdConfig,
        alerts: AlertConfig,
        feature_names: Sequence[str],
        ordered: bool,
        idle_ttl_s: float = 7200.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._thresholds = thresholds
        self._alerts = alerts
        self._names = tuple(feature_names)
        self._ordered = ordered
        self._ttl = float(idle_ttl_s)
        self._grace = max(float(idle_ttl_s), 3600.0)
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

    def _handle(self, state: AlertState, items: Sequence[Scored], chain: _Chain):
        now = self._clock()
        for s in items:
            self._scored.inc()
            flagged = s.stage2 >= self._logic.threshold(state)
            alert = self._logic.step(state, s, now)
            if s.event.ts > chain.last_ts:
                chain.last_ts = s.event.ts
            if flagged:
                self._flagged.inc()
                yield pvalue.TaggedOutput(
                    FLAGGED_TAG,
                    (s.event.key, s.event.ts, s.stage2, s.event.label),
                )
            if alert is not None:
                if alert["update"]:
                    self._upd.inc()
                else:
                    self._new.inc()
                    self._sev[alert["severity"]].inc()
                yield TimestampedValue(json.dumps(alert, separators=(",", ":")), s.event.ts)

    def _load(self, state_spec) -> AlertState:
        raw = state_spec.read()
        return AlertState.decode(raw) if raw is not None else self._logic.new_state()

    def _arm_expiry(self, chain: _Chain, expire_timer) -> None:
        if chain.last_ts > -math.inf and chain.expire_at < chain.last_ts + self._ttl / 2.0:
            chain.expire_at = chain.last_ts + self._ttl
            expire_timer.set(Timestamp(micros=int(round(chain.expire_at * 1e6))))

    def process(
        self,
        element: tuple[str, Scored],
        ts=beam.DoFn.TimestampParam,
        state_spec=beam.DoFn.StateParam(STATE),
        chain_spec=beam.DoFn.StateParam(CHAIN),
        buffer=beam.DoFn.StateParam(BUFFER),
        gap_timer=beam.DoFn.TimerParam(GAP),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        scored = element[1]
        chain = _Chain.decode(chain_spec.read())
        if self._ordered and scored.seq != 0 and scored.seq != chain.next_seq:
            buffer.add(scored)
            chain.buffered += 1
            chain_spec.write(chain.encode())
            gap_timer.set(Timestamp(micros=ts.micros + int(self._grace * 1e6)))
            return
        ready = [scored]
        expected = scored.seq + 1
        if chain.buffered:
            waiting = sorted(buffer.read(), key=lambda x: (x.seq, _scored_order(x)))
            rest = []
            for x in waiting:
                if x.seq == expected:
                    ready.append(x)
                    expected += 1
                else:
                    rest.append(x)
            buffer.clear()
            for x in rest:
                buffer.add(x)
            chain.buffered = len(rest)
        chain.next_seq = expected
        state = self._load(state_spec)
        yield from self._handle(state, ready, chain)
        state_spec.write(state.encode())
        self._arm_expiry(chain, expire_timer)
        chain_spec.write(chain.encode())

    @on_timer(GAP)
    def on_gap(
        self,
        state_spec=beam.DoFn.StateParam(STATE),
        chain_spec=beam.DoFn.StateParam(CHAIN),
        buffer=beam.DoFn.StateParam(BUFFER),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        chain = _Chain.decode(chain_spec.read())
        if not chain.buffered:
            return
        items = sorted(buffer.read(), key=_scored_order)
        buffer.clear()
        self._gaps.inc()
        chain.buffered = 0
        chain.next_seq = max(x.seq for x in items) + 1
        state = self._load(state_spec)
        yield from self._handle(state, items, chain)
        state_spec.write(state.encode())
        self._arm_expiry(chain, expire_timer)
        chain_spec.write(chain.encode())

    @on_timer(EXPIRE)
    def on_expire(
        self,
        fire_ts=beam.DoFn.TimestampParam,
        state_spec=beam.DoFn.StateParam(STATE),
        chain_spec=beam.DoFn.StateParam(CHAIN),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        chain = _Chain.decode(chain_spec.read())
        if chain.buffered or chain.last_ts + self._ttl > fire_ts.micros / 1e6 + 1e-6:
            chain.expire_at = -math.inf
            self._arm_expiry(chain, expire_timer)
            chain_spec.write(chain.encode())
            return
        state_spec.clear()
        chain_spec.clear()
        self._expired.inc()


class AlertPerKey(beam.PTransform):
    """PCollection[Scored] (stage 2 done) -> {"alerts": JSON str, "flagged": tuples}."""

    def __init__(
        self,
        thresholds: ThresholdConfig,
        alerts: AlertConfig,
        feature_names: Sequence[str],
        ordered: bool = True,
        idle_ttl_s: float = 7200.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._fn = AlertPerKeyFn(thresholds, alerts, feature_names, ordered, idle_ttl_s, clock)

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
