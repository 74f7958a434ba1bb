"""Beam DoFns of the contenders (own module: the reference contender never imports Beam).

All count into the Beam metrics namespace :data:`NAMESPACE`.

>>> fn = KeyByField("key")
>>> fn.setup()
>>> list(fn.process(b'{"key": "h1", "ts": 1}')), list(fn.process(b"junk"))
([('h1', b'{"key": "h1", "ts": 1}')], [('', b'junk')])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from streamsift.config import InputConfig
from streamsift.parsing import EventParser
from streamsift.records import Event

__all__ = ["NAMESPACE", "CountElements", "CountResults", "KeyByField", "PassThrough", "ToKeyedRow"]

#: Beam metrics namespace of the benchmark's own counters
NAMESPACE = "streamsift_bench"


class ToKeyedRow(beam.DoFn):
    """payload -> ``(key, beam.Row(field=value, ...))``, the input ``AnomalyDetection``
    expects; invalid payloads are counted and dropped.

    >>> fn = ToKeyedRow(InputConfig(feature_fields=("cpu", "errors")))
    >>> fn.setup()
    >>> list(fn.process(b'{"key": "h1", "ts": 1767225600, "cpu": 4.5, "errors": 1}'))
    [('h1', Row(cpu=4.5, errors=1.0))]
    >>> list(fn.process(b"not json"))
    []
    """

    def __init__(self, input_cfg: InputConfig) -> None:
        self._cfg = input_cfg

    def setup(self) -> None:
        self._parser = EventParser(self._cfg)
        self._fields = self._cfg.feature_fields
        self._in = Metrics.counter(NAMESPACE, "events_in")
        self._ok = Metrics.counter(NAMESPACE, "valid")

    def process(self, raw: bytes) -> Iterator[tuple[str, beam.Row]]:
        self._in.inc()
        ev = self._parser.parse(raw)
        if isinstance(ev, Event):
            self._ok.inc()
            yield ev.key, beam.Row(**dict(zip(self._fields, ev.values, strict=True)))


class CountResults(beam.DoFn):
    """Counts ``(key, AnomalyResult)`` elements and the outliers (label 1) among them.

    >>> from apache_beam.ml.anomaly.base import AnomalyPrediction, AnomalyResult
    >>> fn = CountResults()
    >>> fn.setup()
    >>> r = AnomalyResult(example=None, predictions=[AnomalyPrediction(score=4.0, label=1)])
    >>> len(list(fn.process(("h1", r))))
    0
    """

    def setup(self) -> None:
        self._out = Metrics.counter(NAMESPACE, "outputs")
        self._alerts = Metrics.counter(NAMESPACE, "alerts")
        self._unscored = Metrics.counter(NAMESPACE, "unscored")

    def process(self, element: tuple[Any, Any]) -> Iterator[Any]:
        self._out.inc()
        pred = element[1].predictions[0]
        if pred.label == 1:
            self._alerts.inc()
        elif pred.score is None:
            self._unscored.inc()
        return iter(())


class KeyByField(beam.DoFn):
    """payload -> ``(key, payload)``; payloads without a usable key go under ``""``."""

    def __init__(self, key_field: str) -> None:
        self._key_field = key_field

    def setup(self) -> None:
        self._in = Metrics.counter(NAMESPACE, "events_in")

    def process(self, raw: bytes) -> Iterator[tuple[str, bytes]]:
        self._in.inc()
        try:
            key = json.loads(raw)[self._key_field]
        except Exception:  # malformed payloads still pass through
            key = ""
        yield (key if isinstance(key, str) else ""), raw


class PassThrough(beam.DoFn):
    """Counts each key's elements in one ``ReadModifyWriteState`` cell and emits the
    element unchanged: the least a stateful per-key stage can do.

    >>> PassThrough.COUNT.name
    'count'
    """

    COUNT = ReadModifyWriteStateSpec("count", coders.VarIntCoder())

    def setup(self) -> None:
        self._out = Metrics.counter(NAMESPACE, "outputs")

    def process(self, element: Any, count=beam.DoFn.StateParam(COUNT)) -> Iterator[Any]:
        count.write((count.read() or 0) + 1)
        self._out.inc()
        yield element


class CountElements(beam.DoFn):
    """Counts elements into counter ``name`` and drops them.

    >>> fn = CountElements("rows_out")
    >>> fn.setup()
    >>> list(fn.process(1))
    []
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def setup(self) -> None:
        self._counter = Metrics.counter(NAMESPACE, self._name)

    def process(self, element: Any) -> Iterator[Any]:
        self._counter.inc()
        return iter(())
