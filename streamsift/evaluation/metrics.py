"""Self-evaluation: score a run's flagged events and alerts against ground truth.

Two views:

* per event (:func:`event_metrics`): was each labelled event flagged, and was each
  flagged event labelled?
* per incident (:func:`incident_metrics`): did some alert for the key overlap the
  incident (plus a grace period), and how many alerts matched no incident at all?

Event identities are ``(key, ts)`` with ``ts`` in seconds, compared at millisecond
resolution (so ``1.0004`` and ``1.0`` are the same event).

Zero denominators follow scikit-learn's ``zero_division=0``: precision is 0.0
with nothing flagged, recall 0.0 with nothing to find.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsift.synthetic import Incident

__all__ = ["PR", "event_metrics", "incident_metrics", "summarize"]


@dataclass(frozen=True)
class PR:
    """Precision / recall / F1 with the counts behind them.

    For :func:`incident_metrics`: ``tp`` = detected incidents, ``fn`` = missed
    incidents, ``fp`` = alerts overlapping no incident; ``precision`` is the share of
    alerts that overlap an incident (alerts, not incidents, are its unit).
    ``per_kind_recall`` maps each anomaly kind to its recall; ``time_to_detect_s``
    maps each detected incident to seconds of event time from its start to the
    first event of the earliest matching alert (0 if that alert began earlier).

    >>> PR.from_counts(tp=3, fp=1, fn=1)
    PR(precision=0.75, recall=0.75, f1=0.75, tp=3, fp=1, fn=1, per_kind_recall={}, time_to_detect_s={})
    """

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    per_kind_recall: dict[str, float] = field(default_factory=dict)
    time_to_detect_s: dict[Incident, float] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, **extra: Any) -> PR:
        """Event-style PR: precision = tp / (tp + fp), recall = tp / (tp + fn)."""
        return cls(_ratio(tp, tp + fp), _ratio(tp, tp + fn), _f1(tp, fp, fn), tp, fp, fn, **extra)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1_from(p: float, r: float) -> float:
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def _f1(tp: int, fp: int, fn: int) -> float:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _event_id(key: Any, ts: Any, where: str) -> tuple[str, int]:
    try:
        t = float(ts)
    except (TypeError, ValueError):
        raise ValueError(f"{where} time must be a number of seconds; got {ts!r}") from None
    if not math.isfinite(t):
        raise ValueError(f"{where} time must be finite; got {ts!r}")
    return str(key), round(t * 1000.0)


def event_metrics(
    labels: Mapping[tuple[str, float], str], flagged: Iterable[tuple[str, float]]
) -> PR:
    """Per-event precision/recall of ``flagged`` (key, ts) against labelled events.

    ``labels`` maps every anomalous event to its kind; unlisted events are normal.
    An event flagged twice counts once. ``per_kind_recall`` is per label kind.

    >>> labels = {("a", 1.0): "spike", ("a", 2.0): "spike", ("b", 5.0): "drift"}
    >>> m = event_metrics(labels, [("a", 1.0), ("a", 1.0), ("b", 1.0)])
    >>> m.tp, m.fp, m.fn, m.precision, round(m.recall, 4), round(m.f1, 4)
    (1, 1, 2, 0.5, 0.3333, 0.4)
    >>> m.per_kind_recall
    {'drift': 0.0, 'spike': 0.5}
    >>> event_metrics({}, []).precision
    0.0
    """
    truth: dict[tuple[str, int], str] = {}
    for (key, ts), kind in labels.items():
        truth[_event_id(key, ts, "labels")] = kind
    seen = {_event_id(key, ts, "flagged") for key, ts in flagged}
    tp_ids = seen.intersection(truth)
    tp = len(tp_ids)
    fp = len(seen) - tp
    fn = len(truth) - tp
    totals: dict[str, int] = {}
    hits: dict[str, int] = {}
    for eid, kind in truth.items():
        totals[kind] = totals.get(kind, 0) + 1
        if eid in tp_ids:
            hits[kind] = hits.get(kind, 0) + 1
    per_kind = {k: _ratio(hits.get(k, 0), totals[k]) for k in sorted(totals)}
    return PR.from_counts(tp, fp, fn, per_kind_recall=per_kind)


def _alert_span(alert: Mapping[str, Any], i: int) -> tuple[str, float, float]:
    for name in ("key", "first_event_time_ms", "last_event_time_ms"):
        if name not in alert:
            raise ValueError(f"alerts[{i}] must have a {name!r} field; got fields {sorted(alert)}")
    first = alert["first_event_time_ms"]
    last = alert["last_event_time_ms"]
    for name, v in (("first_event_time_ms", first), ("last_event_time_ms", last)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"alerts[{i}].{name} must be a finite number; got {v!r}")
    if last < first:
        raise ValueError(
            f"alerts[{i}].last_event_time_ms must be >= first_event_time_ms ({first}); got {last}"
        )
    return str(alert["key"]), first / 1000.0, last / 1000.0


def incident_metrics(
    incidents: Sequence[Incident], alerts: Iterable[Mapping[str, Any]], grace_s: float = 300.0
) -> PR:
    """Per-incident recall and per-alert precision.

    An incident counts as detected when an alert for its key has
    ``[first_event_time_ms, last_event_time_ms]`` overlapping
    ``[start_ts, end_ts + grace_s]``; an alert is true when it overlaps such a window
    of any incident of its key.

    >>> incs = [Incident("a", "spike", 100.0, 100.0), Incident("a", "drift", 1000.0, 2000.0),
    ...         Incident("b", "level_shift", 50.0, 80.0)]
    >>> alerts = [
    ...     {"key": "a", "first_event_time_ms": 300_000, "last_event_time_ms": 310_000},
    ...     {"key": "a", "first_event_time_ms": 1_500_000, "last_event_time_ms": 1_600_000},
    ...     {"key": "b", "first_event_time_ms": 900_000, "last_event_time_ms": 900_000},
    ... ]
    >>> m = incident_metrics(incs, alerts, grace_s=300.0)
    >>> m.tp, m.fp, m.fn, round(m.precision, 4), round(m.recall, 4)
    (2, 1, 1, 0.6667, 0.6667)
    >>> m.per_kind_recall
    {'drift': 1.0, 'level_shift': 0.0, 'spike': 1.0}
    >>> sorted((i.kind, t) for i, t in m.time_to_detect_s.items())
    [('drift', 500.0), ('spike', 200.0)]
    """
    g = float(grace_s)
    if not math.isfinite(g) or g < 0:
        raise ValueError(f"grace_s must be >= 0 and finite; got {grace_s!r}")
    spans = [_alert_span(a, i) for i, a in enumerate(alerts)]
    by_key: dict[str, list[tuple[float, float]]] = {}
    for key, first, last in spans:
        by_key.setdefault(key, []).append((first, last))
    windows: dict[str, list[tuple[float, float]]] = {}
    for inc in incidents:
        windows.setdefault(inc.key, []).append((inc.start_ts, inc.end_ts + g))

    ttd: dict[Incident, float] = {}
    totals: dict[str, int] = {}
    hits: dict[str, int] = {}
    for inc in incidents:
        totals[inc.kind] = totals.get(inc.kind, 0) + 1
        lo, hi = inc.start_ts, inc.end_ts + g
        firsts = [f for f, last in by_key.get(inc.key, ()) if f <= hi and last >= lo]
        if firsts:
            hits[inc.kind] = hits.get(inc.kind, 0) + 1
            ttd[inc] = max(0.0, min(firsts) - inc.start_ts)
    true_alerts = sum(
        1
        for key, first, last in spans
        if any(first <= hi and last >= lo for lo, hi in windows.get(key, ()))
    )
    tp = len(ttd)
    fn = len(incidents) - tp
    fp = len(spans) - true_alerts
    precision = _ratio(true_alerts, len(spans))
    recall = _ratio(tp, len(incidents))
    return PR(
        precision=precision,
        recall=recall,
        f1=_f1_from(precision, recall),
        tp=tp,
        fp=fp,
        fn=fn,
        per_kind_recall={k: _ratio(hits.get(k, 0), totals[k]) for k in sorted(totals)},
        time_to_detect_s=ttd,
    )


def _nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(
    labels: Mapping[tuple[str, float], str],
    incidents: Sequence[Incident],
    flagged: Iterable[tuple[str, float]],
    alerts: Iterable[Mapping[str, Any]],
    *,
    grace_s: float = 300.0,
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Both views as a JSON-friendly dict (ratios rounded to 4 places).

    ``counts`` (e.g. ``{"events": ..., "dead_letters": ..., "late": ...}``) is copied
    into a ``"stream"`` section when given.

    >>> labels = {("a", 1.0): "spike", ("a", 2.0): "spike"}
    >>> incs = [Incident("a", "spike", 1.0, 2.0)]
    >>> alerts = [{"key": "a", "first_event_time_ms": 2000, "last_event_time_ms": 2000}]
    >>> summarize(labels, incs, [("a", 2.0), ("b", 3.0)], alerts, counts={"late": 0})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'events': {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'tp': 1, 'fp': 1, 'fn': 1,
                'per_kind_recall': {'spike': 0.5}},
     'incidents': {'alert_precision': 1.0, 'recall': 1.0, 'f1': 1.0, 'detected': 1,
                   'missed': 0, 'alerts': 1, 'false_alerts': 0,
                   'per_kind_recall': {'spike': 1.0},
                   'time_to_detect_s': {'median': 1.0, 'p90': 1.0, 'max': 1.0}},
     'stream': {'late': 0}}
    """
    alert_list = list(alerts)
    ev = event_metrics(labels, flagged)
    inc = incident_metrics(incidents, alert_list, grace_s=grace_s)
    ttd = sorted(inc.time_to_detect_s.values())
    out: dict[str, Any] = {
        "events": {
            "precision": round(ev.precision, 4),
            "recall": round(ev.recall, 4),
            "f1": round(ev.f1, 4),
            "tp": ev.tp,
            "fp": ev.fp,
            "fn": ev.fn,
            "per_kind_recall": {k: round(v, 4) for k, v in ev.per_kind_recall.items()},
        },
        "incidents": {
            "alert_precision": round(inc.precision, 4),
            "recall": round(inc.recall, 4),
            "f1": round(inc.f1, 4),
            "detected": inc.tp,
            "missed": inc.fn,
            "alerts": len(alert_list),
            "false_alerts": inc.fp,
            "per_kind_recall": {k: round(v, 4) for k, v in inc.per_kind_recall.items()},
            "time_to_detect_s": (
                {
                    "median": round(statistics.median(ttd), 3),
                    "p90": round(_nearest_rank(ttd, 0.9), 3),
                    "max": round(ttd[-1], 3),
                }
                if ttd
                else {}
            ),
        },
    }
    if counts is not None:
        out["stream"] = dict(counts)
    return out
