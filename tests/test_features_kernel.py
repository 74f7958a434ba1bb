"""The compiled kernel of RollingFeatures.step_model against its own Python source.

``_step_model_kernel.py_func`` is the readable kernel run by the interpreter; the
compiled kernel must give the same bits (features and buffer) on a seeded
stream with the edge cases (first event, dt == 0, huge dt, baselines near the
ratio floor, values at +-MAX_ABS_VALUE), and ``step_model`` must stay the tail
of the pure-Python ``step`` (z-scores included there).
"""

from __future__ import annotations

import random
from array import array

import pytest

from streamsift.models.features import (
    MAX_ABS_VALUE,
    MAX_DT_S,
    RATIO_FLOOR,
    RollingFeatures,
    _step_model_kernel,
)

_SPECIAL = (0.0, -0.0, RATIO_FLOOR, -RATIO_FLOOR, 0.5 * RATIO_FLOOR, -0.5 * RATIO_FLOOR)
_SPECIAL += (2.0 * RATIO_FLOOR, MAX_ABS_VALUE, -MAX_ABS_VALUE, 1e50)
_GAPS = (0.0, 0.0, 1e-9, 1.0, 60.0, 600.0, 1e5, MAX_DT_S)


def _stream(seed: int, n_fields: int, n: int):
    """Seeded (dt, age, xs) triples as KeyLogic makes them (dt, age clamped)."""
    rng = random.Random(seed)
    age = 0.0
    for j in range(n):
        dt = 0.0 if j == 0 else rng.choice(_GAPS)
        age = min(age + dt, MAX_DT_S)
        xs = [
            rng.choice(_SPECIAL) if rng.random() < 0.3 else rng.gauss(20.0, 5.0)
            for _ in range(n_fields)
        ]
        yield dt, age, array("d", xs)


@pytest.mark.parametrize("horizons", [(60.0,), (60.0, 3600.0), (60.0, 900.0, 3600.0)])
def test_compiled_kernel_matches_its_python_source(horizons):
    rf = RollingFeatures(("a", "b", "c", "d"), horizons)
    b_jit, b_py = rf.new_buffer(), rf.new_buffer()
    n_sat = n_floor = 0
    for dt, age, xs in _stream(11, 4, 600):
        o_jit, o_py = rf._out_zeros[:], rf._out_zeros[:]
        _step_model_kernel(b_jit, xs, dt, age, rf._taus_np, rf._inv_taus_np, o_jit)
        _step_model_kernel.py_func(b_py, xs, dt, age, rf._taus_np, rf._inv_taus_np, o_py)
        assert o_jit.tobytes() == o_py.tobytes()
        assert b_jit.tobytes() == b_py.tobytes()
        n_sat += sum(abs(v) == 50.0 for v in o_jit)
        n_floor += sum(abs(m) < RATIO_FLOOR for m in b_jit[-rf.stride + 1 :: 4])
    # the stream did reach the bounds and the ratio floor
    assert n_sat > 0 and n_floor > 0


@pytest.mark.parametrize("horizons", [(60.0,), (60.0, 900.0, 3600.0)])
def test_step_model_is_the_tail_of_step(horizons):
    rf = RollingFeatures(tuple(f"f{i}" for i in range(8)), horizons)
    full_buf, fast_buf, list_buf = rf.new_buffer(), rf.new_buffer(), [0.0] * rf.size
    n_z = rf.n_fields * rf.n_horizons
    for dt, age, xs in _stream(5, 8, 300):
        full = rf.step(full_buf, rf.decays(dt), dt, age, xs)
        fast = rf.step_model(fast_buf, dt, age, xs)
        # any sequence of values and a list buffer give the same result
        slow = rf.step_model(list_buf, dt, age, tuple(xs))
        assert type(fast) is list and len(fast) == len(rf.names) - n_z
        assert array("d", fast).tobytes() == array("d", full[n_z:]).tobytes()
        assert array("d", slow).tobytes() == array("d", fast).tobytes()
        assert fast_buf.tobytes() == full_buf.tobytes() == array("d", list_buf).tobytes()


def test_first_event_and_buffer_type():
    rf = RollingFeatures(("a", "b"), (60.0, 3600.0))
    buf = rf.new_buffer()
    assert type(buf) is array and buf.typecode == "d" and list(buf) == [0.0] * rf.size
    assert rf.step_model(buf, 0.0, 0.0, [3.0, -1.0]) == [0.0, 0.0, 0.0, 0.0]
    # every horizon holds the event alone: weight 1, mean x, var 0, min = max = x
    assert list(buf) == [1.0, 3.0, 0.0, 3.0, 3.0, -1.0, 0.0, -1.0, -1.0] * 2


def test_wrong_lengths_are_rejected():
    rf = RollingFeatures(("a", "b"), (60.0,))
    with pytest.raises(ValueError, match="xs must have 2 values"):
        rf.step_model(rf.new_buffer(), 0.0, 0.0, [1.0])
    with pytest.raises(ValueError, match="buf must hold 9 floats; got 8"):
        rf.step_model(array("d", bytes(64)), 0.0, 0.0, [1.0, 2.0])
