"""Alerts: per-key thresholds, deduplication, explanations and a global rate limit.

Pure Python, no Beam. Per key, :class:`AlertLogic` keeps an :class:`AlertState`
(the key's threshold sketch and its open alert) and turns each stage-2-scored
event into at most one alert dict. :class:`RateLimiter` caps new alerts per
minute of event time across all keys. Only event time is used for the logic;
the detection time is passed in by the caller (its wall clock) and only
reported.

>>> from streamsift.config import AlertConfig, ThresholdConfig
>>> from streamsift.records import Event, Reason, Scored
>>> logic = AlertLogic(ThresholdConfig(min_score=0.9), AlertConfig(), ["cpu"])
>>> st = logic.new_state()
>>> ev = Event("web-1", 1_700_000_000.0, (97.0,))
>>> sc = Scored(ev, (97.0,), 8.0, (Reason("cpu", 97.0, 41.0, 8.3),), True, 0.98, "m1")
>>> alert = logic.step(st, sc, detection_time=1_700_000_002.5)
>>> print(format_alert_line(alert))
2023-11-14T22:13:20.000Z WARNING  web-1 score=0.9800 thr=0.9000 count=1 | cpu 97 vs baseline 41 (+8.3σ)
>>> logic.step(st, sc._replace(event=ev._replace(ts=ev.ts + 60)), 1_700_000_063.0) is None
True
>>> st.count
2
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from streamsift.config import AlertConfig, ThresholdConfig
from streamsift.models.seasonal import DETECTOR_REASON
from streamsift.models.thresholds import (
    SEVERITIES,
    AdaptiveThreshold,
    SketchState,
    severity_rank,
)
from streamsift.records import Reason, Scored

__all__ = [
    "AlertLogic",
    "AlertState",
    "RateLimitState",
    "RateLimiter",
    "alert_id_for",
    "detector_verdict",
    "format_alert_line",
    "iso_ms",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # noqa: UP017 - py310 target


def _epoch_ms(ts: float) -> int:
    return math.floor(ts * 1000.0 + 0.5)


def iso_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds of an epoch-milliseconds time.

    >>> iso_ms(1_700_000_000_123), iso_ms(-1)
    ('2023-11-14T22:13:20.123Z', '1969-12-31T23:59:59.999Z')
    """
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def alert_id_for(key: str, first_event_time: float) -> str:
    """Deterministic alert id: the same key and first event time give the same id
    (so a replay of the same stream produces the same ids and can be deduplicated).

    >>> alert_id_for("web-1", 1_700_000_000.0)
    'f57efb05f6e1a71206ea'
    >>> alert_id_for("web-1", 1_700_000_000.0) == hashlib.sha1(b"web-1|1700000000.000000").hexdigest()[:20]
    True
    """
    return hashlib.sha1(f"{key}|{first_event_time:.6f}".encode()).hexdigest()[:20]


def _num(x: float, digits: int = 6) -> float | None:
    """Rounded float for JSON; None for NaN/inf (not valid JSON)."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _summary(reasons: Sequence[Reason]) -> str:
    if not reasons:
        return "no per-feature deviation recorded"
    return "; ".join(
        f"{r.feature} {_fmt(r.value)} vs baseline {_fmt(r.baseline)} ({r.deviation:+.1f}σ)"
        for r in reasons
    )


def detector_verdict(scored: Scored) -> bool:
    """True if the per-key seasonal detector escalated ``scored`` as an anomaly:
    its first reason is the detector's line (``DETECTOR_REASON``) with a score at
    or above the detector's alert level (see :meth:`KeyLogic.step`).

    >>> from streamsift.records import Event
    >>> ev = Event("k", 0.0, (9.0,))
    >>> detector_verdict(Scored(ev, (), 0.0, (Reason("anomaly_score", 0.8, 0.5, 9.0),), True))
    True
    >>> detector_verdict(Scored(ev, (), 5.0, (Reason("x", 9.0, 1.0, 8.0),), True))
    False
    """
    r = scored.reasons
    return bool(r) and r[0].feature == DETECTOR_REASON and r[0].value >= r[0].baseline


# --------------------------------------------------------------------------- state

_STATE_HEAD = struct.Struct("<BI")
_STATE_ALERT = struct.Struct("<ddQBd")
_STATE_VERSION = 1


@dataclass
class AlertState:
    """Per-key state: the threshold sketch and the open alert (``alert_id`` "" = none).

    ``severity`` is the highest severity emitted for the open alert,
    ``max_score`` its highest calibrated score, ``count`` the exceedances it
    absorbed (including the first).

    >>> s = AlertState(alert_id="ab", first_event_time=1.5, last_event_time=2.5, count=2,
    ...                severity="warning", max_score=0.98)
    >>> AlertState.decode(s.encode()) == s
    True
    """

    sketch: SketchState = field(default_factory=SketchState)
    alert_id: str = ""
    first_event_time: float = 0.0
    last_event_time: float = 0.0
    count: int = 0
    severity: str = ""
    max_score: float = 0.0

    def encode(self) -> bytes:
        """Explicit binary encoding (struct; no pickle).

        >>> len(AlertState().encode())
        58
        """
        sk = self.sketch.encode()
        aid = self.alert_id.encode("ascii")
        return (
            _STATE_HEAD.pack(_STATE_VERSION, len(sk))
            + sk
            + bytes([len(aid)])
            + aid
            + _STATE_ALERT.pack(
                self.first_event_time,
                self.last_event_time,
                self.count,
                severity_rank(self.severity),
                self.max_score,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> AlertState:
        """Inverse of :meth:`encode`.

        >>> AlertState.decode(b"\\x09\\x00\\x00\\x00\\x00")
        Traceback (most recent call last):
        ...
        ValueError: AlertState version must be 1; got 9
        """
        data = bytes(data)
        try:
            version, n_sk = _STATE_HEAD.unpack_from(data)
            if version != _STATE_VERSION:
                raise ValueError(f"AlertState version must be {_STATE_VERSION}; got {version}")
            pos = _STATE_HEAD.size
            sketch = SketchState.decode(data[pos : pos + n_sk])
            pos += n_sk
            n_id = data[pos]
            aid = data[pos + 1 : pos + 1 + n_id].decode("ascii")
            pos += 1 + n_id
            first, last, count, sev, max_score = _STATE_ALERT.unpack_from(data, pos)
            pos += _STATE_ALERT.size
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"data must be an encoded AlertState; got {len(data)} bytes ({exc})"
            ) from exc
        if pos != len(data):
            raise ValueError(f"data must be {pos} bytes for this AlertState; got {len(data)} bytes")
        if sev >= len(SEVERITIES):
            raise ValueError(f"AlertState severity code must be < {len(SEVERITIES)}; got {sev}")
        return cls(sketch, aid, first, last, count, SEVERITIES[sev], max_score)


# --------------------------------------------------------------------------- logic


class AlertLogic:
    """Per-key thresholding and deduplication of stage-2-scored events.

    For each event (``scored.stage2`` = calibrated score in [0, 1]):

    1. the key's threshold is computed from its earlier scores
       (:class:`~streamsift.models.thresholds.AdaptiveThreshold`); an event the
       seasonal detector escalated (:func:`detector_verdict`) counts as at least
       the threshold (its alert score is ``max(stage2, threshold)``): the
       detector's likelihood score is already calibrated per key;
    2. below the threshold: the score is learnt, nothing is emitted;
    3. at or above it, with an open alert whose last event is at most
       ``alerts.cooldown_s`` of event time earlier: the event is absorbed
       (``count`` + 1, ``last_event_time``, ``max_score``) and *not* learnt (a
       persisting anomaly does not raise its own threshold); the alert is
       re-emitted, same ``alert_id`` and ``update=True``, only if its severity
       rises;
    4. otherwise a new alert opens (id from key + first event time), its score
       is learnt (so keys whose normal escalated scores are high can adapt) and
       it is emitted.

    Events of one key are expected in event-time order; an event older than the
    open alert's last event counts as within the cooldown.

    >>> from streamsift.config import AlertConfig, ThresholdConfig
    >>> from streamsift.records import Event, Scored
    >>> logic = AlertLogic(ThresholdConfig(), AlertConfig(cooldown_s=300), ["cpu"])
    >>> st = logic.new_state()
    >>> def ev(t, s):
    ...     return Scored(Event("k", t, (1.0,)), (1.0,), 5.0, (), True, s, "m1")
    >>> [(a["severity"], a["count"], a["update"]) if a else None
    ...  for a in (logic.step(st, ev(t, s), 0.0) for t, s in
    ...            [(0, 0.95), (60, 0.95), (120, 0.999), (180, 0.5), (1000, 0.95)])]
    [('info', 1, False), None, ('critical', 3, True), None, ('info', 1, False)]
    """

    __slots__ = ("thresholds", "alerts", "feature_names", "_at", "_cooldown", "_top")

    def __init__(
        self,
        thresholds: ThresholdConfig,
        alerts: AlertConfig,
        feature_names: Sequence[str],
        half_life: float | None = 250.0,
    ) -> None:
        if not isinstance(alerts, AlertConfig):
            raise ValueError(f"alerts must be an AlertConfig; got {type(alerts).__name__}")
        if isinstance(feature_names, (str, bytes)) or not all(
            isinstance(f, str) and f for f in feature_names
        ):
            raise ValueError(
                f"feature_names must be a sequence of non-empty strings; got {feature_names!r}"
            )
        self._at = AdaptiveThreshold(thresholds, half_life=half_life)
        self.thresholds = thresholds
        self.alerts = alerts
        #: the model's feature names (kept for callers; explanations come from the reasons)
        self.feature_names = tuple(feature_names)
        self._cooldown = alerts.cooldown_s
        self._top = alerts.top_reasons

    def new_state(self) -> AlertState:
        """A fresh per-key state.

        >>> from streamsift.config import AlertConfig, ThresholdConfig
        >>> AlertLogic(ThresholdConfig(), AlertConfig(), ["x"]).new_state().alert_id
        ''
        """
        return AlertState(sketch=self._at.new_state())

    def threshold(self, state: AlertState) -> float:
        """The key's current threshold.

        >>> from streamsift.config import AlertConfig, ThresholdConfig
        >>> logic = AlertLogic(ThresholdConfig(min_score=0.8), AlertConfig(), ["x"])
        >>> logic.threshold(logic.new_state())
        0.8
        """
        return self._at.threshold(state.sketch)

    def exceeds(self, state: AlertState, scored: Scored) -> bool:
        """True if ``scored`` reaches the key's threshold (flagged): its stage-2
        score does, or the detector escalated it. Read-only.

        >>> from streamsift.config import AlertConfig, ThresholdConfig
        >>> from streamsift.records import Event
        >>> logic = AlertLogic(ThresholdConfig(), AlertConfig(), ["x"])
        >>> ev = Event("k", 0.0, (9.0,))
        >>> logic.exceeds(logic.new_state(), Scored(ev, (), 0.0, (), True, 0.5))
        False
        >>> det = (Reason("anomaly_score", 0.8, 0.5, 9.0),)
        >>> logic.exceeds(logic.new_state(), Scored(ev, (), 0.0, det, True, 0.5))
        True
        """
        return detector_verdict(scored) or scored.stage2 >= self._at.threshold(state.sketch)

    def step(self, state: AlertState, scored: Scored, detection_time: float) -> dict | None:
        """Process one stage-2-scored event; return the alert to emit, or None.

        ``detection_time`` (wall-clock seconds, injected) is only reported.

        >>> from streamsift.config import AlertConfig, ThresholdConfig
        >>> from streamsift.records import Event, Scored
        >>> logic = AlertLogic(ThresholdConfig(), AlertConfig(), ["x"])
        >>> logic.step(logic.new_state(), Scored(Event("k", 0.0, (1.0,)), (1.0,), 1.0, (), False), 0.0)
        Traceback (most recent call last):
        ...
        ValueError: scored.stage2 must be in [0, 1]; got -1.0
        """
        score = scored.stage2
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"scored.stage2 must be in [0, 1]; got {score}")
        sketch = state.sketch
        at = self._at
        thr = at.threshold(sketch)
        learnt = score
        if score < thr and detector_verdict(scored):
            score = thr
        if score < thr:
            at.learn_one(sketch, score)
            return None
        sev = at.severity(score, thr)
        ts = scored.event.ts
        if state.alert_id and ts - state.last_event_time <= self._cooldown:
            state.count += 1
            if ts > state.last_event_time:
                state.last_event_time = ts
            if score > state.max_score:
                state.max_score = score
            if severity_rank(sev) <= severity_rank(state.severity):
                return None
            state.severity = sev
            return self._alert(state, scored, thr, detection_time, update=True)
        at.learn_one(sketch, learnt)
        state.alert_id = alert_id_for(scored.event.key, ts)
        state.first_event_time = ts
        state.last_event_time = ts
        state.count = 1
        state.severity = sev
        state.max_score = score
        return self._alert(state, scored, thr, detection_time, update=False)

    def _alert(
        self, state: AlertState, scored: Scored, thr: float, detection_time: float, update: bool
    ) -> dict[str, Any]:
        reasons = scored.reasons[: self._top]
        first_ms = _epoch_ms(state.first_event_time)
        last_ms = _epoch_ms(state.last_event_time)
        det_ms = _epoch_ms(detection_time)
        return {
            "alert_id": state.alert_id,
            "key": scored.event.key,
            "severity": state.severity,
            "update": update,
            "count": state.count,
            "first_event_time": iso_ms(first_ms),
            "first_event_time_ms": first_ms,
            "last_event_time": iso_ms(last_ms),
            "last_event_time_ms": last_ms,
            "detection_time": iso_ms(det_ms),
            "detection_time_ms": det_ms,
            "score": _num(state.max_score),
            "stage1_score": _num(scored.stage1),
            "stage2_score": _num(scored.stage2),
            "threshold": _num(thr),
            "model_version": scored.model_version,
            "explanation": [
                {
                    "feature": r.feature,
                    "value": _num(r.value),
                    "baseline": _num(r.baseline),
                    "deviation": _num(r.deviation, 3),
                }
                for r in reasons
            ],
            "summary": _summary(reasons),
        }

    def __repr__(self) -> str:
        return f"AlertLogic({self.thresholds!r}, {self.alerts!r}, {list(self.feature_names)!r})"


def format_alert_line(alert: dict) -> str:
    """One console line: event time, severity, key, score, threshold, count, reasons.

    The time is the alert's last event time (its first for a new alert).

    >>> print(format_alert_line({"last_event_time": "2024-01-01T00:00:00.000Z", "key": "db-2",
    ...     "severity": "critical", "score": 0.9991, "threshold": 0.93, "count": 4, "update": True,
    ...     "summary": "errors 12 vs baseline 0.5 (+9.9σ)"}))
    2024-01-01T00:00:00.000Z CRITICAL db-2 score=0.9991 thr=0.9300 count=4 (update) | errors 12 vs baseline 0.5 (+9.9σ)
    """
    upd = " (update)" if alert.get("update") else ""
    return (
        f"{alert['last_event_time']} {alert['severity'].upper():<8} {alert['key']} "
        f"score={alert['score']:.4f} thr={alert['threshold']:.4f} count={alert['count']}{upd} "
        f"| {alert['summary']}"
    )


# --------------------------------------------------------------------------- rate limit

_RL = struct.Struct("<B?qQQ")
_RL_VERSION = 1


@dataclass
class RateLimitState:
    """Global limiter state: current event-time minute, new alerts admitted in it,
    and the total of new alerts suppressed.

    >>> s = RateLimitState(window=28333333, admitted=3, suppressed=7)
    >>> RateLimitState.decode(s.encode()) == s
    True
    """

    window: int | None = None
    admitted: int = 0
    suppressed: int = 0

    def encode(self) -> bytes:
        """Explicit binary encoding.

        >>> len(RateLimitState().encode())
        26
        """
        has = self.window is not None
        return _RL.pack(_RL_VERSION, has, self.window if has else 0, self.admitted, self.suppressed)

    @classmethod
    def decode(cls, data: bytes) -> RateLimitState:
        """Inverse of :meth:`encode`.

        >>> RateLimitState.decode(b"")
        Traceback (most recent call last):
        ...
        ValueError: data must be an encoded RateLimitState of 26 bytes; got 0 bytes
        """
        if len(data) != _RL.size:
            raise ValueError(
                f"data must be an encoded RateLimitState of {_RL.size} bytes; got {len(data)} bytes"
            )
        version, has, window, admitted, suppressed = _RL.unpack(data)
        if version != _RL_VERSION:
            raise ValueError(f"RateLimitState version must be {_RL_VERSION}; got {version}")
        return cls(window if has else None, admitted, suppressed)


class RateLimiter:
    """Global cap of ``alerts.rate_limit_per_min`` NEW alerts per event-time minute.

    Fixed windows of one minute of event time (the alert's
    ``last_event_time_ms``, which is its first event time for a new alert). The
    window moves forward with the latest event time seen; a new alert from an
    earlier minute (out of order across keys) counts against the current window.
    Updates (``alert["update"]``) always pass, also when the new alert they
    upgrade was suppressed (then the update is the first time that id is seen).
    ``rate_limit_per_min = 0`` admits everything.

    >>> from streamsift.config import AlertConfig
    >>> rl = RateLimiter(AlertConfig(rate_limit_per_min=2)); st = rl.new_state()
    >>> def a(ms, update=False):
    ...     return {"last_event_time_ms": ms, "update": update}
    >>> [rl.admit(st, a(t)) for t in (0, 1000, 2000)], rl.admit(st, a(3000, True)), rl.admit(st, a(60000))
    ([True, True, False], True, True)
    >>> st.suppressed
    1
    """

    __slots__ = ("limit",)

    def __init__(self, alerts: AlertConfig) -> None:
        if not isinstance(alerts, AlertConfig):
            raise ValueError(f"alerts must be an AlertConfig; got {type(alerts).__name__}")
        self.limit = alerts.rate_limit_per_min

    def new_state(self) -> RateLimitState:
        """A fresh limiter state.

        >>> from streamsift.config import AlertConfig
        >>> RateLimiter(AlertConfig()).new_state()
        RateLimitState(window=None, admitted=0, suppressed=0)
        """
        return RateLimitState()

    def admit(self, state: RateLimitState, alert: dict) -> bool:
        """True if ``alert`` may be emitted; counts suppressed new alerts.

        >>> from streamsift.config import AlertConfig
        >>> rl = RateLimiter(AlertConfig(rate_limit_per_min=0))
        >>> rl.admit(rl.new_state(), {"last_event_time_ms": 0, "update": False})
        True
        """
        if alert.get("update") or self.limit == 0:
            return True
        minute = alert["last_event_time_ms"] // 60000
        if state.window is None or minute > state.window:
            state.window = minute
            state.admitted = 0
        if state.admitted < self.limit:
            state.admitted += 1
            return True
        state.suppressed += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "rate limit: suppressed alert %s (%d so far)",
                alert.get("alert_id"),
                state.suppressed,
            )
        return False

    def __repr__(self) -> str:
        return f"RateLimiter(rate_limit_per_min={self.limit})"
