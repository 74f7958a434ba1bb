"""Per-key seasonal detector with anomaly-likelihood scores (stage-1 companion).

:class:`SeasonalDetector` scores each event of a key in [0, 1] so that one
threshold means the same on every stream. Per field it keeps

* a *level* baseline: exponentially weighted mean and variance (half-life
  ``level_half_life`` events) of every point -> ``z_level``. It is a broad,
  slow reference (for values whose seasonal bin has no history yet, and for
  anything far outside the key's usual spread); it learns every point, because
  a level baseline on a strongly seasonal stream would otherwise flag half of
  every day and re-adapt back and forth between its plateaus;
* a *seasonal* baseline per bin of the period (``season_bins`` bins of
  ``season_period_s`` seconds of event time, UTC; time of day by default, time of
  week with ``604800``), each a weighted mean and variance with a half-life in
  visits of the bin -> ``z_season`` (used once the bin has ``season_min_visits``);
* the key's seen range ``[lo, hi]`` (all values) and the value resolution (the
  smallest nonzero step between consecutive values; half of it floors every
  divisor, so a count that is mostly constant cannot explode its z).

Pre-filter policy of every seasonal bin (after 50 events of the key): a point
with ``|z_season| >= flag_z`` is flagged and NOT learnt, so spikes and dips
cannot drag the bin toward themselves; after ``readapt_after`` consecutive
flagged visits of the bin it jumps to the run's mean and spread (a sustained
level shift becomes the new normal). A visit that is not flagged ends the run.

Raw score of an event: the largest ``max(|z_level|, |z_season|)`` over the
fields, mapped to ``1 - exp(-z / 3)``. The raw score goes through
:class:`~streamsift.models.likelihood.AnomalyLikelihood` (short-term mean of
``likelihood_window`` raw scores against their long-term distribution), whose
tail probability becomes the score ``min(1, -log10(tail) / 12)`` (tail 1e-6 ->
0.5). A value beyond the seen range by more than ``spatial_margin`` of the range,
with ``|z| >= 4``, scores 1.0 (a new extreme; Numenta's "spatial anomaly"). Nothing scores above 0
before ``warmup_events``. After an event scores ``>= alert_score`` the next
``suppress_events`` events are capped just below ``alert_score`` (one alert per
incident; the likelihood and baselines keep learning).

Every output depends only on the key's earlier events and the event itself
(causal); the state is a flat float32 ``array("f")`` of fixed size
``O(fields x season_bins)``, independent of the event rate: ``4 * (17 + F * (6 *
season_bins + 7))`` bytes (4.7 KB for 4 fields and 48 bins). Every update is
rounded to float32 as it is stored, so a state that is encoded and decoded
between two events gives exactly the same scores as one kept in memory; values
are clamped to +-``X_LIMIT`` (1e18) so that squared deviations stay finite.

>>> from streamsift.config import DetectorConfig
>>> det = SeasonalDetector(("x",), DetectorConfig(warmup_events=100, suppress_events=0))
>>> buf = det.new_buffer()
>>> scores = [det.step(buf, 300.0 * i, [10.0 + (i % 5) * 0.1]).score for i in range(400)]
>>> max(scores) < 0.5
True
>>> res = det.step(buf, 300.0 * 400, [25.0])
>>> res.score, res.spatial
(1.0, True)
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from streamsift.config import DetectorConfig
from streamsift.models.likelihood import AnomalyLikelihood, tail_to_score

__all__ = ["DETECTOR_REASON", "DetectorResult", "SeasonalDetector"]

#: ``Reason.feature`` of the explanation line that carries the detector's verdict
#: (value = its score, baseline = ``alert_score``, deviation = its largest signed z)
DETECTOR_REASON = "anomaly_score"

#: events per key before any baseline may flag a point
FLAG_WARMUP = 50
#: a new extreme scores 1.0 only if its largest |z| is at least this (a Gaussian
#: stream keeps stretching its range by a little now and then)
SPATIAL_MIN_Z = 4.0
#: z -> raw score scale: raw = 1 - exp(-z / RAW_SCALE)
RAW_SCALE = 3.0
#: decades of tail probability mapped onto [0, 1]
TAIL_DECADES = 12.0
_Z_CAP = 1e6
#: values are clamped to +-this before they reach the float32 baselines (their
#: squared deviations must stay finite in float32, max 3.4e38)
X_LIMIT = 1e18
# seasonal slot: weight, mean, variance, run count, run mean, run M2
_SLOT = 6
# level slot (never flags, so no run): weight, mean, variance
_LVL = 3
# detector header: events seen, quiet events left
_HEAD = 2


class DetectorResult(NamedTuple):
    """Output of :meth:`SeasonalDetector.step` for one event.

    >>> DetectorResult(0.7, 2.5, 1e-8, False).score
    0.7
    """

    #: anomaly score in [0, 1] (after warm-up, spatial rule and suppression)
    score: float
    #: largest |z| over fields and baselines
    z: float
    #: likelihood tail probability of the short-term raw-score mean
    tail: float
    #: the value left the key's seen range by more than the margin
    spatial: bool
    #: per field, in field order: (|z|, value, baseline mean, signed z, True if the
    #: seasonal bin's baseline gave the larger |z| else False for the level baseline)
    deviations: tuple[tuple[float, float, float, float, bool], ...] = ()


def _new_z(buf: array, o: int, x: float, floor: float) -> float:
    w = buf[o]
    if w <= 0.0:
        return 0.0
    m = buf[o + 1]
    v = buf[o + 2]
    sd = math.sqrt(v) if v > 0.0 else 0.0
    rel = 1e-3 * (m if m >= 0.0 else -m) + 1e-9
    if floor < rel:
        floor = rel
    z = (x - m) / (sd if sd > floor else floor)
    return _Z_CAP if z > _Z_CAP else (-_Z_CAP if z < -_Z_CAP else z)


class SeasonalDetector:
    """Seasonal, level and range baselines per field + anomaly likelihood, on a
    flat buffer (see the module doc for the method).

    Buffer layout (float32): 2 header floats (events seen, quiet events left),
    the likelihood's buffer, then per field a level slot (weight, mean,
    variance), ``season_bins`` seasonal slots (6 floats each: weight, mean,
    variance, run count, run mean, run M2) and 4 floats (resolution, previous
    value, lo, hi).

    >>> det = SeasonalDetector(("a", "b"), DetectorConfig(season_bins=4))
    >>> det.size, det.new_buffer().itemsize
    (79, 4)
    >>> SeasonalDetector((), DetectorConfig())
    Traceback (most recent call last):
    ...
    ValueError: field_names must be a non-empty sequence of names; got ()
    """

    def __init__(self, field_names: Sequence[str], cfg: DetectorConfig) -> None:
        if isinstance(field_names, (str, bytes)) or not field_names:
            raise ValueError(
                f"field_names must be a non-empty sequence of names; got {field_names!r}"
            )
        if not isinstance(cfg, DetectorConfig):
            raise ValueError(f"cfg must be a DetectorConfig; got {type(cfg).__name__}")
        self.field_names = tuple(str(f) for f in field_names)
        self.cfg = cfg
        self.n_fields = len(self.field_names)
        self.likelihood = AnomalyLikelihood(cfg.likelihood_window, cfg.likelihood_half_life)
        self._lik_o = _HEAD
        self._fields_o = _HEAD + self.likelihood.size
        self._nb = cfg.season_bins
        self._bin_s = cfg.season_period_s / cfg.season_bins
        self._period = cfg.season_period_s
        self.field_width = _LVL + _SLOT * self._nb + 4
        self.size = self._fields_o + self.n_fields * self.field_width
        self._a_level = 1.0 - 0.5 ** (1.0 / cfg.level_half_life)
        self._a_season = 1.0 - 0.5 ** (1.0 / cfg.season_half_life)
        self._thr = cfg.flag_z
        self._readapt = cfg.readapt_after
        self._min_visits = cfg.season_min_visits
        self._warmup = cfg.warmup_events
        self._margin = cfg.spatial_margin
        self._alert = cfg.alert_score
        self._cap = math.nextafter(cfg.alert_score, 0.0)
        self._suppress = cfg.suppress_events

    def new_buffer(self) -> array:
        """A zeroed state buffer for a new key: float32 (``array("f")``), so
        every update is rounded to what an encoded state holds."""
        return array("f", bytes(4 * self.size))

    def _learn(self, buf: array, o: int, x: float, z: float, flag: bool, a0: float) -> None:
        """Learn ``x`` into seasonal slot ``o`` unless flagged (then extend the
        run, and jump to the run's level after ``readapt_after`` flagged points)."""
        if flag and (z >= self._thr or z <= -self._thr):
            k = buf[o + 3] + 1.0
            d = x - buf[o + 4]
            buf[o + 3] = k
            buf[o + 4] += d / k
            buf[o + 5] += d * (x - buf[o + 4])
            if k >= self._readapt:
                buf[o + 1] = buf[o + 4]
                buf[o + 2] = buf[o + 5] / k
                buf[o + 3] = buf[o + 4] = buf[o + 5] = 0.0
            return
        if buf[o + 3] != 0.0:
            buf[o + 3] = buf[o + 4] = buf[o + 5] = 0.0
        self._learn_plain(buf, o, x, a0)

    @staticmethod
    def _learn_plain(buf: array, o: int, x: float, a0: float) -> None:
        """Learn ``x`` into the weight, mean and variance at ``o``."""
        w = buf[o]
        if w <= 0.0:
            buf[o] = 1.0
            buf[o + 1] = x
            buf[o + 2] = 0.0
            return
        w = w * (1.0 - a0) + 1.0
        a = a0 if a0 > 1.0 / w else 1.0 / w
        d = x - buf[o + 1]
        buf[o] = w
        buf[o + 1] += a * d
        buf[o + 2] = (1.0 - a) * (buf[o + 2] + a * d * d)

    def step(self, buf: array, ts: float, xs: Sequence[float]) -> DetectorResult:
        """Score an event at event time ``ts`` (seconds) with finite values ``xs``
        (one per field) from the state before it, then learn it."""
        n = buf[0]
        warm = n >= FLAG_WARMUP
        b = int((ts % self._period) // self._bin_s)
        if b >= self._nb:  # float rounding at the period's end
            b = self._nb - 1
        spatial = False
        zmax = 0.0
        o = self._fields_o
        fw = self.field_width
        devs = []
        for x in xs:
            if not -X_LIMIT <= x <= X_LIMIT:
                x = X_LIMIT if x > 0.0 else (-X_LIMIT if x < 0.0 else 0.0)
            lvl = o
            so = o + _LVL + _SLOT * b
            ro = o + _LVL + _SLOT * self._nb
            q = buf[ro]
            floor = 0.5 * q
            zl = _new_z(buf, lvl, x, floor)
            seasonal = buf[so] >= self._min_visits
            zs = _new_z(buf, so, x, floor) if seasonal else 0.0
            use_s = abs(zs) > abs(zl)
            az = abs(zs) if use_s else abs(zl)
            if az > zmax:
                zmax = az
            devs.append((az, x, buf[so + 1] if use_s else buf[lvl + 1], zs if use_s else zl, use_s))
            lo = buf[ro + 2]
            hi = buf[ro + 3]
            if self._margin > 0.0 and n >= self._warmup:
                span = self._margin * (hi - lo)
                if x > hi + span or x < lo - span:
                    spatial = True
            self._learn_plain(buf, lvl, x, self._a_level)  # never flags: learns all
            self._learn(buf, so, x, zs, warm and seasonal, self._a_season)
            if n > 0.0:
                d = x - buf[ro + 1]
                if d < 0.0:
                    d = -d
                if d > 0.0 and (d < q or q == 0.0):
                    buf[ro] = d
                if x < lo:
                    buf[ro + 2] = x
                if x > hi:
                    buf[ro + 3] = x
            else:
                buf[ro + 2] = buf[ro + 3] = x
            buf[ro + 1] = x
            o += fw
        raw = 1.0 - math.exp(-zmax / RAW_SCALE)
        tail = self.likelihood.step(buf, self._lik_o, raw)
        buf[0] = n + 1.0
        deviations = tuple(devs)
        if n + 1.0 < self._warmup:
            return DetectorResult(0.0, zmax, tail, False, deviations)
        spatial = spatial and zmax >= SPATIAL_MIN_Z
        score = 1.0 if spatial else tail_to_score(tail, TAIL_DECADES)
        quiet = buf[1]
        if quiet > 0.0:
            buf[1] = quiet - 1.0
            if score > self._cap:
                score = self._cap
        elif self._suppress and score >= self._alert:
            buf[1] = float(self._suppress)
        return DetectorResult(score, zmax, tail, spatial, deviations)
