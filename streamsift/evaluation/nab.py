"""The Numenta Anomaly Benchmark (NAB) scoring, reimplemented, plus window-level metrics.

A faithful port of NAB's published scorer (``nab/sweeper.py``,
``nab/optimizer.py``, ``nab/runner.py::normalize``; Lavin & Ahmad 2015):

* Each labelled anomaly window ``[start, end]`` covers the rows with
  ``start <= t <= end``. A row inside a window gets the *sweep score*
  ``scaled_sigmoid(-(right - i + 1) / width) * A_TP / scaled_sigmoid(-1)`` (``right``:
  index of the window's last row, ``width``: its number of rows), so a detection on
  the window's first row is worth exactly ``A_TP`` and later ones less.
* A row outside every window gets ``scaled_sigmoid(|i - prev_right| / (prev_width - 1))
  * A_FP`` relative to the *preceding* window (a false positive right after a
  window costs little, one far after it costs the full ``A_FP``), or ``-A_FP``
  (the weight itself, negative) when no window precedes it.
* The first ``min(floor(0.15 * rows), 0.15 * 5000)`` rows of each file are the
  probationary period and are not scored.
* For a threshold ``t`` every row with ``anomaly_score >= t`` is a detection. A
  window scores the sweep score of its best (= earliest) detection, or ``-A_FN``
  when it has none; every detection outside windows adds its (negative) sweep
  score. The raw score is the sum over all files.
* One threshold is optimised over the whole corpus (NAB's sweeper: every distinct
  anomaly score is tried, highest first; ties keep the highest threshold).
* ``normalized = 100 * (raw - null) / (perfect - null)``: ``perfect`` is
  ``A_TP`` times the number of label windows, ``null`` is the optimised raw score
  of NAB's null detector (a constant score of 0.5 on every row), so the null
  detector scores 0 and a detector that fires exactly on the first row of every
  window scores 100.

The profile weights are those of NAB's ``config/profiles.json``, stored as NAB
stores them (positive magnitudes; the signs are applied by the scorer):

======================  =====  =====  =====
profile                 A_TP   A_FP   A_FN
======================  =====  =====  =====
standard                1.0    -0.11  -1.0
reward_low_FP_rate      1.0    -0.22  -1.0
reward_low_FN_rate      1.0    -0.11  -2.0
======================  =====  =====  =====

Differences from NAB, only where NAB would crash: windows are mapped to rows by
time (NAB requires their bounds to be row timestamps; on aligned windows the
result is identical), a window that contains no row is ignored (logged), and a
one-row window uses 1 instead of ``width - 1 = 0`` as the denominator of the
position after it.

>>> scorer = NABScorer()
>>> ts = [float(60 * i) for i in range(200)]
>>> perfect = [1.0 if i == 100 else 0.0 for i in range(200)]
>>> scorer.learn_file("a.csv", ts, perfect, [(6000.0, 6240.0)])
>>> res = scorer.score(PROFILES["standard"])
>>> res.normalized, res.raw, res.null, res.perfect
(100.0, 1.0, -1.0, 1.0)
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from streamsift.parsing import parse_time

__all__ = [
    "AnomalyPoint",
    "FileScore",
    "NABResult",
    "NABScorer",
    "PROBATION_PERCENT",
    "PROFILES",
    "Profile",
    "ThresholdScore",
    "WindowMetrics",
    "load_labels",
    "optimize_threshold",
    "pool_window_metrics",
    "probationary_length",
    "scaled_sigmoid",
    "score_at_threshold",
    "scores_by_threshold",
    "sweep_points",
    "window_indices",
    "window_metrics",
]

_LOG = logging.getLogger(__name__)

#: share of each file that is probationary (NAB's default)
PROBATION_PERCENT = 0.15
#: NAB caps the probationary period at ``probation_percent * 5000`` rows
_PROBATION_ROWS_CAP = 5000
#: the threshold NAB's sweep starts from (above any score: nothing detected)
_START_THRESHOLD = 1.1
_PROBATIONARY = "probationary"
_DAY_S = 86400.0


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """A NAB application profile: weights as positive magnitudes, as in NAB's
    ``profiles.json`` (a true positive earns ``tp_weight``, a false positive costs
    up to ``fp_weight``, a missed window costs ``fn_weight``).

    >>> Profile("strict", fp_weight=0.5).fp_weight
    0.5
    >>> Profile("bad", fp_weight=-0.11)
    Traceback (most recent call last):
    ...
    ValueError: fp_weight must be a finite number >= 0; got -0.11
    """

    name: str
    tp_weight: float = 1.0
    fp_weight: float = 0.11
    fn_weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string; got {self.name!r}")
        for attr in ("tp_weight", "fp_weight", "fn_weight"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{attr} must be a finite number >= 0; got {v!r}")
            if v < 0:
                raise ValueError(f"{attr} must be a finite number >= 0; got {v!r}")
        if self.tp_weight == 0:
            raise ValueError(f"tp_weight must be > 0; got {self.tp_weight!r}")


#: NAB's three application profiles (``config/profiles.json``)
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_FP_rate": Profile(
        "reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0
    ),
    "reward_low_FN_rate": Profile(
        "reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0
    ),
}


# --------------------------------------------------------------------------- building blocks


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's ``scaledSigmoid``: ``2 / (1 + exp(5 x)) - 1``, and -1 beyond ``x = 3``.

    ``x = -1`` is a window's left edge (0.98661), ``x = 0`` its right edge (0),
    ``x > 0`` lies after the window (negative: a false positive).

    >>> [round(scaled_sigmoid(x), 5) for x in (-1.0, -0.5, 0.0, 1.0, 3.5)]
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    if relative_position > 3.0:
        return -1.0
    return 2.0 * _sigmoid(-5.0 * relative_position) - 1.0


def probationary_length(n_rows: int, probation_percent: float = PROBATION_PERCENT) -> float:
    """Rows at the start of a file that are not scored (NAB: ``min(floor(p * n), p * 5000)``;
    row ``i`` is scored when ``i >= probationary_length``).

    >>> probationary_length(4032), probationary_length(10000), probationary_length(10)
    (604, 750.0, 1)
    >>> probationary_length(100, 1.5)
    Traceback (most recent call last):
    ...
    ValueError: probation_percent must be in [0, 1]; got 1.5
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
        raise ValueError(f"n_rows must be an integer >= 0; got {n_rows!r}")
    if not 0.0 <= probation_percent <= 1.0:
        raise ValueError(f"probation_percent must be in [0, 1]; got {probation_percent!r}")
    return min(math.floor(probation_percent * n_rows), probation_percent * _PROBATION_ROWS_CAP)


def _window_bounds(
    timestamps: Sequence[float], windows: Sequence[tuple[float, float]]
) -> list[tuple[float, float, int, int]]:
    """``(start, end, left, right)`` of each window that contains a row."""
    ts = timestamps
    for i in range(1, len(ts)):
        if ts[i] < ts[i - 1]:
            raise ValueError(
                f"timestamps must be sorted ascending; got {ts[i]} after {ts[i - 1]} at row {i}"
            )
    out: list[tuple[float, float, int, int]] = []
    for k, w in enumerate(windows):
        start, end = float(w[0]), float(w[1])
        if not start <= end:
            raise ValueError(f"window {k} must have start <= end; got ({start}, {end})")
        left = bisect.bisect_left(ts, start)
        right = bisect.bisect_right(ts, end) - 1
        if left > right:
            _LOG.warning("window %d (%s, %s) contains no row; ignored", k, start, end)
            continue
        if out and left <= out[-1][3]:
            raise ValueError(
                "windows must be sorted and must not overlap; got window "
                f"{k} ({start}, {end}) starting at row {left}, inside the previous one "
                f"(rows {out[-1][2]}..{out[-1][3]})"
            )
        out.append((start, end, left, right))
    return out


def window_indices(
    timestamps: Sequence[float], windows: Sequence[tuple[float, float]]
) -> list[tuple[int, int]]:
    """Row index range ``(left, right)`` of each window: the rows with
    ``start <= t <= end`` (``timestamps`` sorted ascending). Windows with no row
    are left out (logged); windows must not overlap.

    >>> window_indices([0.0, 60.0, 120.0, 180.0], [(50.0, 130.0), (500.0, 600.0)])
    [(1, 2)]
    >>> window_indices([0.0, 60.0, 120.0], [(0.0, 60.0), (60.0, 120.0)])
    Traceback (most recent call last):
    ...
    ValueError: windows must be sorted and must not overlap; got window 1 (60.0, 120.0) starting at row 1, inside the previous one (rows 0..1)
    """
    ts = [float(t) for t in timestamps]
    return [(left, right) for _s, _e, left, right in _window_bounds(ts, windows)]


class AnomalyPoint(NamedTuple):
    """One row as NAB's sweeper sees it.

    ``window`` is the id of the window the row lies in, None outside windows and
    ``"probationary"`` in the probationary period.

    >>> AnomalyPoint(0.0, 0.5, -0.11, None).sweep_score
    -0.11
    """

    timestamp: float
    anomaly_score: float
    sweep_score: float
    window: str | None


def sweep_points(
    timestamps: Sequence[float],
    scores: Sequence[float],
    windows: Sequence[tuple[float, float]],
    name: str,
    profile: Profile,
    probation_percent: float = PROBATION_PERCENT,
) -> list[AnomalyPoint]:
    """NAB's ``Sweeper.calcSweepScore``: the sweep score and window of every row.

    Window ids are ``"{name}|{k}"`` (``k``: the window's position), unique across
    files when the names are.

    >>> pts = sweep_points([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 6, [(2.0, 3.0)], "f",
    ...                    PROFILES["standard"], probation_percent=0.0)
    >>> [(round(p.sweep_score, 4), p.window) for p in pts]
    [(-0.11, None), (-0.11, None), (1.0, 'f|0'), (0.8598, 'f|0'), (-0.1085, None), (-0.11, None)]
    """
    ts = [float(t) for t in timestamps]
    if len(ts) != len(scores):
        raise ValueError(f"scores must have one value per timestamp ({len(ts)}); got {len(scores)}")
    bounds = window_indices(ts, windows)
    max_tp = scaled_sigmoid(-1.0)
    probation = probationary_length(len(ts), probation_percent)
    tp_w, fp_w = profile.tp_weight, profile.fp_weight
    out: list[AnomalyPoint] = []
    next_w = 0
    cur_id: str | None = None
    cur_right = cur_width = 0
    prev_right: int | None = None
    prev_width = 0
    for i, (t, s) in enumerate(zip(ts, scores, strict=True)):
        if cur_id is None and next_w < len(bounds) and i == bounds[next_w][0]:
            left, cur_right = bounds[next_w]
            cur_width = cur_right - left + 1
            cur_id = f"{name}|{next_w}"
            next_w += 1
        if cur_id is not None:
            position = -(cur_right - i + 1) / float(cur_width)
            weighted = scaled_sigmoid(position) * tp_w / max_tp
        else:
            if prev_right is None:
                unweighted = -1.0  # no preceding window
            else:
                unweighted = scaled_sigmoid(abs(prev_right - i) / float(max(prev_width - 1, 1)))
            weighted = unweighted * fp_w
        window = cur_id if i >= probation else _PROBATIONARY
        out.append(AnomalyPoint(t, float(s), weighted, window))
        if cur_id is not None and i == cur_right:
            prev_right, prev_width = i, cur_width
            cur_id = None
    return out


class ThresholdScore(NamedTuple):
    """NAB's score at one threshold, with its row counts (NAB counts rows, not windows).

    >>> ThresholdScore(0.5, -0.2, 1, 10, 2, 3, 3).total
    3
    """

    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int


def scores_by_threshold(points: Sequence[AnomalyPoint], profile: Profile) -> list[ThresholdScore]:
    """NAB's ``Sweeper.calcScoreByThreshold``: the score at every distinct anomaly
    score taken as the threshold (detections: ``anomaly_score >= threshold``),
    highest threshold first, starting with 1.1 (nothing detected).

    >>> pts = sweep_points([0.0, 1.0, 2.0, 3.0], [0.0, 0.9, 0.2, 0.0], [(2.0, 3.0)], "f",
    ...                    PROFILES["standard"], probation_percent=0.0)
    >>> [(t.threshold, round(t.score, 4), t.tp, t.fp) for t in scores_by_threshold(pts, PROFILES["standard"])]
    [(1.1, -1.0, 0, 0), (0.9, -1.11, 0, 1), (0.2, 0.89, 1, 1), (0.0, 0.78, 2, 2)]
    """
    scorable = sorted(
        (p for p in points if p.window != _PROBATIONARY),
        key=lambda p: p.anomaly_score,
        reverse=True,
    )
    parts: dict[str, float] = {}
    for p in scorable:
        if p.window is not None:
            parts[p.window] = -profile.fn_weight
    fp_sum = 0.0
    window_sum = sum(parts.values())
    tn = sum(1 for p in scorable if p.window is None)
    fn = len(scorable) - tn
    tp = fp = 0
    threshold = _START_THRESHOLD
    out: list[ThresholdScore] = []
    for p in scorable:
        if p.anomaly_score != threshold:
            out.append(ThresholdScore(threshold, fp_sum + window_sum, tp, tn, fp, fn, tp + fp))
            threshold = p.anomaly_score
        if p.window is None:
            fp += 1
            tn -= 1
            fp_sum += p.sweep_score
        else:
            tp += 1
            fn -= 1
            old = parts[p.window]
            if p.sweep_score > old:
                parts[p.window] = p.sweep_score
                window_sum += p.sweep_score - old
    out.append(ThresholdScore(threshold, fp_sum + window_sum, tp, tn, fp, fn, tp + fp))
    return out


def optimize_threshold(points: Sequence[AnomalyPoint], profile: Profile) -> ThresholdScore:
    """NAB's optimizer: the threshold with the highest score over ``points`` (all
    files together); among equal scores the highest threshold.

    >>> pts = sweep_points([0.0, 1.0, 2.0, 3.0], [0.0, 0.9, 0.2, 0.0], [(2.0, 3.0)], "f",
    ...                    PROFILES["standard"], probation_percent=0.0)
    >>> optimize_threshold(pts, PROFILES["standard"]).threshold
    0.2
    """
    table = scores_by_threshold(points, profile)
    return max(table, key=lambda t: t.score)


def score_at_threshold(
    points: Sequence[AnomalyPoint], profile: Profile, threshold: float
) -> ThresholdScore:
    """NAB's ``Sweeper.scoreDataSet``: the score of ``points`` (one file) when
    every row with ``anomaly_score >= threshold`` is a detection.

    >>> pts = sweep_points([0.0, 1.0, 2.0, 3.0], [0.0, 0.9, 0.2, 0.0], [(2.0, 3.0)], "f",
    ...                    PROFILES["standard"], probation_percent=0.0)
    >>> round(score_at_threshold(pts, PROFILES["standard"], 0.5).score, 4)
    -1.11
    """
    table = scores_by_threshold(points, profile)
    previous: ThresholdScore | None = None
    for row in table:
        if row.threshold == threshold:
            return row
        if row.threshold < threshold:
            return previous if previous is not None else row
        previous = row
    return table[-1]


# --------------------------------------------------------------------------- corpus scorer


class FileScore(NamedTuple):
    """One file's NAB scores at the corpus threshold (``normalized`` is None for
    a file without windows: perfect and null coincide there).

    >>> FileScore(0.5, -1.0, 1.0, 75.0, 1, 3).normalized
    75.0
    """

    raw: float
    null: float
    perfect: float
    normalized: float | None
    windows: int
    detections: int


class NABResult(NamedTuple):
    """Corpus result for one profile.

    >>> NABResult("standard", 0.5, 0.25, -2.0, 2.0, 56.25, {}).normalized
    56.25
    """

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    per_file: dict[str, FileScore]


def _normalize(raw: float, null: float, perfect: float) -> float | None:
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


@dataclass
class _File:
    timestamps: list[float]
    scores: list[float]
    windows: list[tuple[float, float]]
    n_windows: int


@dataclass
class NABScorer:
    """Collects files (``learn_file``), then scores the corpus per profile (``score``).

    In this tiny file flagging every row beats flagging none, so NAB's null
    detector (constant 0.5, threshold optimised) scores above ``-A_FN``:

    >>> scorer = NABScorer(probation_percent=0.0)
    >>> ts = [float(i) for i in range(10)]
    >>> scorer.learn_file("a", ts, [0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0], [(4.0, 6.0)])
    >>> res = scorer.score(PROFILES["standard"])
    >>> res.threshold, round(res.raw, 6), round(res.null, 6), res.perfect, round(res.normalized, 4)
    (0.9, 0.943742, 0.248283, 1.0, 92.5161)
    """

    probation_percent: float = PROBATION_PERCENT
    _files: dict[str, _File] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        p = self.probation_percent
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"probation_percent must be in [0, 1]; got {p!r}")

    @property
    def files(self) -> tuple[str, ...]:
        """Names of the files learnt so far, in order."""
        return tuple(self._files)

    def learn_file(
        self,
        name: str,
        timestamps: Sequence[float],
        scores: Sequence[float],
        windows: Sequence[tuple[float, float]],
    ) -> None:
        """Add one file: its row times (ascending), one anomaly score in [0, 1] per
        row, and its label windows ``(start, end)`` in the same time unit."""
        if name in self._files:
            raise ValueError(f"name must be unique; got {name!r} twice")
        ts = [float(t) for t in timestamps]
        sc = [float(s) for s in scores]
        if len(ts) != len(sc):
            raise ValueError(
                f"scores must have one value per timestamp ({len(ts)}) in {name!r}; got {len(sc)}"
            )
        for i, s in enumerate(sc):
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"scores[{i}] of {name!r} must be in [0, 1]; got {s!r}")
        wins = [(float(a), float(b)) for a, b in windows]
        n_windows = len(window_indices(ts, wins))  # validates order and overlap
        self._files[name] = _File(ts, sc, wins, n_windows)

    def _points(self, profile: Profile, constant: float | None = None) -> dict[str, list]:
        out = {}
        for name, f in self._files.items():
            scores = f.scores if constant is None else [constant] * len(f.scores)
            out[name] = sweep_points(
                f.timestamps, scores, f.windows, name, profile, self.probation_percent
            )
        return out

    def score(self, profile: Profile) -> NABResult:
        """Optimise one threshold over all files and score them with it."""
        if not self._files:
            raise ValueError("score needs at least one file; got none (call learn_file first)")
        points = self._points(profile)
        best = optimize_threshold([p for pts in points.values() for p in pts], profile)
        # NAB's null detector: a constant 0.5 on every row, threshold optimised too.
        null_points = self._points(profile, constant=0.5)
        null_best = optimize_threshold([p for pts in null_points.values() for p in pts], profile)
        per_file: dict[str, FileScore] = {}
        raw = null = perfect = 0.0
        for name, f in self._files.items():
            at = score_at_threshold(points[name], profile, best.threshold)
            f_null = score_at_threshold(null_points[name], profile, null_best.threshold).score
            f_perfect = profile.tp_weight * f.n_windows
            per_file[name] = FileScore(
                at.score,
                f_null,
                f_perfect,
                _normalize(at.score, f_null, f_perfect),
                f.n_windows,
                at.tp + at.fp,
            )
            raw += at.score
            null += f_null
            perfect += f_perfect
        normalized = _normalize(best.score, null_best.score, perfect)
        return NABResult(
            profile.name,
            best.threshold,
            best.score,
            null_best.score,
            perfect,
            normalized if normalized is not None else 0.0,
            per_file,
        )

    def score_all(self, profiles: Mapping[str, Profile] | None = None) -> dict[str, NABResult]:
        """:meth:`score` for every profile (default: NAB's three)."""
        return {name: self.score(p) for name, p in (profiles or PROFILES).items()}


# --------------------------------------------------------------------------- labels


def load_labels(path: str) -> dict[str, list[tuple[float, float]]]:
    """Read a NAB ``labels.json``: file path -> list of ``[start, end]`` windows
    (``"YYYY-MM-DD HH:MM:SS.ffffff"``, UTC), as epoch seconds, sorted by start.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "labels.json")
    ...     _ = open(p, "w").write('{"a.csv": [["2014-04-10 07:15:00.000000", "2014-04-10 08:00:00.000000"]]}')
    ...     load_labels(p)
    {'a.csv': [(1397114100.0, 1397116800.0)]}
    """
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"labels file {path!r} must be valid JSON; got {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"labels file {path!r} must hold a JSON object; got {type(data).__name__}")
    out: dict[str, list[tuple[float, float]]] = {}
    for name, windows in data.items():
        if not isinstance(windows, list):
            raise ValueError(
                f"labels[{name!r}] must be a list of [start, end] windows; got {windows!r}"
            )
        parsed = []
        for k, w in enumerate(windows):
            if not isinstance(w, (list, tuple)) or len(w) != 2:
                raise ValueError(f"labels[{name!r}][{k}] must be [start, end]; got {w!r}")
            try:
                start, end = parse_time(w[0]), parse_time(w[1])
            except ValueError as exc:
                raise ValueError(f"labels[{name!r}][{k}]: {exc}") from None
            if start > end:
                raise ValueError(
                    f"labels[{name!r}][{k}] must have start <= end; got {w[0]!r} > {w[1]!r}"
                )
            parsed.append((start, end))
        out[name.replace("\\", "/")] = sorted(parsed)
    return out


# --------------------------------------------------------------------------- window metrics


class WindowMetrics(NamedTuple):
    """Window-level detection quality of alerts (after the probationary period).

    ``recall`` = detected windows / windows; ``precision`` = alerts inside a
    window / alerts (alerts are its unit, as in
    :func:`streamsift.evaluation.metrics.incident_metrics`); ``time_to_detect_s``
    holds, per window, the seconds from its start to its first alert (None if
    missed); ``false_alerts_per_day`` divides the alerts outside windows by the
    scored time span in days.

    >>> WindowMetrics(2, 1, 4, 3, 1, 0.75, 0.5, 0.6, (60.0, None), 2.0, 0.5).f1
    0.6
    """

    windows: int
    detected: int
    alerts: int
    true_alerts: int
    false_alerts: int
    precision: float
    recall: float
    f1: float
    time_to_detect_s: tuple[float | None, ...]
    scored_days: float
    false_alerts_per_day: float


def _prf(true_alerts: int, alerts: int, detected: int, windows: int) -> tuple[float, float, float]:
    p = true_alerts / alerts if alerts else 0.0
    r = detected / windows if windows else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f1


def window_metrics(
    timestamps: Sequence[float],
    alerts: Sequence[bool],
    windows: Sequence[tuple[float, float]],
    probation_percent: float = PROBATION_PERCENT,
) -> WindowMetrics:
    """Window precision / recall / F1, time to detect and false alerts per day for
    one file (``alerts``: one flag per row; rows in the probationary period and
    windows entirely inside it are not counted).

    >>> ts = [3600.0 * i for i in range(49)]  # two days, hourly
    >>> alerts = [i in (10, 12, 30) for i in range(49)]
    >>> m = window_metrics(ts, alerts, [(3600.0 * 9, 3600.0 * 14), (3600.0 * 40, 3600.0 * 42)], 0.0)
    >>> m.detected, m.true_alerts, m.false_alerts, m.time_to_detect_s, m.false_alerts_per_day
    (1, 2, 1, (3600.0, None), 0.5)
    >>> round(m.precision, 4), m.recall, round(m.f1, 4)
    (0.6667, 0.5, 0.5714)
    """
    ts = [float(t) for t in timestamps]
    if len(alerts) != len(ts):
        raise ValueError(f"alerts must have one flag per timestamp ({len(ts)}); got {len(alerts)}")
    bounds = _window_bounds(ts, windows)
    probation = probationary_length(len(ts), probation_percent)
    first = math.ceil(probation)
    inside = [False] * len(ts)
    for _s, _e, left, right in bounds:
        for i in range(left, right + 1):
            inside[i] = True
    n_alerts = true_alerts = 0
    for i in range(first, len(ts)):
        if alerts[i]:
            n_alerts += 1
            true_alerts += inside[i]
    ttd: list[float | None] = []
    for start, _end, left, right in bounds:
        if right < first:
            continue  # entirely probationary
        hit = next((i for i in range(max(left, first), right + 1) if alerts[i]), None)
        ttd.append(None if hit is None else max(ts[hit] - start, 0.0))
    n_windows = len(ttd)
    detected = sum(1 for t in ttd if t is not None)
    false_alerts = n_alerts - true_alerts
    days = (ts[-1] - ts[first]) / _DAY_S if first < len(ts) else 0.0
    p, r, f1 = _prf(true_alerts, n_alerts, detected, n_windows)
    return WindowMetrics(
        n_windows,
        detected,
        n_alerts,
        true_alerts,
        false_alerts,
        p,
        r,
        f1,
        tuple(ttd),
        days,
        false_alerts / days if days > 0 else 0.0,
    )


def pool_window_metrics(metrics: Sequence[WindowMetrics]) -> WindowMetrics:
    """Corpus totals: counts and days summed, ratios recomputed from the sums.

    >>> a = WindowMetrics(1, 1, 2, 1, 1, 0.5, 1.0, 2 / 3, (60.0,), 1.0, 1.0)
    >>> b = WindowMetrics(1, 0, 0, 0, 0, 0.0, 0.0, 0.0, (None,), 1.0, 0.0)
    >>> m = pool_window_metrics([a, b])
    >>> m.precision, m.recall, m.false_alerts_per_day, m.time_to_detect_s
    (0.5, 0.5, 0.5, (60.0, None))
    """
    windows = sum(m.windows for m in metrics)
    detected = sum(m.detected for m in metrics)
    alerts = sum(m.alerts for m in metrics)
    true_alerts = sum(m.true_alerts for m in metrics)
    false_alerts = sum(m.false_alerts for m in metrics)
    days = sum(m.scored_days for m in metrics)
    p, r, f1 = _prf(true_alerts, alerts, detected, windows)
    ttd = tuple(t for m in metrics for t in m.time_to_detect_s)
    return WindowMetrics(
        windows,
        detected,
        alerts,
        true_alerts,
        false_alerts,
        p,
        r,
        f1,
        ttd,
        days,
        false_alerts / days if days > 0 else 0.0,
    )
