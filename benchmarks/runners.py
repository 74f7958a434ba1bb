"""Contenders ``full`` and ``floor`` on the portable runners (Prism, Flink).

The same payload file and the same contender code as on the DirectRunner
(:func:`benchmarks.contenders.run_full` / :func:`~benchmarks.contenders.run_floor`),
with the runner built by streamsift's
:func:`~streamsift.pipeline.options.make_runner`: Prism from
``$STREAMSIFT_PRISM_BIN``, Flink's embedded cluster from the job server jar in
``$STREAMSIFT_FLINK_JOB_SERVER_JAR`` (parallelism 1, streamsift's default
there). A runner whose binary is not installed is reported as "not installed"
(:func:`runner_availability`), not as a failure.

A portable runner runs its job service in processes of its own (the ``prism``
binary; Flink's job server JVM with the embedded cluster); the Python SDK
harness runs in the contender's process (LOOPBACK). So besides the contender
process's own peak RSS, :class:`ProcessTreeSampler` samples the RSS of every
descendant process while the run lasts: each one's high-water mark and the
peak of the whole tree's summed RSS.

>>> parse_runners("flink, prism,flink")
('flink', 'prism')
>>> runner_beam_args("flink")
('--flink_master=[local]',)
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping
from typing import Any

from benchmarks.common import parse_choices

__all__ = [
    "PORTABLE_RUNNERS",
    "ProcessTreeSampler",
    "descendants",
    "parse_runners",
    "run_portable",
    "runner_availability",
    "runner_beam_args",
]

#: short name -> (Beam runner, environment variable of its local binary, extra Beam args)
PORTABLE_RUNNERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "prism": ("PrismRunner", "STREAMSIFT_PRISM_BIN", ()),
    "flink": ("FlinkRunner", "STREAMSIFT_FLINK_JOB_SERVER_JAR", ("--flink_master=[local]",)),
}
#: what runs on each portable runner: a trivial job first (the runner's start-up and
#: teardown cost), then the two contenders
PORTABLE_KINDS = ("empty", "full", "floor")
#: elements of the trivial job
EMPTY_JOB_ELEMENTS = 10


def parse_runners(text: str) -> tuple[str, ...]:
    """A comma list of portable runners (``prism``, ``flink``), validated, order kept.

    >>> parse_runners("")
    ()
    >>> parse_runners("spark")
    Traceback (most recent call last):
    ...
    ValueError: runners must be a comma list of ['prism', 'flink']; got 'spark'
    """
    return parse_choices(text, "runners", PORTABLE_RUNNERS, lower=True)


def runner_beam_args(short: str) -> tuple[str, ...]:
    return PORTABLE_RUNNERS[short][2]


def runner_availability(
    short: str,
    environ: Mapping[str, str],
    which: Callable[[str], str | None] = shutil.which,
) -> str | None:
    """None when runner ``short`` can run here, else why not ("not installed: ...").

    >>> runner_availability("prism", {})
    'not installed: STREAMSIFT_PRISM_BIN is not set (scripts/services.sh env)'
    >>> runner_availability("prism", {"STREAMSIFT_PRISM_BIN": "/nonexistent/prism"})
    'not installed: STREAMSIFT_PRISM_BIN=/nonexistent/prism is not a file'
    >>> import sys
    >>> runner_availability("flink", {"STREAMSIFT_FLINK_JOB_SERVER_JAR": sys.executable},
    ...                     which=lambda name: None)
    'not installed: java is not on PATH (the Flink job server is a Java program)'
    >>> runner_availability("flink", {"STREAMSIFT_FLINK_JOB_SERVER_JAR": sys.executable},
    ...                     which=lambda name: "/usr/bin/java") is None
    True
    """
    _runner, env, _args = PORTABLE_RUNNERS[short]
    path = environ.get(env, "")
    if not path:
        return f"not installed: {env} is not set (scripts/services.sh env)"
    if not os.path.isfile(path):
        return f"not installed: {env}={path} is not a file"
    if short == "flink" and which("java") is None:
        return "not installed: java is not on PATH (the Flink job server is a Java program)"
    return None


# ------------------------------------------------------------------ process tree RSS


def _read_status(pid: int, proc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"{proc}/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("Name", "PPid", "VmRSS", "VmHWM"):
                    out[k] = v.strip()
    except OSError:
        pass
    return out


def descendants(pid: int, proc: str = "/proc") -> list[int]:
    """Process ids of every descendant of ``pid`` (children, their children, ...).

    >>> import subprocess, sys, time
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    >>> time.sleep(0.2)
    >>> child.pid in descendants(os.getpid())
    True
    >>> child.kill(); child.wait() != 0
    True
    """
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        ppid = _read_status(int(name), proc).get("PPid")
        if ppid and ppid.isdigit():
            children.setdefault(int(ppid), []).append(int(name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def _kb(value: str | None) -> float:
    try:
        return float(value.split()[0]) if value else 0.0
    except (ValueError, IndexError):
        return 0.0


class ProcessTreeSampler:
    """Samples the RSS of this process and all its descendants in a thread.

    ``processes()``: every descendant seen, with its name and peak RSS (its
    ``VmHWM`` at the last sample, so a process that ends between two samples
    reports what it had reached by the previous one); ``tree_peak_mb``: the
    highest sum of the current RSS of the whole tree (this process included)
    over the samples.

    >>> s = ProcessTreeSampler(interval_s=0.05)
    >>> s.start(); s.stop()["tree_peak_mb"] > 0
    True
    """

    def __init__(self, interval_s: float = 0.25, proc: str = "/proc") -> None:
        self._interval = interval_s
        self._proc = proc
        self._root = os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[int, dict[str, Any]] = {}
        self.tree_peak_mb = 0.0
        self.descendants_peak_mb = 0.0
        self.samples = 0

    def sample(self) -> None:
        total = _kb(_read_status(self._root, self._proc).get("VmRSS"))
        others = 0.0
        for pid in descendants(self._root, self._proc):
            st = _read_status(pid, self._proc)
            if not st:
                continue
            rss = _kb(st.get("VmRSS"))
            hwm = max(_kb(st.get("VmHWM")), rss)
            entry = self._seen.setdefault(pid, {"pid": pid, "name": st.get("Name", "?")})
            entry["peak_rss_mb"] = max(entry.get("peak_rss_mb", 0.0), hwm / 1024.0)
            others += rss
        total += others
        self.tree_peak_mb = max(self.tree_peak_mb, total / 1024.0)
        self.descendants_peak_mb = max(self.descendants_peak_mb, others / 1024.0)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def processes(self) -> list[dict[str, Any]]:
        return sorted(self._seen.values(), key=lambda e: -e.get("peak_rss_mb", 0.0))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.sample()
        return {
            "tree_peak_mb": self.tree_peak_mb,
            "descendants_peak_mb": self.descendants_peak_mb,
            "processes": self.processes(),
            "samples": self.samples,
        }


# ------------------------------------------------------------------ the contenders


def run_empty(runner: str, beam_args: tuple[str, ...]) -> dict[str, Any]:
    """A trivial streaming job (``Create`` of :data:`EMPTY_JOB_ELEMENTS` numbers, one
    ``Map``) on ``runner``: what starting the job service, submitting a job and
    tearing it down cost, without any work.

    >>> r = run_empty("DirectRunner", ())
    >>> r["name"], r["events_in"], r["wall_s"] > 0
    ('empty', 10, True)
    """
    import time

    import apache_beam as beam

    from benchmarks.common import current_rss_mb, peak_rss_mb
    from streamsift.pipeline.options import make_runner, streaming_options

    rss0 = current_rss_mb()
    t0 = time.perf_counter()
    pipeline = beam.Pipeline(runner=make_runner(runner), options=streaming_options(list(beam_args)))
    _ = (
        pipeline
        | "Create" >> beam.Create(list(range(EMPTY_JOB_ELEMENTS)))
        | "Identity" >> beam.Map(lambda x: x)
    )
    pipeline.run().wait_until_finish()
    wall = time.perf_counter() - t0
    return {
        "name": "empty",
        "events_in": EMPTY_JOB_ELEMENTS,
        "wall_s": wall,
        "rss_start_mb": rss0,
        "peak_rss_mb": peak_rss_mb(),
        "details": {},
    }


def run_portable(kind: str, short: str, inputs: Any, engine: str) -> dict[str, Any]:
    """``kind`` (``empty``, ``full`` or ``floor``) on portable runner ``short``; ``inputs``
    is a :class:`benchmarks.contenders.ContenderInputs`. Returns the
    :class:`~benchmarks.contenders.ContenderResult` as a dict (``empty``: its wall
    time and RSS), with the runner's processes under ``details["runner_processes"]``."""
    from benchmarks.common import ru_maxrss_mb
    from benchmarks.contenders import run_floor, run_full

    if kind not in PORTABLE_KINDS:
        raise ValueError(f"kind must be one of {list(PORTABLE_KINDS)}; got {kind!r}")
    runner, _env, args = PORTABLE_RUNNERS[short]
    sampler = ProcessTreeSampler()
    sampler.start()
    try:
        if kind == "empty":
            out = run_empty(runner, args)
        elif kind == "full":
            out = run_full(inputs, engine=engine, runner=runner, beam_args=args, name=kind)
        else:
            out = run_floor(inputs, runner=runner, beam_args=args, name=kind)
    finally:
        tree = sampler.stop()
    if not isinstance(out, dict):
        out.ru_maxrss_mb = ru_maxrss_mb()
        out = out.to_dict()
    out["details"]["runner_processes"] = tree
    out["details"]["runner"] = runner
    out["details"]["beam_args"] = list(args)
    if kind == "full":
        out["details"]["engine"] = engine
    return out
