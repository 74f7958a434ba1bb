"""Micro-batched engine logic: chunk parsing, sharded per-key state, batch scoring.

Pure Python and numpy, no Beam (the Beam glue is
:mod:`streamsift.transforms.batched`). One :class:`ShardLogic` drives every key
of one shard; all of the shard's data lives in a :class:`ShardState` that the
caller keeps (in the pipeline: a process-level cache backed by a per-shard log
in Beam state, see :mod:`streamsift.transforms.batched`) and that round-trips
through :meth:`ShardState.to_plain` / :meth:`ShardState.from_plain` (plain
tuples, bytes and floats; per-key detector and alert states stay in their own
explicit binary layouts). The logic marks every key it changes
(``ShardState.dirty`` / ``dirty_alerts``), so that :meth:`ShardState.take_changes`
can hand the caller only what a step changed (replayed by :func:`apply_changes`).

The per-key semantics are those of the per-element path
(:mod:`streamsift.transforms.keyed` and :mod:`streamsift.transforms.alerts`),
emulated step for step so both engines give the same alerts and counters:

* each key has a release timer and an expiry timer (event time, microsecond
  resolution, as Beam's); :meth:`ShardLogic.advance` fires every timer at or
  below a watermark in rounds, the way Beam's DirectRunner does: all timers due
  at the start of a round fire in timestamp order, timers set meanwhile are
  committed at the end of the round and fire in the next one;
* a release processes the key's buffered events that are due at the timer's
  own timestamp, in event-time order (ties by values and label), through
  :class:`~streamsift.models.keylogic.KeyLogic`; events still pending re-arm the
  timer at their newest time plus the allowed lateness;
* an event older than its key's newest event by more than the allowed lateness,
  or older than what the key has already released, is late;
* an expiry clears the key's detector state and, at the same point of the
  key's sequence, its alert state.

Escalated events are collected as :class:`Pending` actions; the caller scores
all of them with one model call (:class:`ForestScorer`) and hands the scores to
:meth:`ShardLogic.finish`, which runs :class:`~streamsift.models.alerting.AlertLogic`
per key in sequence.

>>> from streamsift.config import Config
>>> cfg = Config()
>>> logic = ShardLogic.from_config(cfg)
>>> st = ShardState()
>>> ev = Event("k", 100.0, (1.0, 2.0, 3.0, 4.0))
>>> logic.accept(st, [ev], counts := {}), counts
([], {'keys_created': 1})
>>> st.next_timer_us()
130000000
>>> actions = logic.advance(st, 130_000_000, counts)
>>> counts["processed"], actions
(1, [])
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from apache_beam.utils.timestamp import MAX_TIMESTAMP

from streamsift.config import Config, EventTimeConfig, InputConfig
from streamsift.models.alerting import AlertLogic, AlertState
from streamsift.models.keylogic import KeyLogic, KeyState
from streamsift.parsing import EventParser, parse_time
from streamsift.records import DeadLetter, Event, LateEvent, Scored

__all__ = [
    "ChunkParser",
    "ForestScorer",
    "KeySlot",
    "Pending",
    "ShardLogic",
    "ShardState",
    "apply_changes",
    "shard_of",
]

log = logging.getLogger(__name__)

_INF = float("inf")
#: latest event time Beam can hold a timer for (seconds), as in transforms/keyed.py
_MAX_TIMER_S = MAX_TIMESTAMP.micros / 1e6 - 1.0
_STATE_VERSION = 1
#: :class:`ForestScorer` walks the trees itself up to this many rows per call
_FAST_ROWS = 512
_MAX_KEY_LEN = 256


def _micros(seconds: float) -> int:
    return int(round(seconds * 1e6))


def _sort_key(e: Event) -> tuple:
    return (e.ts, e.values, e.label)


def shard_of(key: str, n_shards: int) -> int:
    """Stable shard of a key (FNV-1a over its UTF-8 bytes; the same in every process,
    unlike ``hash``).

    >>> shard_of("host-001", 4), shard_of("host-001", 4) == shard_of("host-001", 4)
    (1, True)
    >>> shard_of("x", 0)
    Traceback (most recent call last):
    ...
    ValueError: n_shards must be an integer >= 1; got 0
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be an integer >= 1; got {n_shards!r}")
    h = 0xCBF29CE484222325
    for b in key.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % n_shards


# ----------------------------------------------------------------------------- parsing


class ChunkParser:
    """Parses a chunk of payloads into events and dead letters.

    The common case (UTF-8 JSON object, string key, numeric event time, numeric
    features) is validated inline; anything else goes through
    :class:`~streamsift.parsing.EventParser`, so every result is exactly what
    ``EventParser.parse`` returns for that payload.

    >>> p = ChunkParser(InputConfig(feature_fields=("cpu",)))
    >>> events, dead = p.parse_many([b'{"key": "h1", "ts": 1767225600, "cpu": 1}', b"junk"])
    >>> events, [d.error_kind for d in dead]
    ([Event(key='h1', ts=1767225600.0, values=(1.0,), label='', ingest=0.0)], ['malformed_json'])
    """

    def __init__(self, cfg: InputConfig) -> None:
        self.cfg = cfg
        self._parser = EventParser(cfg)
        self._fields = tuple(cfg.feature_fields)
        self._numeric_time = cfg.time_format != "iso8601"

    def parse_many(
        self, payloads: Sequence[bytes], ingest: float = 0.0
    ) -> tuple[list[Event], list[DeadLetter]]:
        """``(events, dead_letters)`` of ``payloads``, each list in input order."""
        cfg = self.cfg
        kf, tf, lf, fmt = cfg.key_field, cfg.time_field, cfg.label_field, cfg.time_format
        max_bytes = cfg.max_payload_bytes
        fields = self._fields
        numeric_time = self._numeric_time
        # orjson first (five times faster); what it refuses goes to the
        # standard-library parser of the slow path (see parsing.json_loads)
        loads = orjson.loads
        slow = self._parser.parse
        events: list[Event] = []
        dead: list[DeadLetter] = []
        for raw in payloads:
            ev = None
            if type(raw) is bytes and len(raw) <= max_bytes:
                try:
                    obj = loads(raw)
                except ValueError:  # orjson.JSONDecodeError, bad UTF-8 included
                    obj = None
                if type(obj) is dict:
                    ev = self._fast(obj, kf, tf, lf, fmt, fields, numeric_time, ingest)
            if ev is None:
                res = slow(raw, ingest)
                if isinstance(res, Event):
                    events.append(res)
                else:
                    dead.append(res)
            else:
                events.append(ev)
        return events, dead

    @staticmethod
    def _fast(obj, kf, tf, lf, fmt, fields, numeric_time, ingest) -> Event | None:
        key = obj.get(kf)
        if type(key) is not str or not 0 < len(key) <= _MAX_KEY_LEN:
            return None
        t = obj.get(tf)
        tt = type(t)
        if tt is not str and (not numeric_time or (tt is not int and tt is not float)):
            return None
        try:
            ts = parse_time(t, fmt)
        except ValueError:
            return None
        values = []
        for name in fields:
            v = obj.get(name)
            if type(v) is float:
                if v - v != 0.0:  # inf / nan
                    return None
            elif type(v) is int:
                try:
                    v = float(v)
                except OverflowError:
                    return None
                if v - v != 0.0:
                    return None
            else:
                return None
            values.append(v)
        label = ""
        if lf:
            lab = obj.get(lf)
            label = lab if isinstance(lab, str) else ""
        return Event(key, ts, tuple(values), label, ingest)


# ----------------------------------------------------------------------------- scoring


class ForestScorer:
    """Raw isolation-forest scores of a whole batch, without per-tree joblib calls.

    Bit-identical to ``LoadedModel.score`` (PyOD ``IForest.decision_function`` /
    scikit-learn ``-score_samples``): the rows are converted to float32 as
    scikit-learn does, every tree is walked for every row at once in numpy, the
    per-tree path lengths are summed in tree order, then scikit-learn's own
    normalisation is applied. The fast path is checked against the model's own
    method on probe rows when built; if it does not match bit for bit (another
    scikit-learn version, another estimator) the model's own method is used.

    >>> import numpy as np
    >>> from streamsift.config import ModelConfig
    >>> from streamsift.models.artifact import train_model
    >>> X = np.random.default_rng(0).normal(size=(300, 3))
    >>> m = train_model(X, ["a", "b", "c"], ModelConfig(n_estimators=20), (0.0, 1.0), [60.0])
    >>> s = ForestScorer(m.estimator, m.detector)
    >>> s.fast, bool(np.array_equal(s.score(X), m.score(X)))
    (True, True)
    """

    def __init__(self, estimator: Any, detector: str) -> None:
        self.estimator = estimator
        self.detector = detector
        self.fast = False
        try:
            self._build()
            self.fast = self._verify()
        except Exception as exc:  # any surprise: the model's own method
            log.info("fast forest scoring unavailable (%s: %s)", type(exc).__name__, exc)
            self.fast = False
        if not self.fast:
            log.info("fast forest scoring off for %s; using the model's own method", detector)

    def _slow(self, X: np.ndarray) -> np.ndarray:
        if self.detector == "pyod_iforest":
            return np.asarray(self.estimator.decision_function(X), dtype=np.float64)
        return -np.asarray(self.estimator.score_samples(X), dtype=np.float64)

    def _build(self) -> None:
        from sklearn.ensemble._iforest import _average_path_length

        sk = self.estimator.detector_ if self.detector == "pyod_iforest" else self.estimator
        trees = sk.estimators_
        n_features = int(sk.n_features_in_)
        subsample = sk._max_features != n_features
        lefts, rights, feats, thrs, vals, roots = [], [], [], [], [], []
        offset = 0
        depth = 0
        for i, (tree, features) in enumerate(zip(trees, sk.estimators_features_, strict=True)):
            t = tree.tree_
            left = t.children_left.astype(np.int64)
            right = t.children_right.astype(np.int64)
            leaf = left == -1
            feat = t.feature.astype(np.int64).copy()
            if subsample:
                feat[~leaf] = np.asarray(features, dtype=np.int64)[feat[~leaf]]
            feat[leaf] = 0
            idx = np.arange(t.node_count, dtype=np.int64) + offset
            lefts.append(np.where(leaf, idx, left + offset))
            rights.append(np.where(leaf, idx, right + offset))
            feats.append(feat)
            thrs.append(t.threshold.astype(np.float64))
            # the per-leaf term of _parallel_compute_tree_depths, same operations
            vals.append(sk._decision_path_lengths[i] + sk._average_path_length_per_tree[i] - 1.0)
            roots.append(offset)
            offset += t.node_count
            depth = max(depth, int(t.max_depth))
        self._left = np.concatenate(lefts)
        self._right = np.concatenate(rights)
        self._feat = np.concatenate(feats)
        self._thr = np.concatenate(thrs)
        self._val = np.concatenate(vals).astype(np.float64)
        self._roots = np.asarray(roots, dtype=np.int64)
        self._depth = depth
        self._n_features = n_features
        self._denominator = len(trees) * _average_path_length([sk._max_samples])
        self._offset = float(sk.offset_)
        self._sk = sk

    def _fast_scores(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        X32 = np.asarray(X, dtype=np.float32)
        rows = np.arange(n, dtype=np.int64)[None, :]
        nodes = np.repeat(self._roots[:, None], n, axis=1)
        left, right, feat, thr = self._left, self._right, self._feat, self._thr
        for _ in range(self._depth):
            go_left = X32[rows, feat[nodes]] <= thr[nodes]
            nodes = np.where(go_left, left[nodes], right[nodes])
        depths = np.cumsum(self._val[nodes], axis=0)[-1]
        denominator = self._denominator
        scores = 2 ** (
            -np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0)
        )
        # sklearn: score_samples = -scores, decision_function = score_samples - offset_
        if self.detector == "pyod_iforest":
            return ((-scores) - self._offset) * -1
        return scores  # -score_samples = -(-scores)

    def _verify(self) -> bool:
        rng = np.random.default_rng(12345)
        n = self._n_features
        probe = np.vstack(
            [
                np.zeros((1, n)),
                rng.normal(0.0, 1.0, size=(64, n)),
                rng.normal(0.0, 10.0, size=(64, n)),
                rng.standard_cauchy(size=(64, n)).clip(-50.0, 50.0),
            ]
        )
        return bool(np.array_equal(self._fast_scores(probe), self._slow(probe)))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (higher = more anomalous), one per row of the 2-D float64 ``X``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array; got shape {X.shape}")
        if not self.fast or not np.all(np.isfinite(X)) or np.abs(X).max() > 1e30:
            return self._slow(X)
        if X.shape[0] > _FAST_ROWS:
            # large batches amortise scikit-learn's per-tree calls: no gain here
            return self._slow(X)
        return self._fast_scores(X)


_SCORERS: dict[int, tuple[Any, ForestScorer]] = {}


def scorer_for(model: Any) -> ForestScorer:
    """The :class:`ForestScorer` of a ``LoadedModel`` (built once per model object).

    >>> scorer_for.__name__
    'scorer_for'
    """
    hit = _SCORERS.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    scorer = ForestScorer(model.model, model.metadata["detector"])
    if len(_SCORERS) > 8:
        _SCORERS.clear()
    _SCORERS[id(model)] = (model, scorer)
    return scorer


def calibrated_scores(model: Any, X: np.ndarray) -> np.ndarray:
    """``model.calibrated(X)`` (a ``LoadedModel``), computed with its :class:`ForestScorer`.

    Rows must be finite (the pipeline's features always are).
    """
    arr = np.asarray(X, dtype=np.float64)
    n = len(model.metadata["feature_names"])
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"X must be a 2-D array with {n} feature columns; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        return model.calibrated(arr)  # raises the model's own error
    raw = scorer_for(model).score(arr)
    return np.asarray(model.calibrator.calibrate_many(raw), dtype=np.float64)


# ----------------------------------------------------------------------------- state


class _Meta:
    """Per-key bookkeeping, the fields of ``transforms.keyed.Meta``."""

    __slots__ = ("released_until", "timer_at", "last_ts", "expire_at", "max_seen", "next_seq")

    def __init__(
        self,
        released_until: float = -_INF,
        timer_at: float = _INF,
        last_ts: float = -_INF,
        expire_at: float = -_INF,
        max_seen: float = -_INF,
        next_seq: int = 0,
    ) -> None:
        self.released_until = released_until
        self.timer_at = timer_at
        self.last_ts = last_ts
        self.expire_at = expire_at
        self.max_seen = max_seen
        self.next_seq = next_seq

    def plain(self) -> tuple:
        return (
            self.released_until,
            self.timer_at,
            self.last_ts,
            self.expire_at,
            self.max_seen,
            self.next_seq,
        )


@dataclass
class KeySlot:
    """One key of a shard: bookkeeping, its two timers (event-time microseconds,
    None = not set), the detector state (encoded bytes and/or decoded) and the
    events buffered until their release.

    >>> KeySlot().release_us, KeySlot().buffer
    (None, [])
    """

    meta: _Meta = field(default_factory=_Meta)
    release_us: int | None = None
    expire_us: int | None = None
    logic_raw: bytes | None = None
    logic: KeyState | None = None
    buffer: list[Event] = field(default_factory=list)
    #: how many of ``buffer``'s first events the shard's log already holds (the
    #: buffer has only grown since it was logged), -1 = not logged as it is:
    #: :meth:`ShardState.take_changes` then writes only the events after them
    logged: int = field(default=-1, repr=False, compare=False)


@dataclass
class ShardState:
    """Everything one shard keeps: its keys' slots and their alert states.

    Alert states are kept apart from the detector slots because a key can
    expire and come back within one batch: the alert side forgets it at the
    same point of the key's sequence, after scoring.

    >>> st = ShardState()
    >>> ShardState.from_plain(st.to_plain()).keys
    {}
    """

    keys: dict[str, KeySlot] = field(default_factory=dict)
    alerts: dict[str, bytes | AlertState] = field(default_factory=dict)
    #: keys whose slot (detector side) / alert state changed since the last
    #: :meth:`take_changes` (a key in ``dirty`` but not in ``keys`` was removed)
    dirty: set[str] = field(default_factory=set, repr=False, compare=False)
    dirty_alerts: set[str] = field(default_factory=set, repr=False, compare=False)
    #: min-heap of ``(time_us, kind, key)`` (kind 0 = release, 1 = expiry) over
    #: the slots' timers, so that finding the due ones costs O(due timers), not
    #: O(keys). Lazily cleaned: an entry counts only while its key's slot still
    #: holds that very timer. ``None`` = not built yet: built from the slots on
    #: first use, then kept up to date by :class:`ShardLogic` (which sets every
    #: timer through :meth:`set_timer`); code that sets slot timers or adds
    #: slots with timers by hand afterwards calls :meth:`rebuild_timers`.
    timer_heap: list[tuple[int, int, str]] | None = field(default=None, repr=False, compare=False)

    def timers(self) -> list[tuple[int, int, str]]:
        """The timer heap (built from the slots if needed)."""
        h = self.timer_heap
        if h is None or len(h) > 4 * len(self.keys) + 64:
            h = self.rebuild_timers()
        return h

    def rebuild_timers(self) -> list[tuple[int, int, str]]:
        """Rebuild the timer heap from the slots (drops stale entries).

        >>> st = ShardState()
        >>> st.keys["k"] = KeySlot(release_us=5, expire_us=9)
        >>> st.rebuild_timers()
        [(5, 0, 'k'), (9, 1, 'k')]
        """
        h = []
        for key, slot in self.keys.items():
            if slot.release_us is not None:
                h.append((slot.release_us, 0, key))
            if slot.expire_us is not None:
                h.append((slot.expire_us, 1, key))
        heapq.heapify(h)
        self.timer_heap = h
        return h

    def set_timer(self, key: str, slot: KeySlot, kind: int, us: int | None) -> None:
        """Set the release (``kind`` 0) or expiry (1) timer of ``key``'s ``slot``
        to ``us`` (None: clear it), keeping the timer heap up to date.

        >>> st = ShardState(); st.keys["k"] = slot = KeySlot()
        >>> st.next_timer_us()
        >>> st.set_timer("k", slot, 1, 70); st.set_timer("k", slot, 0, 90)
        >>> st.next_timer_us(), slot.expire_us
        (70, 70)
        >>> st.set_timer("k", slot, 1, None); st.next_timer_us()
        90
        """
        if kind == 0:
            slot.release_us = us
        else:
            slot.expire_us = us
        h = self.timer_heap
        if h is not None and us is not None:
            heapq.heappush(h, (us, kind, key))

    def _holds(self, us: int, kind: int, key: str) -> bool:
        slot = self.keys.get(key)
        if slot is None:
            return False
        return (slot.release_us if kind == 0 else slot.expire_us) == us

    def pop_due(self, watermark_us: int) -> list[tuple[int, int, str]]:
        """Every timer at or below ``watermark_us``, sorted by ``(time, kind, key)``,
        taken off the heap (the slots keep them: the caller clears what it fires).

        >>> st = ShardState()
        >>> st.keys["b"] = KeySlot(release_us=5, expire_us=9); st.keys["a"] = KeySlot(expire_us=5)
        >>> st.pop_due(8), st.pop_due(8), st.next_timer_us()
        ([(5, 0, 'b'), (5, 1, 'a')], [], 9)
        """
        h = self.timers()
        due = set()
        pop = heapq.heappop
        holds = self._holds
        while h and h[0][0] <= watermark_us:
            entry = pop(h)
            if holds(*entry):
                due.add(entry)
        return sorted(due)

    def next_timer_us(self) -> int | None:
        """Earliest timer of any key (microseconds), None if none is set."""
        h = self.timers()
        holds = self._holds
        while h:
            if holds(*h[0]):
                return h[0][0]
            heapq.heappop(h)
        return None

    @staticmethod
    def _slot_plain(key: str, s: KeySlot, start: int = 0) -> tuple:
        """The slot's plain form, with its buffered events from ``start`` on."""
        if s.logic is not None:
            raise ValueError(f"key {key!r} holds a decoded state; call ShardLogic.pack first")
        buf = s.buffer[start:] if start else s.buffer
        return (
            s.meta.plain(),
            s.release_us,
            s.expire_us,
            s.logic_raw,
            [(e.key, e.ts, tuple(e.values), e.label, e.ingest) for e in buf],
        )

    @staticmethod
    def _alert_plain(key: str, a: bytes | AlertState | None) -> bytes | None:
        if a is not None and not isinstance(a, bytes):
            raise ValueError(f"alert state of {key!r} is decoded; call ShardLogic.pack first")
        return a

    def to_plain(self, logged: bool = False) -> tuple:
        """Marshal-friendly form (call :meth:`ShardLogic.pack` first so that no
        decoded state is left); ``logged``: it goes to the shard's log as a
        snapshot (later :meth:`take_changes` append to the buffers it holds)."""
        keys = {key: self._slot_plain(key, s) for key, s in self.keys.items()}
        alerts = {key: self._alert_plain(key, a) for key, a in self.alerts.items()}
        if logged:
            for slot in self.keys.values():
                slot.logged = len(slot.buffer)
        return (_STATE_VERSION, keys, alerts)

    def take_changes(self) -> tuple:
        """The plain form of what changed since the last call (slots and alert
        states of the dirty keys, None for removed ones), then forget the marks.
        A slot whose buffer has only grown since it was logged goes as an append
        record, ``("+", meta, release, expiry, detector state, new events)``: the
        buffered events are written once, not again with every change of their
        key (with event-time ordering a key holds up to two allowed latenesses of
        events). :func:`apply_changes` replays it onto a plain state (call
        :meth:`ShardLogic.pack` first).

        >>> st = ShardState()
        >>> st.alerts["k"] = b"x"; st.dirty_alerts.add("k"); st.dirty.add("gone")
        >>> st.take_changes(), st.dirty, st.dirty_alerts
        ((1, {'gone': None}, {'k': b'x'}), set(), set())
        >>> st.keys["a"] = KeySlot(buffer=[Event("a", 1.0, (2.0,))]); st.dirty.add("a")
        >>> plain = apply_changes(ShardState().to_plain(), st.take_changes())
        >>> st.keys["a"].buffer.append(Event("a", 3.0, (4.0,))); st.dirty.add("a")
        >>> changes = st.take_changes()
        >>> changes[1]["a"][0], changes[1]["a"][-1]
        ('+', [('a', 3.0, (4.0,), '', 0.0)])
        >>> ShardState.from_plain(apply_changes(plain, changes)).keys["a"].buffer == st.keys["a"].buffer
        True
        """
        keys = {}
        for key in self.dirty:
            s = self.keys.get(key)
            if s is None:
                keys[key] = None
                continue
            done = s.logged
            if 0 <= done <= len(s.buffer):
                keys[key] = ("+", *self._slot_plain(key, s, done))
            else:
                keys[key] = self._slot_plain(key, s)
            s.logged = len(s.buffer)
        alerts = {key: self._alert_plain(key, self.alerts.get(key)) for key in self.dirty_alerts}
        self.dirty.clear()
        self.dirty_alerts.clear()
        return (_STATE_VERSION, keys, alerts)

    @classmethod
    def from_plain(cls, plain: tuple) -> ShardState:
        version, keys, alerts = plain
        if version != _STATE_VERSION:
            raise ValueError(f"shard state version must be {_STATE_VERSION}; got {version}")
        out = cls()
        for key, (meta, rel, exp, raw, buf) in keys.items():
            out.keys[key] = KeySlot(
                _Meta(*meta),
                rel,
                exp,
                raw,
                None,
                [Event(b[0], b[1], b[2], b[3], b[4]) for b in buf],
                len(buf),
            )
        out.alerts = dict(alerts)
        return out


def apply_changes(plain: tuple, changes: tuple) -> tuple:
    """Replay :meth:`ShardState.take_changes` output onto a :meth:`ShardState.to_plain`
    form (in place; returns it). Removed keys (None) are dropped.

    >>> apply_changes((1, {"a": 1, "b": 2}, {}), (1, {"a": None, "c": 3}, {"a": b"x"}))
    (1, {'b': 2, 'c': 3}, {'a': b'x'})
    """
    version, keys, alerts = plain
    c_version, c_keys, c_alerts = changes
    if version != _STATE_VERSION or c_version != _STATE_VERSION:
        raise ValueError(
            f"shard state version must be {_STATE_VERSION}; got {version} and {c_version}"
        )
    for target, updates in ((keys, c_keys), (alerts, c_alerts)):
        for key, value in updates.items():
            if value is None:
                target.pop(key, None)
            elif target is keys and type(value) is tuple and len(value) == 6 and value[0] == "+":
                # an append record: the slot's new fields, its buffer extended
                old = keys.get(key)
                if old is None:
                    raise ValueError(f"shard log appends to key {key!r}, which it does not hold")
                buf = old[4]
                buf.extend(value[5])
                keys[key] = (value[1], value[2], value[3], value[4], buf)
            else:
                target[key] = value
    return plain


def log_weight(plain: tuple) -> int:
    """Size of a :meth:`ShardState.to_plain` / :meth:`ShardState.take_changes`
    form in the shard log's terms: key and alert records plus buffered events.

    >>> log_weight((1, {"a": ({}, None, None, b"", [("a", 1.0, (2.0,), "", 0.0)])}, {}))
    2
    """
    _version, keys, alerts = plain
    events = 0
    for value in keys.values():
        if value is not None:
            events += len(value[-1])
    return len(keys) + len(alerts) + events


@dataclass(frozen=True)
class Pending:
    """An escalated event waiting for its stage-2 score, or (``scored`` None) the
    point where the key expired."""

    key: str
    scored: Scored | None
    had_sequence: bool = False


# ----------------------------------------------------------------------------- logic


class ShardLogic:
    """The per-key logic of one shard (see the module docstring); state is passed in.

    ``counts`` arguments are dicts of counter name -> increment, filled in place
    with the per-element path's counter names.
    """

    def __init__(
        self,
        key_logic: KeyLogic,
        alert_logic: AlertLogic,
        event_time: EventTimeConfig,
    ) -> None:
        self.key_logic = key_logic
        self.alert_logic = alert_logic
        self._lateness = float(event_time.allowed_lateness_s)
        self._ttl = float(event_time.idle_ttl_s)
        self.ordered = event_time.ordering == "event_time"

    @classmethod
    def from_config(cls, cfg: Config) -> ShardLogic:
        # the same arguments as the per-element path (transforms/keyed.py, pipeline/build.py)
        key_logic = KeyLogic(cfg.input.feature_fields, cfg.features, cfg.prefilter, cfg.detector)
        alert_logic = AlertLogic(cfg.thresholds, cfg.alerts, key_logic.feature_names)
        return cls(key_logic, alert_logic, cfg.event_time)

    # -- helpers ---------------------------------------------------------------
    def _state(self, slot: KeySlot) -> KeyState:
        if slot.logic is None:
            slot.logic = (
                self.key_logic.decode_state(slot.logic_raw)
                if slot.logic_raw is not None
                else self.key_logic.new_state()
            )
        return slot.logic

    def _late(self, event: Event, processed_until: float, counts: dict) -> LateEvent:
        counts["late"] = counts.get("late", 0) + 1
        return LateEvent(
            event,
            processed_until,
            f"event time {event.ts:.3f} is behind its key's event time "
            f"{processed_until:.3f} by more than allowed_lateness_s={self._lateness:g}",
        )

    def _arm_expiry(
        self, st: ShardState, key: str, meta: _Meta, slot: KeySlot, timers: dict | None
    ) -> None:
        target = min(meta.last_ts + self._ttl, _MAX_TIMER_S)
        if meta.expire_at < meta.last_ts + self._ttl / 2.0:
            meta.expire_at = target
            if timers is None:
                st.set_timer(key, slot, 1, _micros(target))
            else:
                timers[(id(slot), 1)] = (key, slot, _micros(target))

    def _step(self, key: str, state: KeyState, event: Event, meta: _Meta, counts, out) -> None:
        res = self.key_logic.step(state, event.ts, event.values)
        counts["processed"] = counts.get("processed", 0) + 1
        if res.escalated:
            counts["escalated"] = counts.get("escalated", 0) + 1
            seq = meta.next_seq
            meta.next_seq += 1
            out.append(
                Pending(key, Scored(event, res.features, res.stage1, res.reasons, True, seq=seq))
            )

    # -- arrivals --------------------------------------------------------------
    def accept(
        self, st: ShardState, events: Sequence[Event], counts: dict, out: list | None = None
    ) -> list[LateEvent]:
        """Take ``events`` in arrival order; return the late ones. Event-time
        ordering buffers the rest; arrival ordering processes them at once and
        appends their :class:`Pending` actions to ``out``."""
        late: list[LateEvent] = []
        lateness = self._lateness
        keys = st.keys
        dirty = st.dirty
        for e in events:
            key = e.key
            slot = keys.get(key)
            new = slot is None
            if new:
                counts["keys_created"] = counts.get("keys_created", 0) + 1
                meta = _Meta()
            else:
                meta = slot.meta
            ts = e.ts
            if self.ordered:
                if ts < meta.max_seen - lateness or ts < meta.released_until:
                    late.append(self._late(e, max(meta.released_until, meta.max_seen), counts))
                    continue
                if new:
                    slot = keys[key] = KeySlot(meta)
                dirty.add(key)
                slot.buffer.append(e)
                if ts > meta.max_seen:
                    meta.max_seen = ts
                if meta.timer_at == _INF:
                    meta.timer_at = min(ts + lateness, _MAX_TIMER_S)
                    st.set_timer(key, slot, 0, _micros(meta.timer_at))
                continue
            if ts < meta.last_ts - lateness:
                late.append(self._late(e, meta.last_ts, counts))
                continue
            if new:
                slot = keys[key] = KeySlot(meta)
            dirty.add(key)
            if out is None:
                raise ValueError("out must be a list in arrival ordering; got None")
            self._step(key, self._state(slot), e, meta, counts, out)
            meta.last_ts = max(meta.last_ts, ts)
            meta.released_until = meta.last_ts - lateness
            self._arm_expiry(st, key, meta, slot, None)
        return late

    # -- timers ----------------------------------------------------------------
    def advance(self, st: ShardState, watermark_us: int, counts: dict) -> list[Pending]:
        """Fire every timer at or below ``watermark_us`` (event-time microseconds),
        in rounds; return the escalated events and expiry points, per key in order."""
        out: list[Pending] = []
        keys = st.keys
        while True:
            # the timers due at the start of the round, in (time, kind, key) order
            due = st.pop_due(watermark_us)
            if not due:
                return out
            timers: dict = {}
            for fire_us, kind, key in due:
                st.dirty.add(key)
                slot = keys.get(key)
                if kind == 0:
                    if slot is not None:
                        slot.release_us = None
                    self._on_release(st, key, fire_us, timers, counts, out)
                else:
                    if slot is not None:
                        slot.expire_us = None
                    self._on_expire(st, key, fire_us, timers, counts, out)
            # timers set during the round are committed at its end
            for (_, kind), (key, slot, us) in timers.items():
                st.set_timer(key, slot, kind, us)

    def _on_release(self, st, key, fire_us, timers, counts, out) -> None:
        slot = st.keys.get(key)
        if slot is None:  # a firing for a key whose state is gone: as Beam, a fresh meta
            slot = st.keys[key] = KeySlot()
        meta = slot.meta
        lateness = self._lateness
        ready = []
        later = []
        for e in slot.buffer:
            if _micros(e.ts + lateness) <= fire_us:
                ready.append(e)
            else:
                later.append(e)
        if ready:
            slot.logged = -1  # the buffer is about to shrink: log it whole next time
            ready.sort(key=_sort_key)
            state = self._state(slot)
            step = self.key_logic.step
            escalated = 0
            for e in ready:
                res = step(state, e.ts, e.values)
                if res.escalated:
                    escalated += 1
                    seq = meta.next_seq
                    meta.next_seq += 1
                    out.append(
                        Pending(
                            key, Scored(e, res.features, res.stage1, res.reasons, True, seq=seq)
                        )
                    )
            # as _step, per event
            counts["processed"] = counts.get("processed", 0) + len(ready)
            if escalated:
                counts["escalated"] = counts.get("escalated", 0) + escalated
            meta.released_until = max(meta.released_until, ready[-1].ts)
            meta.last_ts = max(meta.last_ts, ready[-1].ts)
            slot.buffer = later
        if later:
            due = min(max(e.ts for e in later) + lateness, _MAX_TIMER_S)
            meta.timer_at = due
            timers[(id(slot), 0)] = (key, slot, _micros(due))
        else:
            meta.timer_at = _INF
        if meta.last_ts > -_INF:
            self._arm_expiry(st, key, meta, slot, timers)

    def _on_expire(self, st, key, fire_us, timers, counts, out) -> None:
        slot = st.keys.get(key)
        if slot is None:
            return
        meta = slot.meta
        fire_s = fire_us / 1e6
        if meta.timer_at < _INF:
            target = meta.timer_at + self._ttl
        elif meta.last_ts + self._ttl > fire_s + 1e-6:
            target = meta.last_ts + self._ttl
        else:
            target = None
        if target is not None:
            meta.expire_at = min(target, _MAX_TIMER_S)
            timers[(id(slot), 1)] = (key, slot, _micros(meta.expire_at))
            return
        del st.keys[key]
        # timers this round set for the key die with it (Beam's would fire on no state)
        timers.pop((id(slot), 0), None)
        timers.pop((id(slot), 1), None)
        counts["keys_expired"] = counts.get("keys_expired", 0) + 1
        out.append(Pending(key, None, had_sequence=meta.next_seq > 0))

    # -- scoring and alerts ----------------------------------------------------
    @staticmethod
    def feature_matrix(actions: Sequence[Pending]) -> tuple[list[int], np.ndarray | None]:
        """Indices of the actions that need a score and their feature rows."""
        idx = [i for i, a in enumerate(actions) if a.scored is not None]
        if not idx:
            return idx, None
        X = np.array([actions[i].scored.features for i in idx], dtype=np.float64)
        return idx, X

    def finish(
        self,
        st: ShardState,
        actions: Sequence[Pending],
        scores: Sequence[float],
        model_version: str,
        now: float,
        counts: dict,
    ) -> tuple[list[dict], list[tuple]]:
        """Attach the stage-2 ``scores`` (one per escalated action, in order) and
        run the alert logic per key; return ``(alerts, flagged)`` (alert dicts,
        ``(key, ts, score, label)`` tuples)."""
        alerts: list[dict] = []
        flagged: list[tuple] = []
        logic = self.alert_logic
        it = iter(scores)
        states = st.alerts
        decoded: dict[str, AlertState] = {}
        for a in actions:
            key = a.key
            if a.scored is None:
                if a.had_sequence:
                    counts["alert_keys_expired"] = counts.get("alert_keys_expired", 0) + 1
                    states.pop(key, None)
                    decoded.pop(key, None)
                    st.dirty_alerts.add(key)
                continue
            s = a.scored._replace(stage2=float(next(it)), model_version=model_version)
            state = decoded.get(key)
            if state is None:
                raw = states.get(key)
                if raw is None:
                    state = logic.new_state()
                elif isinstance(raw, AlertState):
                    state = raw
                else:
                    state = AlertState.decode(raw)
                decoded[key] = state
                states[key] = state
                st.dirty_alerts.add(key)
            counts["stage2_scored"] = counts.get("stage2_scored", 0) + 1
            # as AlertPerKeyFn._handle (transforms/alerts.py) decides "flagged"
            if logic.exceeds(state, s):
                counts["flagged"] = counts.get("flagged", 0) + 1
                flagged.append((key, s.event.ts, s.stage2, s.event.label))
            alert = logic.step(state, s, now)
            if alert is not None:
                if alert["update"]:
                    counts["alerts_upgraded"] = counts.get("alerts_upgraded", 0) + 1
                else:
                    counts["alerts_opened"] = counts.get("alerts_opened", 0) + 1
                    name = f"alerts_{alert['severity']}"
                    counts[name] = counts.get(name, 0) + 1
                alerts.append(alert)
        return alerts, flagged

    def pack(self, st: ShardState) -> None:
        """Encode every decoded detector and alert state back to bytes (before
        :meth:`ShardState.to_plain` / :meth:`ShardState.take_changes`); only the
        changed keys are visited: the logic decodes a state only for a key it
        marks changed."""
        enc = self.key_logic.encode_state
        # only changed keys hold decoded states (every decode marks its key)
        for key in st.dirty:
            slot = st.keys.get(key)
            if slot is not None and slot.logic is not None:
                slot.logic_raw = enc(slot.logic)
                slot.logic = None
        for key in st.dirty_alerts:
            a = st.alerts.get(key)
            if isinstance(a, AlertState):
                st.alerts[key] = a.encode()
