"""Score calibration, per-key streaming quantiles and adaptive thresholds.

Pure Python (plus numpy for the vectorised calibration); no Beam. Three parts:

* :class:`Calibrator` maps a raw stage-2 score (higher = more anomalous) to the
  empirical CDF of the training scores, a calibrated score in [0, 1].
* :class:`QuantileSketch` keeps a small, fixed-size, exponentially decayed
  histogram of one key's calibrated scores (state: :class:`SketchState`).
* :class:`AdaptiveThreshold` turns a key's sketch into a threshold and maps a
  score to a severity tier.

>>> cal = Calibrator([0.0, 1.0, 2.0, 3.0, 4.0])
>>> cal.calibrate(2.0)
0.5
>>> at = AdaptiveThreshold(ThresholdConfig(min_score=0.9, warmup=0))
>>> st = at.new_state()
>>> at.threshold(st), at.severity(0.98, at.threshold(st))
(0.9, 'warning')
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from streamsift.config import ThresholdConfig

__all__ = [
    "AdaptiveThreshold",
    "Calibrator",
    "QuantileSketch",
    "SEVERITIES",
    "SketchState",
    "severity_rank",
]

logger = logging.getLogger(__name__)

#: severity tiers, lowest first ("" = no exceedance)
SEVERITIES = ("", "info", "warning", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """Order of a severity tier: "" < info < warning < critical.

    >>> [severity_rank(s) for s in ("", "info", "warning", "critical")]
    [0, 1, 2, 3]
    """
    try:
        return _RANK[severity]
    except KeyError:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}; got {severity!r}") from None


# --------------------------------------------------------------------------- calibration


class Calibrator:
    """Raw score -> empirical CDF of the training scores, in [0, 1].

    ``quantiles`` are the raw training scores at evenly spaced levels
    ``i / (n - 1)`` (``n = len(quantiles)``, sorted ascending). Between two
    quantiles the CDF is interpolated linearly; below the smallest it is 0.
    The training maximum is given the level ``1 - 0.5 / (n - 1)`` (half a
    quantile step of probability is kept for scores never seen in training),
    and beyond it the CDF approaches 1 smoothly::

        calibrate(raw) = 1 - 0.5 / (n - 1) * exp(-(raw - max) / scale)

    so extreme anomalies stay ordered (strictly, up to ~30 scales beyond the
    maximum). ``scale`` defaults to ``max - median`` of the quantiles (a robust
    spread of the upper half), falling back to ``max - min`` and then 1.0 for
    degenerate inputs. Ties are resolved right-continuously (a raw score equal
    to several quantiles gets the highest of their levels), so the map is
    monotone non-decreasing. :meth:`calibrate_many` gives bit-identical results.

    >>> cal = Calibrator([0.0, 1.0, 2.0, 3.0, 4.0])
    >>> [cal.calibrate(x) for x in (-1.0, 0.0, 1.5, 3.0, 4.0)]
    [0.0, 0.0, 0.375, 0.75, 0.875]
    >>> cal.scale
    2.0
    >>> round(cal.calibrate(6.0), 6)
    0.954015
    >>> cal.calibrate_many(np.array([1.5, 6.0])).tolist() == [cal.calibrate(1.5), cal.calibrate(6.0)]
    True
    >>> Calibrator([1.0])
    Traceback (most recent call last):
    ...
    ValueError: quantiles must have at least 2 values; got 1
    """

    __slots__ = ("_q", "_levels", "_m", "_qmax", "_top", "_tail", "scale", "_q_np", "_lv_np")

    def __init__(self, quantiles: Sequence[float], scale: float | None = None) -> None:
        q = [float(v) for v in quantiles]
        if len(q) < 2:
            raise ValueError(f"quantiles must have at least 2 values; got {len(q)}")
        for i, v in enumerate(q):
            if not math.isfinite(v):
                raise ValueError(f"quantiles[{i}] must be finite; got {v}")
            if i and v < q[i - 1]:
                raise ValueError(
                    f"quantiles must be sorted ascending; got {q[i - 1]} before {v} at index {i}"
                )
        n = len(q)
        m = n - 1
        self._q = q
        self._m = m
        self._tail = 0.5 / m
        self._top = 1.0 - self._tail
        self._levels = [i / m for i in range(m)] + [self._top]
        self._qmax = q[-1]
        if scale is None:
            spread = q[-1] - q[m // 2]
            if spread <= 0:
                spread = q[-1] - q[0]
            scale = spread if spread > 0 else 1.0
        elif not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0; got {scale}")
        self.scale = float(scale)
        self._q_np = np.asarray(q, dtype=np.float64)
        self._lv_np = np.asarray(self._levels, dtype=np.float64)

    @classmethod
    def from_scores(
        cls, scores: Sequence[float] | np.ndarray, n_quantiles: int = 1001
    ) -> Calibrator:
        """Build from raw training scores (``n_quantiles`` evenly spaced quantiles).

        >>> Calibrator.from_scores([4.0, 0.0, 2.0, 1.0, 3.0], n_quantiles=5).quantiles
        [0.0, 1.0, 2.0, 3.0, 4.0]
        >>> Calibrator.from_scores([], n_quantiles=5)
        Traceback (most recent call last):
        ...
        ValueError: scores must be non-empty; got 0 values
        """
        if isinstance(n_quantiles, bool) or not isinstance(n_quantiles, int) or n_quantiles < 2:
            raise ValueError(f"n_quantiles must be an integer >= 2; got {n_quantiles!r}")
        arr = np.asarray(scores, dtype=np.float64).ravel()
        if arr.size == 0:
            raise ValueError("scores must be non-empty; got 0 values")
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"scores must be finite; got {int(np.sum(~np.isfinite(arr)))} non-finite"
            )
        qs = np.quantile(arr, np.linspace(0.0, 1.0, n_quantiles))
        # np.quantile is monotone in theory; enforce it against rounding.
        qs = np.maximum.accumulate(qs)
        return cls(qs.tolist())

    @property
    def quantiles(self) -> list[float]:
        """The quantiles as a plain list (for model metadata JSON).

        >>> Calibrator([0.0, 0.5, 1.0]).quantiles
        [0.0, 0.5, 1.0]
        """
        return list(self._q)

    def _tail_value(self, raw: float) -> float:
        return 1.0 - self._tail * math.exp(-(raw - self._qmax) / self.scale)

    def calibrate(self, raw: float) -> float:
        """Calibrated score of one raw score.

        >>> Calibrator([0.0, 1.0, 2.0]).calibrate(0.5)
        0.25
        >>> Calibrator([0.0, 1.0]).calibrate(float("inf"))
        1.0
        >>> Calibrator([0.0, 1.0]).calibrate(float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: raw must be a number (not NaN); got nan
        """
        raw = float(raw)
        if raw != raw:
            raise ValueError(f"raw must be a number (not NaN); got {raw}")
        q = self._q
        j = bisect.bisect_right(q, raw)
        if j == 0:
            return 0.0
        if j > self._m:
            return self._tail_value(raw)
        a = q[j - 1]
        lo = self._levels[j - 1]
        return lo + (self._levels[j] - lo) * ((raw - a) / (q[j] - a))

    def calibrate_many(self, raw: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`calibrate` (same shape, bit-identical values).

        >>> Calibrator([0.0, 1.0, 2.0]).calibrate_many(np.array([[-1.0, 0.5], [1.0, 2.0]])).tolist()
        [[0.0, 0.25], [0.5, 0.75]]
        """
        x = np.asarray(raw, dtype=np.float64)
        flat = x.ravel()
        if np.isnan(flat).any():
            raise ValueError(
                f"raw must be numbers (not NaN); got {int(np.isnan(flat).sum())} NaN values"
            )
        j = np.searchsorted(self._q_np, flat, side="right")
        out = np.zeros(flat.shape, dtype=np.float64)
        mid = (j > 0) & (j <= self._m)
        if mid.any():
            jm = j[mid]
            a = self._q_np[jm - 1]
            b = self._q_np[jm]
            lo = self._lv_np[jm - 1]
            hi = self._lv_np[jm]
            out[mid] = lo + (hi - lo) * ((flat[mid] - a) / (b - a))
        tail = np.flatnonzero(j > self._m)
        if tail.size:
            # math.exp per element: np.exp may differ from libm in the last ulp.
            out[tail] = [self._tail_value(v) for v in flat[tail].tolist()]
        return out.reshape(x.shape)

    def __repr__(self) -> str:
        return f"Calibrator(n_quantiles={self._m + 1}, scale={self.scale!r})"


# --------------------------------------------------------------------------- quantile sketch

#: the sketch bins a score x in [0, 1] on u = -log10(1 - x), u clipped to [0, 6]:
#: resolution is relative to 1 - x (about 7 %), fine near 1 where thresholds live.
_BINS_PER_DECADE = 32
_DECADES = 6
NBINS = _BINS_PER_DECADE * _DECADES
_MIN_TAIL = 10.0**-_DECADES
_RESCALE_AT = 1e100
_SKETCH_HEADER = struct.Struct("<BQdH")
_SKETCH_VERSION = 1


def _bin_of(x: float) -> int:
    t = 1.0 - x
    if t <= _MIN_TAIL:
        return NBINS - 1
    b = int(-math.log10(t) * _BINS_PER_DECADE)
    return b if b < NBINS else NBINS - 1


def _empty_weights() -> array:
    return array("d", [0.0]) * NBINS


@dataclass
class SketchState:
    """State of a :class:`QuantileSketch`: decayed bin weights.

    ``weights`` are relative to ``inc``, the weight the next learnt score gets
    (it grows instead of every bin decaying, and all are rescaled when large);
    ``count`` is the number of scores learnt (not decayed).

    >>> s = SketchState()
    >>> s.count, len(s.weights), SketchState.decode(s.encode()) == s
    (0, 192, True)
    """

    weights: array = field(default_factory=_empty_weights, repr=False)
    inc: float = 1.0
    count: int = 0

    def encode(self) -> bytes:
        """Compact bytes: header then the non-empty bins (uint8 index, float64 weight).

        >>> len(SketchState().encode())
        19
        """
        nz = [i for i, w in enumerate(self.weights) if w != 0.0]
        n = len(nz)
        return (
            _SKETCH_HEADER.pack(_SKETCH_VERSION, self.count, self.inc, n)
            + bytes(nz)
            + struct.pack(f"<{n}d", *(self.weights[i] for i in nz))
        )

    @classmethod
    def decode(cls, data: bytes) -> SketchState:
        """Inverse of :meth:`encode`.

        >>> SketchState.decode(b"xx")
        Traceback (most recent call last):
        ...
        ValueError: data must be an encoded SketchState of >= 19 bytes; got 2 bytes
        """
        data = bytes(data)
        h = _SKETCH_HEADER.size
        if len(data) < h:
            raise ValueError(
                f"data must be an encoded SketchState of >= {h} bytes; got {len(data)} bytes"
            )
        version, count, inc, n = _SKETCH_HEADER.unpack_from(data)
        if version != _SKETCH_VERSION:
            raise ValueError(f"SketchState version must be {_SKETCH_VERSION}; got {version}")
        if len(data) != h + 9 * n:
            raise ValueError(f"data must be {h + 9 * n} bytes for {n} bins; got {len(data)} bytes")
        if not (math.isfinite(inc) and inc > 0):
            raise ValueError(f"SketchState.inc must be finite and > 0; got {inc}")
        idx = data[h : h + n]
        vals = struct.unpack_from(f"<{n}d", data, h + n)
        weights = _empty_weights()
        for i, w in zip(idx, vals, strict=True):
            if i >= NBINS or not (math.isfinite(w) and w >= 0):
                raise ValueError(f"SketchState bin {i} must be < {NBINS} with weight >= 0; got {w}")
            weights[i] = w
        return cls(weights=weights, inc=inc, count=count)


class QuantileSketch:
    """Streaming quantiles of scores in [0, 1], fixed memory, exponential decay.

    A histogram of 192 bins on ``u = -log10(1 - x)`` (32 bins per decade of
    ``1 - x`` down to 1e-6, the last bin holding everything above
    ``1 - 1e-6``), so the resolution is about 7 % of ``1 - x``: 0.007 at 0.9,
    0.0007 at 0.99. Quantiles interpolate linearly in ``u`` inside a bin. Each
    learnt score weighs ``2 ** (1 / half_life)`` times the previous one, i.e.
    the weight of a score halves every ``half_life`` later scores; ``None``
    disables the decay. ``learn_one`` is O(1); ``quantile`` is O(bins).

    >>> sk = QuantileSketch(half_life=None)
    >>> st = sk.new_state()
    >>> for i in range(100):
    ...     sk.learn_one(st, i / 100)
    >>> round(sk.quantile(st, 0.5), 2), round(sk.quantile(st, 0.9), 3), st.count
    (0.5, 0.893, 100)
    >>> sk.learn_one(st, 1.5)
    Traceback (most recent call last):
    ...
    ValueError: x must be in [0, 1]; got 1.5
    """

    __slots__ = ("half_life", "_growth")

    def __init__(self, half_life: float | None = 250.0) -> None:
        if half_life is not None:
            if isinstance(half_life, bool) or not isinstance(half_life, (int, float)):
                raise ValueError(f"half_life must be a number > 0 or None; got {half_life!r}")
            if not (math.isfinite(half_life) and half_life > 0):
                raise ValueError(f"half_life must be a number > 0 or None; got {half_life!r}")
        self.half_life = half_life
        self._growth = 1.0 if half_life is None else 2.0 ** (1.0 / half_life)

    def new_state(self) -> SketchState:
        """An empty sketch.

        >>> QuantileSketch().new_state().count
        0
        """
        return SketchState()

    def learn_one(self, state: SketchState, x: float) -> None:
        """Add one score.

        >>> sk = QuantileSketch(); st = sk.new_state(); sk.learn_one(st, 0.95); st.count
        1
        """
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"x must be in [0, 1]; got {x}")
        w = state.weights
        w[_bin_of(x)] += state.inc
        state.count += 1
        if self._growth != 1.0:
            inc = state.inc * self._growth
            if inc > _RESCALE_AT:
                for i in range(NBINS):
                    w[i] /= inc
                inc = 1.0
            state.inc = inc

    def quantile(self, state: SketchState, q: float) -> float:
        """Estimated ``q``-quantile of the learnt scores (NaN when empty).

        >>> sk = QuantileSketch(); st = sk.new_state()
        >>> sk.quantile(st, 0.5)
        nan
        >>> sk.learn_one(st, 0.99); round(sk.quantile(st, 0.0), 4), round(sk.quantile(st, 1.0), 4)
        (0.9893, 0.99)
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1]; got {q}")
        cum = list(accumulate(state.weights))
        total = cum[-1]
        if total <= 0.0:
            return math.nan
        target = q * total
        if target <= 0.0:
            b = bisect.bisect_right(cum, 0.0)
            frac = 0.0
        else:
            b = bisect.bisect_left(cum, target)
            if b >= NBINS:  # rounding: target a hair above the total
                b = NBINS - 1
                while state.weights[b] == 0.0:
                    b -= 1
            w = state.weights[b]
            prev = cum[b] - w
            frac = min(1.0, max(0.0, (target - prev) / w))
        u = (b + frac) / _BINS_PER_DECADE
        return 1.0 - 10.0**-u

    def __repr__(self) -> str:
        return f"QuantileSketch(half_life={self.half_life!r})"


# --------------------------------------------------------------------------- thresholds


class AdaptiveThreshold:
    """Per-key adaptive threshold on calibrated scores, and severity tiers.

    A key's threshold is ``config.min_score`` until it has learnt
    ``config.warmup`` scores, then ``max(min_score, q)`` with ``q`` the
    ``config.quantile`` of its recent learnt scores (:class:`QuantileSketch`).
    The threshold used for a score is computed *before* that score is learnt,
    so it depends only on earlier events.

    Which scores are learnt is the caller's policy; :meth:`observe` implements
    the one :mod:`streamsift.models.alerting` uses: every score below the
    threshold is learnt, and so is the *first* exceedance of an episode, but
    exceedances that continue an open episode (``continuing=True``) are not.
    A persisting anomaly therefore contributes one score, not hundreds, and
    cannot raise its own threshold. (Learning no exceedance at all would
    censor the sketch at the threshold: its quantile would then sit below the
    threshold and the threshold could never rise above ``min_score``.)

    >>> cfg = ThresholdConfig(min_score=0.5, quantile=0.9, warmup=10, warning=0.97, critical=0.995)
    >>> at = AdaptiveThreshold(cfg, half_life=None)
    >>> st = at.new_state()
    >>> for i in range(9):
    ...     at.learn_one(st, 0.96)
    >>> at.threshold(st)  # still warming up
    0.5
    >>> at.learn_one(st, 0.96); round(at.threshold(st), 3)
    0.96
    >>> [at.severity(s, 0.96) for s in (0.9, 0.96, 0.97, 0.999)]
    ['', 'info', 'warning', 'critical']
    """

    __slots__ = ("config", "sketch", "_min", "_q", "_warmup", "_warn", "_crit")

    def __init__(self, config: ThresholdConfig, half_life: float | None = 250.0) -> None:
        if not isinstance(config, ThresholdConfig):
            raise ValueError(f"config must be a ThresholdConfig; got {type(config).__name__}")
        self.config = config
        self.sketch = QuantileSketch(half_life)
        self._min = config.min_score
        self._q = config.quantile
        self._warmup = max(1, config.warmup)
        self._warn = config.warning
        self._crit = config.critical

    def new_state(self) -> SketchState:
        """A fresh per-key state.

        >>> AdaptiveThreshold(ThresholdConfig()).new_state().count
        0
        """
        return self.sketch.new_state()

    def threshold(self, state: SketchState) -> float:
        """The key's current threshold.

        >>> AdaptiveThreshold(ThresholdConfig(min_score=0.8)).threshold(SketchState())
        0.8
        """
        if state.count < self._warmup:
            return self._min
        q = self.sketch.quantile(state, self._q)
        return q if q > self._min else self._min

    def learn_one(self, state: SketchState, score: float) -> None:
        """Learn one calibrated score unconditionally.

        >>> at = AdaptiveThreshold(ThresholdConfig()); st = at.new_state()
        >>> at.learn_one(st, 0.5); st.count
        1
        """
        self.sketch.learn_one(state, score)

    def severity(self, score: float, threshold: float) -> str:
        """ "" below the threshold, else info / warning / critical.

        >>> AdaptiveThreshold(ThresholdConfig()).severity(0.98, 0.99)
        ''
        >>> AdaptiveThreshold(ThresholdConfig()).severity(0.98, 0.9)
        'warning'
        """
        if score < threshold:
            return ""
        if score >= self._crit:
            return "critical"
        if score >= self._warn:
            return "warning"
        return "info"

    def observe(
        self, state: SketchState, score: float, *, continuing: bool = False
    ) -> tuple[float, str]:
        """Threshold (from earlier scores) and severity of ``score``, then learn it
        unless it is an exceedance that continues an open episode.

        >>> at = AdaptiveThreshold(ThresholdConfig(min_score=0.9)); st = at.new_state()
        >>> at.observe(st, 0.95), st.count
        ((0.9, 'info'), 1)
        >>> at.observe(st, 0.95, continuing=True), st.count
        ((0.9, 'info'), 1)
        """
        thr = self.threshold(state)
        sev = self.severity(score, thr)
        if not (continuing and sev):
            self.sketch.learn_one(state, score)
        return thr, sev

    def __repr__(self) -> str:
        return f"AdaptiveThreshold({self.config!r}, half_life={self.sketch.half_life!r})"
