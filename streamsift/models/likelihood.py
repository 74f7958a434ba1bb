"""Anomaly likelihood: one threshold that means the same on every stream.

A raw anomaly score (any scale, higher = more anomalous) is turned into the
probability that its recent level is *not* ordinary for this stream, in the
style of Numenta's anomaly likelihood (Ahmad et al. 2017):

* the short-term mean ``a_t`` of the last ``window`` raw scores (a ring buffer);
* a long-term, exponentially weighted mean ``m`` and variance ``v`` of ``a``
  (half-life ``half_life`` events; the first value initialises the mean);
* the tail probability of ``a_t`` under ``Normal(m, max(sd, min_sd))``:
  ``tail = 0.5 * erfc((a_t - m) / (sd * sqrt(2)))``; the *likelihood* is
  ``1 - tail``.

Everything is computed from the state before the score, which is then learnt,
so the output is causal. A stream whose raw scores are always high (noisy) has
a high ``m`` and large ``sd``: the same raw score yields a lower likelihood there
than on a quiet stream.

State is a flat buffer of ``2 + window`` floats (layout in
:class:`AnomalyLikelihood`), so it can be embedded in a larger per-key buffer.
The number of scores learnt before is not stored: the caller passes it (the
ring position, its fill and the long-term weight follow from it), so a buffer
of ``array("f")`` holds no more than the statistics themselves.

>>> lik = AnomalyLikelihood(window=3, half_life=100.0)
>>> buf = lik.new_buffer()
>>> tails = [lik.step(buf, 0, 0.1 + 0.01 * (i % 2), i) for i in range(200)]
>>> round(tails[-1], 3) > 0.01          # ordinary: not in the tail
True
>>> lik.step(buf, 0, 0.9, 200) < 1e-6   # a jump of the short-term mean: far in the tail
True
"""

from __future__ import annotations

import math

import numpy as np

from streamsift.models.jit import kernel

__all__ = ["AnomalyLikelihood", "likelihood_step", "tail_to_score"]

_SQRT2 = math.sqrt(2.0)
_sqrt = math.sqrt
_erfc = math.erfc


def tail_to_score(tail: float, decades: float = 12.0) -> float:
    """Map a tail probability to a score in [0, 1] on a log scale:
    ``min(1, -log10(tail) / decades)`` (``tail = 1e-6`` -> 0.5 with 12 decades).
    Monotone decreasing in ``tail``; rounding-free ordering of tiny tails.

    >>> [round(tail_to_score(t), 4) for t in (1.0, 0.5, 1e-6, 1e-12, 0.0)]
    [0.0, 0.0251, 0.5, 1.0, 1.0]
    >>> tail_to_score(0.5, decades=0.0)
    Traceback (most recent call last):
    ...
    ValueError: decades must be > 0; got 0.0
    """
    if not decades > 0:
        raise ValueError(f"decades must be > 0; got {decades!r}")
    if tail >= 1.0:
        return 0.0
    floor = 10.0**-decades
    s = -math.log10(tail if tail > floor else floor) / decades
    return 1.0 if s > 1.0 else (0.0 if s < 0.0 else s)


class AnomalyLikelihood:
    """Tail probability of the short-term mean of raw scores (see the module doc).

    Buffer layout from offset ``o`` (``size`` floats): mean, variance, then
    ``window`` ring slots. :meth:`step` takes ``n``, the number of scores the
    buffer has learnt before: the ring position is ``n % window``, its fill
    ``min(n, window)``, and the long-term weight after ``n`` scores is
    ``(1 - (1 - alpha) ** n) / alpha`` (a new mean learns with
    ``1 / weight``, at least ``alpha``).

    ``learn_one`` / ``score_one`` keep an internal buffer and count for
    standalone use (``score_one`` is read-only; ``step`` on a caller's buffer
    scores and learns).

    >>> lik = AnomalyLikelihood(window=2, half_life=50.0)
    >>> lik.size
    4
    >>> for x in [1.0, 1.2] * 50:
    ...     lik.learn_one(x)
    >>> round(lik.score_one(1.0), 3), lik.score_one(5.0) < 1e-9
    (0.481, True)
    >>> AnomalyLikelihood(window=0)
    Traceback (most recent call last):
    ...
    ValueError: window must be an integer >= 1; got 0
    """

    HEADER = 2

    def __init__(self, window: int = 10, half_life: float = 500.0, min_sd: float = 0.01) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1; got {window!r}")
        if not (isinstance(half_life, (int, float)) and math.isfinite(half_life) and half_life > 0):
            raise ValueError(f"half_life must be a finite number > 0; got {half_life!r}")
        if not (isinstance(min_sd, (int, float)) and math.isfinite(min_sd) and min_sd > 0):
            raise ValueError(f"min_sd must be a finite number > 0; got {min_sd!r}")
        self.window = window
        self.half_life = float(half_life)
        self.min_sd = float(min_sd)
        self._alpha = 1.0 - 0.5 ** (1.0 / self.half_life)
        self._keep = 1.0 - self._alpha
        # past this count (1 - alpha) ** n is negligible: the rate is alpha itself
        self._settled = int(math.log(1e-12) / math.log(self._keep)) + 1 if self._keep > 0 else 1
        self.size = self.HEADER + window
        self._own = self.new_buffer()
        self._n = 0

    def new_buffer(self) -> list[float]:
        """A zeroed state buffer."""
        return [0.0] * self.size

    def rate(self, n: int) -> float:
        """Learning rate of the ``n``-th score after the first (``n >= 1``): the
        reciprocal of the long-term weight ``(1 - (1 - alpha) ** (n + 1)) / alpha``.

        >>> lik = AnomalyLikelihood(half_life=1.0)
        >>> lik.rate(1), lik.rate(10**6)
        (0.6666666666666666, 0.5)
        """
        if n >= self._settled:
            return self._alpha
        return self._alpha / (1.0 - self._keep ** (n + 1))

    def _short_mean(self, buf, o: int, raw: float, n: int) -> tuple[float, int]:
        """Short-term mean including ``raw`` (not stored) and the slot to write."""
        w = self.window
        h = o + self.HEADER
        pos = n % w
        if n >= w:
            total = _sum_lr(buf[h : h + w]) - buf[h + pos]
            return (total + raw) / w, pos
        return (_sum_lr(buf[h : h + n]) + raw) / (n + 1), pos

    def _tail(self, buf, o: int, avg: float, n: int) -> float:
        if n <= 0:
            return 0.5
        v = buf[o + 1]
        sd = math.sqrt(v) if v > 0.0 else 0.0
        if sd < self.min_sd:
            sd = self.min_sd
        return 0.5 * math.erfc((avg - buf[o]) / (sd * _SQRT2))

    def step(self, buf, o: int, raw: float, n: int) -> float:
        """Tail probability (in (0, 1]; small = anomalous) of ``raw`` joining the
        short-term window, from the state before it; then learn it. ``n``: the
        scores learnt into this buffer before (0 for a new one)."""
        # _short_mean and _tail inlined (same arithmetic, in the same order): this
        # runs once per event of every key
        w = self.window
        h = o + 2  # HEADER
        pos = n % w
        if n >= w:
            avg = (_sum_lr(buf[h : h + w]) - buf[h + pos] + raw) / w
        else:
            avg = (_sum_lr(buf[h : h + n]) + raw) / (n + 1)
        buf[h + pos] = raw
        if n <= 0:
            buf[o] = avg
            buf[o + 1] = 0.0
            return 0.5
        m = buf[o]
        v = buf[o + 1]
        sd = _sqrt(v) if v > 0.0 else 0.0
        if sd < self.min_sd:
            sd = self.min_sd
        d = avg - m
        tail = 0.5 * _erfc(d / (sd * _SQRT2))
        a = self._alpha if n >= self._settled else self._alpha / (1.0 - self._keep ** (n + 1))
        buf[o] = m + a * d
        buf[o + 1] = (1.0 - a) * (v + a * d * d)
        return tail

    def kernel_args(self) -> tuple[int, float, float, int, float]:
        """The parameters :func:`likelihood_step` takes after ``(buf, o, raw, n)``.

        >>> AnomalyLikelihood(window=3, half_life=1.0).kernel_args()
        (3, 0.5, 0.5, 40, 0.01)
        """
        return (self.window, self._alpha, self._keep, self._settled, self.min_sd)

    def learn_one(self, raw: float) -> None:
        """Learn one raw score into the internal buffer."""
        self.step(self._own, 0, raw, self._n)
        self._n += 1

    def score_one(self, raw: float) -> float:
        """Tail probability of ``raw`` against the internal buffer (read-only)."""
        avg, _ = self._short_mean(self._own, 0, raw, self._n)
        return self._tail(self._own, 0, avg, self._n)


def _sum_lr(xs) -> float:
    """Left-to-right float64 sum, as the compiled :func:`likelihood_step` adds (the
    builtin ``sum`` did the same up to Python 3.11; 3.12 compensates).

    >>> _sum_lr([0.1, 0.2, 0.3]) == (0.1 + 0.2) + 0.3
    True
    """
    total = 0.0
    for x in xs:
        total += x
    return total


@kernel
def likelihood_step(buf, o, raw, n, window, alpha, keep, settled, min_sd):
    """Compiled :meth:`AnomalyLikelihood.step` on a float32 or float64 buffer
    (``array("f")`` / ``array("d")`` / numpy), with the likelihood's parameters
    passed in (:meth:`AnomalyLikelihood.kernel_args`); the same arithmetic in the
    same order, so the same bits. Every buffer read is widened to float64 before
    any arithmetic (numba would otherwise keep float32 OP float32 in float32).
    """
    h = o + 2  # HEADER
    pos = n % window
    # plain left-to-right float64 additions, as _sum_lr in the Python path
    total = 0.0
    if n >= window:
        for k in range(h, h + window):
            total += np.float64(buf[k])
        avg = (total - np.float64(buf[h + pos]) + raw) / window
    else:
        for k in range(h, h + n):
            total += np.float64(buf[k])
        avg = (total + raw) / (n + 1)
    buf[h + pos] = raw
    if n <= 0:
        buf[o] = avg
        buf[o + 1] = 0.0
        return 0.5
    m = np.float64(buf[o])
    v = np.float64(buf[o + 1])
    sd = math.sqrt(v) if v > 0.0 else 0.0
    if sd < min_sd:
        sd = min_sd
    d = avg - m
    tail = 0.5 * math.erfc(d / (sd * _SQRT2))
    # keep ** (n + 1) with a float exponent: numba computes float ** int by repeated
    # multiplication, Python (and this) by the C library's pow()
    a = alpha if n >= settled else alpha / (1.0 - keep ** np.float64(n + 1))
    buf[o] = m + a * d
    buf[o + 1] = (1.0 - a) * (v + a * d * d)
    return tail
