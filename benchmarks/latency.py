"""Latency from ingest to alert at a fixed offered load from the real Kafka broker.

One measurement (:func:`measure_latency`, run by the harness in its own
process) works like this:

1. create three fresh topics on the broker: the input, the alerts and the
   processed-event audit;
2. start ``streamsift run --source kafka`` as a child process (DirectRunner,
   the native Kafka source, the bench's feature fields, model and engine, the
   mode's event-time settings), its alerts and ``sinks.processed`` going to
   the two Kafka topics;
3. send warm-up events (a few per second) until the first one comes back on
   the processed topic: the pipeline is up and reading;
4. **measured phase**: publish synthetic events (``streamsift.synthetic.generate``,
   the bench's keys and fields, its injected incidents) at the offered rate,
   paced by :class:`Pacer` (message ``i`` is due at ``start + i / rate``; a late
   sender catches up in a burst), each event's time field set to its wall-clock
   send time in epoch ms and the Kafka record timestamp set to the same ms;
5. **tail**: a few heartbeat events per second keep the source's watermark
   moving with the wall clock until every measured event can have been
   released (event-time ordering holds an event until the watermark passes it
   plus the allowed lateness, and one release timer per key covers all its
   pending events, so up to twice the allowed lateness); then the pipeline is
   left idle, drains (``source.stop_when_idle_s``) and exits;
6. read both output topics back. Latency of an alert = its Kafka record
   timestamp (when the pipeline's sink produced it) - ``last_event_time_ms``
   (the event that raised or updated it: its send time). Latency of a processed
   event = the processed record's timestamp - the event's time. Events the
   pipeline had not processed when it was stopped count as *censored*: their
   latency is at least (stop - send), and a percentile that such a lower bound
   reaches is reported as ``>=`` (:func:`latency_summary`).

Everything runs on this machine's single wall clock, so send and write times
are directly comparable.

>>> m = parse_latency_modes("event_time,arrival,event_time:2")
>>> [(x.name, x.ordering, x.allowed_lateness_s) for x in m]
[('event_time', 'event_time', 30.0), ('arrival', 'arrival', 30.0), ('event_time:2', 'event_time', 2.0)]
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import BenchSpec, peak_rss_mb

__all__ = [
    "LatencyMode",
    "LatencyPlan",
    "Pacer",
    "latency_summary",
    "measure_latency",
    "pace",
    "parse_latency_modes",
    "percentile",
    "prepare_templates",
]

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent.parent
#: placeholder for the event time while the payload templates are built
_MARK = "__streamsift_bench_ts__"


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class LatencyMode:
    """The event-time settings of one latency run.

    ``event_time`` (streamsift's default ordering) holds every event until the
    watermark passes its time + ``allowed_lateness_s``; ``arrival`` processes
    each event when it arrives (the allowed lateness then only decides which
    events are late).

    >>> LatencyMode("x", "arrival", 30.0).tail_s
    3.0
    >>> LatencyMode("x", "event_time", 2.0).tail_s
    7.0
    >>> LatencyMode("x", "fifo", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: ordering must be 'event_time' or 'arrival'; got 'fifo'
    """

    name: str
    ordering: str
    allowed_lateness_s: float

    def __post_init__(self) -> None:
        if self.ordering not in ("event_time", "arrival"):
            raise ValueError(f"ordering must be 'event_time' or 'arrival'; got {self.ordering!r}")
        a = self.allowed_lateness_s
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a < math.inf:
            raise ValueError(f"allowed_lateness_s must be >= 0 and finite; got {a!r}")

    @property
    def tail_s(self) -> float:
        """Heartbeat seconds after the measured phase: long enough for the last measured
        event to be released (2 x the allowed lateness in event-time ordering: one
        release timer per key covers all its pending events) plus 3 s for the 1 s
        stage-2 windows and the sinks."""
        if self.ordering == "arrival":
            return 3.0
        return 2.0 * float(self.allowed_lateness_s) + 3.0


def parse_latency_modes(text: str, default_lateness_s: float = 30.0) -> tuple[LatencyMode, ...]:
    """``"event_time,arrival,event_time:2"`` -> the modes, validated, duplicates removed.

    ``event_time`` uses the config's allowed lateness (``default_lateness_s``),
    ``event_time:L`` an allowed lateness of ``L`` seconds, ``arrival`` the
    arrival ordering.

    >>> parse_latency_modes("")
    ()
    >>> parse_latency_modes("arrival:1")
    Traceback (most recent call last):
    ...
    ValueError: latency_modes must be a comma list of event_time, event_time:SECONDS, arrival; got 'arrival:1'
    """
    out: list[LatencyMode] = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        name, sep, value = t.partition(":")
        try:
            if name == "arrival" and not sep:
                mode = LatencyMode("arrival", "arrival", float(default_lateness_s))
            elif name == "event_time" and not sep:
                mode = LatencyMode("event_time", "event_time", float(default_lateness_s))
            elif name == "event_time" and value:
                mode = LatencyMode(t, "event_time", float(value))
            else:
                raise ValueError(t)
        except ValueError:
            raise ValueError(
                "latency_modes must be a comma list of event_time, event_time:SECONDS, "
                f"arrival; got {t!r}"
            ) from None
        if mode not in out:
            out.append(mode)
    return tuple(out)


@dataclass(frozen=True)
class LatencyPlan:
    """One latency run: offered ``rate`` (events/s) for ``seconds``, in ``mode``, with
    the pipeline on ``engine``.

    >>> LatencyPlan(rate=1000, seconds=30, mode=parse_latency_modes("arrival")[0]).events
    30000
    >>> LatencyPlan(rate=0, seconds=30, mode=parse_latency_modes("arrival")[0])
    Traceback (most recent call last):
    ...
    ValueError: rate must be > 0 events/s; got 0
    """

    rate: float
    seconds: float
    mode: LatencyMode
    engine: str = "per_element"
    partitions: int = 1
    heartbeat_per_s: float = 10.0
    stop_when_idle_s: float = 3.0
    startup_timeout_s: float = 240.0
    drain_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("rate", "seconds", "heartbeat_per_s", "stop_when_idle_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                unit = " events/s" if name == "rate" else ""
                raise ValueError(f"{name} must be > 0{unit}; got {v!r}")
        for name in ("startup_timeout_s", "drain_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name} must be > 0; got {v!r}")
        if self.engine not in ("per_element", "batched"):
            raise ValueError(f"engine must be 'per_element' or 'batched'; got {self.engine!r}")
        p = self.partitions
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"partitions must be an integer >= 1; got {p!r}")

    @property
    def events(self) -> int:
        """Events of the measured phase."""
        return int(math.ceil(self.rate * self.seconds))


# ------------------------------------------------------------------ pacing


class Pacer:
    """A fixed offered load: message ``i`` (0-based) is due at ``start + i / rate``.

    Pure: the caller passes the times in.

    >>> p = Pacer(rate=1000.0, start=10.0)
    >>> p.due_at(0), p.due_at(1500)
    (10.0, 11.5)
    >>> p.due_count(9.0), p.due_count(10.0), p.due_count(10.0105)
    (0, 1, 11)
    >>> Pacer(rate=-1.0, start=0.0)
    Traceback (most recent call last):
    ...
    ValueError: rate must be > 0 events/s; got -1.0
    """

    def __init__(self, rate: float, start: float) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be > 0 events/s; got {rate!r}")
        self.rate = float(rate)
        self.start = float(start)

    def due_at(self, i: int) -> float:
        return self.start + i / self.rate

    def due_count(self, now: float) -> int:
        """How many messages are due by ``now`` (message ``i`` counts once ``now >= due_at(i)``)."""
        if now < self.start:
            return 0
        n = int(math.floor((now - self.start) * self.rate + 1e-9)) + 1
        # guard against float rounding at the boundaries
        while n > 0 and self.due_at(n - 1) > now:
            n -= 1
        while self.due_at(n) <= now:
            n += 1
        return n


def pace(
    send: Callable[[int, float, float], None],
    n: int,
    rate: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    idle: Callable[[], None] | None = None,
    max_sleep_s: float = 0.005,
) -> dict[str, float]:
    """Send ``n`` messages at ``rate`` per second: ``send(i, now, due)`` for each, on time
    or (when the sender fell behind) as soon as possible, in order. ``idle()`` runs
    between bursts (serve the producer's callbacks). Clock and sleep are injected.

    Returns the start, the time of the last send, the achieved rate and the send
    delay (how late a message went out behind its due time) mean / max.

    >>> t = [0.0]
    >>> sent = []
    >>> r = pace(lambda i, now, due: sent.append((i, now, due)), 5, 10.0,
    ...          clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    >>> [round(s[1], 3) for s in sent], r["achieved_per_s"]
    ([0.0, 0.1, 0.2, 0.3, 0.4], 10.0)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    pacer = Pacer(rate, clock())
    i = 0
    delay_sum = 0.0
    delay_max = 0.0
    last = pacer.start
    while i < n:
        now = clock()
        due_n = min(pacer.due_count(now), n)
        while i < due_n:
            due = pacer.due_at(i)
            now = clock()
            send(i, now, due)
            d = max(0.0, now - due)
            delay_sum += d
            delay_max = max(delay_max, d)
            last = now
            i += 1
        if idle is not None:
            idle()
        if i < n:
            wait = pacer.due_at(i) - clock()
            if wait > 0:
                sleep(min(wait, max_sleep_s))
    # n messages span n - 1 intervals; achieved = what an observer of the sends measures
    span = last - pacer.start
    achieved = (n - 1) / span if n > 1 and span > 0 else float(rate)
    return {
        "start": pacer.start,
        "last_send": last,
        "sent": float(n),
        "achieved_per_s": achieved,
        "send_delay_mean_s": delay_sum / n,
        "send_delay_max_s": delay_max,
    }


# ------------------------------------------------------------------ statistics


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of ascending ``sorted_values``: the
    smallest value with at least q% of the values at or below it (always a sample).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    >>> percentile(list(range(1, 101)), 99), percentile([], 50) is None
    (99, True)
    >>> percentile([1.0], 0)
    Traceback (most recent call last):
    ...
    ValueError: q must be in (0, 100]; got 0
    """
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100]; got {q!r}")
    n = len(sorted_values)
    if n == 0:
        return None
    k = max(1, math.ceil(q / 100.0 * n - 1e-9))
    return sorted_values[k - 1]


def latency_summary(observed: Sequence[float], censored: Sequence[float] = ()) -> dict[str, Any]:
    """p50 / p99 / max / mean of latencies (seconds).

    ``observed``: exact latencies; ``censored``: lower bounds for events that had
    no result when the measurement stopped (their latency is at least that). A
    percentile is exact when no censored value ranks at or below it; otherwise
    the value shown is a lower bound (``*_lower_bound`` True).

    >>> s = latency_summary([0.1, 0.2, 0.3, 0.4])
    >>> s["count"], s["p50"], s["p99"], s["max"], s["p99_lower_bound"]
    (4, 0.2, 0.4, 0.4, False)
    >>> s = latency_summary([0.1, 0.2, 0.3], censored=[5.0])
    >>> s["p50"], s["p50_lower_bound"], s["p99"], s["p99_lower_bound"], s["censored"]
    (0.2, False, 5.0, True, 1)
    >>> latency_summary([])["p50"] is None
    True
    """
    items = sorted([(float(v), False) for v in observed] + [(float(v), True) for v in censored])
    values = [v for v, _ in items]
    out: dict[str, Any] = {"count": len(observed), "censored": len(censored)}
    for q, name in ((50, "p50"), (99, "p99"), (100, "max")):
        value = percentile(values, q)
        out[name] = value
        if value is None:
            out[f"{name}_lower_bound"] = False
            continue
        k = max(1, math.ceil(q / 100.0 * len(values) - 1e-9))
        out[f"{name}_lower_bound"] = any(c for _, c in items[:k])
    out["mean"] = sum(observed) / len(observed) if observed else None
    return out


# ------------------------------------------------------------------ the stream


@dataclass(frozen=True)
class Template:
    """One payload with its event time left open: ``prefix + ms + suffix``; ``key`` is
    None for a malformed payload (sent as ``prefix`` unchanged)."""

    prefix: bytes
    suffix: bytes
    key: str | None

    def render(self, ts_ms: int) -> bytes:
        """The payload bytes with event time ``ts_ms``.

        >>> Template(b'{"key":"a","ts":', b',"cpu":1}', "a").render(1767225600000)
        b'{"key":"a","ts":1767225600000,"cpu":1}'
        >>> Template(b"junk", b"", None).render(5)
        b'junk'
        """
        if self.key is None:
            return self.prefix
        return self.prefix + str(int(ts_ms)).encode() + self.suffix


def prepare_templates(spec: BenchSpec, n: int) -> list[Template]:
    """``n`` payloads of the bench stream (``streamsift.synthetic.generate`` with the
    bench's keys, fields and seed, its incidents injected), each valid event's time
    field opened up for the send time; malformed payloads stay as they are.

    >>> ts = prepare_templates(BenchSpec(keys=3, features=2, seed=1), 50)
    >>> len(ts), sum(t.key is None for t in ts) <= 1
    (50, True)
    >>> json.loads(ts[0].render(1767225600123))["ts"]
    1767225600123
    """
    from streamsift.config import InputConfig, SyntheticConfig
    from streamsift.parsing import EventParser
    from streamsift.records import Event
    from streamsift.synthetic import generate

    input_cfg = InputConfig(feature_fields=spec.fields)
    syn = SyntheticConfig(events=n, keys=spec.keys, seed=spec.seed)
    stream = generate(syn, input_cfg)
    parser = EventParser(input_cfg)
    marker = json.dumps(_MARK).encode()
    out = []
    for raw in stream.payloads:
        ev = parser.parse(raw)
        if not isinstance(ev, Event):
            out.append(Template(raw, b"", None))
            continue
        obj = json.loads(raw)
        obj[input_cfg.time_field] = _MARK
        text = json.dumps(obj, separators=(",", ":")).encode()
        prefix, _, suffix = text.partition(marker)
        out.append(Template(prefix, suffix, ev.key))
    return out


# ------------------------------------------------------------------ Kafka helpers


def _admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def create_topics(bootstrap: str, partitions: dict[str, int], timeout_s: float = 30.0) -> None:
    from confluent_kafka.admin import NewTopic

    admin = _admin(bootstrap)  # keep the client alive until the futures resolve
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=p, replication_factor=1) for t, p in partitions.items()],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    for f in futures.values():
        f.result(timeout=timeout_s)


def delete_topics(bootstrap: str, topics: Sequence[str], timeout_s: float = 30.0) -> None:
    admin = _admin(bootstrap)  # keep the client alive until the futures resolve
    futures = admin.delete_topics(list(topics), operation_timeout=timeout_s)
    for t, f in futures.items():
        try:
            f.result(timeout=timeout_s)
        except Exception as exc:  # cleanup is best effort
            log.warning("deleting topic %s: %s", t, exc)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[tuple[int, bytes]]:
    """Every record of ``topic`` (all partitions, from the start): (timestamp ms, value)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streamsift-bench-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        meta = c.list_topics(topic, timeout=timeout_s).topics[topic]
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        ends = {}
        for tp in tps:
            low, high = c.get_watermark_offsets(tp, timeout=timeout_s)
            ends[tp.partition] = high
        c.assign(tps)
        pos = {p: -1 for p in ends}
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while any(pos[p] + 1 < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in c.consume(num_messages=1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                pos[msg.partition()] = msg.offset()
                out.append((msg.timestamp()[1], msg.value() or b""))
        return out
    finally:
        c.close()


class _Tail:
    """Consumer of a topic's new records during the run (the warm-up probe)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"streamsift-bench-probe-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        self._c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

    def any_record(self, timeout_s: float) -> bool:
        msgs = self._c.consume(num_messages=10, timeout=timeout_s)
        return any(m.error() is None for m in msgs)

    def close(self) -> None:
        self._c.close()


# ------------------------------------------------------------------ processes


def _process_rss(pid: int) -> tuple[float, float]:
    """(current RSS MiB, high-water mark MiB) of ``pid`` or (0, 0) once it is gone."""
    rss = hwm = 0.0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024.0
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return rss, hwm


class _RssWatch:
    """Samples a child process's ``VmHWM`` until it exits (its own peak RSS)."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._interval = interval_s
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            _, hwm = _process_rss(self.pid)
            self.peak_mb = max(self.peak_mb, hwm)
            self._stop.wait(self._interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.peak_mb


def _write_config(path: str, spec: BenchSpec) -> None:
    fields = ", ".join(json.dumps(f) for f in spec.fields)
    text = (
        "# written by streamsift bench (benchmarks/latency.py)\n"
        f"[input]\nfeature_fields = [{fields}]\n\n"
        f"[model]\nhistory_hours = {float(spec.history_hours)!r}\n\n"
        "[output]\nprint_alerts = false\n"
    )
    Path(path).write_text(text, encoding="utf-8")


def pipeline_command(
    plan: LatencyPlan,
    *,
    bootstrap: str,
    topic: str,
    group: str,
    alerts_topic: str,
    processed_topic: str,
    config_path: str,
    model_dir: str,
    out_dir: str,
    summary_path: str,
    python: str = sys.executable,
) -> list[str]:
    """The ``streamsift run --source kafka`` command of one latency run.

    >>> mode = parse_latency_modes("arrival")[0]
    >>> cmd = pipeline_command(LatencyPlan(1000, 30, mode), bootstrap="b:1", topic="t",
    ...     group="g", alerts_topic="a", processed_topic="p", config_path="c.toml",
    ...     model_dir="m", out_dir="o", summary_path="s.json", python="python")
    >>> " ".join(cmd[:4]), cmd[cmd.index("--ordering") + 1], cmd[cmd.index("--engine") + 1]
    ('python -m streamsift.pipeline.cli run', 'arrival', 'per_element')
    """
    return [
        python,
        "-m",
        "streamsift.pipeline.cli",
        "run",
        "--source",
        "kafka",
        "--runner",
        "DirectRunner",
        "--kafka-impl",
        "native",
        "--config",
        config_path,
        "--model-dir",
        model_dir,
        "--out-dir",
        out_dir,
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--group-id",
        group,
        "--alerts-to",
        f"kafka://{alerts_topic}",
        "--processed-to",
        f"kafka://{processed_topic}",
        "--stop-when-idle",
        f"{plan.stop_when_idle_s:g}",
        "--engine",
        plan.engine,
        "--ordering",
        plan.mode.ordering,
        "--allowed-lateness",
        f"{plan.mode.allowed_lateness_s:g}",
        "--quiet",
        "--summary-json",
        summary_path,
    ]


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> str:
    """Stop the pipeline process we started: SIGINT (it cancels the run), then SIGKILL."""
    if proc.poll() is not None:
        return "exited"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
        return "interrupted"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        return "killed"


def _tail_of(path: str, n: int = 2000) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


# ------------------------------------------------------------------ the measurement


def measure_latency(
    plan: LatencyPlan,
    spec: BenchSpec,
    *,
    bootstrap: str,
    model_dir: str,
    work_dir: str,
    keep_topics: bool = False,
) -> dict[str, Any]:
    """Run one latency measurement (see the module docstring); returns its results."""
    from confluent_kafka import Producer

    tag = f"{int(plan.rate)}-{plan.mode.name.replace(':', '-')}-{uuid.uuid4().hex[:8]}"
    topic = f"streamsift-bench-in-{tag}"
    alerts_topic = f"streamsift-bench-alerts-{tag}"
    processed_topic = f"streamsift-bench-processed-{tag}"
    run_dir = os.path.join(work_dir, f"latency-{tag}")
    os.makedirs(run_dir, exist_ok=True)
    t_prep = time.perf_counter()
    templates = prepare_templates(spec, plan.events)
    valid = [t for t in templates if t.key is not None]
    prep_s = time.perf_counter() - t_prep
    create_topics(bootstrap, {topic: plan.partitions, alerts_topic: 1, processed_topic: 1})
    try:
        config_path = os.path.join(run_dir, "streamsift.toml")
        _write_config(config_path, spec)
        summary_path = os.path.join(run_dir, "summary.json")
        log_path = os.path.join(run_dir, "pipeline.log")
        cmd = pipeline_command(
            plan,
            bootstrap=bootstrap,
            topic=topic,
            group=f"streamsift-bench-{tag}",
            alerts_topic=alerts_topic,
            processed_topic=processed_topic,
            config_path=config_path,
            model_dir=model_dir,
            out_dir=os.path.join(run_dir, "out"),
            summary_path=summary_path,
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 1,
                "acks": "1",
                "queue.buffering.max.messages": 1_000_000,
            }
        )
        failures: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None and len(failures) < 10:
                failures.append(str(err))

        def produce(payload: bytes, ts_ms: int) -> None:
            while True:
                try:
                    producer.produce(topic, value=payload, timestamp=ts_ms, on_delivery=on_delivery)
                    return
                except BufferError:
                    producer.poll(0.05)

        hb = [0]

        def heartbeat() -> None:
            t = valid[hb[0] % len(valid)]
            hb[0] += 1
            ms = int(time.time() * 1000)
            produce(t.render(ms), ms)

        out: dict[str, Any] = {
            "rate": plan.rate,
            "seconds": plan.seconds,
            "mode": plan.mode.name,
            "ordering": plan.mode.ordering,
            "allowed_lateness_s": plan.mode.allowed_lateness_s,
            "engine_requested": plan.engine,
            "partitions": plan.partitions,
            "tail_s": plan.mode.tail_s,
            "stop_when_idle_s": plan.stop_when_idle_s,
            "templates_s": prep_s,
            "command": " ".join(cmd[1:]),
        }
        t_launch = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as logfh:
            proc = subprocess.Popen(
                cmd, stdout=logfh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=run_dir,
            )  # fmt: skip
        watch = _RssWatch(proc.pid)
        probe = _Tail(bootstrap, processed_topic)
        try:
            # -- warm-up: until the pipeline writes its first processed record
            deadline = time.monotonic() + plan.startup_timeout_s
            up = False
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the pipeline exited during start-up (code {proc.returncode}): "
                        f"{_tail_of(log_path)}"
                    )
                heartbeat()
                producer.poll(0)
                if probe.any_record(0.25):
                    up = True
                    break
            if not up:
                raise RuntimeError(
                    f"no processed record within startup_timeout_s={plan.startup_timeout_s:g} s: "
                    f"{_tail_of(log_path)}"
                )
            settle_until = time.monotonic() + 2.0
            while time.monotonic() < settle_until:
                heartbeat()
                producer.poll(0)
                time.sleep(0.1)
            out["startup_s"] = time.perf_counter() - t_launch
            out["warmup_events"] = hb[0]

            # -- measured phase
            sent: Counter[tuple[str, int]] = Counter()
            n_valid_sent = [0]

            def send(i: int, now: float, _due: float) -> None:
                t = templates[i]
                ms = int(now * 1000)
                produce(t.render(ms), ms)
                if t.key is not None:
                    sent[(t.key, ms)] += 1
                    n_valid_sent[0] += 1

            time.sleep(0.002)  # no warm-up event shares a millisecond with the window
            pacing = pace(
                send,
                len(templates),
                plan.rate,
                clock=time.time,
                sleep=time.sleep,
                idle=lambda: producer.poll(0),
            )
            window_start_ms = int(pacing["start"] * 1000)
            window_end_ms = int(pacing["last_send"] * 1000)
            time.sleep(0.002)  # no tail event shares a millisecond with the window

            # -- tail: heartbeats keep the watermark moving until everything can be released
            hb_before = hb[0]
            tail_end = time.monotonic() + plan.mode.tail_s
            while time.monotonic() < tail_end:
                heartbeat()
                producer.poll(0)
                time.sleep(1.0 / plan.heartbeat_per_s)
            out["tail_events"] = hb[0] - hb_before
            producer.flush(30)
            sending_end = time.time()

            # -- the pipeline drains and exits by itself once idle (stop_when_idle_s)
            try:
                proc.wait(timeout=plan.drain_timeout_s + plan.stop_when_idle_s)
                out["pipeline_end"] = "drained"
            except subprocess.TimeoutExpired:
                out["pipeline_end"] = _stop(proc)
            stopped_at = time.time()
            out["pipeline_exit_code"] = proc.returncode
            out["after_sending_s"] = stopped_at - sending_end
        finally:
            probe.close()
            if proc.poll() is None:
                _stop(proc)
            out["pipeline_peak_rss_mb"] = watch.stop()
            producer.flush(10)

        if failures:
            raise RuntimeError(f"producing to {topic} failed: {failures[:3]}")
        if out["pipeline_exit_code"] not in (0, None) and out["pipeline_end"] == "drained":
            raise RuntimeError(
                f"the pipeline failed (exit code {out['pipeline_exit_code']}): {_tail_of(log_path)}"
            )
        processed = read_topic(bootstrap, processed_topic)
        alerts = read_topic(bootstrap, alerts_topic)
        out.update(
            analyse(
                sent=sent,
                processed=processed,
                alerts=alerts,
                window=(window_start_ms, window_end_ms),
                stopped_at_ms=int(stopped_at * 1000),
                rate=plan.rate,
            )
        )
        out["sent"] = len(templates)
        out["sent_valid"] = n_valid_sent[0]
        out["achieved_per_s"] = pacing["achieved_per_s"]
        out["send_delay_mean_s"] = pacing["send_delay_mean_s"]
        out["send_delay_max_s"] = pacing["send_delay_max_s"]
        out["measured_s"] = pacing["last_send"] - pacing["start"]
        out["producer_peak_rss_mb"] = peak_rss_mb()
        try:
            summary = json.loads(Path(summary_path).read_text(encoding="utf-8"))
            out["pipeline_counters"] = summary.get("counters", {})
        except (OSError, ValueError):
            out["pipeline_counters"] = {}
        out["engine_effective"] = effective_engine(out["pipeline_counters"], plan.engine)
        out["log_tail"] = _tail_of(log_path, 600) if out["pipeline_end"] != "drained" else ""
        return out
    finally:
        if not keep_topics:
            delete_topics(bootstrap, [topic, alerts_topic, processed_topic])


def effective_engine(counters: dict[str, int], requested: str) -> str:
    """Which engine the broker run used, from its counters: the batched engine counts
    its model calls (``stage2_batches``), the per-element stages do not.

    >>> effective_engine({"escalated": 3, "stage2_batches": 2}, "batched")
    'batched'
    >>> effective_engine({"escalated": 3}, "batched")
    'per_element'
    >>> effective_engine({}, "batched")
    'unknown (no escalation)'
    """
    if counters.get("stage2_batches", 0) > 0:
        return "batched"
    if counters.get("escalated", 0) > 0:
        return "per_element"
    return "unknown (no escalation)"


def analyse(
    *,
    sent: Counter[tuple[str, int]],
    processed: Sequence[tuple[int, bytes]],
    alerts: Sequence[tuple[int, bytes]],
    window: tuple[int, int],
    stopped_at_ms: int,
    rate: float,
) -> dict[str, Any]:
    """Latencies from the records read back (pure; all times epoch ms).

    ``sent``: (key, send ms) of every valid measured event; ``processed`` /
    ``alerts``: (record timestamp ms, JSON value) of the two output topics;
    ``window``: the measured phase's first and last send ms; events without a
    processed record are censored at ``stopped_at_ms``.

    >>> sent = Counter({("a", 1000): 1, ("b", 1500): 1, ("a", 2000): 1})
    >>> processed = [(1100, b'{"key":"a","event_time_ms":1000}'),
    ...              (1700, b'{"key":"b","event_time_ms":1500}'),
    ...              (900, b'{"key":"z","event_time_ms":500}')]
    >>> alerts = [(1900, b'{"key":"b","last_event_time_ms":1500,"detection_time_ms":1800,'
    ...                  b'"update":false}')]
    >>> r = analyse(sent=sent, processed=processed, alerts=alerts, window=(1000, 2000),
    ...             stopped_at_ms=4000, rate=2.0)
    >>> r["processed_latency"]["p50"], r["processed_latency"]["censored"]
    (0.2, 1)
    >>> r["alert_latency"]["p50"], r["alerts_new"], r["unprocessed"], r["backlog_at_end"]
    (0.4, 1, 1, 1)
    """
    lo, hi = window
    remaining = Counter(sent)
    observed: list[float] = []
    late_at_end = 0
    duplicates = 0
    for ts_ms, value in processed:
        try:
            obj = json.loads(value)
            ident = (str(obj["key"]), int(obj["event_time_ms"]))
        except (ValueError, KeyError, TypeError):
            continue
        if not lo <= ident[1] <= hi:
            continue  # warm-up or tail event
        if remaining[ident] <= 0:
            duplicates += 1
            continue
        remaining[ident] -= 1
        observed.append((ts_ms - ident[1]) / 1000.0)
        if ts_ms > hi:
            late_at_end += 1
    unprocessed = [
        (stopped_at_ms - ms) / 1000.0 for (_k, ms), n in remaining.items() for _ in range(max(n, 0))
    ]
    alert_lat: list[float] = []
    detect_lat: list[float] = []
    new = updates = 0
    for ts_ms, value in alerts:
        try:
            a = json.loads(value)
            last = int(a["last_event_time_ms"])
        except (ValueError, KeyError, TypeError):
            continue
        if not lo <= last <= hi:
            continue
        if a.get("update"):
            updates += 1
        else:
            new += 1
        alert_lat.append((ts_ms - last) / 1000.0)
        if a.get("detection_time_ms") is not None:
            detect_lat.append((int(a["detection_time_ms"]) - last) / 1000.0)
    backlog = late_at_end + len(unprocessed)
    return {
        "processed_latency": latency_summary(observed, unprocessed),
        "alert_latency": latency_summary(alert_lat),
        "detection_latency": latency_summary(detect_lat),
        "alerts_new": new,
        "alerts_updates": updates,
        "processed_in_window": len(observed),
        "processed_duplicates": duplicates,
        "unprocessed": len(unprocessed),
        "backlog_at_end": backlog,
        "backlog_at_end_s": backlog / rate if rate > 0 else 0.0,
        "kept_up": backlog <= rate,
    }
