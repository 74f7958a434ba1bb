"""Work-arounds for Beam 2.77 DirectRunner defects and overheads, applied only
when streamsift chooses ``BundleBasedDirectRunner``
(:func:`streamsift.pipeline.options.make_runner` calls
:func:`apply_direct_runner_fixes`).

Lost user metrics. Each executor worker thread keeps one ``StateSampler`` for
its whole life, and ``StateSampler.scoped_state`` caches the scoped state of a
step by name, together with the ``MetricsContainer`` it was first created
with. Every later bundle of that step on that thread then records its metrics
into the first bundle's container, which was already committed, so the
metrics of all but the first bundle per step and thread are lost. (Seen with
TestStream: 5 bundles of 10 elements report a counter of 10.) The fix gives
each bundle a fresh sampler, so each scoped state carries its own bundle's
container.

DoFn introspection on every bundle. The DirectRunner builds a fresh DoFn for
every bundle (a pickle round trip of the transform's DoFn) and then inspects
it from scratch: ``should_execute_serially`` (at every scheduling decision),
``_ParDoEvaluator.start_bundle``, ``DirectUserStateContext`` and
``DoFnSignature`` (inside ``DoFnRunner``) each call
``userstate.get_dofn_specs``, which wraps every method of the DoFn
(``dir(dofn)``, some 40 methods) in a ``MethodWrapper``, and every
``MethodWrapper`` runs ``inspect.signature`` on its method. About 8 ms per
stateful bundle (measured: ``get_dofn_specs`` 0.9 ms, ``DoFnSignature`` 4.3 ms
on ``DetectShardFn``), i.e. a quarter of the batched engine's worker thread
and most of its "runner overhead" in the profile of issue #5. Two caches make
that a lookup; both return exactly what Beam computes:

* ``core.get_function_args_defaults`` (what ``MethodWrapper`` uses) is memoised
  for *bound methods of plain functions* only, keyed by the function and
  checked against the identity of its ``__code__``, ``__defaults__`` and
  ``__kwdefaults__`` at every hit (so re-assigning any of them invalidates the
  entry); functions carrying ``__wrapped__`` or ``__signature__`` (whose
  signature ``inspect`` derives from elsewhere) and every other callable go to
  Beam's own function. The signature of a bound method depends on its function
  only, never on the instance it is bound to. Callers get fresh lists.
* ``userstate.get_dofn_specs`` (and ``is_stateful_dofn`` /
  ``validate_stateful_dofn``, which call it) is memoised per DoFn *class*. The
  answer depends on ``dir(dofn)`` and the methods' signatures, so an entry is
  used only while (a) every class in the MRO still holds the very same
  attribute objects (names and identities, compared at every hit), (b) those
  functions still have the same ``__code__``, ``__defaults__`` and
  ``__kwdefaults__`` objects, and (c) the instance's own ``__dict__`` hides the
  same set of method names (part of the key: a hidden method is skipped by
  Beam's scan, e.g. ``CallableWrapperDoFn.process``). DoFns whose instance
  dict holds a bound method, and classes whose attribute lookup can depend on
  the instance (their own ``__getattr__``, ``__getattribute__``, ``__dir__``,
  properties, slots or other descriptors outside Beam's own classes) always
  go to Beam's function. Errors (duplicate parameters) are never cached.
  Callers get fresh sets holding the same spec objects Beam's function
  returns (specs are class attributes; the runner relies on their identity).

Measured (issue #5, DirectRunner, same session, interleaved runs with the caches
on and off): ``DoFnSignature`` of ``DetectShardFn`` 4.3 ms -> 0.1 ms,
``get_dofn_specs`` 0.9 ms -> 0.04 ms; the per-element pipeline on 3,000 events
1.6-1.8x faster, the batched engine on 10,000 events 1.2-1.35x, the floor 1.15x.

What stays per bundle and is Beam's design, not a defect: the DirectRunner
pickles a fresh DoFn per bundle (``perform_dofn_pickle_test``) and calls its
``setup``/``teardown`` around every bundle; reusing instances would change what
DoFns may rely on, so it is left alone (streamsift keeps expensive things in
process-level caches instead: live models, the batched engine's shards).

The introspection patches replace module attributes of Beam, so once applied
they serve every runner in the process (the FnApiRunner and pipeline
construction call the same functions); they change no answer, only its cost.
The caches live for the process, hold their classes and functions weakly, and
are bounded; :func:`introspection_cache_info` reports their hits and misses.
"""

from __future__ import annotations

import itertools
import operator
import threading
import types
import weakref
from typing import Any

__all__ = ["apply_direct_runner_fixes", "introspection_cache_info"]

_APPLIED = False
_LOCK = threading.Lock()
#: entries per cache before it is cleared (a pipeline has a few dozen DoFn classes)
_MAX_ENTRIES = 4096
_STATS = {"args_hits": 0, "args_misses": 0, "specs_hits": 0, "specs_misses": 0}


def introspection_cache_info() -> dict[str, int]:
    """Hits and misses of the DoFn introspection caches since the process started
    (all zero until :func:`apply_direct_runner_fixes` has run and a DoFn was
    inspected).

    >>> sorted(introspection_cache_info())
    ['args_hits', 'args_misses', 'specs_hits', 'specs_misses']
    """
    return dict(_STATS)


def _memoised_args_defaults(original: Any) -> Any:
    """``core.get_function_args_defaults`` with a cache for bound methods of plain
    functions (see the module docstring)."""
    cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def get_function_args_defaults(f: Any) -> tuple[list[str], list[Any]]:
        if type(f) is not types.MethodType:
            return original(f)
        func = f.__func__
        if type(func) is not types.FunctionType:
            return original(f)
        fdict = func.__dict__
        if "__wrapped__" in fdict or "__signature__" in fdict:
            return original(f)
        code, defaults, kwdefaults = func.__code__, func.__defaults__, func.__kwdefaults__
        hit = cache.get(func)
        if hit is not None and hit[0] is code and hit[1] is defaults and hit[2] is kwdefaults:
            _STATS["args_hits"] += 1
            return list(hit[3]), list(hit[4])
        args, defs = original(f)
        with lock:
            if len(cache) >= _MAX_ENTRIES:
                cache.clear()
            cache[func] = (code, defaults, kwdefaults, tuple(args), tuple(defs))
        _STATS["args_misses"] += 1
        return list(args), list(defs)

    get_function_args_defaults.__wrapped_original__ = original  # type: ignore[attr-defined]
    return get_function_args_defaults


def _functions(cls: type) -> tuple:
    """Every function the classes in ``cls``'s MRO but ``object`` define (also
    inside class and static methods)."""
    out = []
    for c in cls.__mro__:
        if c is object:
            continue
        for v in vars(c).values():
            if type(v) is classmethod or type(v) is staticmethod:
                v = v.__func__
            if type(v) is types.FunctionType:
                out.append(v)
    return tuple(out)


#: what the signature of a function is computed from
_SIGNATURE_PARTS = operator.attrgetter("__code__", "__defaults__", "__kwdefaults__")


def _class_snapshot(cls: type) -> tuple:
    """Per class in ``cls``'s MRO but ``object``: its attribute names and the
    ``id`` of each value (C-level loops only). The cache entry that stores a
    snapshot also stores the values (:func:`_class_values`), so no id in it can
    be reused while the entry lives: an equal snapshot means the very same
    attribute objects. (Beam stores type hints on DoFn classes while it builds
    a pipeline: one more miss per class, then the snapshot is stable.)"""
    return tuple(
        (tuple(d), tuple(map(id, d.values())))
        for d in [vars(c) for c in cls.__mro__ if c is not object]
    )


def _class_values(cls: type) -> tuple:
    return tuple(tuple(vars(c).values()) for c in cls.__mro__ if c is not object)


def _parts(functions: tuple) -> tuple:
    """The code and defaults objects of ``functions``, flattened."""
    return tuple(itertools.chain.from_iterable(map(_SIGNATURE_PARTS, functions)))


_PLAIN_ATTRS = (types.FunctionType, staticmethod, classmethod, types.GetSetDescriptorType)


def _class_profile(cls: type) -> tuple[bool, frozenset]:
    """``(cacheable, method_names)`` of a DoFn class: a class is cacheable when
    ``dir``/``getattr`` on its instances cannot depend on the instance beyond
    its ``__dict__`` (no ``__getattr__``, ``__getattribute__`` or ``__dir__``
    of its own, no properties, slots or other descriptors outside Beam's own
    classes); ``method_names`` are the names that bind to methods (an instance
    attribute of that name would hide one)."""
    if cls.__getattribute__ is not object.__getattribute__ or hasattr(cls, "__getattr__"):
        return False, frozenset()
    names = set()
    for c in cls.__mro__:
        if c is object:
            continue
        ours = not c.__module__.startswith("apache_beam.")
        for name, value in vars(c).items():
            if name == "__dir__" and ours:
                return False, frozenset()
            if isinstance(value, (types.FunctionType, classmethod)):
                names.add(name)
            elif ours and hasattr(type(value), "__get__") and not isinstance(value, _PLAIN_ATTRS):
                return False, frozenset()
    return True, frozenset(names)


def _memoised_dofn_specs(original: Any) -> Any:
    """``userstate.get_dofn_specs`` with a per-class cache (see the module docstring)."""
    cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def get_dofn_specs(dofn: Any) -> tuple[set, set]:
        cls = type(dofn)
        inst = getattr(dofn, "__dict__", None)
        if type(inst) is not dict or any(type(v) is types.MethodType for v in inst.values()):
            return original(dofn)
        snapshot = _class_snapshot(cls)
        hit = cache.get(cls)
        # same class attributes (snapshot) and, for the same functions, the same
        # code and defaults (ids of the objects kept in the entry: see above)
        if hit is None or hit[0] != snapshot or tuple(map(id, _parts(hit[5]))) != hit[6]:
            cacheable, names = _class_profile(cls)
            functions = _functions(cls)
            parts = _parts(functions)
            hit = (snapshot, cacheable, names, {}, (_class_values(cls), parts), functions)
            hit += (tuple(map(id, parts)),)
            with lock:
                if len(cache) >= _MAX_ENTRIES:
                    cache.clear()
                cache[cls] = hit
        if not hit[1]:
            return original(dofn)
        # instance attributes hiding methods (not bound methods themselves, see
        # above) only drop those methods from the scan: part of the key
        hidden = hit[2].intersection(inst)
        specs = hit[3].get(hidden)
        if specs is not None:
            _STATS["specs_hits"] += 1
            return set(specs[0]), set(specs[1])
        states, timers = original(dofn)
        _STATS["specs_misses"] += 1
        with lock:
            if len(hit[3]) < 64:
                hit[3][hidden] = (frozenset(states), frozenset(timers))
        return set(states), set(timers)

    get_dofn_specs.__wrapped_original__ = original  # type: ignore[attr-defined]
    return get_dofn_specs


def _patch_introspection() -> None:
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import core, userstate

    core.get_function_args_defaults = _memoised_args_defaults(core.get_function_args_defaults)
    specs = _memoised_dofn_specs(userstate.get_dofn_specs)
    # userstate.is_stateful_dofn / validate_stateful_dofn and runners.common look
    # the function up in userstate's namespace; transform_evaluator imported it
    # by name (its is_stateful_dofn is userstate's, so it sees the patch)
    userstate.get_dofn_specs = specs
    transform_evaluator.get_dofn_specs = specs


def apply_direct_runner_fixes() -> None:
    """Install the work-arounds described in the module docstring (once per process).

    >>> apply_direct_runner_fixes()
    >>> from apache_beam.transforms import userstate
    >>> hasattr(userstate.get_dofn_specs, "__wrapped_original__")
    True
    """
    global _APPLIED
    with _LOCK:
        if _APPLIED:
            return
        from apache_beam.runners.direct import executor
        from apache_beam.runners.worker import statesampler
        from apache_beam.utils import counters

        worker_cls = executor._ExecutorService._ExecutorServiceWorker

        def run(self) -> None:  # mirrors the upstream loop, one sampler per task
            while not self.shutdown_requested:
                task = self._get_task_or_none()
                if task:
                    try:
                        if not self.shutdown_requested:
                            sampler = statesampler.StateSampler("", counters.CounterFactory())
                            statesampler.set_current_tracker(sampler)
                            self._update_name(task)
                            task.call(sampler)
                            self._update_name()
                    finally:
                        self.queue.task_done()

        worker_cls.run = run
        _patch_introspection()
        _APPLIED = True
