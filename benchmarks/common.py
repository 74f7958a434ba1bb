"""Benchmark settings, the shared stream and measurement helpers.

Every contender reads the same payload file written once by the harness, so
they see byte-identical events (checked: each reports the sha256 of what it
read, :func:`payload_digest`).

>>> spec = BenchSpec(events=1000, keys=5, features=6)
>>> spec.fields
('cpu', 'latency_ms', 'requests', 'errors', 'cpu_2', 'latency_ms_2')
>>> BenchSpec(keys=0)
Traceback (most recent call last):
...
ValueError: keys must be an integer >= 1; got 0
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import platform
import resource
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_FIELDS",
    "BenchSpec",
    "bench_config",
    "current_rss_mb",
    "feature_fields",
    "machine_info",
    "parse_choices",
    "payload_digest",
    "peak_rss_mb",
    "read_payloads",
    "ru_maxrss_mb",
    "software_versions",
    "write_payloads",
]

#: the synthetic generator's signal channels; extra fields re-use them by position
BASE_FIELDS = ("cpu", "latency_ms", "requests", "errors")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def parse_choices(
    text: str, name: str, choices: Collection[str], *, lower: bool = False
) -> tuple[str, ...]:
    """A comma list of ``choices`` (a flag's value), validated, duplicates removed,
    order kept; ``lower``: case-insensitive.

    >>> parse_choices("b, a,b", "letters", ("a", "b")), parse_choices("", "letters", ("a",))
    (('b', 'a'), ())
    >>> parse_choices("A", "letters", ("a",), lower=True)
    ('a',)
    >>> parse_choices("c", "letters", ("a", "b"))
    Traceback (most recent call last):
    ...
    ValueError: letters must be a comma list of ['a', 'b']; got 'c'
    """
    out: list[str] = []
    for t in text.split(","):
        t = t.strip().lower() if lower else t.strip()
        if not t:
            continue
        if t not in choices:
            raise ValueError(f"{name} must be a comma list of {list(choices)}; got {t!r}")
        if t not in out:
            out.append(t)
    return tuple(out)


def feature_fields(n: int) -> tuple[str, ...]:
    """Names of ``n`` feature fields for the synthetic stream.

    The first four are the generator's channels; further fields are named
    ``<channel>_<k>``. :func:`streamsift.synthetic.generate` maps a field it does
    not know onto a channel by position (field ``j`` -> channel ``j % 4``) and
    gives that copy its own per-key scale and noise, so every field is a real,
    correlated metric.

    >>> feature_fields(2)
    ('cpu', 'latency_ms')
    >>> feature_fields(9)[4:]
    ('cpu_2', 'latency_ms_2', 'requests_2', 'errors_2', 'cpu_3')
    >>> feature_fields(0)
    Traceback (most recent call last):
    ...
    ValueError: features must be an integer >= 1; got 0
    """
    _check_int("features", n, 1)
    out = []
    for j in range(n):
        base = BASE_FIELDS[j % len(BASE_FIELDS)]
        k = j // len(BASE_FIELDS)
        out.append(base if k == 0 else f"{base}_{k + 1}")
    return tuple(out)


@dataclass(frozen=True)
class BenchSpec:
    """What every contender runs on: the seeded synthetic stream and model history.

    ``history_hours`` is the synthetic history the models are trained on
    (streamsift's artifact and the reference Isolation Forest); ``chunk_size`` the
    replay chunk after which the source advances the watermark.

    >>> BenchSpec().events, BenchSpec().keys, BenchSpec().features
    (50000, 50, 8)
    >>> BenchSpec(history_hours=0)
    Traceback (most recent call last):
    ...
    ValueError: history_hours must be > 0 and finite; got 0
    """

    events: int = 50_000
    keys: int = 50
    features: int = 8
    seed: int = 7
    history_hours: float = 24.0
    chunk_size: int = 500

    def __post_init__(self) -> None:
        _check_int("events", self.events, 1)
        _check_int("keys", self.keys, 1)
        _check_int("features", self.features, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        h = self.history_hours
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 < h < math.inf:
            raise ValueError(f"history_hours must be > 0 and finite; got {h!r}")
        _check_int("chunk_size", self.chunk_size, 1)

    @property
    def fields(self) -> tuple[str, ...]:
        return feature_fields(self.features)

    def with_events(self, events: int) -> BenchSpec:
        """The same stream settings with another event count.

        >>> BenchSpec().with_events(20000).events
        20000
        """
        return dataclasses.replace(self, events=events)


def bench_config(spec: BenchSpec, model_dir: str) -> Any:
    """streamsift's default config with the benchmark's stream, fields and model dir.

    Every stage keeps its default (all on); only alert printing is off.

    >>> cfg = bench_config(BenchSpec(events=100, keys=2, features=4, seed=3), "/tmp/m")
    >>> cfg.synthetic.events, cfg.synthetic.seed, cfg.input.feature_fields[-1], cfg.model.dir
    (100, 3, 'errors', '/tmp/m')
    """
    from streamsift.config import Config, InputConfig, ModelConfig, OutputConfig, SyntheticConfig

    base = Config()
    return dataclasses.replace(
        base,
        input=InputConfig(feature_fields=spec.fields),
        synthetic=dataclasses.replace(
            SyntheticConfig(), events=spec.events, keys=spec.keys, seed=spec.seed
        ),
        model=dataclasses.replace(
            ModelConfig(), dir=model_dir, history_hours=float(spec.history_hours)
        ),
        output=OutputConfig(print_alerts=False),
    )


def payload_digest(payloads: Iterable[bytes]) -> str:
    """sha256 over the payloads (length-prefixed, so boundaries count).

    >>> payload_digest([b"ab", b"c"]) == payload_digest([b"a", b"bc"])
    False
    >>> payload_digest([])[:12]
    'e3b0c44298fc'
    """
    h = hashlib.sha256()
    for p in payloads:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def write_payloads(path: str | Path, payloads: Sequence[bytes]) -> int:
    """Write payloads one per line (they never contain a newline); returns the count.

    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "p.jsonl")
    >>> write_payloads(p, [b'{"a":1}', b"\\xff junk"]), read_payloads(p)
    (2, [b'{"a":1}', b'\\xff junk'])
    """
    from streamsift.synthetic import to_jsonl

    return to_jsonl(payloads, path)


def read_payloads(path: str | Path) -> list[bytes]:
    """Inverse of :func:`write_payloads`."""
    data = Path(path).read_bytes()
    if not data:
        return []
    return data[:-1].split(b"\n") if data.endswith(b"\n") else data.split(b"\n")


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux ``/proc``; 0.0 elsewhere).

    >>> current_rss_mb() > 0
    True
    """
    kb = _status_kb("VmRSS")
    return kb / 1024.0 if kb is not None else 0.0


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def ru_maxrss_mb() -> float:
    """``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in MiB.

    On Linux this is the larger of the process's own peak and the peak of the
    process that spawned it (the kernel keeps the pre-``exec`` high-water mark),
    so a child started by a bigger parent reports the parent's peak;
    :func:`peak_rss_mb` does not have that problem.

    >>> ru_maxrss_mb() > 0
    True
    """
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS
    return kb / (1024.0 * 1024.0) if platform.system() == "Darwin" else kb / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: ``VmHWM`` (the
    high-water mark of this process's own memory since it started), falling
    back to :func:`ru_maxrss_mb` where ``/proc`` is not available.

    >>> peak_rss_mb() >= current_rss_mb() * 0.99
    True
    """
    kb = _status_kb("VmHWM")
    return kb / 1024.0 if kb is not None else ru_maxrss_mb()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024.0 * 1024.0)
    except OSError:
        pass
    return 0.0


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel and the load average when called.

    >>> sorted(machine_info())
    ['cpu_model', 'kernel', 'load_avg', 'mem_total_gib', 'nproc']
    """
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        nproc = os.cpu_count() or 0
    try:
        load = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        load = ()
    return {
        "nproc": nproc,
        "cpu_model": _cpu_model(),
        "mem_total_gib": round(_mem_total_gib(), 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "load_avg": load,
    }


def software_versions() -> dict[str, str]:
    """Python and the library versions the numbers depend on.

    >>> v = software_versions()
    >>> v["python"].count("."), "apache-beam" in v
    (2, True)
    """
    out = {"python": platform.python_version()}
    for dist in ("apache-beam", "scikit-learn", "pyod", "numpy", "numba", "pyinstrument"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
