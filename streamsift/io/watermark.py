"""Pure logic of a broker source: the partition watermark and the commit ledger.

No Beam, no clients, no clocks: wall-clock times are passed in.

Watermark: the minimum over *active* partitions of (newest event time seen in the
partition - ``lag_s``). A partition that has had no record for ``idle_s`` wall
seconds is idle and does not hold the watermark back. When every partition is
idle, event time advances with the wall clock since the last record (as it
would live), so timers and idle-key expiry still fire. The watermark never
goes back.

Commit ledger: a record may be committed (Kafka offset) or acknowledged
(Pub/Sub) only when everything it can cause has been emitted: once the
pipeline's watermark has passed its ``safe_after`` event time. Kafka offsets
are committed per partition up to the first record that is not yet safe.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WatermarkState",
    "PartitionWatermark",
    "LedgerState",
    "CommitLedger",
]

NEG_INF = -math.inf


@dataclass
class WatermarkState:
    """Per-partition newest event time and last wall time a record arrived."""

    newest: dict[str, float] = field(default_factory=dict)
    last_wall: dict[str, float] = field(default_factory=dict)
    #: newest event time over all partitions, and the wall time of the last record
    newest_any: float = NEG_INF
    last_wall_any: float = NEG_INF
    watermark: float = NEG_INF


class PartitionWatermark:
    """Watermark from partitions' event times that does not stall on an idle partition.

    >>> wm = PartitionWatermark(lag_s=0.0, idle_s=10.0)
    >>> s = wm.new_state()
    >>> wm.learn_one(s, "p0", 100.0, now=0.0); wm.learn_one(s, "p1", 50.0, now=0.0)
    >>> wm.current(s, now=1.0)      # the slower partition holds it
    50.0
    >>> wm.learn_one(s, "p0", 130.0, now=11.0)
    >>> wm.current(s, now=11.0)     # p1 idle for 11 s: no longer holds it
    130.0
    >>> wm.current(s, now=30.0)     # all idle: event time follows the wall clock
    149.0
    >>> s = wm.new_state(); wm.declare(s, "p0", now=0.0); wm.declare(s, "p1", now=0.0)
    >>> wm.learn_one(s, "p0", 100.0, now=1.0)
    >>> wm.current(s, now=10.5, busy={"p1"})  # p1 has a backlog: it still holds
    -inf
    >>> wm.current(s, now=2.0), wm.current(s, now=10.5)  # p1 not read yet, then idle
    (-inf, 100.0)
    """

    def __init__(self, lag_s: float = 0.0, idle_s: float = 10.0) -> None:
        if not lag_s >= 0:
            raise ValueError(f"lag_s must be >= 0; got {lag_s}")
        if not idle_s > 0:
            raise ValueError(f"idle_s must be > 0; got {idle_s}")
        self.lag_s = lag_s
        self.idle_s = idle_s

    def new_state(self) -> WatermarkState:
        return WatermarkState()

    def declare(self, state: WatermarkState, partition: str, now: float) -> None:
        """A partition exists but has no record yet: it holds the watermark at -inf until
        it has a record or has been idle for ``idle_s`` (from ``now``)."""
        state.newest.setdefault(partition, NEG_INF)
        state.last_wall.setdefault(partition, now)

    def learn_one(
        self, state: WatermarkState, partition: str, event_time: float | None, now: float
    ) -> None:
        """Record one record of ``partition`` (event time None = unknown) at wall time ``now``."""
        state.last_wall[partition] = now
        state.last_wall_any = max(state.last_wall_any, now)
        if event_time is None:
            state.newest.setdefault(partition, NEG_INF)
            return
        if event_time > state.newest.get(partition, NEG_INF):
            state.newest[partition] = event_time
        state.newest_any = max(state.newest_any, event_time)

    def current(self, state: WatermarkState, now: float, busy: Collection[str] = ()) -> float:
        """The watermark at wall time ``now`` (monotone; -inf before any event time).

        ``busy``: partitions known to have records waiting to be read; they are never
        idle (a source that polls rarely because the pipeline is busy must not
        mistake a backlog for silence)."""
        active = [
            t
            for p, t in state.newest.items()
            if p in busy or now - state.last_wall[p] < self.idle_s
        ]
        if active and min(active) == NEG_INF:
            wm = NEG_INF  # an active partition without an event time yet
        elif active:
            wm = min(active) - self.lag_s
        elif state.newest_any > NEG_INF:
            wm = state.newest_any - self.lag_s + max(0.0, now - state.last_wall_any)
        else:
            wm = NEG_INF
        if wm > state.watermark:
            state.watermark = wm
        return state.watermark


@dataclass
class LedgerState:
    """Records read but not yet committed, per partition in read order.

    Each entry is ``[first, final, key, token]``: ``first`` = event time + allowed
    lateness; ``final`` is fixed at the first step where the results are past
    ``first`` (None until then).
    """

    pending: dict[str, deque] = field(default_factory=dict)
    #: newest event time seen per key
    key_max: dict[str, float] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(q) for q in self.pending.values())


class CommitLedger:
    """Which records may be committed, given how far the pipeline's results are.

    The per-key stage releases a buffered event when a watermark timer fires at or
    after ``ts + lateness``; a firing before that re-arms the key's timer at (the
    key's newest event time + ``lateness``). So once the results are past
    ``ts + lateness`` (``done_until``), the event is released by the time they are
    past ``max(ts, newest event time of its key now) + lateness``; after that and a
    ``margin`` (later event-time windows), everything it causes has been emitted.
    Records are committed per partition in read order (a Kafka offset commit
    covers every earlier offset). The micro-batched engine keeps the same per-key
    release rule but fires one timer per shard, at the earliest key timer rounded up
    to ``engine.release_quantum_s``: a release comes at most that much later, so its
    caller adds the quantum to ``margin_s`` (``ReadFromBroker(release_delay_s=...)``).

    >>> ledger = CommitLedger(lateness_s=10.0, margin_s=1.0)
    >>> s = ledger.new_state()
    >>> ledger.learn_one(s, "p0", "a", 100.0, "k1")
    >>> ledger.learn_one(s, "p0", "b", 95.0, "k2")
    >>> ledger.learn_one(s, "p1", "x", None, None)  # no key / time: done when seen
    >>> ledger.learn_one(s, "p0", "c", 130.0, "k1")  # k1's newest is now 130
    >>> ledger.ready(s, done_until=50.0)
    ['x']
    >>> ledger.ready(s, done_until=115.0)  # past a's 110: a waits for 130 + 10 + 1
    []
    >>> ledger.ready(s, done_until=141.5)
    ['a', 'b', 'c']
    """

    def __init__(self, lateness_s: float = 0.0, margin_s: float = 1.0) -> None:
        if not lateness_s >= 0:
            raise ValueError(f"lateness_s must be >= 0; got {lateness_s}")
        if not margin_s >= 0:
            raise ValueError(f"margin_s must be >= 0; got {margin_s}")
        self.lateness_s = lateness_s
        self.margin_s = margin_s

    def new_state(self) -> LedgerState:
        return LedgerState()

    def learn_one(
        self,
        state: LedgerState,
        partition: str,
        token: Any,
        event_time: float | None,
        key: str | None,
    ) -> None:
        """A record emitted into the pipeline (event time / key None when unknown)."""
        if event_time is None or key is None:
            entry = [NEG_INF, NEG_INF, None, token]
        else:
            if event_time > state.key_max.get(key, NEG_INF):
                state.key_max[key] = event_time
            entry = [event_time + self.lateness_s, None, key, token]
        state.pending.setdefault(partition, deque()).append(entry)

    def ready(self, state: LedgerState, done_until: float) -> list[Any]:
        """Pop, per partition, the longest prefix of records whose results are all out."""
        out: list[Any] = []
        for q in state.pending.values():
            for entry in q:
                if entry[1] is None and entry[0] < done_until:
                    newest = state.key_max.get(entry[2], NEG_INF)
                    entry[1] = max(entry[0], newest + self.lateness_s) + self.margin_s
            while q and q[0][1] is not None and q[0][1] < done_until:
                out.append(q.popleft()[3])
        return out
