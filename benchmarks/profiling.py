"""Where the full pipeline spends its time: pyinstrument on the runner's worker thread.

The ``BundleBasedDirectRunner`` executes every bundle, timer and watermark
update on its executor worker thread(s); the main thread only builds the
pipeline and waits. :func:`profile_full` runs the ``full`` contender with a
pyinstrument profiler started inside each worker thread (and one on the main
thread), then :func:`attribute` splits the worker samples

* by **stage**: the outermost frame on the stack that belongs to a pipeline
  stage (streamsift's DoFn modules, Beam's RunInference and its batching DoFn,
  the replay source). Time with no such frame is the runner's own work between
  stages (bundle scheduling, watermarks, coders, GroupByKey, windowing);
* by **layer**: the module of the innermost frame that is not Python's
  standard library or a builtin (streamsift logic, streamsift Beam glue, Beam,
  numpy/sklearn/pyod): time in ``inspect``, ``warnings``, ``json`` ... counts for
  the library that called it. Only stacks made of stdlib frames alone (thread
  start-up) count as stdlib.

>>> stage_of("/x/site-packages/streamsift/transforms/keyed.py", "process", "DetectPerKeyFn")
'DetectPerKey'
>>> layer_of("/x/site-packages/apache_beam/coders/coder_impl.py")
'Beam (runner, coders, state, metrics)'
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["attribute", "layer_of", "profile_full", "short_path", "stage_of", "STAGES"]

#: (path fragment, stage); the first fragment found in a frame's path names its stage
_STAGE_PATHS = (
    ("streamsift/transforms/parse.py", "Parse"),
    ("streamsift/transforms/keyed.py", "DetectPerKey"),
    ("streamsift/transforms/inference.py", "Stage2 (RunInference + model)"),
    ("apache_beam/ml/inference/", "Stage2 (RunInference + model)"),
    ("streamsift/transforms/alerts.py", "AlertPerKey + RateLimit"),
    ("streamsift/transforms/sinks.py", "Sinks (JSONL)"),
    ("streamsift/transforms/source.py", "Source (replay)"),
    ("streamsift/transforms/batched.py:ParseChunksFn", "Parse"),
    ("streamsift/transforms/batched.py:DetectShardFn", "DetectShards (batched engine)"),
    ("streamsift/transforms/batched.py", "Source (replay)"),
    ("apache_beam/testing/test_stream", "Source (replay)"),
    ("apache_beam/runners/direct/test_stream_impl.py", "Source (replay)"),
)
RUNNER = "runner (between stages)"
#: report order of the stages
STAGES = (
    "Source (replay)",
    "Parse",
    "DetectPerKey",
    "Stage2 (RunInference + model)",
    "DetectShards (batched engine)",
    "AlertPerKey + RateLimit",
    "Sinks (JSONL)",
    RUNNER,
)
LAYERS = (
    "streamsift logic (models/, parsing.py)",
    "streamsift Beam glue (transforms/, pipeline/)",
    "numpy / sklearn / pyod",
    "Beam (runner, coders, state, metrics)",
    "Python stdlib / builtins",
)
STDLIB = LAYERS[4]


def _norm(path: str) -> str:
    return path.replace("\\", "/")


def stage_of(path: str, function: str, class_name: str = "") -> str | None:
    """The pipeline stage a frame belongs to, or None for runner/library frames.

    Beam's ``BatchElements`` DoFns (in ``apache_beam/transforms/util.py``) only
    feed RunInference in this pipeline, so they count as stage 2.

    >>> stage_of("/a/apache_beam/transforms/util.py", "process", "_WindowAwareBatchingDoFn")
    'Stage2 (RunInference + model)'
    >>> stage_of("/a/apache_beam/transforms/util.py", "process", "_IdentityWindowFn") is None
    True
    """
    p = _norm(path)
    q = f"{p}:{class_name}"
    for fragment, stage in _STAGE_PATHS:
        if fragment in (q if ":" in fragment else p):
            return stage
    if p.endswith("apache_beam/transforms/util.py") and "Batching" in class_name:
        return "Stage2 (RunInference + model)"
    return None


def layer_of(path: str) -> str:
    """The layer of a frame's module (see :data:`LAYERS`).

    >>> layer_of("/s/streamsift/models/features.py"), layer_of("<built-in>")
    ('streamsift logic (models/, parsing.py)', 'Python stdlib / builtins')
    """
    p = _norm(path)
    if "/streamsift/models/" in p or p.endswith("/streamsift/parsing.py"):
        return LAYERS[0]
    if "/streamsift/" in p or "/benchmarks/" in p:
        return LAYERS[1]
    if any(f"/{lib}/" in p for lib in ("numpy", "sklearn", "pyod", "scipy", "joblib")):
        return LAYERS[2]
    if "/apache_beam/" in p:
        return LAYERS[3]
    return LAYERS[4]


def short_path(path: str) -> str:
    """A path from its package root on.

    >>> short_path("/v/lib/python3.11/site-packages/apache_beam/pipeline.py")
    'apache_beam/pipeline.py'
    >>> short_path("/work/main/streamsift/models/keylogic.py")
    'streamsift/models/keylogic.py'
    """
    p = _norm(path)
    for marker in ("site-packages/", "/lib/python3."):
        if marker in p:
            tail = p.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("/lib") and "/" in tail else tail
    for pkg in ("/streamsift/", "/benchmarks/"):
        if pkg in p:
            return pkg[1:] + p.split(pkg, 1)[1]
    return p


def _label(function: str, path: str, cls: str, line: str) -> str:
    name = f"{cls}.{function}" if cls else function
    where = short_path(path) if path else "?"
    return f"{name} ({where}:{line})" if line else f"{name} ({where})"


def attribute(records: Iterable[tuple[Sequence[str], float]], top: int = 15) -> dict[str, Any]:
    """Split pyinstrument frame records (root-first stacks of frame-info strings,
    seconds) by stage and layer; list the top frames.

    >>> rec = [(["run\\x00/b/apache_beam/x.py\\x001",
    ...          "process\\x00/s/streamsift/transforms/keyed.py\\x0010",
    ...          "step\\x00/s/streamsift/models/keylogic.py\\x0020"], 0.75),
    ...        (["run\\x00/b/apache_beam/x.py\\x001"], 0.25)]
    >>> a = attribute(rec)
    >>> a["total_s"], a["stages"]["DetectPerKey"], a["stages"]["runner (between stages)"]
    (1.0, 0.75, 0.25)
    >>> a["top_self"][0]["frame"], a["top_self"][0]["seconds"]
    ('step (streamsift/models/keylogic.py:20)', 0.75)
    """
    stages: dict[str, float] = defaultdict(float)
    layers: dict[str, float] = defaultdict(float)
    stage_layers: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    self_time: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    total = 0.0
    for stack, t in records:
        total += t
        stage = None
        seen: set[str] = set()
        leaf_path = ""
        label = ""
        for fi in stack:
            ident, _, attrs = fi.partition("\x01")
            parts = ident.split("\x00")
            function = parts[0]
            path = parts[1] if len(parts) > 1 else ""
            line = parts[2] if len(parts) > 2 else ""
            cls = ""
            if attrs:
                for a in attrs.split("\x01"):
                    if a.startswith("c"):
                        cls = a[1:]
            if stage is None:
                stage = stage_of(path, function, cls)
            label = _label(function, path, cls, line)
            if layer_of(path) != STDLIB:
                leaf_path = path
            if "/streamsift/" in _norm(path) and label not in seen:
                seen.add(label)
                inclusive[label] += t
        stage = stage or RUNNER
        layer = layer_of(leaf_path)
        stages[stage] += t
        layers[layer] += t
        stage_layers[stage][layer] += t
        if label:
            self_time[label] += t

    def ranked(d: dict[str, float]) -> list[dict[str, Any]]:
        items = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [
            {"frame": k, "seconds": round(v, 6), "share": (v / total if total else 0.0)}
            for k, v in items
        ]

    return {
        "total_s": round(total, 6),
        "stages": {s: round(stages.get(s, 0.0), 6) for s in STAGES},
        "layers": {x: round(layers.get(x, 0.0), 6) for x in LAYERS},
        "stage_layers": {
            s: {x: round(stage_layers[s].get(x, 0.0), 6) for x in LAYERS}
            for s in STAGES
            if s in stage_layers
        },
        "top_self": ranked(self_time),
        "top_streamsift_inclusive": ranked(inclusive),
    }


#: main-thread phases: (path fragment, function, label)
_MAIN_PHASES = (
    ("streamsift/transforms/source.py", "_test_stream", "replay source construction"),
    ("streamsift/pipeline/build.py", "build_detection", "pipeline construction (build_detection)"),
    ("apache_beam/pipeline.py", "run", "Pipeline.run (graph translation, runner start)"),
    ("threading.py", "join", "waiting for the runner"),
)


def _main_phases(records: Iterable[tuple[Sequence[str], float]]) -> dict[str, float]:
    out = {label: 0.0 for *_x, label in _MAIN_PHASES}
    total = 0.0
    for stack, t in records:
        total += t
        hit: set[str] = set()
        for fi in stack:
            parts = fi.partition("\x01")[0].split("\x00")
            path = _norm(parts[1]) if len(parts) > 1 else ""
            for fragment, function, label in _MAIN_PHASES:
                if label not in hit and parts[0] == function and path.endswith(fragment):
                    hit.add(label)
                    out[label] += t
    out["total"] = total
    return {k: round(v, 6) for k, v in out.items()}


def profile_full(inputs: Any, tree_lines: int = 80, engine: str = "per_element") -> dict[str, Any]:
    """Run the ``full`` contender (``engine="batched"``: the ``batched`` one) under
    pyinstrument; return the attribution.

    ``inputs`` is a :class:`benchmarks.contenders.ContenderInputs`.
    """
    import pyinstrument
    from apache_beam.runners.direct import executor
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    from benchmarks.contenders import run_full
    from streamsift.pipeline.beam_fixes import apply_direct_runner_fixes

    apply_direct_runner_fixes()  # run_full's make_runner then keeps our wrapper
    worker_cls = executor._ExecutorService._ExecutorServiceWorker
    original = worker_cls.run
    sessions: list[Any] = []
    lock = threading.Lock()

    def profiled_run(self) -> None:
        prof = Profiler(interval=0.001, async_mode="disabled")
        prof.start()
        try:
            original(self)
        finally:
            session = prof.stop()
            with lock:
                sessions.append(session)

    worker_cls.run = profiled_run
    main_prof = Profiler(interval=0.001, async_mode="disabled")
    try:
        main_prof.start()
        try:
            result = run_full(inputs, engine=engine)
        finally:
            main_session = main_prof.stop()
    finally:
        worker_cls.run = original
    if not sessions:
        raise RuntimeError("no worker-thread profile was recorded; got 0 sessions")
    worker = sessions[0]
    for s in sessions[1:]:
        worker = Session.combine(worker, s)
    att = attribute(worker.frame_records)
    tree = ConsoleRenderer(unicode=False, color=False, time="percent_of_total").render(worker)
    lines = tree.splitlines()
    # drop pyinstrument's banner, keep the call tree
    while lines and not lines[0].strip().startswith(tuple("0123456789")):
        lines.pop(0)
    return {
        "pyinstrument": pyinstrument.__version__,
        "engine": engine,
        "events": inputs.spec.events,
        "full": result.to_dict(),
        "worker_threads": len(sessions),
        "worker": att,
        "main": _main_phases(main_session.frame_records),
        "tree": "\n".join(lines[:tree_lines]),
        "tree_truncated": len(lines) > tree_lines,
    }
