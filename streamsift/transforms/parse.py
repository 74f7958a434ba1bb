"""Parse and validate raw payloads; bad input goes to a dead-letter output."""

from __future__ import annotations

import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from streamsift.config import InputConfig
from streamsift.parsing import ERROR_KINDS, EventParser
from streamsift.records import DeadLetter, Event
from streamsift.transforms import coders as _coders  # noqa: F401  (registers coders)

__all__ = ["ParseEvents", "ParseEventsFn", "NAMESPACE", "DEAD_LETTER_TAG"]

NAMESPACE = "streamsift"
DEAD_LETTER_TAG = "dead_letter"


class ParseEventsFn(beam.DoFn):
    """bytes -> Event (main, timestamped with its event time) | DeadLetter (tagged)."""

    def __init__(self, cfg: InputConfig, clock: Callable[[], float] = time.time) -> None:
        self._cfg = cfg
        self._clock = clock

    def setup(self) -> None:
        self._parser = EventParser(self._cfg)
        self._in = Metrics.counter(NAMESPACE, "events_in")
        self._ok = Metrics.counter(NAMESPACE, "parsed")
        self._bad = Metrics.counter(NAMESPACE, "dead_lettered")
        self._by_kind = {k: Metrics.counter(NAMESPACE, f"dead_letter_{k}") for k in ERROR_KINDS}

    def process(self, payload: bytes):
        self._in.inc()
        result = self._parser.parse(payload, self._clock())
        if isinstance(result, Event):
            self._ok.inc()
            yield TimestampedValue(result, result.ts)
        else:
            self._bad.inc()
            self._by_kind[result.error_kind].inc()
            yield pvalue.TaggedOutput(DEAD_LETTER_TAG, result)


def _internal_error(failure: tuple) -> DeadLetter:
    payload, err = failure[0], failure[1]
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    Metrics.counter(NAMESPACE, "dead_lettered").inc()
    Metrics.counter(NAMESPACE, "dead_letter_internal_error").inc()
    return DeadLetter(text, "internal_error", str(err)[:500])


class ParseEvents(beam.PTransform):
    """Returns ``{"events": PCollection[Event], "dead_letter": PCollection[DeadLetter]}``.

    Validation failures are tagged outputs with the error kind and message; an
    unexpected exception in the parser is caught by Beam's
    ``with_exception_handling`` and dead-lettered as ``internal_error``, so every
    payload is accounted for.
    """

    def __init__(self, cfg: InputConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._cfg = cfg
        self._clock = clock

    def expand(self, payloads):
        res = payloads | "ParseFn" >> beam.ParDo(
            ParseEventsFn(self._cfg, self._clock)
        ).with_output_types(Event).with_outputs(
            DEAD_LETTER_TAG, main="events"
        ).with_exception_handling(main_tag="events", dead_letter_tag="crashed")
        events = res["events"]
        crashed = res["crashed"] | "CrashToDeadLetter" >> beam.Map(
            _internal_error
        ).with_output_types(DeadLetter)
        dead = (res[DEAD_LETTER_TAG], crashed) | "AllDeadLetters" >> beam.Flatten()
        return {
            "events": events,
            "dead_letter": dead,
        }
