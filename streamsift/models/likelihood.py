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

State is a flat ``list[float]`` (layout in :class:`AnomalyLikelihood`), so it
can be embedded in a larger per-key buffer and encoded as float64.

>>> lik = AnomalyLikelihood(window=3, half_life=100.0)
>>> buf = lik.new_buffer()
>>> tails = [lik.step(buf, 0, 0.1 + 0.01 * (i % 2)) for i in range(200)]
>>> round(tails[-1], 3) > 0.01          # ordinary: not in the tail
True
>>> lik.step(buf, 0, 0.9) < 1e-6       # a jump of the short-term mean: far in the tail
True
"""

from __future__ import annotations

import math

__all__ = ["AnomalyLikelihood", "tail_to_score"]

_SQRT2 = math.sqrt(2.0)


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

    Buffer layout from offset ``o`` (``size`` floats): weight, mean, variance,
    ring position, ring fill, then ``window`` ring slots.

    ``learn_one`` / ``score_one`` keep an internal buffer for standalone use
    (``score_one`` is read-only; ``step`` on a caller's buffer scores and learns).

    >>> lik = AnomalyLikelihood(window=2, half_life=50.0)
    >>> lik.size
    7
    >>> for x in [1.0, 1.2] * 50:
    ...     lik.learn_one(x)
    >>> round(lik.score_one(1.0), 3), lik.score_one(5.0) < 1e-9
    (0.481, True)
    >>> AnomalyLikelihood(window=0)
    Traceback (most recent call last):
    ...
    ValueError: window must be an integer >= 1; got 0
    """

    HEADER = 5

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
        self.size = self.HEADER + window
        self._own = self.new_buffer()

    def new_buffer(self) -> list[float]:
        """A zeroed state buffer."""
        return [0.0] * self.size

    def _short_mean(self, buf: list[float], o: int, raw: float) -> tuple[float, int, int]:
        """Short-term mean including ``raw`` (not stored), slot to write, new fill."""
        w = self.window
        pos = int(buf[o + 3])
        fill = int(buf[o + 4])
        ring = buf[o + self.HEADER : o + self.HEADER + w]
        total = sum(ring) if fill >= w else sum(ring[:fill])
        if fill >= w:
            total -= ring[pos]
            new_fill = w
        else:
            new_fill = fill + 1
        return (total + raw) / new_fill, pos, new_fill

    def _tail(self, buf: list[float], o: int, avg: float) -> float:
        if buf[o] <= 0.0:
            return 0.5
        sd = math.sqrt(buf[o + 2]) if buf[o + 2] > 0.0 else 0.0
        if sd < self.min_sd:
            sd = self.min_sd
        return 0.5 * math.erfc((avg - buf[o + 1]) / (sd * _SQRT2))

    def step(self, buf: list[float], o: int, raw: float) -> float:
        """Tail probability (in (0, 1]; small = anomalous) of ``raw`` joining the
        short-term window, from the state before it; then learn it."""
        avg, pos, fill = self._short_mean(buf, o, raw)
        tail = self._tail(buf, o, avg)
        buf[o + self.HEADER + pos] = raw
        buf[o + 3] = float((pos + 1) % self.window)
        buf[o + 4] = float(fill)
        w = buf[o]
        if w <= 0.0:
            buf[o] = 1.0
            buf[o + 1] = avg
            buf[o + 2] = 0.0
        else:
            w = w * (1.0 - self._alpha) + 1.0
            a = self._alpha if self._alpha > 1.0 / w else 1.0 / w
            d = avg - buf[o + 1]
            buf[o] = w
            buf[o + 1] += a * d
            buf[o + 2] = (1.0 - a) * (buf[o + 2] + a * d * d)
        return tail

    def learn_one(self, raw: float) -> None:
        """Learn one raw score into the internal buffer."""
        self.step(self._own, 0, raw)

    def score_one(self, raw: float) -> float:
        """Tail probability of ``raw`` against the internal buffer (read-only)."""
        avg, _, _ = self._short_mean(self._own, 0, raw)
        return self._tail(self._own, 0, avg)
