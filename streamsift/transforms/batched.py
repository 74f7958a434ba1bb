"""The micro-batched engine on Beam: chunks of payloads, one stateful DoFn per shard.

``engine.mode = "batched"`` (``--engine batched``) replaces the per-element
stages (Parse -> DetectPerKey -> RunInference -> AlertPerKey) by two steps:

``ParseChunks``
    A chunk (one element holding many payloads) is parsed in one call
    (:class:`~streamsift.models.batch.ChunkParser`); its events are split by
    shard (a stable hash of the key modulo ``engine.shards``) into one element
    per shard, and its dead letters go to their own output.
``DetectShards``
    One stateful DoFn per shard keeps the state of all the shard's keys (explicit
    binary layouts inside, see :class:`~streamsift.models.batch.ShardState`) in
    a log of changes (see "Shard state" below), buffers and releases events
    in event time exactly as the per-element path does (one shard-level
    watermark timer instead of two timers per key), runs the per-key logic on
    each released event, scores all escalated rows of the step with *one*
    model call and runs the per-key alert logic. Then the global ``RateLimit``.

Chunks and shard batches travel as bytes (``marshal`` of plain tuples), so no
custom coder is needed on any runner. A chunk from :class:`ReplayChunks` also
carries the watermark its source had reached when it was emitted; the shard
fires its keys' timers up to that watermark before taking the chunk's events,
the order in which the per-element path sees timers and events. Chunks
without it (:class:`ChunkPayloads`, for sources that emit single payloads) rely
on the shard timer alone.

Shard state. Beam state is the source of truth: a bag holding one snapshot of
the shard (every key's slot and alert state) followed by one element per step
with only the keys that step changed (removed keys as None), and a small
version cell naming the last write (this process's random token, a
per-process write counter, the log's sequence number). Each process also keeps
the decoded :class:`~streamsift.models.batch.ShardState` of recently used
shards (``SHARD_CACHE_SIZE``), keyed by the transform (a token created with
the DoFn, shared by its pickled copies) and the shard. A step uses the cached
state only if the version cell still holds the version that cache entry wrote;
otherwise (first step in this process, another worker wrote since, a bundle
whose state was not committed, an evicted entry) it rebuilds the state from the
log. The entry is taken out of the cache for the step and put back only after
its write, so a step that fails half-way leaves nothing half-updated. A step
therefore reads nothing but the version cell and writes only the keys it
touched; the log is compacted into a fresh snapshot once it holds more records
than the shard has keys (amortised: at most one record rewritten per record
written). Memory: the cache holds each cached shard's keys once more next to
the runner's copy of the log (on the DirectRunner both are in this process).

Model refresh without a restart works as in
:mod:`streamsift.transforms.inference` (poll mode): the shard scores with the
process-wide :class:`~streamsift.transforms.inference.LiveModel`, which checks
``model.dir`` at most once per ``model.watch_interval_s``.

>>> chunk = encode_chunk([b'{"a": 1}', b"junk"], 12.5, [20.0])
>>> decode_chunk(chunk)
(12.5, (20.0,), (b'{"a": 1}', b'junk'))
"""

from __future__ import annotations

import itertools
import json
import marshal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.metrics import Metrics
from apache_beam.testing import test_stream
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from streamsift.config import Config, InputConfig
from streamsift.models.batch import (
    ChunkParser,
    ShardLogic,
    ShardState,
    apply_changes,
    calibrated_scores,
    log_weight,
    shard_of,
)
from streamsift.parsing import ERROR_KINDS
from streamsift.records import Event
from streamsift.transforms import coders as _coders  # noqa: F401  (registers coders)
from streamsift.transforms.alerts import RateLimitAlerts
from streamsift.transforms.inference import StreamsiftModelHandler
from streamsift.transforms.source import ReplayStream, event_time_hints, replay_schedule

__all__ = [
    "ChunkPayloads",
    "DetectShardFn",
    "ParseChunksFn",
    "ReplayChunks",
    "build_batched_detection",
    "clear_shard_cache",
    "shard_events",
    "shard_cache_info",
    "decode_chunk",
    "encode_chunk",
]

NAMESPACE = "streamsift"
DEAD_LETTER_TAG = "dead_letter"
LATE_TAG = "late"
FLAGGED_TAG = "flagged"
SCORED_TAG = "scored"
_VERSION = 1
#: the shard timer of hinted streams: fires once, when the stream ends
_END_OF_TIME = Timestamp(micros=MAX_TIMESTAMP.micros - 1_000_000)


def _micros(seconds: float) -> int:
    return int(round(seconds * 1e6))


def encode_chunk(
    payloads: Sequence[bytes],
    watermark: float | None = None,
    after: Sequence[float] = (),
) -> bytes:
    """One chunk element: the payloads, the source's watermark (seconds) when it
    was emitted (None: unknown) and the watermarks the source advances to right
    after it (its promise, in order; empty: unknown)."""
    return marshal.dumps(
        (_VERSION, watermark, tuple(float(w) for w in after), tuple(bytes(p) for p in payloads)),
        4,
    )


def decode_chunk(data: bytes) -> tuple[float | None, tuple[float, ...], tuple[bytes, ...]]:
    """Inverse of :func:`encode_chunk`: ``(watermark, after, payloads)``."""
    version, watermark, after, payloads = marshal.loads(data)
    if version != _VERSION:
        raise ValueError(f"chunk format version must be {_VERSION}; got {version}")
    return watermark, after, payloads


def _encode_events(
    events: Sequence[Event], watermark: float | None, after: Sequence[float]
) -> bytes:
    return marshal.dumps(
        (watermark, tuple(after), [(e.key, e.ts, e.values, e.label, e.ingest) for e in events]), 4
    )


def _decode_events(data: bytes) -> tuple[float | None, tuple[float, ...], list[Event]]:
    watermark, after, plain = marshal.loads(data)
    return watermark, after, [Event(p[0], p[1], p[2], p[3], p[4]) for p in plain]


# ----------------------------------------------------------------------------- sources


class ReplayChunks(ReplayStream):
    """:class:`~streamsift.transforms.source.ReplayStream` with one element per chunk.

    The same watermark schedule (before a chunk: up to its oldest on-time
    event; after it: the newest event time so far minus ``watermark_lag_s``;
    at the end: a drain, then infinity); each chunk is one bytes element
    (:func:`encode_chunk`) stamped at the watermark it carries. Same arguments.
    """

    def _test_stream(self) -> test_stream.TestStream:
        hints = event_time_hints(self._payloads, self._cfg)
        ts_stream = test_stream.TestStream(coder=coders.BytesCoder())
        newest = None
        steps = list(replay_schedule(hints, self._chunk, self._lag))  # ReplayStream's schedule
        for step in steps:
            if step.before is not None:
                ts_stream = ts_stream.advance_watermark_to(Timestamp.of(step.before))
            known = [t for t in hints[step.start : step.end] if t is not None]
            after = [step.after] if step.after is not None else []
            if step is steps[-1] and step.newest is not None:
                after.append(step.newest + self._drain_s)
            stamp = step.at if step.at is not None else (min(known) if known else 0.0)
            chunk = encode_chunk(self._payloads[step.start : step.end], step.at, after)
            ts_stream = ts_stream.add_elements([TimestampedValue(chunk, stamp)])
            if step.after is not None:
                ts_stream = ts_stream.advance_watermark_to(Timestamp.of(step.after))
            newest = step.newest
        if newest is not None:
            ts_stream = ts_stream.advance_watermark_to(Timestamp.of(newest + self._drain_s))
        return ts_stream.advance_watermark_to_infinity()

    def expand(self, pbegin):
        return pbegin | "ReplayChunks" >> self._test_stream().with_output_types(bytes)


class _ChunkFn(beam.DoFn):
    def __init__(self, max_size: int) -> None:
        self._max = max_size

    def start_bundle(self) -> None:
        self._buf: list[bytes] = []
        self._min_ts = None

    def _flush(self):
        chunk = encode_chunk(self._buf)
        ts = self._min_ts
        self._buf = []
        self._min_ts = None
        return chunk, ts

    def process(self, payload: bytes, ts=beam.DoFn.TimestampParam):
        self._buf.append(payload)
        if self._min_ts is None or ts < self._min_ts:
            self._min_ts = ts
        if len(self._buf) >= self._max:
            chunk, at = self._flush()
            yield TimestampedValue(chunk, at)

    def finish_bundle(self):
        if self._buf:
            chunk, at = self._flush()
            yield WindowedValue(chunk, at, [GlobalWindow()])


class ChunkPayloads(beam.PTransform):
    """Payloads (global window) -> chunk elements of at most ``max_size`` payloads of
    one bundle each (no watermark hint), for sources that emit single payloads."""

    def __init__(self, max_size: int = 500) -> None:
        super().__init__()
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1; got {max_size}")
        self._max = max_size

    def expand(self, payloads):
        return payloads | "Chunk" >> beam.ParDo(_ChunkFn(self._max)).with_output_types(bytes)


# ----------------------------------------------------------------------------- parse


#: what the DoFns' ``setup`` builds, kept per process: (token, thread) -> object
_SETUP_CACHE: OrderedDict[tuple[str, int], object] = OrderedDict()
_SETUP_CACHE_LOCK = threading.Lock()
#: entries kept (least recently used dropped); a few per pipeline in this process
SETUP_CACHE_SIZE = 16


def _built_once(token: str, build: Callable[[], object]) -> object:
    """``build()``, once per process and thread for ``token`` (a DoFn instance's,
    copied with it).

    The DirectRunner unpickles a fresh copy of every DoFn per bundle and calls its
    ``setup`` each time: without this, every bundle would rebuild the parser and
    its counters, or the key logic and the model (reading and verifying the
    artifact). One object per thread, because the model it holds is polled for
    refreshes (not thread-safe).

    >>> a = _built_once("doctest", lambda: object())
    >>> _built_once("doctest", lambda: object()) is a
    True
    """
    key = (token, threading.get_ident())
    with _SETUP_CACHE_LOCK:
        obj = _SETUP_CACHE.get(key)
        if obj is not None:
            _SETUP_CACHE.move_to_end(key)
            return obj
    obj = build()
    with _SETUP_CACHE_LOCK:
        _SETUP_CACHE[key] = obj
        while len(_SETUP_CACHE) > SETUP_CACHE_SIZE:
            _SETUP_CACHE.popitem(last=False)
    return obj


class ParseChunksFn(beam.DoFn):
    """chunk bytes -> ``(shard, events bytes)`` per shard | DeadLetter (tagged)."""

    def __init__(
        self, cfg: InputConfig, n_shards: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._cfg = cfg
        self._n = n_shards
        self._clock = clock
        self._setup_token = uuid.uuid4().hex

    def _build(self) -> tuple:
        return (
            ChunkParser(self._cfg),
            Metrics.counter(NAMESPACE, "events_in"),
            Metrics.counter(NAMESPACE, "parsed"),
            Metrics.counter(NAMESPACE, "dead_lettered"),
            {k: Metrics.counter(NAMESPACE, f"dead_letter_{k}") for k in ERROR_KINDS},
            {},  # key -> shard memo
        )

    def setup(self) -> None:
        built = _built_once(self._setup_token, self._build)
        self._parser, self._in, self._ok, self._bad, self._by_kind, self._shards = built

    def process(self, chunk: bytes):
        watermark, after, payloads = decode_chunk(chunk)
        events, dead = self._parser.parse_many(payloads, self._clock())
        self._in.inc(len(payloads))
        if events:
            self._ok.inc(len(events))
        if dead:
            self._bad.inc(len(dead))
            for d in dead:
                self._by_kind[d.error_kind].inc()
                yield pvalue.TaggedOutput(DEAD_LETTER_TAG, d)
        per_shard: list[list[Event]] = [[] for _ in range(self._n)]
        shards = self._shards
        for e in events:
            s = shards.get(e.key)
            if s is None:
                s = shards[e.key] = shard_of(e.key, self._n)
                if len(shards) > 100_000:
                    shards.clear()
            per_shard[s].append(e)
        for s, evs in enumerate(per_shard):
            # every shard hears the watermark, events or not
            if evs or watermark is not None or after:
                yield (s, _encode_events(evs, watermark, after))


# ----------------------------------------------------------------------------- shard cache

#: this process's writer id: with a per-process counter it makes every version
#: a shard writes unique, in this process and against any other worker's
_PROCESS_TOKEN = uuid.uuid4().hex
_WRITES = itertools.count(1)
#: shards whose decoded state is kept per process (least recently used dropped)
SHARD_CACHE_SIZE = 64
#: a log of changes is compacted into one snapshot once it holds more records
#: than the shard has keys (and at least this many)
_MIN_LOG_RECORDS = 256


@dataclass
class _CachedShard:
    version: bytes
    state: ShardState
    seq: int  #: sequence number of the last log element written
    log_records: int  #: key records + buffered events in the log (log_weight)


_SHARD_CACHE: OrderedDict[tuple[str, object], _CachedShard] = OrderedDict()
_SHARD_CACHE_LOCK = threading.Lock()
_CACHE_STATS = {"hits": 0, "misses": 0, "snapshots": 0, "changes": 0}


def shard_cache_info() -> dict[str, int]:
    """Counters of the process-level shard cache (hits, misses = rebuilds from
    Beam state, snapshots and change records written) and its current size.

    >>> sorted(shard_cache_info())
    ['changes', 'entries', 'hits', 'misses', 'snapshots']
    """
    with _SHARD_CACHE_LOCK:
        return dict(_CACHE_STATS, entries=len(_SHARD_CACHE))


def clear_shard_cache() -> int:
    """Forget every cached shard of this process (the next step of each shard
    rebuilds it from Beam state, as a fresh worker would); return how many were
    dropped.

    >>> clear_shard_cache() >= 0
    True
    """
    with _SHARD_CACHE_LOCK:
        n = len(_SHARD_CACHE)
        _SHARD_CACHE.clear()
    return n


def _replay_log(elements) -> tuple[tuple, int, int]:
    """``(plain state, last seq, key records)`` from the log elements (any order)."""
    items = sorted((marshal.loads(e) for e in elements), key=lambda x: x[0])
    plain: tuple = ShardState().to_plain()
    seq = items[-1][0] if items else 0
    records = 0
    for _seq, kind, body in items:
        if kind == "s":
            plain = body
            records = log_weight(body)
        elif kind == "c":
            apply_changes(plain, body)
            records += log_weight(body)
        else:
            raise ValueError(f"shard log element kind must be 's' or 'c'; got {kind!r}")
    return plain, seq, records


# ----------------------------------------------------------------------------- detect


class DetectShardFn(beam.DoFn):
    """``(shard, events bytes)`` -> alert JSON | flagged | LateEvent | Scored (tagged)."""

    #: the shard's state as a log: one snapshot, then one element of changed
    #: keys per step (marshalled ``(seq, kind, body)``; a key whose buffer only
    #: grew brings just its new events), compacted when it holds twice the shard
    LOG = BagStateSpec("shard_log", coders.BytesCoder())
    #: who wrote the log last (process token, write number, seq): the
    #: process-level cache is used only while it holds this very version
    VERSION = ReadModifyWriteStateSpec("shard_version", coders.BytesCoder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(
        self,
        cfg: Config,
        model_path: str,
        emit_scored: bool = False,
        clock: Callable[[], float] = time.time,
        model_clock: Callable[[], float] = time.monotonic,
        release_quantum_s: float = 1.0,
    ) -> None:
        if not release_quantum_s >= 0:
            raise ValueError(f"release_quantum_s must be >= 0; got {release_quantum_s}")
        self._quantum_us = max(1, _micros(release_quantum_s))
        self._cfg = cfg
        self._model_path = model_path
        self._emit_scored = emit_scored
        self._clock = clock
        self._model_clock = model_clock
        #: identifies this transform's shards in the process-level cache; copied
        #: with the DoFn (the DirectRunner pickles a fresh one per bundle)
        self._cache_token = uuid.uuid4().hex

    def _build(self) -> tuple:
        cfg = self._cfg
        logic = ShardLogic.from_config(cfg)
        # compile / load the numba kernels now, not in the middle of the first bundle
        logic.key_logic.warm_up()
        handler = StreamsiftModelHandler.from_config(
            self._model_path,
            logic.key_logic.feature_names,
            cfg.model,
            model_dir=cfg.model.dir,
            watch_interval_s=cfg.model.watch_interval_s,
            clock=self._model_clock,
        )
        return logic, handler.load_model(), {}

    def setup(self) -> None:
        # the logic, the live model (it keeps polling model.dir for refreshes) and
        # the counters, built once per process and thread (see _built_once)
        self._logic, self._live, self._counters = _built_once(self._cache_token, self._build)

    def _count(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            if n:
                c = self._counters.get(name)
                if c is None:
                    c = self._counters[name] = Metrics.counter(NAMESPACE, name)
                c.inc(n)

    def _read(self, shard, log, version) -> _CachedShard:
        """The shard's state: the cached one if Beam state still holds the version
        the cache wrote last, else rebuilt from the log. The entry leaves the
        cache until :meth:`_write` puts it back, so a step that fails half-way
        never leaves a half-updated state behind."""
        current = version.read()
        key = (self._cache_token, shard)
        with _SHARD_CACHE_LOCK:
            entry = _SHARD_CACHE.pop(key, None)
            if entry is not None and current is not None and entry.version == current:
                _CACHE_STATS["hits"] += 1
                return entry
            _CACHE_STATS["misses"] += 1
        if current is None:
            return _CachedShard(b"", ShardState(), 0, 0)
        plain, seq, records = _replay_log(log.read())
        return _CachedShard(current, ShardState.from_plain(plain), seq, records)

    def _write(self, shard, log, version, timer, entry: _CachedShard, hinted: bool | None) -> None:
        """Store what changed (one log element), or a snapshot once the log holds
        more records than the shard has keys; cache the state under its new
        version; arm the timer: at the end of time for hinted streams (``hinted``
        True), at the next key timer otherwise (None: do not arm)."""
        st = entry.state
        self._logic.pack(st)
        if not (st.keys or st.alerts):
            st.take_changes()
            log.clear()
            version.clear()
            entry = None
        elif st.dirty or st.dirty_alerts or not entry.version:
            changes = st.take_changes()
            n = log_weight(changes)
            entry.seq += 1
            # records and buffered events a snapshot would hold (log_weight); the
            # log is compacted once it holds twice that (append records make it
            # grow as fast as the state itself: compacting at 1x would snapshot
            # at every step; at 2x each snapshot is paid for by as much log)
            size = len(st.keys) + len(st.alerts) + sum(len(s.buffer) for s in st.keys.values())
            if not entry.version or entry.log_records + n > max(2 * size, _MIN_LOG_RECORDS):
                log.clear()
                log.add(marshal.dumps((entry.seq, "s", st.to_plain(logged=True)), 4))
                entry.log_records = size
                stat = "snapshots"
            else:
                log.add(marshal.dumps((entry.seq, "c", changes), 4))
                entry.log_records += n
                stat = "changes"
            entry.version = marshal.dumps((_PROCESS_TOKEN, next(_WRITES), entry.seq), 4)
            version.write(entry.version)
            _CACHE_STATS[stat] += 1
        if entry is not None:
            with _SHARD_CACHE_LOCK:
                _SHARD_CACHE[(self._cache_token, shard)] = entry
                while len(_SHARD_CACHE) > SHARD_CACHE_SIZE:
                    _SHARD_CACHE.popitem(last=False)
        if hinted is None:
            return
        if hinted:
            # the source's watermarks ride with the chunks: the timer only
            # flushes what is left when the stream ends
            timer.set(_END_OF_TIME)
            return
        nxt = st.next_timer_us()
        if nxt is not None:
            q = self._quantum_us
            timer.set(Timestamp(micros=-(-nxt // q) * q if q > 1 else nxt))

    def _score_and_alert(self, st: ShardState, actions, counts: dict):
        if not actions:
            return
        idx, X = self._logic.feature_matrix(actions)
        scores = []
        version = ""
        if X is not None:
            current, outcomes = self._live.poll(self._model_clock())
            for outcome in outcomes:
                if outcome.kind == "refreshed":
                    counts["model_refreshed"] = counts.get("model_refreshed", 0) + 1
                elif outcome.kind == "rejected":
                    counts["model_rejected"] = counts.get("model_rejected", 0) + 1
            scores = calibrated_scores(current, X).tolist()
            version = current.version
            counts["stage2_batches"] = counts.get("stage2_batches", 0) + 1
        alerts, flagged = self._logic.finish(st, actions, scores, version, self._clock(), counts)
        if self._emit_scored and X is not None:
            for i, s in zip(idx, scores, strict=True):
                yield pvalue.TaggedOutput(
                    SCORED_TAG,
                    actions[i].scored._replace(stage2=float(s), model_version=version),
                )
        for f in flagged:
            yield pvalue.TaggedOutput(FLAGGED_TAG, f)
        for a in alerts:
            yield json.dumps(a, separators=(",", ":"))

    def process(
        self,
        element: tuple[int, bytes],
        log=beam.DoFn.StateParam(LOG),
        version=beam.DoFn.StateParam(VERSION),
        timer=beam.DoFn.TimerParam(RELEASE),
    ):
        shard, data = element
        watermark, after, events = _decode_events(data)
        entry = self._read(shard, log, version)
        st = entry.state
        counts: dict[str, int] = {}
        logic = self._logic
        actions: list = []
        if watermark is not None:
            actions = logic.advance(st, _micros(watermark), counts)
        late = logic.accept(st, events, counts, actions)
        for w in after:
            actions.extend(logic.advance(st, _micros(w), counts))
        for x in late:
            yield pvalue.TaggedOutput(LATE_TAG, TimestampedValue(x, x.event.ts))
        yield from self._score_and_alert(st, actions, counts)
        self._write(shard, log, version, timer, entry, hinted=watermark is not None or bool(after))
        self._count(counts)

    @on_timer(RELEASE)
    def on_release(
        self,
        fire_ts=beam.DoFn.TimestampParam,
        shard=beam.DoFn.KeyParam,
        log=beam.DoFn.StateParam(LOG),
        version=beam.DoFn.StateParam(VERSION),
        timer=beam.DoFn.TimerParam(RELEASE),
    ):
        entry = self._read(shard, log, version)
        st = entry.state
        counts: dict[str, int] = {}
        actions = self._logic.advance(st, fire_ts.micros, counts)
        yield from self._score_and_alert(st, actions, counts)
        # after the end-of-time flush nothing is left to fire for
        hinted = None if fire_ts >= _END_OF_TIME else False
        self._write(shard, log, version, timer, entry, hinted=hinted)
        self._count(counts)


def build_batched_detection(
    chunks: beam.PCollection,
    cfg: Config,
    model_path: str,
    n_shards: int | None = None,
    emit_scored: bool = False,
    emit_events: bool = False,
) -> dict[str, beam.PCollection]:
    """Wire the batched engine onto a PCollection of chunk elements
    (:func:`encode_chunk`); returns the same outputs as
    :func:`streamsift.pipeline.build.build_detection` (``scored`` only with
    ``emit_scored``; ``events``, the parsed :class:`~streamsift.records.Event`
    records for the broker runner's processed-ids audit, only with
    ``emit_events``). ``n_shards`` defaults to ``cfg.engine.shards``."""
    if n_shards is None:
        n_shards = cfg.engine.shards
    parsed = chunks | "ParseChunks" >> beam.ParDo(
        ParseChunksFn(cfg.input, n_shards)
    ).with_output_types(tuple[int, bytes]).with_outputs(DEAD_LETTER_TAG, main="shards")
    keyed = parsed["shards"]
    dead = parsed[DEAD_LETTER_TAG]
    res = keyed | "DetectShards" >> beam.ParDo(
        DetectShardFn(cfg, model_path, emit_scored, release_quantum_s=cfg.engine.release_quantum_s)
    ).with_outputs(LATE_TAG, FLAGGED_TAG, SCORED_TAG, main="alerts")
    alerts = res["alerts"] | "RateLimit" >> RateLimitAlerts(cfg.alerts)
    out = {
        "alerts": alerts,
        "flagged": res[FLAGGED_TAG],
        "dead_letter": dead,
        "late": res[LATE_TAG],
    }
    if emit_scored:
        out["scored"] = res[SCORED_TAG]
    if emit_events:
        out["events"] = keyed | "ShardEvents" >> beam.FlatMap(shard_events).with_output_types(Event)
    return out


def shard_events(element: tuple[int, bytes]) -> list[Event]:
    """The parsed events of one ``(shard, events bytes)`` element of ``ParseChunks``.

    >>> ev = Event("k", 1.5, (2.0,))
    >>> shard_events((0, _encode_events([ev], None, ()))) == [ev]
    True
    """
    return _decode_events(element[1])[2]
