"""Bounded replay of payloads as an event-time stream (synthetic stream, files).

The payloads are delivered in their arrival order, in chunks, as a Beam
``TestStream``: after each chunk the watermark advances to the newest event
time seen so far (minus ``watermark_lag_s``), exactly as a streaming source
with a bounded-out-of-orderness watermark would; before a chunk it may advance
to the chunk's oldest on-time event (event time passes during idle periods). Events that arrive behind that
watermark are late in Beam's sense; the per-key stage still places them in
order while they are within the allowed lateness.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from streamsift.config import InputConfig
from streamsift.parsing import json_loads, parse_time

__all__ = ["ReplayStep", "ReplayStream", "event_time_hints", "replay_schedule"]


def event_time_hints(payloads: Sequence[bytes], cfg: InputConfig) -> list[float | None]:
    """Best-effort event time of each payload (None where it has none).

    >>> event_time_hints([b'{"ts": 1767225600}', b'junk'], InputConfig())
    [1767225600.0, None]
    """
    out: list[float | None] = []
    for raw in payloads:
        try:
            obj = json_loads(raw)
            out.append(parse_time(obj[cfg.time_field], cfg.time_format))
        except Exception:
            out.append(None)
    return out


class ReplayStep(NamedTuple):
    """One chunk of a replay: payloads ``[start, end)``; the watermark advanced to
    before the chunk (``before``, None: unchanged), the watermark while the chunk
    arrives (``at``, None: none yet), the watermark advanced to after it (``after``,
    None: unchanged) and the newest event time seen so far (``newest``)."""

    start: int
    end: int
    before: float | None
    at: float | None
    after: float | None
    newest: float | None


def replay_schedule(
    hints: Sequence[float | None], chunk_size: int, lag: float
) -> Iterator[ReplayStep]:
    """The watermark schedule of a replay, chunk by chunk (see the module doc): before
    a chunk the watermark may move up to its oldest on-time event (event time passes
    while a key is idle, so idle keys expire in replay as they would live); after it,
    to the newest event time seen minus ``lag``.

    >>> [tuple(s) for s in replay_schedule([10.0, 12.0, None, 30.0], 2, 1.0)]
    [(0, 2, None, None, 11.0, 12.0), (2, 4, 29.0, 29.0, None, 30.0)]
    >>> [s.before for s in replay_schedule([10.0, 50.0, 40.0], 1, 0.0)]  # 40 is behind
    [None, 50.0, None]
    """
    watermark = None
    newest = None
    for start in range(0, len(hints), chunk_size):
        chunk_hints = hints[start : start + chunk_size]
        on_time = [
            t for t in chunk_hints if t is not None and (watermark is None or t >= watermark)
        ]
        before = None
        if on_time and watermark is not None and min(on_time) - lag > watermark:
            watermark = before = min(on_time) - lag
        at = watermark
        for ts in chunk_hints:
            if ts is not None and (newest is None or ts > newest):
                newest = ts
        after = None
        if newest is not None and (watermark is None or newest - lag > watermark):
            watermark = after = newest - lag
        yield ReplayStep(start, start + len(chunk_hints), before, at, after, newest)


class ReplayStream(beam.PTransform):
    """Replays payloads (in the given arrival order) as an unbounded stream."""

    def __init__(
        self,
        payloads: Sequence[bytes],
        input_cfg: InputConfig,
        chunk_size: int = 500,
        watermark_lag_s: float = 0.0,
        drain_s: float = 366 * 86400.0,
    ) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        if watermark_lag_s < 0:
            raise ValueError(f"watermark_lag_s must be >= 0; got {watermark_lag_s}")
        self._payloads = list(payloads)
        self._cfg = input_cfg
        self._chunk = chunk_size
        self._lag = watermark_lag_s
        self._drain_s = drain_s

    def _test_stream(self) -> TestStream:
        hints = event_time_hints(self._payloads, self._cfg)
        # BytesCoder, not TestStream's default pickling coder: a portable runner
        # (Flink) decodes the TestStream payload in Java.
        ts_stream = TestStream(coder=coders.BytesCoder())
        newest = None
        for step in replay_schedule(hints, self._chunk, self._lag):
            if step.before is not None:
                ts_stream = ts_stream.advance_watermark_to(Timestamp.of(step.before))
            # Payloads without a parseable time ride at the watermark; the parser
            # dead-letters them.
            at = step.at if step.at is not None else 0.0
            ts_stream = ts_stream.add_elements(
                [
                    TimestampedValue(raw, ts if ts is not None else at)
                    for raw, ts in zip(
                        self._payloads[step.start : step.end],
                        hints[step.start : step.end],
                        strict=True,
                    )
                ]
            )
            if step.after is not None:
                ts_stream = ts_stream.advance_watermark_to(Timestamp.of(step.after))
            newest = step.newest
        if newest is not None:
            # Drain first: the watermark passes every pending timer (releases,
            # idle-key expiry) while the stream is still open, so what those
            # timers emit is handled in order before the stream ends.
            ts_stream = ts_stream.advance_watermark_to(Timestamp.of(newest + self._drain_s))
        return ts_stream.advance_watermark_to_infinity()

    def expand(self, pbegin):
        return pbegin | "Replay" >> self._test_stream().with_output_types(bytes)
