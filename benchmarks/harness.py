"""``streamsift bench``: the same seeded stream through streamsift and its contenders.

Every piece of work runs in a fresh child process (``python -m
benchmarks.harness --child TASK.json``), one after another: a setup process
generates the stream once (one payload file every contender reads) and trains
the models once; then each contender, each key count of the state measurement,
the model-stage comparison and the profile run in their own process, so each
reports its own wall time and peak RSS. The parent only orchestrates (it stays
small: see :func:`benchmarks.common.ru_maxrss_mb`), then writes ``RESULTS.md``
(rewritten every run) and prints the contender table and the ratios.
``--from-json`` re-renders ``RESULTS.md`` from a ``--json-out`` file.

Wire it into a CLI with :func:`add_arguments` and :func:`main`:

>>> import argparse
>>> p = argparse.ArgumentParser(prog="streamsift bench")
>>> add_arguments(p)
>>> a = p.parse_args(["--events", "1000", "--contenders", "full,floor"])
>>> a.events, a.keys, a.features, a.out, parse_contenders(a.contenders)
(1000, 50, 8, 'benchmarks/RESULTS.md', ('full', 'floor'))
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BenchSpec,
    bench_config,
    machine_info,
    parse_choices,
    payload_digest,
    peak_rss_mb,
    software_versions,
    write_payloads,
)
from benchmarks.contenders import CONTENDERS

__all__ = [
    "add_arguments",
    "build_command",
    "main",
    "parse_contenders",
    "parse_int_list",
    "run_benchmark",
]

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTENDERS = ",".join(CONTENDERS)


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"1,16,256"`` -> ``(1, 16, 256)``; ``""`` -> ``()`` (skip the measurement).

    >>> parse_int_list("10000, 100000", "key_counts"), parse_int_list("", "batch_sizes")
    ((10000, 100000), ())
    >>> parse_int_list("1,x", "batch_sizes")
    Traceback (most recent call last):
    ...
    ValueError: batch_sizes must be a comma list of integers >= 1; got '1,x'
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(int(t) for t in items)
    except ValueError:
        values = ()
        items = ["bad"]
    if len(values) != len(items) or any(v < 1 for v in values):
        raise ValueError(f"{name} must be a comma list of integers >= 1; got {text!r}")
    return values


def parse_profile_engines(text: str) -> tuple[str, ...]:
    """``"per_element,batched"`` -> the engines to profile, validated.

    >>> parse_profile_engines("batched"), parse_profile_engines("")
    (('batched',), ())
    >>> parse_profile_engines("fast")
    Traceback (most recent call last):
    ...
    ValueError: profile_engines must be a comma list of ['per_element', 'batched']; got 'fast'
    """
    return parse_choices(text, "profile_engines", ("per_element", "batched"))


def _alert_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            alerts = [json.loads(line) for line in fh if line.strip()]
    except OSError:
        return []
    out = []
    for a in alerts:
        a.pop("detection_time", None)
        a.pop("detection_time_ms", None)
        out.append(json.dumps(a, sort_keys=True))
    return sorted(out)


#: counters both engines must agree on (the others are engine bookkeeping)
ENGINE_COUNTERS = (
    "events_in",
    "parsed",
    "dead_lettered",
    "processed",
    "late",
    "escalated",
    "stage2_scored",
    "flagged",
    "alerts_opened",
    "alerts_upgraded",
    "alerts_emitted",
    "alerts_suppressed",
    "keys_created",
    "keys_expired",
    "alert_keys_expired",
)


def compare_engines(full: dict[str, Any], batched: dict[str, Any]) -> dict[str, Any]:
    """Do the ``full`` (per-element) and ``batched`` runs agree? Alerts compared on
    every field but the detection time (wall clock), counters of
    :data:`ENGINE_COUNTERS`.

    >>> compare_engines({"error": "x"}, {})["error"]
    'a contender failed'
    """
    if "error" in full or "error" in batched:
        return {"error": "a contender failed"}
    a = _alert_lines(full["details"].get("alerts_path", ""))
    b = _alert_lines(batched["details"].get("alerts_path", ""))
    cf, cb = full["details"]["counters"], batched["details"]["counters"]
    diffs = {
        n: (cf.get(n, 0), cb.get(n, 0)) for n in ENGINE_COUNTERS if cf.get(n, 0) != cb.get(n, 0)
    }
    return {
        "alerts": len(a),
        "alerts_identical": a == b,
        "alerts_only_full": len(set(a) - set(b)),
        "alerts_only_batched": len(set(b) - set(a)),
        "counters_compared": list(ENGINE_COUNTERS),
        "counters_identical": not diffs,
        "differences": diffs,
    }


def parse_contenders(text: str) -> tuple[str, ...]:
    """A comma list of contender names, validated, duplicates removed, order kept.

    >>> parse_contenders("floor, full,floor")
    ('floor', 'full')
    >>> parse_contenders("full,zscore")
    Traceback (most recent call last):
    ...
    ValueError: contenders must be a comma list of ['full', 'batched', 'beam_zscore', 'reference', 'floor']; got 'zscore'
    """
    return parse_choices(text, "contenders", CONTENDERS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` flags to ``parser``."""
    d = BenchSpec()
    parser.add_argument("--events", type=int, default=d.events, help="events in the stream")
    parser.add_argument("--keys", type=int, default=d.keys, help="keys in the stream")
    parser.add_argument(
        "--features", type=int, default=d.features, help="numeric feature fields per event"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="synthetic stream seed")
    parser.add_argument(
        "--contenders",
        default=DEFAULT_CONTENDERS,
        help=f"comma list of contenders to run (default: {DEFAULT_CONTENDERS})",
    )
    parser.add_argument(
        "--out", default="benchmarks/RESULTS.md", help="results file (rewritten every run)"
    )
    parser.add_argument(
        "--history-hours",
        type=float,
        default=d.history_hours,
        help="hours of synthetic history the models are trained on",
    )
    parser.add_argument(
        "--key-counts",
        default="10000,100000",
        help="key counts for the state/RSS measurement (comma list; empty: skip)",
    )
    parser.add_argument(
        "--events-per-key",
        type=int,
        default=2,
        help="events fed per key in the state/RSS measurement",
    )
    parser.add_argument(
        "--batch-sizes",
        default="1,16,256",
        help="batch sizes for the model-stage measurement (comma list; empty: skip)",
    )
    parser.add_argument(
        "--model-rows",
        type=int,
        default=1024,
        help="rows scored per batch size in the model-stage measurement (at least 16 x b)",
    )
    parser.add_argument(
        "--profile-events",
        type=int,
        default=20000,
        help="profile the full pipeline with pyinstrument on this many events (0: skip)",
    )
    parser.add_argument(
        "--profile-engines",
        default="per_element,batched",
        help="engines to profile (comma list of per_element, batched)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="keep payloads, models and logs here (reused; default: a temp dir, removed)",
    )
    parser.add_argument(
        "--json-out", default=None, help="also write the raw results as JSON to this file"
    )
    parser.add_argument(
        "--child-timeout",
        type=float,
        default=7200.0,
        help="seconds before a measurement process is stopped",
    )
    parser.add_argument(
        "--from-json",
        default=None,
        help="only re-render --out from a results file written by --json-out (no measuring)",
    )
    parser.add_argument(
        "--engine",
        choices=["per_element", "batched"],
        default=None,
        help="engine of `full` on Prism/Flink and of the Kafka latency runs "
        "(default: streamsift's config default, engine.mode)",
    )
    parser.add_argument(
        "--runners",
        default="prism,flink",
        help="portable runners to run `full` and `floor` on (comma list of prism, flink; "
        "empty: skip; a runner that is not installed is reported as such)",
    )
    parser.add_argument(
        "--latency-loads",
        default="1000,5000",
        help="offered loads (events/s) for the Kafka ingest-to-alert latency (comma list; "
        "empty: skip)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=30.0,
        help="seconds each latency load is offered (the measured phase)",
    )
    parser.add_argument(
        "--latency-modes",
        default="event_time,arrival",
        help="event-time settings per latency load: event_time (the config's ordering and "
        "allowed lateness), event_time:SECONDS (another allowed lateness), arrival",
    )
    parser.add_argument(
        "--latency-drain-timeout",
        type=float,
        default=120.0,
        help="seconds the pipeline may take to catch up after the last event before it is "
        "stopped (what it has not processed by then counts as censored latency)",
    )
    parser.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="Kafka broker for the latency runs (default: $STREAMSIFT_KAFKA_BOOTSTRAP)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)


def build_command(args: argparse.Namespace) -> str:
    """The full ``streamsift bench`` command line of ``args``, every flag explicit.

    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> build_command(p.parse_args(["--events", "500"]))[:52]
    'streamsift bench --events 500 --keys 50 --features 8'
    """
    parts = [
        "streamsift",
        "bench",
        "--events",
        str(args.events),
        "--keys",
        str(args.keys),
        "--features",
        str(args.features),
        "--seed",
        str(args.seed),
        "--contenders",
        args.contenders,
        "--out",
        args.out,
        "--history-hours",
        f"{args.history_hours:g}",
        "--key-counts",
        args.key_counts,
        "--events-per-key",
        str(args.events_per_key),
        "--batch-sizes",
        args.batch_sizes,
        "--model-rows",
        str(args.model_rows),
        "--profile-events",
        str(args.profile_events),
        "--profile-engines",
        args.profile_engines,
        "--engine",
        resolve_engine(args),
        "--runners",
        args.runners,
        "--latency-loads",
        args.latency_loads,
        "--latency-seconds",
        f"{args.latency_seconds:g}",
        "--latency-modes",
        args.latency_modes,
        "--latency-drain-timeout",
        f"{args.latency_drain_timeout:g}",
    ]
    if getattr(args, "kafka_bootstrap", None):
        parts += ["--kafka-bootstrap", args.kafka_bootstrap]
    if args.work_dir:
        parts += ["--work-dir", args.work_dir]
    if args.json_out:
        parts += ["--json-out", args.json_out]
    return " ".join(shlex.quote(p) for p in parts)


def resolve_engine(args: argparse.Namespace) -> str:
    """``--engine``, else streamsift's config default (``engine.mode``).

    >>> resolve_engine(argparse.Namespace(engine="batched"))
    'batched'
    >>> from streamsift.config import Config
    >>> resolve_engine(argparse.Namespace(engine=None)) == Config().engine.mode
    True
    """
    if getattr(args, "engine", None):
        return args.engine
    from streamsift.config import Config

    return Config().engine.mode


def kafka_bootstrap(args: argparse.Namespace, environ: dict[str, str] | None = None) -> str:
    """``--kafka-bootstrap``, else ``$STREAMSIFT_KAFKA_BOOTSTRAP``, else "".

    >>> kafka_bootstrap(argparse.Namespace(kafka_bootstrap=None), {"STREAMSIFT_KAFKA_BOOTSTRAP": "h:1"})
    'h:1'
    """
    env = os.environ if environ is None else environ
    return getattr(args, "kafka_bootstrap", None) or env.get("STREAMSIFT_KAFKA_BOOTSTRAP", "")


def _invoked_as() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("benchmarks", "harness.py")):
        argv[0:1] = ["python", "-m", "benchmarks.harness"]
    elif argv:
        argv[0] = os.path.basename(argv[0])
    return " ".join(shlex.quote(a) for a in argv)


def _say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- children


def _run_child(task: dict[str, Any], work_dir: str, tag: str, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; return its JSON result or
    ``{"error": ...}``."""
    task_path = os.path.join(work_dir, f"task-{tag}.json")
    out_path = os.path.join(work_dir, f"result-{tag}.json")
    log_path = os.path.join(work_dir, f"log-{tag}.txt")
    task = dict(task, out=out_path)
    if os.path.exists(out_path):
        os.remove(out_path)
    with open(task_path, "w", encoding="utf-8") as fh:
        json.dump(task, fh)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("PYTHONHASHSEED", "0")
    cmd = [sys.executable, "-m", "benchmarks.harness", "--child", task_path]
    t0 = time.perf_counter()
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work_dir, timeout=timeout
            )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s (log: {log_path})"}
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not os.path.exists(out_path):
        try:
            tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-1500:]
        except OSError:
            tail = ""
        return {"error": f"exit code {proc.returncode}; log tail: {tail.strip()}"}
    with open(out_path, encoding="utf-8") as fh:
        result = json.load(fh)
    result["process_s"] = elapsed
    return result


def _child_main(task_path: str) -> int:
    """Entry point of a measurement process: run the task, write its JSON result."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    with open(task_path, encoding="utf-8") as fh:
        task = json.load(fh)
    spec = BenchSpec(**task["spec"])
    kind = task["kind"]
    if kind == "setup":
        result = _setup(spec, task)
    elif kind in ("contender", "profile"):
        from benchmarks.contenders import ContenderInputs, run_contender

        inputs = ContenderInputs(
            spec=spec,
            payloads_path=task["payloads_path"],
            model_path=task["model_path"],
            reference_model_path=task.get("reference_model_path", ""),
            work_dir=task["work_dir"],
        )
        if kind == "contender":
            result = run_contender(task["name"], inputs).to_dict()
        else:
            from benchmarks.profiling import profile_full

            result = profile_full(inputs, engine=task.get("engine", "per_element"))
    elif kind == "portable":
        from benchmarks.contenders import ContenderInputs
        from benchmarks.runners import run_portable

        inputs = ContenderInputs(
            spec=spec,
            payloads_path=task["payloads_path"],
            model_path=task["model_path"],
            reference_model_path="",
            work_dir=os.path.join(task["work_dir"], f"{task['runner']}-{task['name']}"),
        )
        os.makedirs(inputs.work_dir, exist_ok=True)
        result = run_portable(task["name"], task["runner"], inputs, task["engine"])
    elif kind == "latency":
        from benchmarks.latency import LatencyMode, LatencyPlan, measure_latency

        m = task["mode"]
        plan = LatencyPlan(
            rate=float(task["rate"]),
            seconds=float(task["seconds"]),
            mode=LatencyMode(m["name"], m["ordering"], float(m["allowed_lateness_s"])),
            engine=task["engine"],
            drain_timeout_s=float(task["drain_timeout_s"]),
        )
        result = measure_latency(
            plan,
            spec,
            bootstrap=task["bootstrap"],
            model_dir=os.path.dirname(os.path.dirname(task["model_path"])),
            work_dir=task["work_dir"],
        )
    elif kind == "keys":
        from benchmarks.state_size import measure_keys

        result = measure_keys(spec, int(task["n_keys"]), int(task["events_per_key"]))
    elif kind == "model_stage":
        from benchmarks.model_stage import measure_model_stage

        result = measure_model_stage(
            spec,
            task["payloads_path"],
            task["model_path"],
            tuple(task["batch_sizes"]),
            int(task["model_rows"]),
        )
    else:
        raise ValueError(
            "task kind must be setup, contender, profile, portable, latency, keys or "
            f"model_stage; got {kind!r}"
        )
    with open(task["out"], "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


# --------------------------------------------------------------------------- parent


def _consistency(contenders: dict[str, dict[str, Any]], stream: dict[str, Any]) -> dict:
    """Check that every contender read the same payloads and counted them all:
    same sha256, ``events_in`` = payloads, and the valid events each one saw
    (``full``: processed + late) = the stream's valid events (``floor`` passes
    every payload through, so its count is the payloads)."""
    n, digest = stream["payloads"], stream["sha256"]
    problems = []
    for name, c in contenders.items():
        if "error" in c:
            problems.append(f"{name} failed")
            continue
        if c["payload_sha256"] != digest:
            problems.append(f"{name} read different payloads (sha256 {c['payload_sha256'][:12]})")
        if c["events_in"] != n:
            problems.append(f"{name} counted {c['events_in']} events in, expected {n}")
        expected = n if name == "floor" else stream["valid"]
        if c["valid"] != expected:
            problems.append(f"{name} saw {c['valid']} valid events, expected {expected}")
    return {"ok": not problems, "problems": problems, "events_in": n, "valid": stream["valid"]}


def _generate(spec: BenchSpec, path: str) -> dict[str, Any]:
    from streamsift.synthetic import generate

    cfg = bench_config(spec, "unused")
    stream = generate(cfg.synthetic, cfg.input)
    write_payloads(path, stream.payloads)
    return {
        "path": path,
        "payloads": len(stream.payloads),
        "valid": stream.n_valid,
        "malformed": stream.n_malformed,
        "late": stream.n_late,
        "incidents": len(stream.incidents),
        "sha256": payload_digest(stream.payloads),
    }


def _setup(spec: BenchSpec, task: dict[str, Any]) -> dict[str, Any]:
    """Setup process: write the payload file(s), train the models, size the state
    cells. Run in a child so that the parent stays small (see
    :func:`benchmarks.common.ru_maxrss_mb`)."""
    work_dir = task["work_dir"]
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    out["stream"] = _generate(spec, os.path.join(work_dir, "payloads.jsonl"))
    pe = int(task.get("profile_events", 0))
    if pe > 0:
        if pe == spec.events:
            out["profile_stream"] = out["stream"]
        else:
            pspec = spec.with_events(pe)
            out["profile_stream"] = _generate(pspec, os.path.join(work_dir, "profile.jsonl"))
    out["generate_s"] = time.perf_counter() - t0
    # numba compiles the per-event kernels on their first call and caches them on
    # disk: pay it here, once, not in the first contender's wall time
    from streamsift.models.keylogic import KeyLogic

    cfg = bench_config(spec, os.path.join(work_dir, "unused-model"))
    t0 = time.perf_counter()
    KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.detector).warm_up()
    out["kernels_s"] = time.perf_counter() - t0
    if task.get("need_model"):
        from streamsift.pipeline.run import ensure_model

        model_dir = os.path.join(
            work_dir, f"model-f{spec.features}-k{spec.keys}-s{spec.seed}-h{spec.history_hours:g}"
        )
        t0 = time.perf_counter()
        out["model_path"] = ensure_model(bench_config(spec, model_dir), model_dir)
        out["model_s"] = time.perf_counter() - t0
    if task.get("need_reference"):
        from benchmarks.contenders import train_reference_model

        t0 = time.perf_counter()
        out["reference"] = train_reference_model(spec, task["reference_model_path"])
        out["reference_s"] = time.perf_counter() - t0
    if task.get("need_state"):
        from benchmarks.state_size import state_breakdown

        out["state_breakdown"] = state_breakdown(spec)
        # the 2 KB target is for the default config (its feature fields)
        from streamsift.config import InputConfig

        default = BenchSpec(features=len(InputConfig().feature_fields))
        out["state_breakdown_default"] = state_breakdown(default)
    return out


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run everything ``args`` asks for; return the results dict (also written to
    ``args.out`` as Markdown, and to ``args.json_out`` as JSON if set)."""
    from benchmarks.report import kept_section, ratios, render_markdown

    spec = BenchSpec(
        events=args.events,
        keys=args.keys,
        features=args.features,
        seed=args.seed,
        history_hours=float(args.history_hours),
    )
    contenders = parse_contenders(args.contenders)
    key_counts = parse_int_list(args.key_counts, "key_counts")
    batch_sizes = parse_int_list(args.batch_sizes, "batch_sizes")
    if args.events_per_key < 1:
        raise ValueError(f"events_per_key must be >= 1; got {args.events_per_key}")
    if args.model_rows < 1:
        raise ValueError(f"model_rows must be >= 1; got {args.model_rows}")
    if args.profile_events < 0:
        raise ValueError(f"profile_events must be >= 0; got {args.profile_events}")
    if args.child_timeout <= 0:
        raise ValueError(f"child_timeout must be > 0; got {args.child_timeout}")
    from benchmarks.latency import parse_latency_modes
    from benchmarks.runners import parse_runners

    parse_runners(args.runners)
    parse_int_list(args.latency_loads, "latency_loads")
    parse_latency_modes(args.latency_modes)
    if not 0 < args.latency_seconds < float("inf"):
        raise ValueError(f"latency_seconds must be > 0; got {args.latency_seconds}")
    if not 0 < args.latency_drain_timeout < float("inf"):
        raise ValueError(f"latency_drain_timeout must be > 0; got {args.latency_drain_timeout}")

    keep = bool(args.work_dir)
    work_dir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="streamsift-bench-"))
    os.makedirs(work_dir, exist_ok=True)
    res: dict[str, Any] = {
        "command": build_command(args),
        "invoked_as": _invoked_as(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": software_versions(),
        "spec": asdict(spec),
        "fields": list(spec.fields),
        "work_dir": work_dir if keep else "(temporary, removed)",
    }
    try:
        _run_all(args, spec, contenders, key_counts, batch_sizes, work_dir, res)
    finally:
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    res["ratios"] = ratios(res["contenders"])
    res["parent_peak_rss_mb"] = peak_rss_mb()
    res["load_avg_end"] = machine_info()["load_avg"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # a quality section written by others survives the rewrite
        kept = kept_section(out.read_text(encoding="utf-8"))
        if kept:
            res["kept_quality_section"] = kept
    out.write_text(render_markdown(res), encoding="utf-8")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return res


def _run_all(
    args: argparse.Namespace,
    spec: BenchSpec,
    contenders: tuple[str, ...],
    key_counts: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    work_dir: str,
    res: dict[str, Any],
) -> None:
    timeout = float(args.child_timeout)
    ref_path = os.path.join(work_dir, "reference_iforest.joblib")
    _say(
        f"setup: generating {spec.events:,} events ({spec.keys} keys, {spec.features} fields), "
        "training the models"
    )
    setup = _run_child(
        {
            "kind": "setup",
            "spec": asdict(spec),
            "work_dir": work_dir,
            "profile_events": args.profile_events,
            "need_model": bool(
                {"full", "batched"} & set(contenders)
                or batch_sizes
                or args.profile_events > 0
                or args.runners.strip()
                or args.latency_loads.strip()
            ),
            "need_reference": "reference" in contenders,
            "need_state": bool(key_counts),
            "reference_model_path": ref_path,
        },
        work_dir,
        "setup",
        timeout,
    )
    if "error" in setup:
        raise RuntimeError(f"benchmark setup failed: {setup['error']}")
    res["setup"] = {
        k: v
        for k, v in setup.items()
        if k not in ("stream", "state_breakdown", "state_breakdown_default")
    }
    stream = setup["stream"]
    res["stream"] = stream
    model_path = setup.get("model_path", "")

    base = {
        "spec": asdict(spec),
        "payloads_path": stream["path"],
        "model_path": model_path,
        "reference_model_path": ref_path,
        "work_dir": work_dir,
    }
    res["contenders"] = {}
    for name in contenders:
        _say(f"contender {name}: running")
        r = _run_child(dict(base, kind="contender", name=name), work_dir, name, timeout)
        res["contenders"][name] = r
        if "error" in r:
            _say(f"contender {name}: FAILED: {r['error'][:300]}")
        else:
            _say(
                f"contender {name}: {r['events_in']:,} events in {r['wall_s']:.1f} s "
                f"({r['events_per_s']:,.0f}/s), alerts {r['alerts']:,}, "
                f"peak RSS {r['peak_rss_mb']:.0f} MiB"
            )
    res["consistency"] = _consistency(res["contenders"], stream)
    if "full" in contenders and "batched" in contenders:
        res["identity"] = compare_engines(res["contenders"]["full"], res["contenders"]["batched"])

    engine = resolve_engine(args)
    res["runners"] = _run_portable(args, base, engine, stream, work_dir, timeout)
    res["latency"] = _run_latency(args, base, engine, work_dir, timeout)

    if key_counts:
        state: dict[str, Any] = {
            "breakdown": setup.get("state_breakdown", {}),
            "breakdown_default": setup.get("state_breakdown_default", {}),
            "scaling": [],
        }
        for n in key_counts:
            _say(f"state: {n:,} keys")
            r = _run_child(
                dict(base, kind="keys", n_keys=n, events_per_key=args.events_per_key),
                work_dir,
                f"keys-{n}",
                timeout,
            )
            r.setdefault("n_keys", n)
            state["scaling"].append(r)
        res["state"] = state

    if batch_sizes:
        _say(f"model stage: batch sizes {list(batch_sizes)}")
        res["model_stage"] = _run_child(
            dict(
                base, kind="model_stage", batch_sizes=list(batch_sizes), model_rows=args.model_rows
            ),
            work_dir,
            "model-stage",
            timeout,
        )

    if args.profile_events > 0:
        if res["versions"].get("pyinstrument") == "not installed":
            res["profile"] = {"skipped": "pyinstrument is not installed (pip install pyinstrument)"}
        else:
            pspec = spec.with_events(args.profile_events)
            ppath = setup["profile_stream"]["path"]
            for engine in parse_profile_engines(args.profile_engines):
                key = "profile" if engine == "per_element" else f"profile_{engine}"
                _say(f"profiling the full pipeline ({engine} engine) on {pspec.events:,} events")
                res[key] = _run_child(
                    dict(
                        base,
                        kind="profile",
                        engine=engine,
                        spec=asdict(pspec),
                        payloads_path=ppath,
                    ),
                    work_dir,
                    key.replace("_", "-"),
                    timeout,
                )


def _run_portable(
    args: argparse.Namespace,
    base: dict[str, Any],
    engine: str,
    stream: dict[str, Any],
    work_dir: str,
    timeout: float,
) -> dict[str, Any]:
    """`full` and `floor` on each portable runner asked for (or why it was skipped)."""
    from benchmarks.runners import (
        PORTABLE_KINDS,
        PORTABLE_RUNNERS,
        parse_runners,
        runner_availability,
    )

    out: dict[str, Any] = {"engine": engine, "runs": {}}
    for short in parse_runners(args.runners):
        runner = PORTABLE_RUNNERS[short][0]
        why = runner_availability(short, os.environ)
        if why is not None:
            _say(f"{runner}: {why}")
            out["runs"][short] = {"runner": runner, "skipped": why}
            continue
        entry: dict[str, Any] = {"runner": runner}
        for kind in PORTABLE_KINDS:
            _say(f"{runner}: {kind} running")
            r = _run_child(
                dict(base, kind="portable", name=kind, runner=short, engine=engine),
                work_dir,
                f"{short}-{kind}",
                timeout,
            )
            entry[kind] = r
            if "error" in r:
                _say(f"{runner}: {kind} FAILED: {r['error'][:300]}")
            elif kind == "empty":
                _say(f"{runner}: trivial job (start-up and teardown) {r['wall_s']:.1f} s")
            else:
                _say(
                    f"{runner}: {kind}: {r['events_in']:,} events in {r['wall_s']:.1f} s "
                    f"({r['events_per_s']:,.0f}/s), alerts {r['alerts']:,}"
                )
        entry["consistency"] = _consistency(
            {k: entry[k] for k in PORTABLE_KINDS if k in entry and k != "empty"}, stream
        )
        out["runs"][short] = entry
    return out


def _run_latency(
    args: argparse.Namespace,
    base: dict[str, Any],
    engine: str,
    work_dir: str,
    timeout: float,
) -> dict[str, Any]:
    """The Kafka ingest-to-alert latency at each offered load and mode (or why not)."""
    from dataclasses import asdict as _asdict

    from benchmarks.latency import parse_latency_modes
    from streamsift.config import Config

    loads = parse_int_list(args.latency_loads, "latency_loads")
    if not loads:
        return {"skipped": "not measured in this run (`--latency-loads` empty)"}
    modes = parse_latency_modes(args.latency_modes, Config().event_time.allowed_lateness_s)
    if not modes:
        return {"skipped": "not measured in this run (`--latency-modes` empty)"}
    bootstrap = kafka_bootstrap(args)
    if not bootstrap:
        return {
            "skipped": "no Kafka broker: pass --kafka-bootstrap or set "
            "STREAMSIFT_KAFKA_BOOTSTRAP (scripts/services.sh env)"
        }
    out: dict[str, Any] = {
        "bootstrap": bootstrap,
        "engine": engine,
        "seconds": args.latency_seconds,
        "runs": [],
    }
    for rate in loads:
        for mode in modes:
            label = f"{rate}-{mode.name.replace(':', '-')}"
            _say(f"latency: {rate:,} events/s from Kafka, {mode.name}, engine {engine}")
            r = _run_child(
                dict(
                    base,
                    kind="latency",
                    rate=rate,
                    seconds=args.latency_seconds,
                    mode=_asdict(mode),
                    engine=engine,
                    bootstrap=bootstrap,
                    drain_timeout_s=args.latency_drain_timeout,
                ),
                work_dir,
                f"latency-{label}",
                timeout,
            )
            r.setdefault("rate", rate)
            r.setdefault("mode", mode.name)
            out["runs"].append(r)
            if "error" in r:
                _say(f"latency {label}: FAILED: {r['error'][:300]}")
            else:
                a, p = r["alert_latency"], r["processed_latency"]
                _say(
                    f"latency {label}: achieved {r['achieved_per_s']:,.0f}/s, alerts "
                    f"{a['count']} p50 {a['p50']} p99 {a['p99']} s; processed p50 "
                    f"{p['p50']} p99 {p['p99']} s; kept up: {r['kept_up']}"
                )
    return out


def main(args: argparse.Namespace) -> int:
    """Run the benchmark (or, with the hidden ``--child``, one measurement).

    Returns 0 when every measurement ran and every contender saw the same
    events, 1 otherwise, 2 for invalid arguments.
    """
    if getattr(args, "child", None):
        return _child_main(args.child)
    from benchmarks.report import console_summary, kept_section, render_markdown

    try:
        if getattr(args, "from_json", None):
            res = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            kept = kept_section(out.read_text(encoding="utf-8")) if out.exists() else None
            if kept:
                res["kept_quality_section"] = kept
            out.write_text(render_markdown(res), encoding="utf-8")
        else:
            res = run_benchmark(args)
    except (ValueError, OSError) as exc:
        print(f"streamsift bench: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"streamsift bench: {exc}", file=sys.stderr)
        return 1
    print(console_summary(res))
    print(f"results written to {args.out}")
    failed = [n for n, c in res["contenders"].items() if "error" in c]
    for part in ("model_stage", "profile"):
        if isinstance(res.get(part), dict) and "error" in res[part]:
            failed.append(part)
    for s in res.get("state", {}).get("scaling", []):
        if "error" in s:
            failed.append(f"keys-{s['n_keys']}")
    for short, entry in res.get("runners", {}).get("runs", {}).items():
        for kind in ("empty", "full", "floor"):
            if isinstance(entry.get(kind), dict) and "error" in entry[kind]:
                failed.append(f"{kind}@{short}")
    for r in res.get("latency", {}).get("runs", []):
        if "error" in r:
            failed.append(f"latency-{r.get('rate')}-{r.get('mode')}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 0 if not failed and res["consistency"]["ok"] else 1


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="streamsift bench: streamsift against its contenders on one seeded stream",
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_cli())
