"""Typed records passed between pipeline stages.

All are NamedTuples of plain values so Beam encodes them cheaply and
deterministically (no cloudpickled objects).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Event",
    "DeadLetter",
    "LateEvent",
    "Scored",
    "Reason",
    "key_expired_marker",
    "is_key_expired_marker",
]


class Event(NamedTuple):
    """One validated input event."""

    key: str
    #: event time, seconds since the epoch (UTC)
    ts: float
    #: feature values in the configured ``input.feature_fields`` order
    values: tuple[float, ...]
    #: ground truth for self-evaluation only ("" = normal); detectors never read it
    label: str = ""
    #: wall-clock seconds when the event entered the pipeline (for latency)
    ingest: float = 0.0


class DeadLetter(NamedTuple):
    """An input that could not be turned into an :class:`Event`."""

    #: the original payload, decoded as UTF-8 with replacement for display
    payload: str
    #: machine-readable kind: malformed_json, not_an_object, missing_key, missing_time,
    #: bad_time, bad_key, bad_feature, missing_feature, oversize, bad_encoding
    error_kind: str
    message: str


class LateEvent(NamedTuple):
    """An event that arrived later than the allowed lateness."""

    event: Event
    #: event time up to which its key had already been processed
    processed_until: float
    reason: str


class Reason(NamedTuple):
    """One line of an alert's explanation."""

    feature: str
    value: float
    baseline: float
    #: signed deviation in robust standard units (z-like)
    deviation: float


class Scored(NamedTuple):
    """An event after stage 1 (and, if escalated, stage 2)."""

    event: Event
    #: model input, in the order of the artifact's feature names
    features: tuple[float, ...]
    #: stage-1 suspicion score (>= 0, higher = more anomalous)
    stage1: float
    #: explanation candidates, most deviating first
    reasons: tuple[Reason, ...]
    escalated: bool
    #: stage-2 score calibrated to [0, 1]; -1.0 when not scored by stage 2
    stage2: float = -1.0
    model_version: str = ""
    #: position among its key's escalated events (0 = first since the key's
    #: state was created); lets the alert stage restore per-key event-time
    #: order whatever the runner did to the order in between
    seq: int = 0


def key_expired_marker(key: str, ts: float, seq: int) -> Scored:
    """The per-key stage's notice that ``key``'s state expired after ``seq``
    escalated events: the alert stage clears the key's state when it reaches
    this point of the key's sequence (so both stages forget a key together).

    >>> m = key_expired_marker("k", 10.0, 3)
    >>> is_key_expired_marker(m), m.seq
    (True, 3)
    """
    return Scored(Event(key, ts, ()), (), 0.0, (), False, -1.0, "", seq)


def is_key_expired_marker(s: Scored) -> bool:
    """True for :func:`key_expired_marker` records (never escalated, never scored)."""
    return not s.escalated
