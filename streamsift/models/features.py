"""Event-time rolling features with O(1) state per key.

All statistics use *irregular-timestamp exponential decay*: an event that is
``dt`` seconds old weighs ``exp(-dt / tau)``, with ``tau`` equal to the horizon
(after one horizon an event weighs ``1/e``). With weights ``w_k`` the decayed
weight sum ``W = sum(w_k)`` is the decayed event count, and the mean and
variance are the weighted (population) moments, updated incrementally::

    d = exp(-dt / tau)            # dt = time since the previous event
    W' = W * d + 1
    mean' = mean + (x - mean) / W'
    var' = (var + (x - mean) ** 2 / W') * W * d / W'

Extremes are *decayed extremes*: between events the gap ``max - mean`` shrinks
by the same factor ``d`` (the maximum relaxes toward the mean with the
horizon's time constant) and a new event pushes it out again::

    max' = max(x, mean' + (max - mean') * d)

so an old peak fades out after a few horizons instead of staying forever, and
with no elapsed time (``d == 1``) it is the exact running maximum.

Rates are bias-corrected for young keys: the decayed count at time ``t`` is
divided by the effective window ``tau * (1 - exp(-age / tau))`` (``age`` = time
since the key's first event) instead of ``tau``, so a key seen for only a
minute does not look ``tau / 60`` times slower than it is.

:class:`DecayedMoments` and :class:`DecayedRate` are the scalar statistics
(river-style ``learn_one``); :class:`RollingFeatures` runs the same arithmetic
for every field and horizon of a key on one flat ``array("d")`` buffer (the
fast path used by :class:`~streamsift.models.keylogic.KeyLogic`; its per-event
method :meth:`RollingFeatures.step_model` runs a numba-compiled kernel).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamsift.models.jit import kernel

__all__ = [
    "DecayedMoments",
    "DecayedMomentsState",
    "DecayedRate",
    "DecayedRateState",
    "RollingFeatures",
    "clamp_value",
    "horizon_label",
    "MAX_ABS_VALUE",
    "MAX_DT_S",
    "FEATURE_BOUND",
]

#: input values are clamped to +-this so squared deviations stay finite.
MAX_ABS_VALUE = 1e100
#: time gaps are clamped to this many seconds (about 31,700 years).
MAX_DT_S = 1e12
#: every model feature lies in [-FEATURE_BOUND, FEATURE_BOUND].
FEATURE_BOUND = 50.0
#: relative and absolute floor of a standard deviation used as a divisor.
SD_REL_FLOOR = 1e-9
SD_ABS_FLOOR = 1e-12
#: floor of the ratio-to-baseline denominator.
RATIO_FLOOR = 1e-12
#: added to the dimensionless gap before its log (a gap of 0 gives log(1e-3)).
GAP_EPS = 1e-3
_LOG_GAP_EPS = math.log(GAP_EPS)

_exp = math.exp
_log = math.log
_sqrt = math.sqrt
_log1p = math.log1p
_expm1 = math.expm1
_copysign = math.copysign


def clamp_value(x: float) -> float:
    """Return ``x`` as a plain float clamped to +-:data:`MAX_ABS_VALUE`; NaN becomes 0.

    >>> clamp_value(2), clamp_value(float("inf")), clamp_value(float("nan"))
    (2.0, 1e+100, 0.0)
    """
    x = float(x)
    if -MAX_ABS_VALUE <= x <= MAX_ABS_VALUE:
        return x
    if x > 0.0:
        return MAX_ABS_VALUE
    if x < 0.0:
        return -MAX_ABS_VALUE
    return 0.0


def horizon_label(h: float) -> str:
    """Stable short label of a horizon in seconds, used in feature names.

    >>> horizon_label(60.0), horizon_label(0.5)
    ('60s', '0.5s')
    """
    return f"{h:g}s"


def _bound(v: float) -> float:
    if v > FEATURE_BOUND:
        return FEATURE_BOUND
    if v < -FEATURE_BOUND:
        return -FEATURE_BOUND
    return v


def _check_tau(name: str, tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise ValueError(f"{name} must be a number > 0; got {tau!r}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{name} must be finite and > 0; got {tau!r}")
    return float(tau)


def _gap(t: float | None, last: float | None) -> float:
    if t is None or last is None:
        return 0.0
    dt = float(t) - last
    if dt > 0.0:
        return dt if dt < MAX_DT_S else MAX_DT_S
    return 0.0


# ---------------------------------------------------------------------------
# scalar statistics
# ---------------------------------------------------------------------------


@dataclass
class DecayedMomentsState:
    """State of :class:`DecayedMoments` (all values as of the last event)."""

    weight: float = 0.0
    mean: float = 0.0
    var: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    last_t: float | None = None


class DecayedMoments:
    """Time-decayed mean, standard deviation, min and max of one scalar stream.

    ``tau`` is the decay time constant in the unit of ``t`` (seconds in
    streamsift). ``learn_one(x, t)`` takes the event time; times that go
    backwards count as no elapsed time.

    >>> s = DecayedMoments(tau=60.0)
    >>> for t, x in [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]:
    ...     s.learn_one(x, t)
    >>> s.mean, round(s.std ** 2, 12), s.min, s.max, s.count
    (2.0, 0.666666666667, 1.0, 3.0, 3.0)
    >>> s.learn_one(3.0, 60.0 * math.log(2.0))   # earlier events now weigh 1/2
    >>> round(s.count, 12), round(s.mean, 12), round(s.max, 12)
    (2.5, 2.4, 3.0)
    """

    def __init__(self, tau: float) -> None:
        self.tau = _check_tau("tau", tau)
        self._inv_tau = 1.0 / self.tau
        self.state = DecayedMomentsState()

    def learn_one(self, x: float, t: float | None = None) -> None:
        """Add one observation ``x`` at time ``t`` (``None``: no time elapsed)."""
        s = self.state
        x = clamp_value(x)
        d = _exp(-_gap(t, s.last_t) * self._inv_tau)
        if t is not None and (s.last_t is None or t > s.last_t):
            s.last_t = float(t)
        first = s.weight <= 0.0
        w0 = s.weight * d
        w = w0 + 1.0
        inv = 1.0 / w
        s.weight = w
        if not first:
            m = s.mean
            delta = x - m
            mn = m + delta * inv
            s.mean = mn
            s.var = (s.var + delta * delta * inv) * (w0 * inv)
            hi = mn + (s.hi - mn) * d
            s.hi = x if x > hi else hi
            lo = mn + (s.lo - mn) * d
            s.lo = x if x < lo else lo
        else:
            s.mean = s.lo = s.hi = x
            s.var = 0.0

    @property
    def count(self) -> float:
        """Decayed event count as of the last event."""
        return self.state.weight

    @property
    def mean(self) -> float:
        return self.state.mean

    @property
    def std(self) -> float:
        return _sqrt(self.state.var)

    @property
    def min(self) -> float:
        return self.state.lo

    @property
    def max(self) -> float:
        return self.state.hi


@dataclass
class DecayedRateState:
    """State of :class:`DecayedRate`."""

    weight: float = 0.0
    first_t: float | None = None
    last_t: float | None = None


class DecayedRate:
    """Time-decayed event count and bias-corrected event rate (events per time unit).

    >>> r = DecayedRate(tau=3600.0)
    >>> for t in range(0, 3600, 60):
    ...     r.learn_one(float(t))
    >>> round(r.rate_at(3600.0) * 60.0, 3)     # one event a minute
    0.992
    >>> r.rate_at(3600.0 + 10 * 3600.0) < 1e-5  # long silence: the rate fades
    True
    """

    def __init__(self, tau: float) -> None:
        self.tau = _check_tau("tau", tau)
        self.state = DecayedRateState()

    def learn_one(self, t: float) -> None:
        """Count one event at time ``t``."""
        s = self.state
        d = _exp(-_gap(t, s.last_t) / self.tau)
        if s.first_t is None:
            s.first_t = s.last_t = float(t)
        elif t > s.last_t:
            s.last_t = float(t)
        s.weight = s.weight * d + 1.0

    def count_at(self, t: float) -> float:
        """Decayed count of the events seen so far, evaluated at time ``t``."""
        s = self.state
        return s.weight * _exp(-_gap(t, s.last_t) / self.tau)

    def rate_at(self, t: float) -> float:
        """Events per time unit at ``t``; 0.0 while the key's age is 0."""
        s = self.state
        if s.first_t is None:
            return 0.0
        age = max(min(float(t) - s.first_t, MAX_DT_S), s.last_t - s.first_t)
        eff = -self.tau * _expm1(-age / self.tau)
        return self.count_at(t) / eff if eff > 0.0 else 0.0


# ---------------------------------------------------------------------------
# all fields x all horizons on a flat buffer
# ---------------------------------------------------------------------------


# The compiled kernels below run the arithmetic of the pure-Python code they
# replace, operation for operation and in the same order, so every value is
# bit-identical (no fastmath; math.exp/expm1/log/log1p give the same bits as
# Python's). Where Python's math functions raise (domain/range errors, only
# reachable with a corrupt buffer or a negative dt), the helpers raise too
# instead of returning inf/nan.


@kernel
def log_k(x: float) -> float:  # pragma: no cover - compiled
    # math.log semantics: ValueError for x <= 0 (numba returns -inf / nan)
    if x <= 0.0:
        raise ValueError("math domain error")
    return math.log(x)


@kernel
def exp_k(x: float) -> float:  # pragma: no cover - compiled
    # math.exp semantics: OverflowError for a finite argument that overflows
    r = math.exp(x)
    if r == math.inf and x != math.inf:
        raise OverflowError("math range error")
    return r


@kernel
def _learn_first_kernel(buf, xs, nh: int, stride: int) -> None:  # pragma: no cover - compiled
    # first event, or every horizon forgotten: the event is the whole history
    nf = len(xs)
    for h in range(nh):
        base = h * stride
        buf[base] = 1.0
        p = base + 1
        for i in range(nf):
            x = xs[i]
            buf[p] = x
            buf[p + 1] = 0.0
            buf[p + 2] = x
            buf[p + 3] = x
            p += 4


@kernel
def _step_model_kernel(buf, xs, dt, age, taus, inv_taus, out) -> None:  # pragma: no cover
    """Kernel of :meth:`RollingFeatures.step_model`: learn the event with values
    ``xs`` in the float64 buffer ``buf`` (in place) and write the model features
    ``[log_ratio per field, log_gap_rel, log_burst per non-longest horizon]`` to
    ``out`` (``len(xs) + len(taus)`` zeros on entry; filling a buffer the caller
    allocates is cheaper than returning a new array). ``taus`` / ``inv_taus``:
    the horizons and their inverses."""
    nf = len(xs)
    nh = len(taus)
    stride = 1 + 4 * nf
    last = (nh - 1) * stride
    # output slots: [0, nf) ratios, nf the gap, nf + 1 + h the burstiness of h
    w_long = buf[last]
    if w_long <= 0.0:
        _learn_first_kernel(buf, xs, nh, stride)  # all features 0
        return
    # the burstiness needs the non-longest counts before the event: park them in
    # their output slots (overwritten below)
    for h in range(nh - 1):
        out[nf + 1 + h] = buf[h * stride]
    # learn the event in every horizon; the longest horizon (last) also gives the
    # ratio features (its mean before the event is the key's baseline)
    for h in range(nh):
        d = exp_k(-dt * inv_taus[h])
        base = h * stride
        w0 = buf[base] * d
        w = w0 + 1.0
        buf[base] = w
        inv = 1.0 / w
        keep = w0 * inv
        p = base + 1
        for i in range(nf):
            x = xs[i]
            m = buf[p]
            delta = x - m
            mn = m + delta * inv
            buf[p] = mn
            buf[p + 1] = (buf[p + 1] + delta * delta * inv) * keep
            # decayed extremes: relax toward the new mean, pushed out by x
            lo = mn + (buf[p + 2] - mn) * d
            buf[p + 2] = x if x < lo else lo
            hi = mn + (buf[p + 3] - mn) * d
            buf[p + 3] = x if x > hi else hi
            p += 4
            if h != nh - 1:
                continue
            # ratio to the baseline: signed log1p(|x / m - 1|), m floored at 1e-12
            if x == m:
                out[i] = 0.0
                continue
            den = m
            if -RATIO_FLOOR < den < RATIO_FLOOR:
                den = RATIO_FLOOR if den >= 0.0 else -RATIO_FLOOR
            u = x / den - 1.0
            lr = math.log1p(u) if u >= 0.0 else -math.log1p(-u)
            out[i] = 50.0 if lr > 50.0 else (-50.0 if lr < -50.0 else lr)
    # time since the previous event relative to the usual spacing
    tau_l = taus[nh - 1]
    inv_l = inv_taus[nh - 1]
    if dt > 0.0:
        age_prev = age - dt
        eff_prev = -tau_l * math.expm1(-age_prev * inv_l) if age_prev > 0.0 else 0.0
        if eff_prev > 0.0:
            v = log_k(dt * w_long / eff_prev + GAP_EPS)
            out[nf] = 50.0 if v > 50.0 else (-50.0 if v < -50.0 else v)
        else:
            out[nf] = 0.0
    else:
        out[nf] = _LOG_GAP_EPS
    # burstiness: log(rate_h / rate_longest)
    if nh > 1:
        eff_long = -tau_l * math.expm1(-age * inv_l) if age > 0.0 else 0.0
        if eff_long > 0.0:
            lr_long = log_k(w_long) - dt * inv_l - log_k(eff_long)
            for h in range(nh - 1):
                k = inv_taus[h]
                # eff_h > 0: age / tau_h > age / tau_long, whose expm1 was nonzero
                eff_h = -taus[h] * math.expm1(-age * k)
                v = log_k(out[nf + 1 + h]) - dt * k - log_k(eff_h) - lr_long
                out[nf + 1 + h] = 50.0 if v > 50.0 else (-50.0 if v < -50.0 else v)
        else:
            for h in range(nh - 1):
                out[nf + 1 + h] = 0.0


class RollingFeatures:
    """Rolling features of one key for every field and horizon, on a flat buffer.

    Buffer layout (``size`` floats): for each horizon ``h``, ``1 + 4 * F`` floats
    ``[W_h, (mean, var, min, max) for each field]`` where ``W_h`` is the decayed
    count as of the key's last event. The logic object holds no per-key state.

    Model input vector (``names``), every entry bounded to +-50 and scale-free,
    in this order:

    * per horizon ``h``, per field: ``{field}.z_{h}`` = ``(x - mean_h) / sd``
      with ``sd = sqrt(max(var_h, var_longest))`` (the longest horizon's variance
      is a floor, so a short horizon holding one or two events does not produce
      huge z-scores; ``sd`` is also at least ``1e-9 * |mean_longest| + 1e-12``);
    * per field: ``{field}.log_ratio`` = signed ``log1p(|r - 1|)`` of the ratio
      ``r = x / mean_longest`` to the key's baseline (0 at the baseline, about
      ``log r`` for large ratios, denominator floored at 1e-12 in magnitude);
    * ``log_gap_rel`` = ``log(dt * rate_longest + 1e-3)``: time since the
      previous event relative to the key's usual spacing (rate as of the previous
      event, so a longer silence always gives a larger value);
    * per non-longest horizon ``h``: ``log_burst_{h}`` = ``log(rate_h /
      rate_longest)`` (burstiness; ``log_burst_{shortest}`` is short/long).

    A key's first event gets all zeros; where a rate is undefined (all past
    events at one instant) its features are 0; ``dt == 0`` gives
    ``log_gap_rel = log(1e-3)``.

    >>> rf = RollingFeatures(("cpu",), (60.0, 3600.0))
    >>> rf.names
    ('cpu.z_60s', 'cpu.z_3600s', 'cpu.log_ratio', 'log_gap_rel', 'log_burst_60s')
    >>> buf = rf.new_buffer()
    >>> for i, x in enumerate([10.0, 12.0, 10.0, 12.0]):
    ...     _ = rf.step(buf, rf.decays(60.0), 60.0 * (i > 0), 60.0 * i, [x])
    >>> [round(v, 3) for v in rf.step(buf, rf.decays(60.0), 60.0, 240.0, [20.0])]
    [8.538, 8.992, 0.597, 0.289, -0.533]
    """

    def __init__(self, field_names: Sequence[str], horizons_s: Sequence[float]) -> None:
        if isinstance(field_names, (str, bytes)) or not field_names:
            raise ValueError(
                f"field_names must be a non-empty sequence of names; got {field_names!r}"
            )
        self.field_names = tuple(str(f) for f in field_names)
        if len(set(self.field_names)) != len(self.field_names):
            raise ValueError(f"field_names must be free of duplicates; got {list(field_names)}")
        taus = tuple(_check_tau("horizons_s[]", h) for h in horizons_s)
        if not taus or list(taus) != sorted(set(taus)):
            raise ValueError(
                f"horizons_s must be non-empty and strictly increasing; got {list(horizons_s)}"
            )
        self.taus = taus
        self._inv_taus = tuple(1.0 / t for t in taus)
        self.n_fields = len(self.field_names)
        self.n_horizons = len(taus)
        self.stride = 1 + 4 * self.n_fields
        self.size = self.n_horizons * self.stride
        labels = [horizon_label(h) for h in taus]
        names: list[str] = [f"{f}.z_{lab}" for lab in labels for f in self.field_names]
        names.extend(f"{f}.log_ratio" for f in self.field_names)
        names.append("log_gap_rel")
        names.extend(f"log_burst_{lab}" for lab in labels[:-1])
        self.names = tuple(names)
        self._zeros = (0.0,) * len(names)
        # constants of the compiled kernel (same floats as taus / _inv_taus)
        self._taus_np = np.array(taus, dtype=np.float64)
        self._inv_taus_np = np.array(self._inv_taus, dtype=np.float64)
        self._out_zeros = array("d", bytes(8 * (self.n_fields + self.n_horizons)))

    def new_buffer(self) -> array:
        """A zeroed state buffer (``array("d")``) for a new key.

        >>> RollingFeatures(("a", "b"), (60.0,)).new_buffer()
        array('d', [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        """
        return array("d", bytes(8 * self.size))

    def decays(self, dt: float) -> list[float]:
        """Per-horizon decay factors ``exp(-dt / tau)`` for a gap of ``dt`` seconds."""
        return [_exp(-dt * k) for k in self._inv_taus]

    def step(
        self,
        buf: array,
        decays: Sequence[float],
        dt: float,
        age: float,
        xs: Sequence[float],
    ) -> tuple[float, ...]:
        """Model features of an event with (clamped) values ``xs`` from the state
        before it, then learn the event (mutates ``buf``). ``decays`` from
        :meth:`decays`; ``dt``: seconds since the previous event; ``age``: seconds
        from the key's first event to this one."""
        stride = self.stride
        nh = self.n_horizons
        last = (nh - 1) * stride
        w_long = buf[last]
        if w_long <= 0.0:
            self._learn_first(buf, xs)
            return self._zeros
        # state before the event: baseline (longest horizon) and counts
        m_longs = buf[last + 1 : last + stride : 4]
        v_longs = buf[last + 2 : last + stride : 4]
        counts = buf[0 : nh * stride : stride]
        fls = [SD_REL_FLOOR * (m if m >= 0.0 else -m) + SD_ABS_FLOOR for m in m_longs]
        out: list[float] = []
        app = out.append
        # z-scores against each horizon (horizon-major), learning the event as we go
        base = 0
        for d in decays:
            w0 = buf[base] * d
            w = w0 + 1.0
            buf[base] = w
            inv = 1.0 / w
            keep = w0 * inv
            p = base + 1
            for x, vl, fl in zip(xs, v_longs, fls, strict=True):
                m = buf[p]
                v = buf[p + 1]
                sd = _sqrt(v if v > vl else vl)
                delta = x - m
                z = delta / (sd if sd > fl else fl)
                app(50.0 if z > 50.0 else (-50.0 if z < -50.0 else z))
                mn = m + delta * inv
                buf[p] = mn
                buf[p + 1] = (v + delta * delta * inv) * keep
                lo = mn + (buf[p + 2] - mn) * d
                buf[p + 2] = x if x < lo else lo
                hi = mn + (buf[p + 3] - mn) * d
                buf[p + 3] = x if x > hi else hi
                p += 4
            base += stride
        # ratio to the baseline
        for x, m in zip(xs, m_longs, strict=True):
            if x == m:
                app(0.0)
                continue
            den = m
            if -RATIO_FLOOR < den < RATIO_FLOOR:
                den = RATIO_FLOOR if den >= 0.0 else -RATIO_FLOOR
            u = x / den - 1.0
            lr = _log1p(u) if u >= 0.0 else -_log1p(-u)
            app(50.0 if lr > 50.0 else (-50.0 if lr < -50.0 else lr))
        # time since the previous event relative to the usual spacing
        taus = self.taus
        inv_taus = self._inv_taus
        tau_l = taus[-1]
        if dt > 0.0:
            age_prev = age - dt
            eff_prev = -tau_l * _expm1(-age_prev * inv_taus[-1]) if age_prev > 0.0 else 0.0
            app(_bound(_log(dt * w_long / eff_prev + GAP_EPS)) if eff_prev > 0.0 else 0.0)
        else:
            app(_LOG_GAP_EPS)
        # burstiness: log(rate_h / rate_longest)
        if nh > 1:
            eff_long = -tau_l * _expm1(-age * inv_taus[-1]) if age > 0.0 else 0.0
            if eff_long > 0.0:
                lr_long = _log(w_long) - dt * inv_taus[-1] - _log(eff_long)
                for h in range(nh - 1):
                    # eff_h > 0: age / tau_h > age / tau_long, whose expm1 was nonzero
                    eff_h = -taus[h] * _expm1(-age * inv_taus[h])
                    app(_bound(_log(counts[h]) - dt * inv_taus[h] - _log(eff_h) - lr_long))
            else:
                out.extend(self._zeros[: nh - 1])
        return tuple(out)

    def step_model(self, buf: array, dt: float, age: float, xs: Sequence[float]) -> list[float]:
        """The features of :meth:`step` without the per-horizon z-scores (the
        ``log_ratio``, ``log_gap_rel`` and ``log_burst`` entries, in ``names``
        order, as a new list), then learn the event exactly as :meth:`step` does;
        the decays are computed here (:meth:`decays`). The fast path of
        :class:`~streamsift.models.keylogic.KeyLogic`, whose model input leaves
        the z-scores out: the same floating-point operations in the same order,
        so every value and the buffer are bit-identical to :meth:`step`'s.

        Runs the compiled kernel ``_step_model_kernel`` in place on ``buf``
        (an ``array("d")`` from :meth:`new_buffer`; a list also works, through a
        copy). ``xs``: one value per field, ideally an ``array("d")`` (any
        sequence of floats is converted).

        >>> rf = RollingFeatures(("cpu",), (60.0, 3600.0))
        >>> a, b = rf.new_buffer(), rf.new_buffer()
        >>> for i, x in enumerate([10.0, 12.0, 10.0, 12.0, 20.0]):
        ...     dt = 60.0 * (i > 0)
        ...     full = rf.step(a, rf.decays(dt), dt, 60.0 * i, [x])
        ...     tail = rf.step_model(b, dt, 60.0 * i, [x])
        >>> tail == list(full[2:]), a == b, [round(v, 3) for v in tail]
        (True, True, [0.597, 0.289, -0.533])
        """
        if type(xs) is not array or xs.typecode != "d":
            xs = array("d", xs)
        if len(xs) != self.n_fields:
            raise ValueError(f"xs must have {self.n_fields} values (one per field); got {len(xs)}")
        if type(dt) is not float:
            dt = float(dt)
        if type(age) is not float:
            age = float(age)
        out = self._out_zeros[:]  # a fresh zeroed array("d") per call
        if type(buf) is array and buf.typecode == "d" and len(buf) == self.size:
            _step_model_kernel(buf, xs, dt, age, self._taus_np, self._inv_taus_np, out)
            return out.tolist()
        # any other buffer (a list, another typecode): run on a float64 copy,
        # then write it back
        if len(buf) != self.size:
            raise ValueError(f"buf must hold {self.size} floats; got {len(buf)}")
        tmp = array("d", buf)
        _step_model_kernel(tmp, xs, dt, age, self._taus_np, self._inv_taus_np, out)
        buf[:] = array(buf.typecode, tmp) if isinstance(buf, array) else tmp.tolist()
        return out.tolist()

    def _learn_first(self, buf: array, xs: Sequence[float]) -> None:
        # first event, or every horizon forgotten: the event is the whole history
        stride = self.stride
        for base in range(0, self.size, stride):
            buf[base] = 1.0
            p = base + 1
            for x in xs:
                buf[p] = x
                buf[p + 1] = 0.0
                buf[p + 2] = x
                buf[p + 3] = x
                p += 4

    def describe(
        self,
        buf: array,
        dt: float,
        age: float,
        xs: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """Human-readable rolling statistics evaluated ``dt`` seconds after the key's
        last event (``age`` seconds after its first): per field and horizon the
        decayed mean, std, min, max; per horizon the decayed count and rate;
        ``time_since_prev_s``; ``burstiness`` (shortest / longest rate); with
        values ``xs`` also each field's ``ratio_to_baseline``."""
        out: dict[str, float] = {}
        stride = self.stride
        rates = []
        for h, tau in enumerate(self.taus):
            lab = horizon_label(tau)
            d = _exp(-dt / tau)
            base = h * stride
            for i, f in enumerate(self.field_names):
                p = base + 1 + 4 * i
                m = buf[p]
                out[f"{f}.mean_{lab}"] = m
                out[f"{f}.std_{lab}"] = _sqrt(buf[p + 1])
                out[f"{f}.min_{lab}"] = m + (buf[p + 2] - m) * d
                out[f"{f}.max_{lab}"] = m + (buf[p + 3] - m) * d
            cnt = buf[base] * d
            eff = -tau * _expm1(-age / tau)
            rate = cnt / eff if eff > 0.0 else 0.0
            rates.append(rate)
            out[f"count_{lab}"] = cnt
            out[f"rate_{lab}"] = rate
        out["time_since_prev_s"] = dt
        out["burstiness"] = rates[0] / rates[-1] if rates[-1] > 0.0 else 0.0
        if xs is not None:
            last = (self.n_horizons - 1) * stride
            for i, f in enumerate(self.field_names):
                m = buf[last + 1 + 4 * i]
                den = m if abs(m) >= RATIO_FLOOR else _copysign(RATIO_FLOOR, m)
                out[f"{f}.ratio_to_baseline"] = float(xs[i]) / den
        return out
