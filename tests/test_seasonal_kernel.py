"""The compiled SeasonalDetector kernel against its own interpreted Python
(``.py_func``): identical outputs and state, event by event, over a seeded stream
with flagged points, re-adaptation, re-based codes and edge values, on 32-bit and
64-bit bin words; and the compiled likelihood against AnomalyLikelihood.step."""

from __future__ import annotations

import math
import random
import struct
from array import array

import pytest

from streamsift.config import DetectorConfig
from streamsift.models import likelihood, seasonal
from streamsift.models.likelihood import AnomalyLikelihood
from streamsift.models.seasonal import DetectorResult, SeasonalDetector

FIELDS = ("a", "b", "c")


def _bits(values) -> list[int]:
    """Every float as its 64-bit pattern (tells -0.0 from 0.0; NaN-safe)."""
    return [struct.unpack("<q", struct.pack("<d", float(v)))[0] for v in values]


def _stream(seed: int, n: int) -> list[tuple[float, list[float]]]:
    """A seasonal field with spikes, a field with a level shift (flagged runs, then
    re-adaptation) and a field whose range keeps growing (re-based codes), plus edge
    values (clamped, zero, negative zero, NaN) now and then."""
    rnd = random.Random(seed)
    rows = []
    for k in range(n):
        a = 10.0 + 3.0 * math.sin(k / 7.0) + rnd.gauss(0.0, 0.3)
        if rnd.random() < 0.03:
            a += rnd.choice((40.0, -40.0))
        b = 5.0 + rnd.gauss(0.0, 0.1) + (4.0 if k >= n // 2 else 0.0)
        c = k * 0.5 * (1.0 + (k % 53 == 0) * 30.0) + rnd.random()
        r = rnd.random()
        if r < 0.01:
            a = 1e300
        elif r < 0.02:
            c = -1e300
        elif r < 0.03:
            b = rnd.choice((0.0, -0.0, float("nan")))
        rows.append((-1e-9 if k == 0 else 60.0 * k + rnd.random(), [a, b, c]))
    return rows


@pytest.fixture
def interpreted(monkeypatch):
    """Run ``_step_kernel.py_func`` with every kernel it calls interpreted too."""
    # compile (or load) the kernels, for 32- and 64-bit words, before their module
    # globals are swapped
    for cfg in (DetectorConfig(), DetectorConfig(readapt_after=70)):
        det = SeasonalDetector(("x",), cfg)
        st = det.new_buffer()
        det.step(st, 0.0, [1.0])
        det.step(st, 1.0, [2.0])
    for name in ("_rebase_field", "_start_fields", "_code", "likelihood_step"):
        monkeypatch.setattr(seasonal, name, getattr(seasonal, name).py_func)
    # the kernels' int64 words as Python ints (the compiled int64 arithmetic wraps
    # to the same bits; numpy's int64 would raise on a uint64 word's run codes)
    monkeypatch.setattr(seasonal, "_i64", int)

    def step(det: SeasonalDetector, st, ts: float, xs: list[float]):
        out = array("d", bytes(40 * len(xs)))
        res = seasonal._step_kernel.py_func(
            st.floats, st.words, ts, array("d", xs), out, *det._kargs
        )
        return res, out

    return step


@pytest.mark.parametrize(
    ("cfg", "typecode"),
    [
        (
            DetectorConfig(
                season_bins=4,
                readapt_after=6,
                flag_z=4.0,
                warmup_events=60,
                suppress_events=5,
                alert_score=0.3,
            ),
            "I",
        ),
        (DetectorConfig(season_bins=3, readapt_after=70, warmup_events=55, flag_z=4.0), "Q"),
    ],
)
def test_compiled_step_equals_interpreted_kernel(cfg, typecode, interpreted):
    det = SeasonalDetector(FIELDS, cfg)
    compiled_st, py_st = det.new_buffer(), det.new_buffer()
    assert compiled_st.words.typecode == typecode
    seen = {"flagged": 0, "spatial": 0, "alerts": 0}
    for ts, xs in _stream(seed=len(typecode) + cfg.readapt_after, n=400):
        res = det.step(compiled_st, ts, array("d", xs))
        (score, z, tail, spatial), out = interpreted(det, py_st, ts, xs)
        assert type(res) is DetectorResult
        assert _bits(res[:3]) == _bits((score, z, tail))
        assert res.spatial is bool(spatial)
        assert _bits(x for dev in res.deviations for x in dev) == _bits(out)
        assert all(type(dev[4]) is bool for dev in res.deviations)
        assert compiled_st == py_st  # floats and words, every value
        seen["flagged"] += any(d[0] >= cfg.flag_z for d in res.deviations)
        seen["spatial"] += res.spatial
        seen["alerts"] += res.score >= cfg.alert_score
    assert det.encode(compiled_st) == det.encode(py_st)
    # the stream exercised the paths that matter
    assert seen["flagged"] > 10 and seen["spatial"] > 0 and seen["alerts"] > 0
    # re-based codes: the growing field's code step is far wider than its first one
    assert compiled_st.floats[det._fields_o + 2 * 11 + 7] > 1.0


def test_step_accepts_lists_tuples_and_arrays_alike():
    det = SeasonalDetector(FIELDS, DetectorConfig(season_bins=2, warmup_events=1))
    rows = _stream(seed=3, n=120)
    states = [det.new_buffer() for _ in range(3)]
    for ts, xs in rows:
        a, b, c = (
            det.step(states[0], ts, xs),
            det.step(states[1], ts, tuple(xs)),
            det.step(states[2], ts, array("d", xs)),
        )
        assert repr(a) == repr(b) == repr(c)
    assert states[0] == states[1] == states[2]
    with pytest.raises(ValueError, match="xs must have at most 3 values; got 4"):
        det.step(states[0], 0.0, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="ts must be a finite number"):
        det.step(states[0], math.nan, [1.0, 2.0, 3.0])
    # the kernel does not check indices: a state of another detector's shape is refused
    other = SeasonalDetector(FIELDS, DetectorConfig(season_bins=3)).new_buffer()
    with pytest.raises(ValueError, match=r"st must hold array\('f'\) of 45 and array\('I'\)"):
        det.step(other, 0.0, [1.0, 2.0, 3.0])


def test_compiled_likelihood_equals_anomaly_likelihood_step():
    lik = AnomalyLikelihood(window=4, half_life=30.0)
    rnd = random.Random(7)
    raws = [rnd.random() ** 3 for _ in range(150)] + [0.95] * 6 + [1e-9] * 20
    ref = array("f", bytes(4 * lik.size))
    fast = array("f", bytes(4 * lik.size))
    tails = []
    for n, raw in enumerate(raws):
        t_ref = lik.step(ref, 0, raw, n)
        t_fast = likelihood.likelihood_step(fast, 0, raw, n, *lik.kernel_args())
        assert _bits([t_ref]) == _bits([t_fast])
        assert ref == fast
        tails.append(t_fast)
    # the jump to 0.95 went far into the tail, the drop after it far out of it
    assert min(tails[150:156]) < 1e-4 and max(tails[156:]) > 0.8
