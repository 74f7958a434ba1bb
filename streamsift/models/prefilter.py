"""Stage 1: cheap per-key robust statistics that decide what to escalate.

Two scalar detectors share one policy and differ in their baseline:

* :class:`EWMAZScore` - time-decayed (half-life) mean and variance; the score is
  the absolute z-score ``|x - mean| / sd``.
* :class:`MADZScore` - streaming median and MAD by stochastic-approximation
  quantile tracking (steps of ``scale / W`` toward each new point, ``W`` = the
  decayed weight, so early steps are large and later ones fine); the score is
  ``|x - median| / (1.4826 * MAD)``. For discrete data whose MAD collapses to 0
  the scale is floored at half the normal-equivalent mean absolute deviation.

Policy (both detectors, and every signal of :class:`Prefilter`):

* before ``warmup`` points nothing is flagged and everything is learned;
* afterwards a point with ``|z| >= threshold`` is *flagged* and is NOT learned, so
  a spike cannot drag the baseline toward itself;
* flagged points feed a separate run estimate (count, mean, variance); after
  ``readapt_after`` consecutive flagged points the baseline jumps to the run's
  level and spread (a sustained level shift becomes the new normal). A point that
  is not flagged ends the run;
* resolution floor: the z divisor is at least half the smallest nonzero step
  seen between consecutive values. Without it a count signal such as ``errors``
  (mostly 0, sometimes 1) could shrink its spread after a quiet spell until a
  single 1 is flagged, and since flagged points are never learned it would stay
  stuck there; with it a one-unit change never scores above 2.

Scores are clipped to [0, 50]. The detectors keep their numbers in a flat
buffer (layout in each class) so :class:`Prefilter` can hold all signals of a
key in one buffer and run the same kernels (``zscores_at`` / ``update_at``).
:class:`Prefilter` keeps a key's buffer as an ``array("d")``; with the EWMA
method its per-event step runs one numba-compiled kernel (``_ewma_step_k``)
that does the same floating-point operations as the Python code.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamsift.config import PrefilterConfig
from streamsift.models.features import clamp_value, log_k
from streamsift.models.jit import kernel
from streamsift.records import Reason

__all__ = [
    "EWMAZScore",
    "EWMAState",
    "MADZScore",
    "MADState",
    "Prefilter",
    "Z_BOUND",
    "GAP_FLOOR_S",
    "LEARNED",
    "HELD",
    "READAPTED",
]

#: every z-score is clipped to +-this.
Z_BOUND = 50.0
#: added to the inter-arrival time (seconds) before its log.
GAP_FLOOR_S = 1e-3
#: outcomes of :meth:`EWMAZScore.update_at` / :meth:`MADZScore.update_at`
LEARNED, HELD, READAPTED = 0, 1, 2
#: correlation inputs are winsorized at +-this before their product is averaged.
_CORR_CLIP = 3.0
_REL_FLOOR = 1e-9
_ABS_FLOOR = 1e-12
_LN2 = math.log(2.0)
_MAX_DT = 1e12
_MAD_TO_SD = 1.4826
_MEANABS_TO_SD = 1.2533
_SD_TO_MAD = 0.6745
_SD_TO_MEANABS = 0.7979
_MEANABS_TO_SD_HALF = 0.5 * _MEANABS_TO_SD

_sqrt = math.sqrt
_exp = math.exp
_log = math.log


def _number(name: str, value: object, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > {low:g}; got {value!r}")
    if value <= low:
        raise ValueError(f"{name} must be > {low:g}; got {value!r}")
    return float(value)


def _integer(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return value


@dataclass
class EWMAState:
    """State of a standalone :class:`EWMAZScore`.

    ``stats`` = ``[weight, mean, var, run_n, run_mean, run_m2]``; ``n`` = points
    seen; ``clock`` = time of the latest point; ``prev`` = previous value;
    ``quantum`` = smallest nonzero step between consecutive values (0 = none yet).
    """

    n: int = 0
    clock: float | None = None
    prev: float = 0.0
    quantum: float = 0.0
    stats: list[float] = field(default_factory=lambda: [0.0] * 6)


@dataclass
class MADState:
    """State of a standalone :class:`MADZScore`.

    ``stats`` = ``[weight, median, mad, mean_abs_dev, run_n, run_mean, run_m2]``;
    the other fields as in :class:`EWMAState`.
    """

    n: int = 0
    clock: float | None = None
    prev: float = 0.0
    quantum: float = 0.0
    stats: list[float] = field(default_factory=lambda: [0.0] * 7)


class _RobustZ:
    """Shared policy: warm-up, no learning from flagged points, re-adaptation."""

    #: floats of the baseline part of a signal's slot (subclasses set it); slot
    #: float 0 is always the decayed weight (0.0 = nothing learned).
    BASE = 0

    def __init__(
        self,
        half_life: float = 1800.0,
        threshold: float = 3.0,
        warmup: int = 20,
        readapt_after: int = 15,
    ) -> None:
        self.half_life = _number("half_life", half_life, 0.0)
        self.threshold = _number("threshold", threshold, 0.0)
        self.warmup = _integer("warmup", warmup, 0)
        self.readapt_after = _integer("readapt_after", readapt_after, 1)
        self._k = _LN2 / self.half_life
        #: floats per signal slot in a flat buffer: baseline, then the run
        #: (count, mean, m2) of consecutive flagged points
        self.width = self.BASE + 3
        self.state = self._new_state()

    def _new_state(self):  # pragma: no cover - overridden
        raise NotImplementedError

    # -- kernels on a flat buffer ------------------------------------------
    def new_buffer(self, n_signals: int = 1) -> list[float]:
        """Zeroed buffer for ``n_signals`` signals (slot ``i`` at ``i * width``)."""
        return [0.0] * (self.width * n_signals)

    def decay_factor(self, dt: float) -> float:
        """Weight multiplier ``2 ** (-dt / half_life)`` for ``dt`` elapsed time."""
        if not dt > 0.0:
            return 1.0
        return _exp(-(dt if dt < _MAX_DT else _MAX_DT) * self._k)

    def update_at(
        self, buf: list[float], o: int, x: float, absz: float, d: float, warm: bool
    ) -> int:
        """Apply the policy to slot ``o`` for a point ``x`` whose score was ``absz``,
        after decaying the weight by ``d``: learn it (LEARNED), or - when ``warm``
        and ``absz >= threshold`` - hold it out and extend the run (HELD), jumping
        to the run's level once it is ``readapt_after`` long (READAPTED)."""
        if warm and absz >= self.threshold:
            return self._flag_at(buf, o, x, d)
        self.update_many(buf, o, (x,), (absz,), d, False)
        return LEARNED

    def _flag_at(self, buf: list[float], o: int, x: float, d: float) -> int:
        buf[o] *= d
        r = o + self.BASE
        rn = buf[r] + 1.0
        if rn == 1.0:
            rm = x
            m2 = 0.0
        else:
            rm = buf[r + 1]
            delta = x - rm
            rm += delta / rn
            m2 = buf[r + 2] + delta * (x - rm)
        if rn >= self.readapt_after:
            self._jump_at(buf, o, rn, rm, m2 / rn)
            buf[r] = 0.0
            return READAPTED
        buf[r] = rn
        buf[r + 1] = rm
        buf[r + 2] = m2
        return HELD

    def hold_at(self, buf: list[float], o: int, d: float) -> None:
        """Decay and end any run without learning (used for a signal derived from
        a source whose baseline just re-adapted)."""
        buf[o] *= d
        buf[o + self.BASE] = 0.0

    def run_length_at(self, buf: list[float], o: int) -> int:
        """Consecutive flagged points held out so far."""
        return int(buf[o + self.BASE])

    # -- river-style API -----------------------------------------------------
    def zscore_one(self, x: float) -> float:
        """Signed robust z-score of ``x`` against the current baseline."""
        s = self.state
        return self.zscores_at(s.stats, 0, (clamp_value(x),), (0.5 * s.quantum,))[0]

    def score_one(self, x: float) -> float:
        """Suspicion score ``|z|`` (>= 0, higher = more anomalous)."""
        return abs(self.zscore_one(x))

    def learn_one(self, x: float, t: float | None = None) -> None:
        """Update with ``x`` observed at time ``t`` (``None``: one time unit after
        the previous point, i.e. ``half_life`` counts points). Values are clamped
        to +-1e100 (NaN to 0) so the statistics stay finite."""
        s = self.state
        x = clamp_value(x)
        if t is None:
            dt = 1.0 if s.clock is not None else 0.0
            s.clock = (s.clock if s.clock is not None else 0.0) + dt
        else:
            t = float(t)
            dt = t - s.clock if s.clock is not None else 0.0
            if s.clock is None or t > s.clock:
                s.clock = t
        z = self.zscore_one(x)
        self.update_at(s.stats, 0, x, abs(z), self.decay_factor(dt), s.n >= self.warmup)
        if s.n:
            step = abs(x - s.prev)
            if step > 0.0 and (step < s.quantum or s.quantum == 0.0):
                s.quantum = step
        s.prev = x
        s.n += 1

    @property
    def center(self) -> float:
        """Current baseline level (mean or median)."""
        return self.center_at(self.state.stats, 0)


class EWMAZScore(_RobustZ):
    """Time-decayed EWMA mean/variance z-score of a scalar stream.

    Irregular timestamps: a point ``dt`` old weighs ``2 ** (-dt / half_life)``;
    the mean and variance are the weighted (population) moments.

    >>> det = EWMAZScore(half_life=10.0, warmup=3)
    >>> for x in [1.0, 2.0, 3.0]:
    ...     det.learn_one(x, t=0.0)
    >>> det.center, round(det.zscore_one(4.0), 6), round(det.score_one(0.0), 6)
    (2.0, 2.44949, 2.44949)
    >>> det.learn_one(100.0, t=0.0)   # flagged: not learned
    >>> det.center
    2.0
    """

    BASE = 3

    def _new_state(self) -> EWMAState:
        return EWMAState()

    def zscores_at(
        self, buf: list[float], o: int, xs: Sequence[float], floors: Sequence[float] | None = None
    ) -> list[float]:
        """Signed z of each ``xs[k]`` against slot ``o + k * width`` (0.0 where
        nothing is learned or ``xs[k]`` is None); ``floors[k]`` is an extra floor
        of the divisor."""
        out = []
        w = self.width
        for k, x in enumerate(xs):
            if x is not None and buf[o] > 0.0:
                mean = buf[o + 1]
                sd = _sqrt(buf[o + 2])
                fl = _REL_FLOOR * (mean if mean >= 0.0 else -mean) + _ABS_FLOOR
                if floors is not None and floors[k] > fl:
                    fl = floors[k]
                z = (x - mean) / (sd if sd > fl else fl)
                out.append(Z_BOUND if z > Z_BOUND else (-Z_BOUND if z < -Z_BOUND else z))
            else:
                out.append(0.0)
            o += w
        return out

    def center_at(self, buf: list[float], o: int) -> float:
        """Baseline level (mean) of slot ``o``."""
        return buf[o + 1]

    def scale_at(self, buf: list[float], o: int) -> float:
        """Standard deviation of slot ``o`` (before any floor)."""
        return _sqrt(buf[o + 2])

    def scales_at(self, buf: list[float], o: int, n: int) -> list[float]:
        """:meth:`scale_at` of ``n`` consecutive slots from ``o``."""
        return [_sqrt(v) for v in buf[o + 2 : o + n * self.width : self.width]]

    def update_many(
        self,
        buf: list[float],
        o: int,
        xs: Sequence[float],
        absz: Sequence[float],
        d: float,
        warm: bool,
    ) -> list[int] | None:
        """:meth:`update_at` for consecutive slots from ``o`` (``xs[k]`` None:
        :meth:`hold_at`); returns the indices that re-adapted (``None`` if none did)."""
        thr = self.threshold if warm else math.inf
        w = self.width
        readapted = None
        for k, x in enumerate(xs):
            if x is None:
                buf[o] *= d
                buf[o + 3] = 0.0
            elif absz[k] >= thr:
                if self._flag_at(buf, o, x, d) == READAPTED:
                    readapted = (readapted or []) + [k]
            else:
                w0 = buf[o] * d
                wn = w0 + 1.0
                buf[o] = wn
                if w0 > 0.0:
                    inv = 1.0 / wn
                    m = buf[o + 1]
                    delta = x - m
                    mn = m + delta * inv
                    buf[o + 1] = mn
                    buf[o + 2] = (buf[o + 2] + delta * delta * inv) * (w0 * inv)
                else:
                    buf[o + 1] = x
                    buf[o + 2] = 0.0
                buf[o + 3] = 0.0
            o += w
        return readapted

    def _jump_at(self, buf: list[float], o: int, n: float, mean: float, var: float) -> None:
        buf[o] = n
        buf[o + 1] = mean
        buf[o + 2] = var


class MADZScore(_RobustZ):
    """Streaming median/MAD robust z-score of a scalar stream.

    Median and MAD are tracked by stochastic approximation: each point moves the
    median toward itself by ``min(step, |x - median|)`` and the MAD toward
    ``|x - median|`` by ``min(step / 2, ...)``, with ``step = scale / W``
    (``scale`` = current normal-equivalent spread, ``W`` = decayed weight as in
    :class:`EWMAZScore`). The half step makes the scale steadier than the level.

    >>> det = MADZScore(half_life=10.0, warmup=2)
    >>> det.learn_one(0.0, t=0.0)
    >>> det.learn_one(2.0, t=0.0)
    >>> det.center, det.state.stats[2], round(det.zscores_at(det.state.stats, 0, [4.0])[0], 6)
    (1.0, 0.5, 4.046945)
    >>> det.zscore_one(4.0)          # the resolution floor (half the step 0 -> 2) applies
    3.0
    >>> det.learn_one(1000.0, t=0.0)   # flagged: not learned
    >>> det.center
    1.0
    """

    BASE = 4

    def _new_state(self) -> MADState:
        return MADState()

    def zscores_at(
        self, buf: list[float], o: int, xs: Sequence[float], floors: Sequence[float] | None = None
    ) -> list[float]:
        """Signed robust z of each ``xs[k]`` against slot ``o + k * width`` (0.0
        where nothing is learned or ``xs[k]`` is None); ``floors[k]`` is an extra
        floor of the divisor."""
        out = []
        w = self.width
        for k, x in enumerate(xs):
            if x is not None and buf[o] > 0.0:
                med = buf[o + 1]
                sc = _MAD_TO_SD * buf[o + 2]
                alt = _MEANABS_TO_SD_HALF * buf[o + 3]
                if alt > sc:
                    sc = alt
                fl = _REL_FLOOR * (med if med >= 0.0 else -med) + _ABS_FLOOR
                if floors is not None and floors[k] > fl:
                    fl = floors[k]
                z = (x - med) / (sc if sc > fl else fl)
                out.append(Z_BOUND if z > Z_BOUND else (-Z_BOUND if z < -Z_BOUND else z))
            else:
                out.append(0.0)
            o += w
        return out

    def center_at(self, buf: list[float], o: int) -> float:
        """Baseline level (median) of slot ``o``."""
        return buf[o + 1]

    def scale_at(self, buf: list[float], o: int) -> float:
        """Normal-equivalent spread of slot ``o`` (before any floor)."""
        return max(_MAD_TO_SD * buf[o + 2], _MEANABS_TO_SD_HALF * buf[o + 3])

    def scales_at(self, buf: list[float], o: int, n: int) -> list[float]:
        """:meth:`scale_at` of ``n`` consecutive slots from ``o``."""
        w = self.width
        end = o + n * w
        return [
            max(_MAD_TO_SD * mad, _MEANABS_TO_SD_HALF * mabs)
            for mad, mabs in zip(buf[o + 2 : end : w], buf[o + 3 : end : w], strict=True)
        ]

    def update_many(
        self,
        buf: list[float],
        o: int,
        xs: Sequence[float],
        absz: Sequence[float],
        d: float,
        warm: bool,
    ) -> list[int] | None:
        """:meth:`update_at` for consecutive slots from ``o`` (``xs[k]`` None:
        :meth:`hold_at`); returns the indices that re-adapted (``None`` if none did)."""
        thr = self.threshold if warm else math.inf
        width = self.width
        readapted = None
        for k, x in enumerate(xs):
            if x is None:
                buf[o] *= d
                buf[o + 4] = 0.0
                o += width
                continue
            if absz[k] >= thr:
                if self._flag_at(buf, o, x, d) == READAPTED:
                    readapted = (readapted or []) + [k]
                o += width
                continue
            w0 = buf[o] * d
            w = w0 + 1.0
            buf[o] = w
            if w0 > 0.0:
                med = buf[o + 1]
                mad = buf[o + 2]
                mabs = buf[o + 3]
                r = x - med
                ar = r if r >= 0.0 else -r
                sc = _MAD_TO_SD * mad
                alt = _MEANABS_TO_SD * mabs
                if alt > sc:
                    sc = alt
                if sc <= 0.0:
                    sc = ar  # bootstrap from the first nonzero deviation
                step = sc / w
                if r > 0.0:
                    med += step if step < r else r
                elif r < 0.0:
                    med -= step if step < -r else -r
                e = ar - mad
                step *= 0.5  # a finer MAD step: the scale jitters less than the level
                if e > 0.0:
                    mad += step if step < e else e
                elif e < 0.0:
                    mad -= step if step < -e else -e
                buf[o + 1] = med
                buf[o + 2] = mad
                buf[o + 3] = mabs + (ar - mabs) / w
            else:
                buf[o + 1] = x
                buf[o + 2] = 0.0
                buf[o + 3] = 0.0
            buf[o + 4] = 0.0
            o += width
        return readapted

    def _jump_at(self, buf: list[float], o: int, n: float, mean: float, var: float) -> None:
        sd = _sqrt(var)
        buf[o] = n
        buf[o + 1] = mean
        buf[o + 2] = _SD_TO_MAD * sd
        buf[o + 3] = _SD_TO_MEANABS * sd


# ---------------------------------------------------------------------------
# Compiled kernel of Prefilter._step_ewma
# ---------------------------------------------------------------------------
# The kernel runs the arithmetic of the pure-Python EWMA code (EWMAZScore's
# zscores_at / update_many / _flag_at / _jump_at, and Prefilter.step around
# them) operation for operation and in the same order, so every value is
# bit-identical: no fastmath; math.exp/log/sqrt give Python's bits; every
# buffer is float64, so all arithmetic is in float64 as in Python.


@kernel
def _ewma_flag_k(buf, o: int, x: float, d: float, readapt_after: float) -> bool:  # pragma: no cover
    """EWMAZScore._flag_at on slot ``o`` (weight, mean, var, run_n, run_mean,
    run_m2): decay the weight and extend the run of held-out points with ``x``;
    once it is ``readapt_after`` long the baseline jumps to the run's level and
    spread (EWMAZScore._jump_at) and the run restarts. True if it re-adapted."""
    buf[o] *= d
    r = o + 3
    rn = buf[r] + 1.0
    if rn == 1.0:
        rm = x
        m2 = 0.0
    else:
        rm = buf[r + 1]
        delta = x - rm
        rm += delta / rn
        m2 = buf[r + 2] + delta * (x - rm)
    if rn >= readapt_after:
        buf[o] = rn
        buf[o + 1] = rm
        buf[o + 2] = m2 / rn
        buf[r] = 0.0
        return True
    buf[r] = rn
    buf[r + 1] = rm
    buf[r + 2] = m2
    return False


@kernel
def _ewma_learn_k(
    buf, o: int, x: float, wgt: float, var: float, d: float
) -> float:  # pragma: no cover
    """Learn ``x`` in slot ``o`` (decayed weighted mean and population variance;
    ``wgt`` and ``var`` are the slot's weight and variance before the event) and
    end its run; returns the new weight."""
    w0 = wgt * d
    wn = w0 + 1.0
    buf[o] = wn
    if w0 > 0.0:
        inv = 1.0 / wn
        m = buf[o + 1]
        delta = x - m
        buf[o + 1] = m + delta * inv
        buf[o + 2] = (var + delta * delta * inv) * (w0 * inv)
    else:
        buf[o + 1] = x
        buf[o + 2] = 0.0
    buf[o + 3] = 0.0
    return wn


@kernel
def _ewma_step_k(
    buf, xs, out, n: int, dt: float, k: float, thr: float, warmup: int, readapt_after: float
) -> float:  # pragma: no cover - compiled
    """Score the event with values ``xs`` (``n`` = the key's events before it,
    ``dt`` = seconds since the previous one) against the Prefilter buffer ``buf``
    (layout: :class:`Prefilter`, slots of width 6) and learn it, in place, in one
    pass. Writes to ``out`` (``ns = 2 * nf`` signals): the signed z of every
    signal at ``[0, ns)`` (fields, the gap, the pairs), the pairs' residuals at
    ``[ns, ns + nf - 1)`` (NaN for an inactive pair; a residual is always finite),
    then for each signal its weight and center before the event (what the reasons
    read). Returns the score (max |z|, the first of equal maxima as Python's
    ``max``). ``k`` = ln 2 / half-life, ``thr`` = the flag threshold."""
    nf = len(xs)
    w = 6
    og = nf * w
    co = 2 * og
    po = co + nf - 1
    qo = po + nf
    pgo = qo + nf
    ns = 2 * nf
    # each signal's weight and center before the event, for the reasons
    pb = ns + nf - 1
    for j in range(ns):
        out[pb + 2 * j] = buf[j * w]
        out[pb + 2 * j + 1] = buf[j * w + 1]
    d = math.exp(-(dt if dt < _MAX_DT else _MAX_DT) * k) if dt > 0.0 else 1.0
    warm = n >= warmup
    lim = thr if warm else math.inf
    track = n > 0
    # -- the inter-arrival signal (signal nf; independent of the fields)
    zg = 0.0
    if track:
        g = log_k(dt + GAP_FLOOR_S)
        wgt = buf[og]
        if wgt > 0.0:
            # a long gap scores at once; on the short side the scored value is the
            # larger of the last two gaps, capped at the baseline
            v = g
            mean = buf[og + 1]
            if g < mean and n > 1:
                gp = log_k(buf[pgo] + GAP_FLOOR_S)
                if gp > v:
                    v = gp if gp < mean else mean
            sd = math.sqrt(buf[og + 2])
            fl = _REL_FLOOR * (mean if mean >= 0.0 else -mean) + _ABS_FLOOR
            z = (v - mean) / (sd if sd > fl else fl)
            zg = Z_BOUND if z > Z_BOUND else (-Z_BOUND if z < -Z_BOUND else z)
        if (zg if zg >= 0.0 else -zg) >= lim:
            _ewma_flag_k(buf, og, g, d, readapt_after)
        else:
            _ewma_learn_k(buf, og, g, wgt, buf[og + 2], d)
        buf[pgo] = dt
    out[nf] = zg
    # -- the fields, and with field i the pair (i - 1, i)
    o = 0  # slot of field i
    op = og  # slot of the pair (i - 1, i): og + i * w
    r = co - 1  # its learned correlation: co + i - 1
    # field i - 1: z, |z|, resolved finer than its spread, re-adapted now
    za = 0.0
    aza = 0.0
    fine_a = False
    readapted_a = False
    for i in range(nf):
        x = xs[i]
        q = buf[qo + i]
        wgt = buf[o]
        var = buf[o + 2]
        sd = math.sqrt(var)
        fine = q < sd
        # -- score (state before the event), with the resolution floor q / 2
        if wgt > 0.0:
            mean = buf[o + 1]
            fl = _REL_FLOOR * (mean if mean >= 0.0 else -mean) + _ABS_FLOOR
            f2 = 0.5 * q
            if f2 > fl:
                fl = f2
            z = (x - mean) / (sd if sd > fl else fl)
            if z >= 0.0:
                if z > Z_BOUND:
                    z = Z_BOUND
                az = z
            else:
                if z < -Z_BOUND:
                    z = -Z_BOUND
                az = -z
        else:
            z = 0.0
            az = 0.0
        out[i] = z
        # -- learn: a flagged point is held out (and may re-adapt the baseline)
        readapted = False
        if az >= lim:
            readapted = _ewma_flag_k(buf, o, x, d, readapt_after)
        else:
            _ewma_learn_k(buf, o, x, wgt, var, d)
        # -- resolution: smallest nonzero step between consecutive values
        if track:
            pv = buf[po + i]
            step = x - pv if x > pv else pv - x
            if step > 0.0 and (step < q or q == 0.0):
                buf[qo + i] = step
        buf[po + i] = x
        # -- the pair (i - 1, i): its residual z_i - rho * z_(i-1)
        if i:
            j = nf + i  # the pair's signal index
            if not (fine_a and fine):
                # inactive: a field is resolved no finer than its spread (for
                # counts such as errors in {0, 1, 2} a residual means nothing)
                out[j] = 0.0
                out[ns + i - 1] = math.nan
                buf[op] *= d
                buf[op + 3] = 0.0
            else:
                rho = buf[r]
                c = z - rho * za
                out[ns + i - 1] = c
                wgt = buf[op]
                pvar = buf[op + 2]
                if wgt > 0.0:
                    mean = buf[op + 1]
                    sd = math.sqrt(pvar)
                    fl = _REL_FLOOR * (mean if mean >= 0.0 else -mean) + _ABS_FLOOR
                    zc = (c - mean) / (sd if sd > fl else fl)
                    zc = Z_BOUND if zc > Z_BOUND else (-Z_BOUND if zc < -Z_BOUND else zc)
                    azc = zc if zc >= 0.0 else -zc
                else:
                    zc = 0.0
                    azc = 0.0
                out[j] = zc
                if readapted_a or readapted:
                    # a field jumped to a new level: the pair's deviation was
                    # relative to the old one, so its run ends and it learns nothing
                    buf[op] *= d
                    buf[op + 3] = 0.0
                elif azc >= lim:
                    _ewma_flag_k(buf, op, c, d, readapt_after)
                else:
                    wn = _ewma_learn_k(buf, op, c, wgt, pvar, d)
                    # the learned correlation, from points none of its signals flagged
                    if aza < lim and az < lim:
                        ca = (
                            _CORR_CLIP
                            if za > _CORR_CLIP
                            else (-_CORR_CLIP if za < -_CORR_CLIP else za)
                        )
                        cb = (
                            _CORR_CLIP
                            if z > _CORR_CLIP
                            else (-_CORR_CLIP if z < -_CORR_CLIP else z)
                        )
                        rho += (ca * cb - rho) / wn
                        buf[r] = 1.0 if rho > 1.0 else (-1.0 if rho < -1.0 else rho)
        za = z
        aza = az
        fine_a = fine
        readapted_a = readapted
        o += w
        op += w
        r += 1
    # the score: max |z| in signal order, keeping the first of equal values
    # (Python's max; matters only for the sign of a zero score)
    score = out[0] if out[0] >= 0.0 else -out[0]
    for j in range(1, ns):
        a = out[j] if out[j] >= 0.0 else -out[j]
        if a > score:
            score = a
    return score


_DETECTORS = {"ewma": EWMAZScore, "mad": MADZScore}


class Prefilter:
    """Stage-1 logic of one key over ``2 * F`` signals, on a flat buffer.

    Signals, each with its own detector slot (method from the config):

    * one per field: the field's value (with the resolution floor);
    * ``interarrival_s``: ``g = log(dt + 1e-3)`` of the time since the key's
      previous event. A long gap scores at once (silence); on the short side the
      scored value is the larger of the last two gaps (capped at the baseline),
      so a single short gap - common with random arrivals - is not a burst but
      two in a row are. The baseline learns the raw ``g``;
    * one per adjacent field pair ``corr(a,b)``: the residual ``z_b - rho * z_a``
      of the two fields' z-scores, where ``rho`` is the pair's learned
      correlation (decayed mean of ``z_a * z_b``, inputs winsorized at +-3).
      When two correlated fields stop moving together each may stay in range
      while the residual leaves its baseline. Order the fields so that related
      ones are adjacent. A pair is inactive (z = 0, learns nothing) while one of
      its fields has a resolution no finer than its spread, e.g. an error count
      that is mostly 0 or 1: there a residual only echoes the count's steps.
      Since the z-scores are relative to each field's own adapting baseline,
      the residual sees a break when it happens; a break that persists is
      absorbed as the fields' baselines adapt.

    Suspicion score = the largest ``|z|`` over the signals. Each signal follows
    the detector policy (warm-up, flagged points held out, re-adaptation), with
    one coupling: when a field re-adapts to a new level the runs of its pair
    signals are cleared, since their deviations came from the field's old
    baseline. Reasons (most deviating signals first, at most 5) are built only
    for events with a score >= ``escalate_score``; other events get ``()``. A
    pair with an out-of-range field is listed after the other signals (the field
    itself is the better explanation).

    Buffer layout: ``2 * F`` detector slots of ``width`` floats (fields, then
    interarrival, then pairs), ``F - 1`` pair correlations, ``F`` previous values,
    ``F`` quanta, and the previous gap in seconds (an ``array("d")``:
    :meth:`new_buffer`).

    >>> pf = Prefilter(("a", "b"), PrefilterConfig(warmup_events=5))
    >>> pf.signal_names
    ('a', 'b', 'interarrival_s', 'corr(a,b)')
    >>> buf = pf.new_buffer()
    >>> for n in range(30):
    ...     score, reasons, _ = pf.step(buf, n, 60.0, [10.0 + n % 3, 20.0 + n % 3])
    >>> round(score, 3), reasons    # below escalate_score: no reasons
    (1.28, ())
    >>> score, reasons, zs = pf.step(buf, 30, 60.0, [10.0, 40.0])
    >>> round(score, 3), reasons[0].feature, round(reasons[0].baseline, 3)
    (23.254, 'b', 21.015)
    """

    def __init__(self, field_names: Sequence[str], cfg: PrefilterConfig) -> None:
        if isinstance(field_names, (str, bytes)) or not field_names:
            raise ValueError(
                f"field_names must be a non-empty sequence of names; got {field_names!r}"
            )
        if not isinstance(cfg, PrefilterConfig):
            raise ValueError(f"cfg must be a PrefilterConfig; got {type(cfg).__name__}")
        names = tuple(str(f) for f in field_names)
        self.field_names = names
        self.cfg = cfg
        self.detector = _DETECTORS[cfg.method](
            half_life=cfg.half_life_s,
            threshold=cfg.escalate_score,
            warmup=cfg.warmup_events,
            readapt_after=cfg.readapt_after,
        )
        f = len(names)
        self.n_fields = f
        self.signal_names = (
            names
            + ("interarrival_s",)
            + tuple(f"corr({names[i]},{names[i + 1]})" for i in range(f - 1))
        )
        self.n_signals = 2 * f
        self.width = w = self.detector.width
        self.gap_offset = f * w
        self.corr_offset = 2 * f * w
        self.prev_offset = self.corr_offset + f - 1
        self.quantum_offset = self.prev_offset + f
        self.prev_gap_offset = self.quantum_offset + f
        self.size = self.prev_gap_offset + 1
        self.threshold = cfg.escalate_score
        self.warmup = cfg.warmup_events
        self.max_reasons = 5
        # the EWMA detector's kernels are fused into one pass (_step_ewma)
        self._fused = type(self.detector) is EWMAZScore
        # parameters of the compiled kernel (_ewma_step_k), as the types it takes
        self._k = float(self.detector._k)
        self._thr = float(self.detector.threshold)
        self._ra = float(self.detector.readapt_after)
        self._out_zeros = bytes(8 * (3 * self.n_signals + f - 1))

    def new_buffer(self) -> array:
        """A zeroed state buffer for a new key: ``array("d")`` of ``size`` floats.

        >>> pf = Prefilter(("a", "b"), PrefilterConfig())
        >>> buf = pf.new_buffer()
        >>> buf.typecode, len(buf) == pf.size == 2 * 2 * 6 + 1 + 2 + 2 + 1, max(buf)
        ('d', True, 0.0)
        """
        return array("d", bytes(8 * self.size))

    def step(
        self, buf: array, n: int, dt: float, xs: Sequence[float]
    ) -> tuple[float, tuple[Reason, ...], list[float]]:
        """Score an event (``n`` = the key's events before it, ``dt`` = seconds since
        the previous one, ``xs`` = clamped values), then learn it. Returns the
        suspicion score, when it is >= ``escalate_score`` the reasons, and the
        signed z-score of every signal (in ``signal_names`` order)."""
        if self._fused:
            return self._step_ewma(buf, n, dt, xs)
        det = self.detector
        zscores = det.zscores_at
        w = self.width
        nf = self.n_fields
        thr = self.threshold
        qo = self.quantum_offset
        po = self.prev_offset
        og = self.gap_offset
        co = self.corr_offset
        # -- score (state before the event) --------------------------------
        floors = [0.5 * q for q in buf[qo : qo + nf]]
        zs = zscores(buf, 0, xs, floors)
        if n > 0:
            g = _log(dt + GAP_FLOOR_S)
            v = g
            if buf[og] > 0.0:
                cg = det.center_at(buf, og)
                if g < cg and n > 1:
                    gp = _log(buf[self.prev_gap_offset] + GAP_FLOOR_S)
                    if gp > v:
                        v = gp if gp < cg else cg
            zg = zscores(buf, og, (v,))[0]
        else:
            g = 0.0
            zg = 0.0
        if nf > 1:
            # a pair is active (not None) while both fields are resolved finer than
            # their spread (for counts such as errors in {0, 1, 2} a residual means nothing)
            fine = [
                q < sc for q, sc in zip(buf[qo : qo + nf], det.scales_at(buf, 0, nf), strict=True)
            ]
            cs = [
                zs[p + 1] - buf[co + p] * zs[p] if fine[p] and fine[p + 1] else None
                for p in range(nf - 1)
            ]
            allz = zs + [zg] + zscores(buf, og + w, cs)
        else:
            cs = []
            allz = zs + [zg]
        absz = [z if z >= 0.0 else -z for z in allz]
        score = max(absz)
        reasons = self._reasons(buf, absz, allz, xs, dt, cs) if score >= thr else ()
        # -- learn -----------------------------------------------------------
        d = det.decay_factor(dt)
        warm = n >= self.warmup
        readapted = det.update_many(buf, 0, xs, absz, d, warm)
        if n > 0:
            det.update_many(buf, og, (g,), (absz[nf],), d, warm)
            buf[self.prev_gap_offset] = dt
        if nf > 1:
            if readapted is not None:
                # a field jumped to a new level: its pairs' deviations were relative to
                # the old one, so their runs end and they learn nothing now
                cs = [None if p in readapted or p + 1 in readapted else c for p, c in enumerate(cs)]
            det.update_many(buf, og + w, cs, absz[nf + 1 :], d, warm)
            # learned correlation of each pair, from points none of its signals flagged
            lim = thr if warm else math.inf
            o = og
            for p, c in enumerate(cs):
                o += w
                if c is None or absz[p] >= lim or absz[p + 1] >= lim or absz[nf + 1 + p] >= lim:
                    continue
                za = zs[p]
                zb = zs[p + 1]
                za = _CORR_CLIP if za > _CORR_CLIP else (-_CORR_CLIP if za < -_CORR_CLIP else za)
                zb = _CORR_CLIP if zb > _CORR_CLIP else (-_CORR_CLIP if zb < -_CORR_CLIP else zb)
                rho = buf[co + p]
                rho += (za * zb - rho) / buf[o]
                buf[co + p] = 1.0 if rho > 1.0 else (-1.0 if rho < -1.0 else rho)
        # resolution of each field: smallest nonzero step between consecutive values
        if n > 0:
            for i, (x, pv, q) in enumerate(
                zip(xs, buf[po : po + nf], buf[qo : qo + nf], strict=True)
            ):
                step = x - pv if x > pv else pv - x
                if step > 0.0 and (step < q or q == 0.0):
                    buf[qo + i] = step
        # slice assignment into an array needs an array (into a list, any sequence)
        buf[po : po + nf] = xs if type(xs) is array or type(buf) is not array else array("d", xs)
        return score, reasons, allz

    def _step_ewma(
        self, buf: array, n: int, dt: float, xs: Sequence[float]
    ) -> tuple[float, tuple[Reason, ...], list[float]]:
        """:meth:`step` for :class:`EWMAZScore`: the compiled kernel
        ``_ewma_step_k`` scores and learns every slot in one pass (the gap first,
        then each field with the pair it closes) with :class:`EWMAZScore`'s
        kernels (``zscores_at``, ``scales_at``, ``update_many``, ``decay_factor``,
        ``_flag_at``) inlined, in place on ``buf`` (the ``array("d")`` of
        :meth:`new_buffer`; a list is run on a copy and written back). ``xs``: an
        ``array("d")`` or any sequence of floats. This wrapper builds the z list
        and, for a score >= ``escalate_score``, the reasons. Each value gets the
        same floating-point operations as in the generic path, so the results
        and the buffer are bit-identical to it (flagged points, re-adaptations
        and reasons included):

        >>> import random
        >>> rng = random.Random(3)
        >>> fast = Prefilter(("a", "b", "c"), PrefilterConfig(warmup_events=5, readapt_after=3))
        >>> slow = Prefilter(("a", "b", "c"), PrefilterConfig(warmup_events=5, readapt_after=3))
        >>> slow._fused = False
        >>> bf, bs, same, flagged = fast.new_buffer(), slow.new_buffer(), True, 0
        >>> for n in range(400):
        ...     dt = rng.choice([0.0, 5.0, 60.0, 600.0])
        ...     xs = [rng.gauss(10.0, 1.0) + 40.0 * (n % 50 > 45), float(rng.randint(0, 2)),
        ...           rng.gauss(0.0, 3.0)]
        ...     a, b = fast.step(bf, n, dt, xs), slow.step(bs, n, dt, xs)
        ...     same = same and repr(a) == repr(b) and repr(bf) == repr(bs)
        ...     flagged += a[0] >= 3.0
        >>> same, flagged > 20
        (True, True)
        """
        if type(xs) is array and xs.typecode == "d":
            vals = xs
        else:
            vals = array("d", xs)
        nf = self.n_fields
        if len(vals) != nf:
            raise ValueError(f"xs must have {nf} values (one per field); got {len(vals)}")
        fdt = dt if type(dt) is float else float(dt)
        # the kernel's output: the z of every signal, the pairs' residuals, and
        # each signal's weight and center before the event (see _ewma_step_k)
        out = array("d", self._out_zeros)
        # a list buffer (not from new_buffer) runs on a float64 copy, copied back
        work = array("d", buf) if type(buf) is list else buf
        score = _ewma_step_k(work, vals, out, n, fdt, self._k, self._thr, self.warmup, self._ra)
        if work is not buf:
            buf[:] = work.tolist()
        ns = self.n_signals
        allz = out[:ns].tolist()
        if score >= self.threshold:
            # |z| as the kernel computed it (z if z >= 0.0 else -z); None for an
            # inactive pair's residual (NaN in the kernel's output)
            absz = [z if z >= 0.0 else -z for z in allz]
            pb = ns + nf - 1
            cs = [c if c == c else None for c in out[ns:pb].tolist()]
            # the slots as _reasons reads them (weight and center), before the event
            w = self.width
            pre = array("d", bytes(8 * self.corr_offset))
            pre[0::w] = out[pb : pb + 2 * ns : 2]
            pre[1::w] = out[pb + 1 : pb + 2 * ns : 2]
            reasons = self._reasons(pre, absz, allz, xs, dt, cs)
        else:
            reasons = ()
        return score, reasons, allz

    def _reasons(
        self,
        buf: list[float],
        absz: list[float],
        allz: list[float],
        xs: Sequence[float],
        dt: float,
        cs: list[float],
    ) -> tuple[Reason, ...]:
        det = self.detector
        nf = self.n_fields
        thr = self.threshold
        # a pair whose own field is out of range is explained by that field: rank
        # it after the signals that stand on their own
        keys = [
            (
                j <= nf or (absz[j - nf - 1] < thr and absz[j - nf] < thr),
                absz[j],
            )
            for j in range(self.n_signals)
        ]
        order = sorted(range(self.n_signals), key=keys.__getitem__, reverse=True)
        w = self.width
        names = self.signal_names
        out = []
        for j in order[: self.max_reasons]:
            o = j * w
            learned = buf[o] > 0.0
            if j < nf:
                value = xs[j]
                base = det.center_at(buf, o) if learned else value
            elif j == nf:
                value = dt
                base = _exp(det.center_at(buf, o)) - GAP_FLOOR_S if learned else dt
                if base < 0.0:
                    base = 0.0
            else:
                value = cs[j - nf - 1]
                if value is None:  # inactive pair (coarse field): no residual
                    value = 0.0
                base = det.center_at(buf, o) if learned else value
            out.append(Reason(names[j], value, base, allz[j]))
        return tuple(out)
