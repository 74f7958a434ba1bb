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

The per-event work (:meth:`SeasonalDetector.step`) is one numba-compiled kernel
(``_step_kernel``) on the state's buffers; its interpreted Python (``.py_func``)
gives the same bits (tests/test_seasonal_kernel.py pins this).

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
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamsift.config import DetectorConfig
from streamsift.models.jit import kernel
from streamsift.models.likelihood import AnomalyLikelihood, likelihood_step

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
#: the same tables as float64 arrays, for the compiled kernel
_VAR_ARRAY = np.array(_VAR_TABLE, dtype=np.float64)
_SD_ARRAY = np.array(_SD_TABLE, dtype=np.float64)
# dither of the codes (stochastic rounding, deterministic: from the event count
# and the field): fractional parts of multiples of the golden ratio
_PHI = 0.6180339887498949
_PSI = 0.7548776662466927
# per-field floats: level mean, level variance, resolution, previous value, lo, hi,
# code centre, code step, run length, run mean offset, run offset variance
_FW = 11
#: learning rates of a bin's first visits kept in a table (see __init__)
RATE_TABLE_MAX = 4096
_BIG_ENDIAN = sys.byteorder == "big"
#: tail_to_score's floor for TAIL_DECADES (inlined in the kernel)
_TAIL_FLOOR = 10.0**-TAIL_DECADES
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
        self._n_words = 2 + self.n_fields * self._nb
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
        # everything _step_kernel takes after (floats, words, ts, xs, out), in order
        self._kargs = (
            self._nb,
            float(self._period),
            float(self._bin_s),
            *self.likelihood.kernel_args(),
            self._lvl_alpha,
            self._lvl_keep,
            self._lvl_settled,
            np.array(self._rates, dtype=np.float64),
            n_rates,
            a0,
            self._vcap,
            self._min_visits,
            float(self._thr),
            self._readapt,
            self._warmup,
            float(self._margin),
            float(self._alert),
            self._cap,
            self._suppress,
            _SD_ARRAY,
            _VAR_ARRAY,
        )
        #: zeroed deviations buffer (copied per event: 5 float64 a field)
        self._out0 = bytes(40 * self.n_fields)

    # -- state -------------------------------------------------------------------
    def new_buffer(self) -> SeasonalState:
        """A zeroed state for a new key."""
        n_words = self._n_words
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

    def step(self, st: SeasonalState, ts: float, xs: Sequence[float]) -> DetectorResult:
        """Score an event at event time ``ts`` (seconds) with finite values ``xs``
        (one per field; an ``array("d")`` is used as it is) from the state before
        it, then learn it. The work is :func:`_step_kernel` (compiled)."""
        if type(xs) is not array or xs.typecode != "d":
            xs = array("d", xs)
        if len(xs) > self.n_fields:
            raise ValueError(f"xs must have at most {self.n_fields} values; got {len(xs)}")
        if type(ts) is not float:
            ts = float(ts)
        return self.result(*self._run(st, ts, xs))

    def step_parts(
        self, st: SeasonalState, ts: float, xs: array
    ) -> tuple[float, float, float, bool, array]:
        """:meth:`step` for a caller that needs the deviations only now and then:
        ``(score, z, tail, spatial, out)`` with the deviations still packed in
        ``out`` (5 floats a field); :meth:`result` makes the ``DetectorResult``.
        ``xs`` must be an ``array("d")`` of one value per field (what
        :class:`~streamsift.models.keylogic.KeyLogic` passes).

        >>> det = SeasonalDetector(("x",), DetectorConfig(season_bins=2))
        >>> a, b = det.new_buffer(), det.new_buffer()
        >>> r = det.step(a, 0.0, [1.0]), det.step(a, 60.0, [2.0])
        >>> p = det.step_parts(b, 0.0, array("d", [1.0])), det.step_parts(b, 60.0, array("d", [2.0]))
        >>> [det.result(*x) for x in p] == list(r), a == b
        (True, True)
        """
        if type(xs) is not array or xs.typecode != "d" or len(xs) != self.n_fields:
            raise ValueError(
                f"xs must be an array('d') of {self.n_fields} values; got {_describe(xs)}"
            )
        return self._run(st, ts, xs)

    def _run(
        self, st: SeasonalState, ts: float, xs: array
    ) -> tuple[float, float, float, bool, array]:
        """:func:`_step_kernel` on ``st`` for a float ``ts`` and an ``array("d")``
        of at most ``n_fields`` values (checked by the callers)."""
        # the kernel does not check its indices: a state of another shape must not reach it
        if len(st.floats) != self._n_floats or len(st.words) != self._n_words:
            self._check(st)
        n_x = len(xs)
        out = array("d", self._out0) if n_x == self.n_fields else array("d", bytes(40 * n_x))
        score, zmax, tail, spatial = _step_kernel(st.floats, st.words, ts, xs, out, *self._kargs)
        return score, zmax, tail, spatial, out

    @staticmethod
    def result(score: float, z: float, tail: float, spatial: bool, out: array) -> DetectorResult:
        """The ``DetectorResult`` of :meth:`step_parts`' output."""
        return _new_result(DetectorResult, (score, z, tail, spatial, _deviations(out)))

    def _check(self, st: SeasonalState) -> None:
        """Raise unless ``st`` has this detector's buffer sizes and types."""
        fl, words = st.floats, st.words
        if not (
            type(fl) is array
            and fl.typecode == "f"
            and len(fl) == self._n_floats
            and type(words) is array
            and words.typecode == self._ctype
            and len(words) == self._n_words
        ):
            raise ValueError(
                f"st must hold array('f') of {self._n_floats} and array({self._ctype!r}) of "
                f"{self._n_words} items; got {_describe(fl)} and {_describe(words)}"
            )


def _describe(a: object) -> str:
    if type(a) is array:
        return f"array({a.typecode!r}) of {len(a)}"
    return type(a).__name__


def _deviations(out: array) -> tuple[tuple[float, float, float, float, bool], ...]:
    """The kernel's per-field deviations (5 floats a field) as DetectorResult's tuples."""
    # zip draws from the one iterator in argument order: |z|, value, mean, z, then
    # the flag through bool() (1.0 -> True), field after field
    it = iter(out)
    return tuple(zip(it, it, it, it, map(bool, it)))  # noqa: B905 (one iterator)


# -- compiled kernels --------------------------------------------------------------
# They run on the state's own buffers: ``fl`` is array("f") (float32), ``words`` is
# array("I") or array("Q"). numba keeps float32 OP float32 in float32 and may turn
# uint OP int into float64, while the Python code this replaced computed everything
# in float64 and unbounded ints: so every read of ``fl`` is widened with
# np.float64() and every word read with _i64() before any arithmetic. Writes
# to ``fl`` round to float32 exactly as array("f") item assignment does. Count codes
# are below 2 ** 40, but a uint64 word's codes of a flagged run sit just below that
# (vcap + run, vcap = 2 ** 40 - readapt_after): ``cc << 24`` then overflows int64,
# and the wrapped int64 has exactly the uint64 word's bits (the store keeps them;
# reads mask the count back to 40 bits). round() / floor() become np.rint /
# np.floor, clamped as floats before the int conversion (Python's ints do not
# overflow; numba's would). Powers with a growing integer exponent take it as a
# float (numba computes float ** int by repeated multiplication, Python by pow()).

#: the count field of a word (bits 24 and up; at most 40 bits in a uint64 word)
_CC_MASK = (1 << 40) - 1
_2_M20 = 2.0**-20


@kernel
def _i64(x):
    """``x`` as an int64 (a word read from either typecode, or an integral float):
    the kernels' integers. Interpreted (``.py_func``), ``int`` stands in for it and
    the same code computes on Python's ints, as the pure-Python detector did."""
    return np.int64(x)


@kernel
def _code(t, lo, hi):
    """``t`` (an integral float) clamped to ``[lo, hi]``, as an int."""
    if t < lo:
        return _i64(lo)
    if t > hi:
        return _i64(hi)
    return _i64(t)


@kernel
def _rebase_field(fl, words, o, w0, nb, lo, hi):
    """Re-centre the mean codes of the field whose floats start at ``fl[o]`` and
    bins at ``words[w0]`` on ``[lo, hi]`` (a value left the codes' reach) and
    re-encode its ``nb`` bins."""
    c_old = np.float64(fl[o + 6])
    s_old = np.float64(fl[o + 7])
    span = hi - lo
    fl[o + 6] = 0.5 * (lo + hi)
    c = np.float64(fl[o + 6])
    if span > 0.0:
        fl[o + 7] = span / MEAN_STEPS
    else:
        ac = abs(c)
        fl[o + 7] = (1e-30 if 1e-30 > ac else ac) * _2_M20  # max(abs(c), 1e-30) * 2 ** -20
    s = np.float64(fl[o + 7])
    if s_old <= 0.0:
        return
    shift = VAR_STEPS * math.log2(s_old / s) * 2.0
    for i in range(w0, w0 + nb):
        word = _i64(words[i])
        # round() is half-even, as np.rint
        q = np.rint((c_old + s_old * np.float64((word & 0xFFF) - _MEAN_MID) - c) / s)
        q = _code(q + _MEAN_MID, 0, _MEAN_MAX)
        k = (word >> 12) & 0xFFF
        if k:
            k = _code(np.rint(k + shift), 1, _VAR_MAX)
        words[i] = q | k << 12 | (word >> 24) << 24


@kernel
def _start_fields(fl, words, fo, i, nb, xs, out):
    """Learn the key's first event (every baseline starts at it) into the bin whose
    first field's word is ``words[i]``; fields' floats from ``fl[fo]``. Writes the
    deviations (5 floats a field) to ``out``."""
    o = fo
    for j in range(len(xs)):
        x = xs[j]
        if not (-X_LIMIT <= x and x <= X_LIMIT):
            x = X_LIMIT if x > 0.0 else (-X_LIMIT if x < 0.0 else 0.0)
        fl[o] = x
        fl[o + 3] = x
        fl[o + 4] = x
        fl[o + 5] = x
        fl[o + 1] = 0.0
        _rebase_field(fl, words, o, 2 + j * nb, nb, x, x)
        mq = np.rint((x - np.float64(fl[o + 6])) / np.float64(fl[o + 7]))
        words[i] = _code(mq + _MEAN_MID, 0, _MEAN_MAX) | 1 << 24
        out[5 * j] = 0.0
        out[5 * j + 1] = x
        out[5 * j + 2] = 0.0
        out[5 * j + 3] = 0.0
        out[5 * j + 4] = 0.0
        o += _FW
        i += nb


@kernel
def _step_kernel(
    fl,
    words,
    ts,
    xs,
    out,
    nb,
    period,
    bin_s,
    lik_window,
    lik_alpha,
    lik_keep,
    lik_settled,
    lik_min_sd,
    lvl_alpha,
    lvl_keep,
    lvl_settled,
    rates,
    n_rates,
    a0,
    vcap,
    min_visits,
    thr,
    readapt,
    warmup,
    margin,
    alert,
    cap,
    suppress,
    sd_table,
    var_table,
):
    """One event of :meth:`SeasonalDetector.step` on the state's buffers ``fl`` /
    ``words``: scores it from the state before it, learns it, writes per field
    ``(|z|, value, baseline mean, signed z, 1.0 if seasonal else 0.0)`` to
    ``out[5 j : 5 j + 5]`` and returns ``(score, z, tail, spatial)``."""
    if not ts - ts == 0.0:
        raise ValueError("ts must be a finite number of seconds")
    head = bins = words  # events seen, quiet events left, then the bins
    n = _i64(head[0])
    b = int((ts % period) // bin_s)
    if b >= nb:  # float rounding at the period's end
        b = nb - 1
    fo = 2 + lik_window  # the first field's floats follow the likelihood's
    spatial = False
    zmax = 0.0
    if n == 0:
        _start_fields(fl, words, fo, 2 + b, nb, xs, out)
    else:
        warm = n >= FLAG_WARMUP
        # AnomalyLikelihood.rate(n) of the level baseline
        if n >= lvl_settled:
            a_lvl = lvl_alpha
        else:
            a_lvl = lvl_alpha / (1.0 - lvl_keep ** np.float64(n + 1))
        b_lvl = 1.0 - a_lvl
        n_table = len(rates)
        margin_n = margin if n >= warmup else 0.0
        o = fo
        i = 2 + b
        u = (n * _PHI) % 1.0
        for j in range(len(xs)):
            x = xs[j]
            if not (-X_LIMIT <= x and x <= X_LIMIT):
                x = X_LIMIT if x > 0.0 else (-X_LIMIT if x < 0.0 else 0.0)
            # u = (u + _PSI) % 1.0 (exact: fmod(a, 1.0) is a - 1.0 for a in [1, 2))
            u += _PSI
            if u >= 1.0:
                u -= 1.0
            # level mean, variance, resolution, previous value, lo, hi, code
            # centre and step, run length (as stored before this event)
            m = np.float64(fl[o])
            v = np.float64(fl[o + 1])
            q = np.float64(fl[o + 2])
            p = np.float64(fl[o + 3])
            lo = np.float64(fl[o + 4])
            hi = np.float64(fl[o + 5])
            c = np.float64(fl[o + 6])
            s = np.float64(fl[o + 7])
            rk = np.float64(fl[o + 8])
            floor = 0.5 * q
            # level baseline
            rel = 1e-3 * (m if m >= 0.0 else -m) + 1e-9
            f = floor if floor > rel else rel
            sd = math.sqrt(v) if v > 0.0 else 0.0
            zl = (x - m) / (sd if sd > f else f)
            # seasonal bin
            word = _i64(bins[i])
            cc = (word >> 24) & _CC_MASK
            if cc > vcap:
                visits = vcap
                run = cc - vcap
            else:
                visits = cc
                run = 0
            mb = c + s * np.float64((word & 0xFFF) - _MEAN_MID)
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
                if azs > _Z_CAP:
                    azs = _Z_CAP
                    zs = _Z_CAP if zs > 0.0 else -_Z_CAP
                if azs > zmax:
                    zmax = azs
                out[5 * j] = azs
                out[5 * j + 2] = mb
                out[5 * j + 3] = zs
                out[5 * j + 4] = 1.0
            else:
                if azl > _Z_CAP:
                    azl = _Z_CAP
                    zl = _Z_CAP if zl > 0.0 else -_Z_CAP
                if azl > zmax:
                    zmax = azl
                out[5 * j] = azl
                out[5 * j + 2] = m
                out[5 * j + 3] = zl
                out[5 * j + 4] = 0.0
            out[5 * j + 1] = x
            if margin_n > 0.0:
                span = margin_n * (hi - lo)
                if x > hi + span or x < lo - span:
                    spatial = True
            # the bin's mean codes must reach x (bin means stay inside the seen range);
            # 2048.0 = _MEAN_MID, 2047.0 = _MEAN_MAX - _MEAN_MID
            if not (c - 2048.0 * s <= x and x <= c + 2047.0 * s):
                # min(x, lo), max(x, hi) as Python picks them (the first on a tie)
                _rebase_field(
                    fl, words, o, 2 + j * nb, nb, lo if lo < x else x, hi if hi > x else x
                )
                c = np.float64(fl[o + 6])
                s = np.float64(fl[o + 7])
                word = _i64(bins[i])
                mb = c + s * np.float64((word & 0xFFF) - _MEAN_MID)
                kb = (word >> 12) & 0xFFF
            learn = True  # the bin's new mean / variance codes are written below
            vb = 0.0
            # azs >= thr: |zs| >= thr with zs as capped above (thr > 0: zs = 0 never flags)
            if azs >= thr and warm:
                # flagged: not learnt; it extends the field's run of offsets and the
                # bin's run
                d = x - mb
                rk += 1.0
                if rk > readapt:
                    rk = np.float64(readapt)
                ra = 1.0 / rk
                rm = np.float64(fl[o + 9])
                e = d - rm
                fl[o + 8] = rk
                fl[o + 9] = rm + ra * e
                fl[o + 10] = (1.0 - ra) * (np.float64(fl[o + 10]) + ra * e * e)
                run += 1
                if run < readapt:
                    bins[i] = (word & 0xFFFFFF) | (vcap + run) << 24
                    learn = False
                else:  # a sustained change: the bin jumps by the run's mean offset and spread
                    mb += np.float64(fl[o + 9])  # as stored (float32)
                    vb = np.float64(fl[o + 10])
                    cc = visits
            else:
                if rk != 0.0:  # the run length is 0.0 or >= 1.0: skip rewriting a 0.0
                    fl[o + 8] = 0.0
                if visits == 0:
                    mb = x
                    vb = 0.0
                else:
                    if visits < n_table:
                        a = rates[visits]
                    elif visits < n_rates:  # beyond the table: as it is built
                        a = a0 / (1.0 - (1.0 - a0) ** np.float64(visits + 1))
                    else:
                        a = a0
                    d = x - mb
                    mb += a * d
                    vb = (1.0 - a) * (s * s * var_table[kb] + a * d * d)
                cc = visits + 1 if visits < vcap else visits
            if learn:
                mq = _code(np.floor((mb - c) / s + u) + _MEAN_MID, 0, _MEAN_MAX)
                if vb > 0.0:
                    k = np.floor(VAR_STEPS * math.log2(vb / (s * s)) + 1.0 + u)
                    bins[i] = mq | _code(k, 1, _VAR_MAX) << 12 | cc << 24
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
            # learn: the level baseline learns every point
            d = x - m
            fl[o] = m + a_lvl * d
            fl[o + 1] = b_lvl * (v + a_lvl * d * d)
            fl[o + 2] = q
            fl[o + 3] = x
            o += _FW
            i += nb
    raw = 1.0 - math.exp(-zmax / RAW_SCALE)
    tail = likelihood_step(fl, 0, raw, n, lik_window, lik_alpha, lik_keep, lik_settled, lik_min_sd)
    if n < 0xFFFFFFFF:
        head[0] = n + 1
    if n + 1 < warmup:
        return 0.0, zmax, tail, False
    if spatial and zmax >= SPATIAL_MIN_Z:
        score = 1.0
    else:
        spatial = False
        # tail_to_score(tail, TAIL_DECADES)
        if tail >= 1.0:
            score = 0.0
        else:
            score = -math.log10(tail if tail > _TAIL_FLOOR else _TAIL_FLOOR) / TAIL_DECADES
            score = 1.0 if score > 1.0 else (0.0 if score < 0.0 else score)
    quiet = _i64(head[1])
    if quiet > 0:
        head[1] = quiet - 1
        if score > cap:
            score = cap
    elif suppress != 0 and score >= alert:
        head[1] = suppress
    return score, zmax, tail, spatial


def _swapped(a: array) -> array:
    b = array(a.typecode, a)
    b.byteswap()
    return b
