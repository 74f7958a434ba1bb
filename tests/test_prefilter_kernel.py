"""The compiled stage-1 EWMA kernel (``prefilter._ewma_step_k``) against its own
interpreted Python (``.py_func``), and the ``Prefilter`` wrappers around it."""

from __future__ import annotations

import math
import random
import struct
from array import array

import pytest

from streamsift.config import PrefilterConfig
from streamsift.models import prefilter as pfm
from streamsift.models.prefilter import Prefilter

_SPECIAL = (0.0, -0.0, 1e-300, -1e-12, 5e-13, 1e100, -1e100, 1.0, 2.0)


def _stream(nf: int, seed: int, n_events: int):
    """Seeded events ``(dt, values)`` with level shifts (re-adaptation), spikes,
    count-like fields (inactive pairs), repeated timestamps and edge values."""
    rng = random.Random(seed)
    for n in range(n_events):
        dt = 0.0 if n == 0 else rng.choice([0.0, 0.0, 1e-9, 1.0, 60.0, 60.0, 3600.0, 1e12])
        level = 50.0 * ((n // 60) % 3)
        xs = []
        for i in range(nf):
            r = rng.random()
            if r < 0.08:
                xs.append(rng.choice(_SPECIAL))
            elif r < 0.12:
                xs.append(level + rng.choice([-1.0, 1.0]) * 1e3)  # spike
            elif i == 1:
                xs.append(float(rng.randint(0, 2)))  # a count
            else:
                xs.append(level + rng.gauss(10.0 * i, 1.0 + i))
        yield dt, xs


def _interpreted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Point the kernel's helpers at their Python functions (so ``.py_func`` runs
    no compiled code) and count the helper's re-adaptations."""
    counts = {"readapted": 0, "held": 0}
    flag = pfm._ewma_flag_k.py_func

    def counting_flag(buf, o, x, d, readapt_after):
        readapted = flag(buf, o, x, d, readapt_after)
        counts["readapted" if readapted else "held"] += 1
        return readapted

    monkeypatch.setattr(pfm, "_ewma_flag_k", counting_flag)
    monkeypatch.setattr(pfm, "_ewma_learn_k", pfm._ewma_learn_k.py_func)
    monkeypatch.setattr(pfm, "log_k", pfm.log_k.py_func)
    return counts


@pytest.mark.parametrize("nf", [1, 2, 5])
def test_kernel_matches_its_python(nf: int, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = pfm._ewma_step_k
    # compile (or load) the kernel before its helpers are swapped for Python functions
    once = Prefilter(("a",), PrefilterConfig())
    once.step(once.new_buffer(), 0, 0.0, [1.0])
    counts = _interpreted(monkeypatch)
    pf = Prefilter(tuple(f"f{i}" for i in range(nf)), PrefilterConfig(warmup_events=3))
    thr, ra = 2.0, 4.0
    b1, b2 = pf.new_buffer(), pf.new_buffer()
    flagged = 0
    for n, (dt, xs) in enumerate(_stream(nf, 11 + nf, 500)):
        vals = array("d", xs)
        o1, o2 = array("d", pf._out_zeros), array("d", pf._out_zeros)
        s1 = compiled(b1, vals, o1, n, dt, pf._k, thr, 3, ra)
        s2 = compiled.py_func(b2, vals, o2, n, dt, pf._k, thr, 3, ra)
        assert struct.pack("<d", s1) == struct.pack("<d", s2), n
        assert o1.tobytes() == o2.tobytes(), n
        assert b1.tobytes() == b2.tobytes(), n
        flagged += s1 >= thr
    # the stream exercised the policy: flagged points held out, and re-adaptations
    assert flagged > 50
    assert counts["held"] > 20 and counts["readapted"] > 5
    # every value stayed finite
    assert all(math.isfinite(v) for v in b1)


def test_sequences_and_buffers_agree() -> None:
    """``xs`` as array("d"), tuple or list and a list buffer give the same results."""
    cfg = PrefilterConfig(warmup_events=4, readapt_after=3, escalate_score=2.5)
    pf = Prefilter(("a", "b", "c"), cfg)
    bufs = [pf.new_buffer(), pf.new_buffer(), pf.new_buffer(), [0.0] * pf.size]
    assert type(bufs[0]) is array and bufs[0].typecode == "d" and len(bufs[0]) == pf.size
    n_reasons = 0
    for n, (dt, xs) in enumerate(_stream(3, 5, 300)):
        results = [
            pf.step(bufs[0], n, dt, array("d", xs)),
            pf.step(bufs[1], n, dt, tuple(xs)),
            pf.step(bufs[2], n, dt, xs),
            pf.step(bufs[3], n, dt, xs),
        ]
        assert all(repr(r) == repr(results[0]) for r in results), n
        assert all(list(b) == list(bufs[0]) for b in bufs), n
        assert all(type(z) is float for z in results[0][2])
        n_reasons += len(results[0][1])
    assert type(bufs[3]) is list
    assert n_reasons > 20


@pytest.mark.parametrize("method", ["ewma", "mad"])
def test_generic_step_on_array_buffer(method: str) -> None:
    """The Python path (MAD, or EWMA unfused) on the array buffer equals it on a
    list buffer, and the fused EWMA kernel equals the Python path."""
    cfg = PrefilterConfig(method=method, warmup_events=3, readapt_after=2, escalate_score=2.0)
    pf = Prefilter(("a", "b"), cfg)
    slow = Prefilter(("a", "b"), cfg)
    slow._fused = False
    fast_buf, arr_buf, list_buf = pf.new_buffer(), slow.new_buffer(), [0.0] * slow.size
    for n, (dt, xs) in enumerate(_stream(2, 8, 300)):
        a = slow.step(arr_buf, n, dt, array("d", xs))
        b = slow.step(list_buf, n, dt, tuple(xs))
        c = pf.step(fast_buf, n, dt, xs)
        assert repr(a) == repr(b) == repr(c), n
        assert list(arr_buf) == list_buf == list(fast_buf), n


def test_wrong_number_of_values() -> None:
    pf = Prefilter(("a", "b"), PrefilterConfig())
    buf = pf.new_buffer()
    with pytest.raises(ValueError, match="xs must have 2 values"):
        pf._step_ewma(buf, 0, 0.0, array("d", [1.0]))
    assert buf == pf.new_buffer()  # nothing learned
