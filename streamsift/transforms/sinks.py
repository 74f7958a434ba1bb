"""Sinks for alerts, dead letters and late events: console and JSON Lines files.

``WriteJsonLines`` appends one JSON object per line to a local file. Writers in
one process share a handle per path (the DirectRunner runs bundles on several
threads), flushed at the end of each bundle, so a crash loses at most the
in-flight bundle, which the runner then retries.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from streamsift.records import DeadLetter, LateEvent

__all__ = [
    "PrintAlerts",
    "WriteJsonLines",
    "dead_letter_to_dict",
    "late_event_to_dict",
]

_FILES: dict[str, Any] = {}
_FILES_LOCK = threading.Lock()


def _handle(path: str):
    with _FILES_LOCK:
        fh = _FILES.get(path)
        if fh is None or fh.closed:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - shared, long-lived
            _FILES[path] = fh
        return fh


def close_all() -> None:
    """Close every open sink file (called by the driver when a run ends)."""
    with _FILES_LOCK:
        for fh in _FILES.values():
            fh.close()
        _FILES.clear()


class _WriteJsonLinesFn(beam.DoFn):
    def __init__(self, path: str, to_dict: Callable[[Any], Any] | None, counter: str) -> None:
        self._path = path
        self._to_dict = to_dict
        self._counter = counter

    def setup(self) -> None:
        self._written = Metrics.counter("streamsift", self._counter) if self._counter else None

    def start_bundle(self) -> None:
        self._lines: list[str] = []

    def process(self, element):
        obj = self._to_dict(element) if self._to_dict else element
        line = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        self._lines.append(line)

    def finish_bundle(self) -> None:
        if not self._lines:
            return
        fh = _handle(self._path)
        with _FILES_LOCK:
            fh.write("\n".join(self._lines) + "\n")
            fh.flush()
        if self._written is not None:
            self._written.inc(len(self._lines))
        self._lines = []


class WriteJsonLines(beam.PTransform):
    """Append each element as one JSON line to a local file."""

    def __init__(
        self, path: str, to_dict: Callable[[Any], Any] | None = None, counter: str = ""
    ) -> None:
        super().__init__()
        self._fn = _WriteJsonLinesFn(path, to_dict, counter)

    def expand(self, pcoll):
        return pcoll | "Append" >> beam.ParDo(self._fn)


class _PrintAlertsFn(beam.DoFn):
    def process(self, alert_json: str):
        from streamsift.models.alerting import format_alert_line
        from streamsift.pipeline.console import console

        console.line(format_alert_line(json.loads(alert_json)))


class PrintAlerts(beam.PTransform):
    """Print one line per alert (event time, key, severity, score, top reasons)."""

    def expand(self, pcoll):
        return pcoll | "Print" >> beam.ParDo(_PrintAlertsFn())


def dead_letter_to_dict(d: DeadLetter) -> dict:
    return {"error_kind": d.error_kind, "message": d.message, "payload": d.payload}


def late_event_to_dict(late: LateEvent) -> dict:
    e = late.event
    return {
        "key": e.key,
        "event_time_ms": int(round(e.ts * 1000)),
        "values": list(e.values),
        "processed_until_ms": int(round(late.processed_until * 1000)),
        "reason": late.reason,
    }
