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
flagged visits of the bin it jumps by the mean offset of the field's recent
flagged points from their bins' means (at most ``readapt_after`` of them, in a
row) and takes their spread as its variance (a sustained level shift becomes
the new normal). A visit that is not flagged ends the bin's run; a point that
is not flagged ends the field's run of offsets.

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
(causal). The state (:class:`SeasonalState`) has a fixed size
``O(fields x season_bins)``, independent of the event rate: ``8 + 4 * (2 +
likelihood_window) + 44 F + 4 F season_bins`` bytes for F fields (1,000 bytes for
4 fields, 48 bins and a window of 10). Each bin is one 32-bit word: a 12-bit
mean code relative to the field's seen range (``MEAN_STEPS`` codes per range,
re-based when a value leaves their reach), a 12-bit log-scale variance code
(``VAR_STEPS`` codes per octave) and 8 bits of visit count / run length; every
other statistic is float32, and the counts the level baseline and the
likelihood need are derived from the event count. Codes are rounded
stochastically (unbiased) with a dither that is a function of the event count
and the field, so the state stays deterministic. Every update is rounded to its
stored precision as it is stored, so a state that is encoded and decoded between
two events gives exactly the same scores as one kept in memory; values are
clamped to +-``X_LIMIT`` (1e18) so that squared deviations stay finite.

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
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from streamsift.config import DetectorConfig
from streamsift.models.likelihood import AnomalyLikelihood

__all__ = ["DETECTOR_REASON", "DetectorResult", "SeasonalDetector", "SeasonalState"]

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
#: a bin's mean is a 12-bit code: ``mean = centre + step * (code - 2048)``, with
#: ``step`` = the field's seen range / MEAN_STEPS (re-based when a value leaves
#: the codes' reach, about 1.5 times the range)
MEAN_STEPS = 2700.0
_MEAN_MID = 2048
_MEAN_MAX = 4095
#: a bin's variance is a 12-bit code ``k``: ``var = step ** 2 * 2 ** ((k - 1) /
#: VAR_STEPS)`` (k = 0: no spread): its standard deviation to within 0.14 %
VAR_STEPS = 128.0
_VAR_MAX = 4095
_VAR_TABLE = (0.0,) + tuple(2.0 ** ((k - 1) / VAR_STEPS) for k in range(1, _VAR_MAX + 1))
_SD_TABLE = (0.0,) + tuple(2.0 ** ((k - 1) / (2.0 * VAR_STEPS)) for k in range(1, _VAR_MAX + 1))
# dither of the codes (stochastic rounding, deterministic: from the event count
# and the field): fractional parts of multiples of the golden ratio
_PHI = 0.6180339887498949
_PSI = 0.7548776662466927
# per-field floats: level mean, level variance, resolution, previous value, lo, hi,
# code centre, code step, run length, run mean offset, run offset variance
_FW = 11
#: learning rates of a bin's first visits kept in a table (see __init__)
RATE_TABLE_MAX = 4096
_log2 = math.log2
_floor = math.floor
_BIG_ENDIAN = sys.byteorder == "big"
#: tail_to_score's floor for TAIL_DECADES (inlined in SeasonalDetector.step)
_TAIL_FLOOR = 10.0**-TAIL_DECADES
#: a bin's mean code minus _MEAN_MID, as a float (``s * (code - 2048)``, exactly)
_MEAN_OFF = tuple(float(k - _MEAN_MID) for k in range(_MEAN_MAX + 1))
#: a field's first nine / four floats in native float32 (the layout of array("f"))
_F9 = struct.Struct("@9f")
_F4 = struct.Struct("@4f")
#: builds a DetectorResult without the NamedTuple's Python-level __new__
_new_result = tuple.__new__


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


@dataclass(eq=True, slots=True)
class SeasonalState:
    """Per-key state of a :class:`SeasonalDetector`; it holds exactly what
    :meth:`SeasonalDetector.encode` writes:

    * ``floats`` (float32): the likelihood's buffer, then per field 11 floats
      (level mean and variance, resolution, previous value, lo, hi, the centre
      and step of its bins' mean codes, and the field's run of flagged points:
      length, mean offset from the bins' means, variance of the offsets);
    * ``words`` (uint32, uint64 for long runs): events seen, quiet events left,
      then per field and bin one word: the 12-bit mean code (bits 0-11), the
      12-bit variance code (bits 12-23) and the visit count or the bin's run of
      flagged visits (bits 24 and up).

    >>> det = SeasonalDetector(("x",), DetectorConfig(season_bins=4))
    >>> st = det.new_buffer()
    >>> st.floats.typecode, st.words.typecode, len(st.words)
    ('f', 'I', 6)
    >>> det.decode(det.encode(st)) == st
    True
    """

    floats: array
    words: array


class SeasonalDetector:
    """Seasonal, level and range baselines per field + anomaly likelihood, on a
    compact per-key :class:`SeasonalState` (see the module doc for the method).

    ``nbytes``, the size of the encoded state: ``8 + 4 * (2 + likelihood_window)
    + 44 F + 4 F season_bins`` bytes for F fields (8 bytes per bin and for the
    two counts when ``readapt_after`` or ``season_min_visits`` is above 64).

    >>> det = SeasonalDetector(("a", "b"), DetectorConfig(season_bins=4))
    >>> det.nbytes, len(det.encode(det.new_buffer()))
    (176, 176)
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
        self._fields_o = self.likelihood.size
        self._nb = cfg.season_bins
        self._bin_s = cfg.season_period_s / cfg.season_bins
        self._period = cfg.season_period_s
        self._n_floats = self._fields_o + _FW * self.n_fields
        a0 = 1.0 - 0.5 ** (1.0 / cfg.season_half_life)
        # visits before a bin's baseline is scored: its weight (1 - (1 - a0) ** v) / a0
        # reaches season_min_visits (never, if it cannot)
        w, v_min = 0.0, 0
        if cfg.season_min_visits * a0 >= 1.0:  # above the weight's limit 1 / a0
            v_min = 1 << 41
        while w < cfg.season_min_visits and v_min < 1 << 20:
            w = w * (1.0 - a0) + 1.0
            v_min += 1
        # count code of a bin: c <= vcap: c visits; c > vcap: a run of c - vcap
        # flagged visits (the bin then counts as fully visited)
        narrow = cfg.readapt_after <= 64 and (v_min <= 64 or v_min > 1 << 40)
        self._ctype = "I" if narrow else "Q"
        self._vcap = (255 if narrow else (1 << 40) - 1) - max(cfg.readapt_after - 1, 0)
        self._min_visits = v_min if v_min <= self._vcap else self._vcap + 1
        self.nbytes = 4 * self._n_floats + (4 if narrow else 8) * (2 + self.n_fields * self._nb)
        # the level baseline's learning rate: AnomalyLikelihood.rate() (inlined in step)
        level = AnomalyLikelihood(1, cfg.level_half_life)
        self._lvl_alpha = level._alpha
        self._lvl_keep = level._keep
        self._lvl_settled = level._settled
        # learning rate of a bin's visit after v visits: 1 / its weight, then a0
        keep = 1.0 - a0
        n_rates = min(self._vcap, int(math.log(1e-9) / math.log(keep)) + 2) if keep > 0.0 else 2
        # visits below n_rates learn at a0 / (1 - keep ** (v + 1)); the first
        # RATE_TABLE_MAX of them come from a table, the rest (slow half-lives with
        # wide count codes only) are computed by the same expression in step()
        self._n_rates = n_rates
        self._rates = (
            1.0,
            *(a0 / (1.0 - (1.0 - a0) ** (v + 1)) for v in range(1, min(n_rates, RATE_TABLE_MAX))),
        )
        self._a_season = a0
        self._thr = cfg.flag_z
        self._readapt = cfg.readapt_after
        self._warmup = cfg.warmup_events
        self._margin = cfg.spatial_margin
        self._alert = cfg.alert_score
        self._cap = math.nextafter(cfg.alert_score, 0.0)
        self._suppress = cfg.suppress_events

    # -- state -------------------------------------------------------------------
    def new_buffer(self) -> SeasonalState:
        """A zeroed state for a new key."""
        n_words = 2 + self.n_fields * self._nb
        return SeasonalState(
            array("f", bytes(4 * self._n_floats)),
            array(self._ctype, bytes(array(self._ctype).itemsize * n_words)),
        )

    def encode(self, st: SeasonalState) -> bytes:
        """Little-endian bytes of ``st`` (``nbytes`` long).

        >>> det = SeasonalDetector(("x",), DetectorConfig(season_bins=2))
        >>> len(det.encode(det.new_buffer())) == det.nbytes
        True
        """
        if _BIG_ENDIAN:
            data = _swapped(st.floats).tobytes() + _swapped(st.words).tobytes()
        else:
            data = st.floats.tobytes() + st.words.tobytes()
        if len(data) != self.nbytes:
            raise ValueError(f"state must encode to {self.nbytes} bytes; got {len(data)}")
        return data

    def decode(self, data: bytes) -> SeasonalState:
        """Inverse of :meth:`encode`.

        >>> SeasonalDetector(("x",), DetectorConfig()).decode(b"")
        Traceback (most recent call last):
        ...
        ValueError: data must be 292 bytes for 1 field(s) and 48 bins; got 0
        """
        if len(data) != self.nbytes:
            raise ValueError(
                f"data must be {self.nbytes} bytes for {self.n_fields} field(s) and "
                f"{self._nb} bins; got {len(data)}"
            )
        k = 4 * self._n_floats
        floats = array("f")
        floats.frombytes(data[:k])
        words = array(self._ctype)
        words.frombytes(data[k:])
        if _BIG_ENDIAN:
            floats.byteswap()
            words.byteswap()
        return SeasonalState(floats, words)

    def bin_state(self, st: SeasonalState, field: int, b: int) -> tuple[int, float, float, int]:
        """(visits, mean, variance, current run of flagged visits) of bin ``b`` of
        field number ``field``, decoded. Read-only.

        >>> det = SeasonalDetector(("x",), DetectorConfig(season_bins=2))
        >>> st = det.new_buffer()
        >>> for i in range(3):
        ...     _ = det.step(st, 0.0, [10.0 + i])
        >>> det.bin_state(st, 0, 0)
        (3, 11.06593, 0.6659335, 0)
        """
        o = self._fields_o + _FW * field
        c, s = st.floats[o + 6], st.floats[o + 7]
        word = st.words[2 + field * self._nb + b]
        cc = word >> 24
        visits, run = (cc, 0) if cc <= self._vcap else (self._vcap, cc - self._vcap)
        mean = c + s * ((word & 0xFFF) - _MEAN_MID)
        var = s * s * _VAR_TABLE[(word >> 12) & 0xFFF]
        return visits, float(f"{mean:.7g}"), float(f"{var:.7g}"), run

    def _rebase(self, st: SeasonalState, j: int, lo: float, hi: float) -> None:
        """Re-centre field ``j``'s mean codes on ``[lo, hi]`` (a value left the
        codes' reach) and re-encode its bins."""
        fl = st.floats
        o = self._fields_o + _FW * j
        c_old, s_old = fl[o + 6], fl[o + 7]
        span = hi - lo
        fl[o + 6] = 0.5 * (lo + hi)
        c = fl[o + 6]
        fl[o + 7] = span / MEAN_STEPS if span > 0.0 else max(abs(c), 1e-30) * 2.0**-20
        s = fl[o + 7]
        if s_old <= 0.0:
            return
        bins = st.words
        shift = VAR_STEPS * _log2(s_old / s) * 2.0
        for i in range(2 + j * self._nb, 2 + (j + 1) * self._nb):
            word = bins[i]
            q = round((c_old + s_old * ((word & 0xFFF) - _MEAN_MID) - c) / s) + _MEAN_MID
            q = 0 if q < 0 else (_MEAN_MAX if q > _MEAN_MAX else q)
            k = (word >> 12) & 0xFFF
            if k:
                k = round(k + shift)
                k = 1 if k < 1 else (_VAR_MAX if k > _VAR_MAX else k)
            bins[i] = q | k << 12 | (word >> 24) << 24

    def _start(self, st: SeasonalState, b: int, xs: Sequence[float]) -> list:
        """Learn the key's first event (every baseline starts at it); its deviations."""
        fl = st.floats
        bins = st.words
        o = self._fields_o
        i = 2 + b
        devs = []
        for j, x in enumerate(xs):
            if not -X_LIMIT <= x <= X_LIMIT:
                x = X_LIMIT if x > 0.0 else (-X_LIMIT if x < 0.0 else 0.0)
            fl[o] = fl[o + 3] = fl[o + 4] = fl[o + 5] = x
            fl[o + 1] = 0.0
            self._rebase(st, j, x, x)
            mq = round((x - fl[o + 6]) / fl[o + 7]) + _MEAN_MID
            bins[i] = (0 if mq < 0 else (_MEAN_MAX if mq > _MEAN_MAX else mq)) | 1 << 24
            devs.append((0.0, x, 0.0, 0.0, False))
            o += _FW
            i += self._nb
        return devs

    def step(self, st: SeasonalState, ts: float, xs: Sequence[float]) -> DetectorResult:
        """Score an event at event time ``ts`` (seconds) with finite values ``xs``
        (one per field) from the state before it, then learn it."""
        # Hot path (once per event of every key): attributes and constants are
        # hoisted to locals; a field's first nine floats are read with one
        # struct.unpack_from and its first four written back with one pack_into
        # (native float32, the same C cast as array("f") item access, so the bytes
        # are identical). A value the event has stored itself is re-read from
        # ``fl`` (float32-rounded) where the update uses it (re-base, run offsets).
        fl = st.floats
        head = bins = st.words  # events seen, quiet events left, then the bins
        n = head[0]
        nb = self._nb
        b = int((ts % self._period) // self._bin_s)
        if b >= nb:  # float rounding at the period's end
            b = nb - 1
        spatial = False
        zmax = 0.0
        if n == 0:
            devs = self._start(st, b, xs)
        else:
            warm = n >= FLAG_WARMUP
            # AnomalyLikelihood.rate(n) of the level baseline, inlined
            a_lvl = (
                self._lvl_alpha
                if n >= self._lvl_settled
                else self._lvl_alpha / (1.0 - self._lvl_keep ** (n + 1))
            )
            b_lvl = 1.0 - a_lvl
            rates = self._rates
            n_table = len(rates)
            n_rates = self._n_rates
            a0 = self._a_season
            vcap = self._vcap
            thr = self._thr  # > 0 (validated): |zs| >= thr flags, zs = 0 never does
            readapt = self._readapt
            min_visits = self._min_visits
            margin = self._margin if n >= self._warmup else 0.0
            sd_table = _SD_TABLE
            var_table = _VAR_TABLE
            mean_off = _MEAN_OFF
            read9 = _F9.unpack_from
            write4 = _F4.pack_into
            sqrt = math.sqrt
            floor_ = _floor
            log2 = _log2
            xlim = X_LIMIT
            nxlim = -X_LIMIT
            psi = _PSI
            z_cap = _Z_CAP
            o = self._fields_o
            i = 2 + b
            u = (n * _PHI) % 1.0
            devs = []
            add_dev = devs.append
            for x in xs:
                if not nxlim <= x <= xlim:
                    x = xlim if x > 0.0 else (-xlim if x < 0.0 else 0.0)
                # u = (u + _PSI) % 1.0 (exact: fmod(a, 1.0) is a - 1.0 for a in [1, 2))
                u += psi
                if u >= 1.0:
                    u -= 1.0
                # level mean, variance, resolution, previous value, lo, hi, code
                # centre and step, run length (as stored before this event)
                m, v, q, p, lo, hi, c, s, rk = read9(fl, 4 * o)
                floor = 0.5 * q
                # level baseline
                rel = 1e-3 * (m if m >= 0.0 else -m) + 1e-9
                f = floor if floor > rel else rel
                sd = sqrt(v) if v > 0.0 else 0.0
                zl = (x - m) / (sd if sd > f else f)
                # seasonal bin
                word = bins[i]
                cc = word >> 24
                if cc > vcap:
                    visits = vcap
                    run = cc - vcap
                else:
                    visits = cc
                    run = 0
                mb = c + s * mean_off[word & 0xFFF]
                kb = (word >> 12) & 0xFFF
                if visits >= min_visits:
                    rel = 1e-3 * (mb if mb >= 0.0 else -mb) + 1e-9
                    f = floor if floor > rel else rel
                    sd = s * sd_table[kb]
                    zs = (x - mb) / (sd if sd > f else f)
                    azs = zs if zs >= 0.0 else -zs
                else:
                    zs = azs = 0.0
                azl = zl if zl >= 0.0 else -zl
                if azs > azl:
                    if azs > z_cap:
                        azs = z_cap
                        zs = z_cap if zs > 0.0 else -z_cap
                    if azs > zmax:
                        zmax = azs
                    add_dev((azs, x, mb, zs, True))
                else:
                    if azl > z_cap:
                        azl = z_cap
                        zl = z_cap if zl > 0.0 else -z_cap
                    if azl > zmax:
                        zmax = azl
                    add_dev((azl, x, m, zl, False))
                if margin > 0.0:
                    span = margin * (hi - lo)
                    if x > hi + span or x < lo - span:
                        spatial = True
                # the bin's mean codes must reach x (bin means stay inside the seen range);
                # 2048.0 = _MEAN_MID, 2047.0 = _MEAN_MAX - _MEAN_MID
                if not c - 2048.0 * s <= x <= c + 2047.0 * s:
                    self._rebase(st, (o - self._fields_o) // _FW, min(x, lo), max(x, hi))
                    c = fl[o + 6]
                    s = fl[o + 7]
                    word = bins[i]
                    mb = c + s * mean_off[word & 0xFFF]
                    kb = (word >> 12) & 0xFFF
                # azs >= thr: |zs| >= thr with zs as capped above
                if azs >= thr and warm:
                    # flagged: not learnt; it extends the field's run of offsets and the
                    # bin's run
                    d = x - mb
                    rk += 1.0
                    if rk > readapt:
                        rk = readapt
                    ra = 1.0 / rk
                    rm = fl[o + 9]
                    e = d - rm
                    fl[o + 8] = rk
                    fl[o + 9] = rm + ra * e
                    fl[o + 10] = (1.0 - ra) * (fl[o + 10] + ra * e * e)
                    run += 1
                    if run < readapt:
                        bins[i] = (word & 0xFFFFFF) | (vcap + run) << 24
                        mb = None
                    else:  # a sustained change: the bin jumps by the run's mean offset and spread
                        mb += fl[o + 9]  # as stored (float32)
                        vb = fl[o + 10]
                        cc = visits
                else:
                    if rk:  # the run length is 0.0 or >= 1.0: skip rewriting a 0.0
                        fl[o + 8] = 0.0
                    if visits == 0:
                        mb = x
                        vb = 0.0
                    else:
                        if visits < n_table:
                            a = rates[visits]
                        elif visits < n_rates:  # beyond the table: as it is built
                            a = a0 / (1.0 - (1.0 - a0) ** (visits + 1))
                        else:
                            a = a0
                        d = x - mb
                        mb += a * d
                        vb = (1.0 - a) * (s * s * var_table[kb] + a * d * d)
                    cc = visits + 1 if visits < vcap else visits
                if mb is not None:
                    mq = floor_((mb - c) / s + u) + 2048  # _MEAN_MID
                    mq = 0 if mq < 0 else (4095 if mq > 4095 else mq)  # _MEAN_MAX
                    if vb > 0.0:
                        k = floor_(128.0 * log2(vb / (s * s)) + 1.0 + u)  # VAR_STEPS
                        k = 1 if k < 1 else (4095 if k > 4095 else k)  # _VAR_MAX
                        bins[i] = mq | k << 12 | cc << 24
                    else:
                        bins[i] = mq | cc << 24
                # range and resolution
                if x < lo:
                    fl[o + 4] = x
                if x > hi:
                    fl[o + 5] = x
                d = x - p if x >= p else p - x
                if d > 0.0 and (d < q or q == 0.0):
                    q = d
                # learn: the level baseline learns every point; with the resolution (q
                # rewritten as read when unchanged) and the previous value, one write
                d = x - m
                write4(fl, 4 * o, m + a_lvl * d, b_lvl * (v + a_lvl * d * d), q, x)
                o += _FW
                i += nb
        raw = 1.0 - math.exp(-zmax / RAW_SCALE)
        tail = self.likelihood.step(fl, 0, raw, n)
        if n < 0xFFFFFFFF:
            head[0] = n + 1
        deviations = tuple(devs)
        if n + 1 < self._warmup:
            return _new_result(DetectorResult, (0.0, zmax, tail, False, deviations))
        if spatial and zmax >= SPATIAL_MIN_Z:
            score = 1.0
        else:
            spatial = False
            # tail_to_score(tail, TAIL_DECADES), inlined
            if tail >= 1.0:
                score = 0.0
            else:
                score = -math.log10(tail if tail > _TAIL_FLOOR else _TAIL_FLOOR) / TAIL_DECADES
                score = 1.0 if score > 1.0 else (0.0 if score < 0.0 else score)
        quiet = head[1]
        if quiet > 0:
            head[1] = quiet - 1
            if score > self._cap:
                score = self._cap
        elif self._suppress and score >= self._alert:
            head[1] = self._suppress
        return _new_result(DetectorResult, (score, zmax, tail, spatial, deviations))


def _swapped(a: array) -> array:
    b = array(a.typecode, a)
    b.byteswap()
    return b
