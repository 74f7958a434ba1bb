"""The DirectRunner work-arounds: the introspection caches answer exactly what
Beam's own functions answer, notice changes, and a stateful pipeline on the
patched runner gives the expected output."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.runners.common import DoFnSignature
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import core, userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue

from streamsift.pipeline.beam_fixes import apply_direct_runner_fixes, introspection_cache_info
from streamsift.pipeline.options import make_runner, streaming_options


@pytest.fixture(scope="module", autouse=True)
def _fixes():
    apply_direct_runner_fixes()


def _originals():
    return (
        core.get_function_args_defaults.__wrapped_original__,
        userstate.get_dofn_specs.__wrapped_original__,
    )


class _Counting(beam.DoFn):
    COUNT = ReadModifyWriteStateSpec("count", coders.VarIntCoder())
    SEEN = BagStateSpec("seen", coders.StrUtf8Coder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def process(
        self,
        kv,
        count=beam.DoFn.StateParam(COUNT),
        seen=beam.DoFn.StateParam(SEEN),
        flush=beam.DoFn.TimerParam(FLUSH),
        ts=beam.DoFn.TimestampParam,
    ):
        count.write((count.read() or 0) + 1)
        seen.add(kv[1])
        flush.set(ts + 10)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, count=beam.DoFn.StateParam(COUNT)):
        yield key, count.read()
        count.clear()


class _Plain(beam.DoFn):
    def process(self, x, factor=2):
        yield x * factor


#: what _Collect saw (module level: the runner pickles DoFns per bundle)
_OUT: list = []


class _Collect(beam.DoFn):
    def process(self, x):
        _OUT.append(x)


def _specs_by_name(specs):
    states, timers = specs
    return sorted(s.name for s in states), sorted(t.name for t in timers)


def test_cached_answers_equal_beams_own():
    args_defaults, dofn_specs = _originals()
    for fn in (_Counting(), _Plain(), beam.Map(len).fn):
        for name in ("process", "start_bundle", "finish_bundle", "setup", "teardown"):
            method = getattr(fn, name)
            first = core.get_function_args_defaults(method)
            assert first == args_defaults(method)
            assert core.get_function_args_defaults(method) == first  # cached
        assert userstate.get_dofn_specs(fn) == dofn_specs(fn)
        assert userstate.get_dofn_specs(fn) == dofn_specs(fn)  # cached, same spec objects
    assert _specs_by_name(userstate.get_dofn_specs(_Counting())) == (
        ["count", "seen"],
        ["ts-flush"],
    )
    assert userstate.is_stateful_dofn(_Counting()) and not userstate.is_stateful_dofn(_Plain())
    info = introspection_cache_info()
    assert info["args_hits"] > 0 and info["specs_hits"] > 0
    # a fresh signature per bundle (what DoFnRunner builds) still sees the timer
    sig = DoFnSignature(_Counting())
    assert sig.is_stateful_dofn() and [t.name for t in sig.timer_methods] == ["ts-flush"]


def test_caches_notice_changed_functions_classes_and_instances():
    args_defaults, dofn_specs = _originals()

    class Fn(beam.DoFn):
        A = ReadModifyWriteStateSpec("a", coders.VarIntCoder())

        def process(self, x, a=beam.DoFn.StateParam(A)):
            yield x

    fn = Fn()
    assert _specs_by_name(userstate.get_dofn_specs(fn)) == (["a"], [])
    # new defaults on the same function object
    b = ReadModifyWriteStateSpec("b", coders.VarIntCoder())
    Fn.process.__defaults__ = (beam.DoFn.StateParam(b),)
    assert core.get_function_args_defaults(fn.process)[1][0].state_spec is b
    assert _specs_by_name(userstate.get_dofn_specs(fn)) == (["b"], [])
    # a method patched onto the class
    c = BagStateSpec("c", coders.StrUtf8Coder())

    def process(self, x, c=beam.DoFn.StateParam(c)):
        yield x

    Fn.process = process
    assert _specs_by_name(userstate.get_dofn_specs(Fn())) == (["c"], [])
    # an instance attribute hiding the method: the scan skips it, as Beam's does
    hidden = Fn()
    hidden.process = lambda x: [x]
    assert userstate.get_dofn_specs(hidden) == dofn_specs(hidden) == (set(), set())
    assert _specs_by_name(userstate.get_dofn_specs(Fn())) == (["c"], [])
    # a bound method stored on the instance: not cached, Beam's answer
    other = _Counting()
    bound = Fn()
    bound.extra = other.on_flush
    assert userstate.get_dofn_specs(bound) == dofn_specs(bound)
    assert core.get_function_args_defaults(bound.extra) == args_defaults(bound.extra)


def test_errors_are_not_cached():
    class Twice(beam.DoFn):
        A = ReadModifyWriteStateSpec("a", coders.VarIntCoder())

        def process(self, x, a=beam.DoFn.StateParam(A), b=beam.DoFn.StateParam(A)):
            yield x

    for _ in range(2):
        with pytest.raises(ValueError, match="duplicate"):
            userstate.get_dofn_specs(Twice())


def test_stateful_pipeline_on_the_patched_runner():
    stream = (
        TestStream(coder=coders.PickleCoder())
        .add_elements([TimestampedValue(("a", "x"), 1), TimestampedValue(("b", "y"), 2)])
        .add_elements([TimestampedValue(("a", "z"), 3)])
        .advance_watermark_to(20)  # fires a's timer (13) and b's (12)
        .add_elements([TimestampedValue(("a", "w"), 30), TimestampedValue(("b", "v"), 31)])
        .advance_watermark_to_infinity()
    )
    _OUT.clear()
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    _ = (
        p
        | stream
        | beam.ParDo(_Counting()).with_output_types(tuple[str, int])
        | beam.ParDo(_Collect())
    )
    p.run().wait_until_finish()
    # each key counts its events until its timer (10 s after the last) fires
    assert sorted(_OUT) == [("a", 1), ("a", 2), ("b", 1), ("b", 1)]


class _Recording(beam.runners.direct.direct_runner.BundleBasedDirectRunner):
    """The DirectRunner, remembering which pipeline object it was handed."""

    seen: list = []

    def run_pipeline(self, pipeline, options):
        _Recording.seen.append(pipeline)
        return super().run_pipeline(pipeline, options)


def test_start_pipeline_runs_the_built_graph_without_a_runner_api_round_trip():
    from streamsift.pipeline.options import start_pipeline

    out = []
    for start in (lambda p: p.run(), start_pipeline):
        _Recording.seen.clear()
        p = beam.Pipeline(runner=_Recording(), options=streaming_options([]))
        _ = (
            p
            | TestStream().add_elements([1, 2, 3]).advance_watermark_to_infinity()
            | beam.Map(lambda x: x * 10)
        )
        start(p).wait_until_finish()
        out.append(_Recording.seen[-1] is p)
    # Beam's default run() rebuilds the graph from its proto and runs the copy;
    # start_pipeline hands the runner the graph that was built
    assert out == [False, True]


def _slow_pipeline(n: int, fail_at: int | None = None) -> beam.Pipeline:
    import time

    def _slow(x):
        time.sleep(0.05)
        if x == fail_at:
            raise ValueError(f"element {x} failed")
        return x

    stream = TestStream()
    for start in range(0, n, 5):  # bundles of 5 elements (a cancel waits for one)
        stream = stream.add_elements(list(range(start, min(n, start + 5))))
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options([]))
    _ = p | stream.advance_watermark_to_infinity() | beam.Map(_slow)
    return p


def test_wait_with_progress_ticks_and_returns_the_runs_error():
    from streamsift.pipeline.options import start_pipeline
    from streamsift.pipeline.run import wait_with_progress

    ticks = []
    error, interrupted = wait_with_progress(
        start_pipeline(_slow_pipeline(30)), lambda: ticks.append(1)
    )
    assert (error, interrupted) == (None, False)
    assert len(ticks) >= 2  # 30 x 50 ms: at least two 0.5 s ticks
    error, interrupted = wait_with_progress(start_pipeline(_slow_pipeline(5, fail_at=2)))
    assert not interrupted
    assert "element 2 failed" in str(error)


def test_wait_with_progress_cancels_the_run_on_ctrl_c():
    import _thread
    import threading

    from streamsift.pipeline.options import start_pipeline
    from streamsift.pipeline.run import wait_with_progress

    result = start_pipeline(_slow_pipeline(400))  # 20 s if not stopped
    calls = []
    timer = threading.Timer(0.3, _thread.interrupt_main)  # Ctrl-C while waiting
    timer.start()
    error, interrupted = wait_with_progress(result, on_interrupt=lambda: calls.append(1))
    timer.join()
    assert (error, interrupted, calls) == (None, True, [1])
    assert result.state == PipelineState.CANCELLED
