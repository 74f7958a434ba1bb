"""Parse and validate one raw payload into an :class:`Event` or a :class:`DeadLetter`.

Pure logic (no Beam). Every payload yields exactly one of the two; nothing is
dropped and nothing raises.

>>> from streamsift.config import InputConfig
>>> p = EventParser(InputConfig(feature_fields=("cpu",)))
>>> p.parse(b'{"key": "h1", "ts": "2026-01-01T00:00:00Z", "cpu": 0.5}')
Event(key='h1', ts=1767225600.0, values=(0.5,), label='', ingest=0.0)
>>> p.parse(b'{"key": "h1", "ts": 1767225600000, "cpu": "high"}').error_kind
'bad_feature'
>>> p.parse(b'not json').error_kind
'malformed_json'
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import orjson

from streamsift.config import InputConfig
from streamsift.records import DeadLetter, Event

__all__ = ["EventParser", "parse_time", "json_loads", "ERROR_KINDS"]

ERROR_KINDS = (
    "oversize",
    "bad_encoding",
    "malformed_json",
    "not_an_object",
    "missing_key",
    "bad_key",
    "missing_time",
    "bad_time",
    "missing_feature",
    "bad_feature",
    "internal_error",
)

# Epoch values above this are milliseconds (1e11 s is the year 5138).
_MS_THRESHOLD = 1e11
# Accept event times between 1971 and 2200.
_MIN_TS = 31_536_000.0
_MAX_TS = 7_258_118_400.0
_MAX_KEY_LEN = 256


def json_loads(raw: bytes | str) -> object:
    """``json.loads(raw)``, about five times faster on the usual payload.

    orjson parses first; where it refuses a text the standard library accepts
    (``NaN`` / ``Infinity``, lone surrogate escapes, UTF-16/32 bytes, nesting
    beyond 1,024 levels, ``1E400``) the standard library decides, so the result -
    or the exception - is ``json.loads``'s. Where orjson parses, the two agree with
    one difference: an integer beyond 64 bits comes back as the nearest float
    (``json`` gives the int, whose ``float()`` is that same float); every number
    streamsift reads goes through ``float()``, so parsed events do not change.

    >>> json_loads(b'{"ts": 1767225600, "cpu": 0.5}')
    {'ts': 1767225600, 'cpu': 0.5}
    >>> json_loads(b'{"cpu": NaN}')
    {'cpu': nan}
    >>> json_loads(b"junk")
    Traceback (most recent call last):
    ...
    json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class _Invalid(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_time(value: object, time_format: str = "auto") -> float:
    """Parse an event-time value into epoch seconds (UTC).

    >>> parse_time("2026-01-01T00:00:00+01:00")
    1767222000.0
    >>> parse_time(1767225600123)
    1767225600.123
    >>> parse_time(1767225600, "epoch_s")
    1767225600.0
    >>> parse_time("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: time 'yesterday' is not ISO 8601 or epoch seconds/milliseconds
    """
    if isinstance(value, bool):
        raise ValueError(f"time must be a string or a number; got {value!r}")
    if isinstance(value, str):
        s = value.strip()
        if time_format in ("auto", "epoch_ms", "epoch_s"):
            num = None
            if ":" not in s:  # no number has one; an ISO 8601 time of day does
                try:
                    num = float(s)
                except ValueError:
                    pass
            if num is not None:
                return parse_time(num, time_format)
            if time_format != "auto":
                raise ValueError(f"time {value!r} is not a number ({time_format})")
        try:
            if s.endswith(("Z", "z")):
                s = s[:-1] + "+00:00"
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(
                f"time {value!r} is not ISO 8601 or epoch seconds/milliseconds"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        ts = dt.timestamp()
    elif isinstance(value, (int, float)):
        if time_format == "iso8601":
            raise ValueError(f"time must be an ISO 8601 string; got {value!r}")
        num = float(value)
        if not math.isfinite(num):
            raise ValueError(f"time must be finite; got {value!r}")
        if time_format == "epoch_ms" or (time_format == "auto" and abs(num) >= _MS_THRESHOLD):
            ts = num / 1000.0
        else:
            ts = num
    else:
        raise ValueError(f"time must be a string or a number; got {type(value).__name__}")
    if not _MIN_TS <= ts <= _MAX_TS:
        raise ValueError(f"time must be between 1971 and 2200; got {value!r}")
    return round(ts, 6)


class EventParser:
    """Turns payload bytes into events, or dead letters naming what is wrong."""

    def __init__(self, cfg: InputConfig) -> None:
        self.cfg = cfg
        self._fields = cfg.feature_fields

    def parse(self, payload: bytes | str, ingest: float = 0.0) -> Event | DeadLetter:
        try:
            return self._parse(payload, ingest)
        except _Invalid as exc:
            return DeadLetter(_display(payload), exc.kind, str(exc))
        except Exception as exc:  # never crash on input; report it instead
            return DeadLetter(_display(payload), "internal_error", f"{type(exc).__name__}: {exc}")

    def _parse(self, payload: bytes | str, ingest: float) -> Event:
        cfg = self.cfg
        size = len(payload.encode("utf-8") if isinstance(payload, str) else payload)
        if size > cfg.max_payload_bytes:
            raise _Invalid(
                "oversize",
                f"payload is {size} bytes; input.max_payload_bytes is {cfg.max_payload_bytes}",
            )
        if isinstance(payload, (bytes, bytearray, memoryview)):
            try:
                text = bytes(payload).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Invalid("bad_encoding", f"payload is not UTF-8: {exc.reason}") from None
        elif isinstance(payload, str):
            text = payload
        else:
            raise _Invalid(
                "bad_encoding", f"payload must be bytes or str; got {type(payload).__name__}"
            )
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _Invalid("malformed_json", f"payload is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _Invalid(
                "not_an_object", f"payload must be a JSON object; got {type(obj).__name__}"
            )
        if cfg.key_field not in obj:
            raise _Invalid("missing_key", f"key field {cfg.key_field!r} is missing")
        key = obj[cfg.key_field]
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise _Invalid(
                "bad_key",
                f"key field {cfg.key_field!r} must be a string or integer; "
                f"got {type(key).__name__}",
            )
        key = str(key)
        if not key or len(key) > _MAX_KEY_LEN:
            raise _Invalid(
                "bad_key",
                f"key field {cfg.key_field!r} must have 1 to {_MAX_KEY_LEN} characters; "
                f"got {len(key)}",
            )
        if cfg.time_field not in obj:
            raise _Invalid("missing_time", f"time field {cfg.time_field!r} is missing")
        try:
            ts = parse_time(obj[cfg.time_field], cfg.time_format)
        except ValueError as exc:
            raise _Invalid("bad_time", f"time field {cfg.time_field!r}: {exc}") from None
        values = []
        for name in self._fields:
            if name not in obj:
                raise _Invalid("missing_feature", f"feature field {name!r} is missing")
            v = obj[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Invalid(
                    "bad_feature",
                    f"feature field {name!r} must be a number; got {type(v).__name__} {v!r}"[:300],
                )
            try:
                fv = float(v)
            except OverflowError:
                fv = math.inf
            if not math.isfinite(fv):
                raise _Invalid("bad_feature", f"feature field {name!r} must be finite; got {v!r}")
            values.append(fv)
        label = ""
        if cfg.label_field:
            lab = obj.get(cfg.label_field)
            label = lab if isinstance(lab, str) else ""
        return Event(key, ts, tuple(values), label, ingest)


def _display(payload: object) -> str:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload).decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    return repr(payload)
