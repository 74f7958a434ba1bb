"""The embedded synthetic stream: seeded multi-key metric events with labelled anomalies.

Every key (``host-000``, ``host-001``, ...) is a service with its own traffic level,
a daily (24 h) seasonal load and irregular arrivals. Its features are correlated the
way real service metrics are: ``requests`` drives ``cpu`` (linearly) and
``latency_ms`` (super-linearly), and ``errors`` are small Poisson counts proportional
to traffic. On top of that the generator injects labelled incidents of five kinds
(:data:`ANOMALY_KINDS`):

* ``spike``: 1-3 events with one feature far off (cpu +35-60, latency x4-10,
  errors +15-50, requests x3-5, which also lifts cpu and latency);
* ``level_shift``: 20-60 events with a sustained shift of one feature;
* ``drift``: 40-100 events ramping linearly from normal to a large shift;
* ``rate_change``: a burst (15-40 events arriving 20x faster, all labelled) or a
  silence (a gap of 10-30 intervals; the first event after it is labelled);
* ``broken_correlation``: 20-60 events where cpu follows a load 0.7 x the seasonal
  amplitude away from the real one: cpu and requests both stay inside their daily
  range, but cpu no longer tracks requests.

It then delivers the events the way a real transport does: mostly
in event-time order, a few slightly out of order, a few far too late, a few malformed.

>>> from streamsift.config import InputConfig, SyntheticConfig
>>> s = generate(SyntheticConfig(), InputConfig(label_field="label"))
>>> len(s.payloads), s.n_valid, s.n_malformed, s.n_late
(20000, 19980, 20, 20)
>>> sorted({i.kind for i in s.incidents}) == sorted(ANOMALY_KINDS)
True
>>> s.payloads[0]
b'{"key":"host-037","ts":1767225600278,"cpu":40.31,"latency_ms":100.9,"requests":42,"errors":0,"label":""}'

Event times are whole milliseconds, so ``labels`` keys are exactly the ``ts`` a
parser obtains (``epoch_ms / 1000`` or the ISO 8601 string's timestamp).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from streamsift.config import InputConfig, SyntheticConfig

__all__ = [
    "ANOMALY_KINDS",
    "MALFORMED_KINDS",
    "Incident",
    "SyntheticStream",
    "generate",
    "history",
    "key_name",
    "to_jsonl",
]

log = logging.getLogger(__name__)

#: labelled anomaly kinds, as they appear in ``labels`` and the label field.
ANOMALY_KINDS = ("spike", "level_shift", "drift", "rate_change", "broken_correlation")

#: malformed payload variants, in the order they are cycled through, with the
#: :class:`~streamsift.records.DeadLetter` ``error_kind`` a parser should give them.
MALFORMED_KINDS = (
    ("truncated_json", "malformed_json"),
    ("missing_key", "missing_key"),
    ("missing_time", "missing_time"),
    ("string_feature", "bad_feature"),
    ("nan_feature", "bad_feature"),
    ("oversize", "oversize"),
    ("json_array", "not_an_object"),
    ("unparseable_time", "bad_time"),
    ("list_key", "bad_key"),
    ("missing_feature", "missing_feature"),
    ("bool_feature", "bad_feature"),
    ("invalid_utf8", "bad_encoding"),
    ("infinite_feature", "bad_feature"),
    ("object_time", "bad_time"),
)

#: internal signal channels; feature fields map onto them by name, else by position.
_CHANNELS = ("cpu", "latency_ms", "requests", "errors")
_INT_CHANNELS = frozenset({"requests", "errors"})
_DAY_S = 86400.0
_EPOCH = datetime(1970, 1, 1)
_TAG_POP, _TAG_NOISE, _TAG_PLACE, _TAG_ARRIVAL, _TAG_HISTORY = 101, 202, 303, 404, 505
#: the late events are delivered at least this long (ms of event time) after their timestamp
_LATE_MIN_MS = 3_700_000
_LATE_MAX_MS = 7_200_000
#: out-of-order events are delayed by this much (ms), well within a 30 s lateness
_DISORDER_MS = (1_000.0, 20_000.0)


@dataclass(frozen=True)
class Incident:
    """One injected anomaly: ``kind`` on ``key`` between two event times (seconds).

    ``feature`` is the affected feature field ("" for ``rate_change``), ``n_events``
    how many events are labelled, ``detail`` a human-readable magnitude.

    >>> i = Incident("host-003", "spike", 100.0, 160.0, "cpu", 2, "+40.0")
    >>> i.duration_s, i.contains(130.0), i.contains(161.0)
    (60.0, True, False)
    """

    key: str
    kind: str
    start_ts: float
    end_ts: float
    feature: str = ""
    n_events: int = 0
    detail: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_ts - self.start_ts

    def contains(self, ts: float) -> bool:
        """Whether event time ``ts`` lies within ``[start_ts, end_ts]``."""
        return self.start_ts <= ts <= self.end_ts


@dataclass(frozen=True)
class SyntheticStream:
    """A generated stream and its ground truth.

    ``payloads`` are in arrival order. ``n_valid`` counts the well-formed payloads
    (the ``n_late`` late ones included); ``n_malformed`` the others, whose expected
    dead-letter kinds are counted in ``malformed_kinds``.

    >>> from streamsift.config import InputConfig, SyntheticConfig
    >>> s = generate(SyntheticConfig(events=500, keys=2, anomaly_rate=0.0), InputConfig())
    >>> s.n_valid + s.n_malformed == len(s.payloads), s.labels, s.keys
    (True, {}, ('host-000', 'host-001'))
    """

    payloads: list[bytes]
    incidents: list[Incident]
    labels: dict[tuple[str, float], str]
    n_valid: int
    n_malformed: int
    n_late: int
    keys: tuple[str, ...] = ()
    malformed_kinds: dict[str, int] | None = None


def key_name(i: int, n_keys: int) -> str:
    """The name of key ``i`` of ``n_keys`` (zero-padded to at least 3 digits).

    >>> key_name(7, 50), key_name(7, 5000)
    ('host-007', 'host-0007')
    """
    return f"host-{i:0{max(3, len(str(n_keys - 1)))}d}"


# --------------------------------------------------------------------------- population


@dataclass(frozen=True)
class _KeyParams:
    req_base: float
    amp: float
    phase: float
    cpu_idle: float
    cpu_per_req: float
    cpu_sd: float
    lat_base: float
    lat_load: float
    lat_sd: float
    err_rate: float
    #: per feature field: multiplier applied when a field re-uses an already used channel
    field_scale: tuple[float, ...]


def _seed64(seed: int) -> int:
    return seed % (1 << 64)


def _population(seed: int, n_keys: int, n_fields: int) -> list[_KeyParams]:
    """Per-key levels; key ``i`` depends only on ``seed`` and ``i``."""
    out = []
    for i in range(n_keys):
        r = np.random.default_rng([_TAG_POP, _seed64(seed), i])
        req_base = float(r.lognormal(math.log(80.0), 0.6))
        amp = float(r.uniform(0.3, 0.6))
        phase = float(r.uniform(0.0, 2.0 * math.pi))
        cpu_idle = float(r.uniform(3.0, 12.0))
        cpu_at_base = float(r.uniform(25.0, 50.0))
        cpu_sd = float(r.uniform(1.0, 3.0))
        lat_base = float(r.lognormal(math.log(40.0), 0.5))
        lat_load = float(r.uniform(0.3, 1.0))
        err_rate = float(10.0 ** r.uniform(-3.5, -2.0))
        scales = tuple(float(x) for x in r.lognormal(0.0, 0.3, size=n_fields))
        out.append(
            _KeyParams(
                req_base=req_base,
                amp=amp,
                phase=phase,
                cpu_idle=cpu_idle,
                cpu_per_req=(cpu_at_base - cpu_idle) / req_base,
                cpu_sd=cpu_sd,
                lat_base=lat_base,
                lat_load=lat_load,
                lat_sd=0.08,
                err_rate=err_rate,
                field_scale=scales,
            )
        )
    return out


def _field_channels(fields: tuple[str, ...]) -> tuple[str, ...]:
    """Channel of each feature field: its own name if known, else by position."""
    return tuple(
        f if f in _CHANNELS else _CHANNELS[j % len(_CHANNELS)] for j, f in enumerate(fields)
    )


# --------------------------------------------------------------------------- values


@dataclass
class _Mods:
    """Per-event modifications of one key's signal (anomaly injection)."""

    req_mult: np.ndarray
    cpu_add: np.ndarray
    lat_mult: np.ndarray
    err_add: np.ndarray
    broken: np.ndarray

    @classmethod
    def none(cls, n: int) -> _Mods:
        return cls(np.ones(n), np.zeros(n), np.ones(n), np.zeros(n), np.zeros(n, dtype=bool))


def _channel_values(
    p: _KeyParams, ms: np.ndarray, rng: np.random.Generator, mods: _Mods
) -> dict[str, np.ndarray]:
    n = len(ms)
    z_req, z_cpu, z_lat, z_shadow = rng.standard_normal((4, n))
    t = ms / 1000.0
    load = 1.0 + p.amp * np.sin(2.0 * math.pi * t / _DAY_S + p.phase)
    lam = p.req_base * load * np.exp(0.05 * z_req) * mods.req_mult
    req = rng.poisson(lam).astype(float)
    drive = req
    if mods.broken.any():
        # cpu follows a load 0.7 * amp closer to the daily mean than the real one,
        # with its own noise: both features stay inside their daily range, but cpu
        # no longer tracks requests.
        shadow = load - np.where(load >= 1.0, 0.7, -0.7) * p.amp
        s_req = p.req_base * shadow
        s_req = s_req + np.sqrt(s_req) * z_shadow
        drive = np.where(mods.broken, s_req, req)
    cpu = np.clip(p.cpu_idle + p.cpu_per_req * drive + p.cpu_sd * z_cpu + mods.cpu_add, 0.0, 100.0)
    rel = req / p.req_base
    lat = p.lat_base * (1.0 + p.lat_load * rel * rel) * np.exp(p.lat_sd * z_lat) * mods.lat_mult
    err = rng.poisson(p.err_rate * req + mods.err_add).astype(float)
    return {"cpu": cpu, "latency_ms": lat, "requests": req, "errors": err}


def _field_columns(
    p: _KeyParams,
    chans: dict[str, np.ndarray],
    field_channels: tuple[str, ...],
    rng: np.random.Generator,
) -> list[list[float | int]]:
    """One python list per feature field, rounded the way a real exporter would."""
    used: set[str] = set()
    cols: list[list[float | int]] = []
    for j, ch in enumerate(field_channels):
        v = chans[ch]
        if ch in used:  # a second field on the same channel: scaled, with its own noise
            v = v * p.field_scale[j] * np.exp(0.03 * rng.standard_normal(len(v)))
        used.add(ch)
        if ch in _INT_CHANNELS:
            cols.append([int(x) for x in np.rint(v).tolist()])
        else:
            cols.append([round(x, 2) for x in v.tolist()])
    return cols


# --------------------------------------------------------------------------- time formats


def _time_style(i: int, time_format: str) -> str:
    if time_format == "epoch_ms":
        return "epoch_ms"
    if time_format == "epoch_s":
        return "epoch_s"
    if time_format == "iso8601":
        return ("iso_z", "iso_utc", "iso_plus2")[i % 3]
    return ("iso_z", "epoch_ms", "iso_plus2", "iso_utc")[i % 4]


def _format_time(ms: int, style: str) -> str | int | float:
    if style == "epoch_ms":
        return ms
    if style == "epoch_s":
        return ms / 1000.0
    frac = f".{ms % 1000:03d}"
    if style == "iso_plus2":
        dt = _EPOCH + timedelta(milliseconds=ms + 7_200_000)
        return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + "+02:00"
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + ("Z" if style == "iso_z" else "+00:00")


# --------------------------------------------------------------------------- incidents


@dataclass
class _Planned:
    key: int
    kind: str
    start: int  # index of the first labelled event of the key
    length: int  # labelled events
    channel: str = ""
    magnitude: float = 0.0
    variant: str = ""


_MIN_LEN = {"spike": 1, "level_shift": 20, "drift": 40, "burst": 15, "broken_correlation": 20}


def _draw_spec(
    rng: np.random.Generator, kind: str, remaining: int, avail: set[str], burst: bool
) -> _Planned | None:
    def clip(n: int, lo: int) -> int:
        return max(lo, min(n, remaining))

    def pick(options: tuple[str, ...]) -> str | None:
        opts = [c for c in options if c in avail]
        return opts[int(rng.integers(len(opts)))] if opts else None

    if kind == "spike":
        ch = pick(("cpu", "latency_ms", "errors", "requests"))
        if ch is None:
            return None
        mag = {
            "cpu": rng.uniform(35.0, 60.0),
            "latency_ms": rng.uniform(4.0, 10.0),
            "errors": rng.uniform(15.0, 50.0),
            "requests": rng.uniform(3.0, 5.0),
        }[ch]
        return _Planned(-1, kind, -1, clip(int(rng.integers(1, 4)), 1), ch, float(mag))
    if kind == "level_shift":
        ch = pick(("cpu", "latency_ms", "errors", "requests"))
        if ch is None:
            return None
        if ch == "requests":
            mag = rng.uniform(0.25, 0.4) if rng.random() < 0.5 else rng.uniform(2.0, 3.0)
        else:
            mag = {
                "cpu": rng.uniform(20.0, 35.0),
                "latency_ms": rng.uniform(2.0, 3.5),
                "errors": rng.uniform(4.0, 10.0),
            }[ch]
        return _Planned(-1, kind, -1, clip(int(rng.integers(20, 61)), 20), ch, float(mag))
    if kind == "drift":
        ch = pick(("cpu", "latency_ms", "errors"))
        if ch is None:
            return None
        mag = {
            "cpu": rng.uniform(25.0, 40.0),
            "latency_ms": rng.uniform(2.5, 4.0),
            "errors": rng.uniform(5.0, 12.0),
        }[ch]
        return _Planned(-1, kind, -1, clip(int(rng.integers(40, 101)), 40), ch, float(mag))
    if kind == "rate_change":
        if burst:
            n = clip(int(rng.integers(15, 41)), 15)
            return _Planned(-1, kind, -1, n, "", 20.0, "burst")
        return _Planned(-1, kind, -1, 1, "", float(rng.uniform(10.0, 30.0)), "silence")
    # broken_correlation: cpu decouples from the load that drives it
    if "cpu" not in avail or not avail & {"requests", "latency_ms"}:
        return None
    return _Planned(-1, kind, -1, clip(int(rng.integers(20, 61)), 20), "cpu", 0.0)


def _plan_incidents(
    rng: np.random.Generator, n_per_key: list[int], target: int, avail: set[str]
) -> list[_Planned]:
    """Place incidents (in per-key event-index space) until ``target`` events are labelled."""
    occupied: list[list[tuple[int, int]]] = [[] for _ in n_per_key]
    cycle = ("spike", "spike", "level_shift", "drift", "rate_change", "broken_correlation")
    planned: list[_Planned] = []
    labelled = 0
    # rate changes alternate between a burst and a silence, starting at random
    n_rate = int(rng.integers(2))
    while labelled < target:
        progress = False
        for kind in [cycle[int(i)] for i in rng.permutation(len(cycle))]:
            if labelled >= target:
                break
            spec = _draw_spec(rng, kind, target - labelled, avail, n_rate % 2 == 0)
            if spec is None:
                continue
            if kind == "rate_change":
                n_rate += 1
            for _ in range(50):
                k = int(rng.integers(len(n_per_key)))
                n = n_per_key[k]
                lo, hi = max(1, min(60, n // 5)), n - spec.length
                if hi < lo:
                    continue
                s = int(rng.integers(lo, hi + 1))
                e = s + spec.length - 1
                m = max(1, min(40, n // 10))
                if all(e < a - m or s > b + m for a, b in occupied[k]):
                    occupied[k].append((s, e))
                    spec.key, spec.start = k, s
                    planned.append(spec)
                    labelled += spec.length
                    progress = True
                    break
        if not progress:
            break
    return planned


def _apply(plan: _Planned, mods: _Mods) -> None:
    s, e = plan.start, plan.start + plan.length
    if plan.kind == "broken_correlation":
        mods.broken[s:e] = True
        return
    if plan.kind == "rate_change":
        return
    n = plan.length
    prof = np.linspace(1.0 / n, 1.0, n) if plan.kind == "drift" else np.ones(n)
    if plan.channel == "cpu":
        mods.cpu_add[s:e] += prof * plan.magnitude
    elif plan.channel == "latency_ms":
        mods.lat_mult[s:e] *= 1.0 + prof * (plan.magnitude - 1.0)
    elif plan.channel == "errors":
        mods.err_add[s:e] += prof * plan.magnitude
    elif plan.channel == "requests":
        mods.req_mult[s:e] *= 1.0 + prof * (plan.magnitude - 1.0)


def _detail(plan: _Planned, ms: np.ndarray) -> str:
    if plan.kind == "rate_change":
        if plan.variant == "burst":
            return f"burst of {plan.length} events"
        gap_s = (ms[plan.start] - ms[plan.start - 1]) / 1000.0
        return f"silence of {gap_s:.0f} s"
    if plan.kind == "broken_correlation":
        return "cpu decoupled from load"
    if plan.channel in ("cpu", "errors"):
        return f"{plan.channel} +{plan.magnitude:.1f}"
    return f"{plan.channel} x{plan.magnitude:.2f}"


# --------------------------------------------------------------------------- malformed


def _malformed(variant: int, obj: dict[str, Any], input_cfg: InputConfig) -> bytes:
    name = MALFORMED_KINDS[variant][0]
    kf, tf, ff = input_cfg.key_field, input_cfg.time_field, input_cfg.feature_fields
    obj = dict(obj)
    if name == "truncated_json":
        raw = _dumps(obj)
        return raw[: max(1, len(raw) // 2)]
    if name == "json_array":
        return _dumps([obj[kf], obj[tf]])
    if name == "invalid_utf8":
        key = obj[kf].encode()
        return _dumps(obj).replace(b'"' + key + b'"', b'"' + key + b'\xff\xfe"', 1)
    if name == "missing_key":
        del obj[kf]
    elif name == "missing_time":
        del obj[tf]
    elif name == "string_feature":
        obj[ff[0]] = "high"
    elif name == "nan_feature":
        obj[ff[0]] = float("nan")
    elif name == "infinite_feature":
        obj[ff[-1]] = float("inf")
    elif name == "bool_feature":
        obj[ff[-1]] = True
    elif name == "missing_feature":
        del obj[ff[-1]]
    elif name == "oversize":
        obj["_padding"] = "x" * input_cfg.max_payload_bytes
    elif name == "unparseable_time":
        obj[tf] = "not-a-time"
    elif name == "list_key":
        obj[kf] = [obj[kf]]
    elif name == "object_time":
        obj[tf] = {"value": obj[tf]}
    return _dumps(obj)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- public API


def _check_fields(input_cfg: InputConfig) -> None:
    lf = input_cfg.label_field
    if lf and lf in {input_cfg.key_field, input_cfg.time_field, *input_cfg.feature_fields}:
        raise ValueError(
            f"input.label_field must differ from the key, time and feature fields; got {lf!r}"
        )


def _build(
    key: str,
    tval: str | int | float,
    fields: tuple[str, ...],
    values: Iterable[float | int],
    label_field: str,
    label: str,
    input_cfg: InputConfig,
) -> dict[str, Any]:
    obj: dict[str, Any] = {input_cfg.key_field: key, input_cfg.time_field: tval}
    obj.update(zip(fields, values, strict=True))
    if label_field:
        obj[label_field] = label
    return obj


def generate(
    cfg: SyntheticConfig, input_cfg: InputConfig, start_ts: float = 1_767_225_600.0
) -> SyntheticStream:
    """Generate ``cfg.events`` payloads starting just after ``start_ts`` (seconds).

    Deterministic: the same arguments give byte-identical payloads. Keys get
    ``cfg.events // cfg.keys`` events each (the first ones one more), at irregular
    gaps of mean ``cfg.interval_s``. Incidents are placed until about
    ``cfg.anomaly_rate * cfg.events`` events are labelled (the last one may overshoot
    by its minimum length), never in the first min(60, n/5) of a key's n events and
    at least min(40, n/10) events apart. Delivery then makes ``round(rate * cfg.events)`` events late (delayed by
    1.03-2 h of event time; only events with that much of their key's stream after
    them qualify, so short streams get fewer), malformed (replacing unlabelled,
    non-late events) and out of order (delayed by 1-20 s). Labelled events are never
    late nor malformed.

    >>> from streamsift.config import InputConfig, SyntheticConfig
    >>> cfg = SyntheticConfig(events=2000, keys=4, seed=11)
    >>> a = generate(cfg, InputConfig())
    >>> a.payloads == generate(cfg, InputConfig()).payloads
    True
    >>> (len(a.payloads), a.n_malformed, a.n_late, len(a.labels))
    (2000, 2, 2, 53)
    >>> a.incidents[0]
    Incident(key='host-003', kind='spike', start_ts=1767230861.13, end_ts=1767230956.61, feature='cpu', n_events=3, detail='cpu +58.0')
    """
    if not math.isfinite(start_ts):
        raise ValueError(f"start_ts must be finite; got {start_ts!r}")
    _check_fields(input_cfg)
    fields = input_cfg.feature_fields
    field_channels = _field_channels(fields)
    avail = set(field_channels)
    n_keys = cfg.keys
    s64 = _seed64(cfg.seed)
    pop = _population(cfg.seed, n_keys, len(fields))
    names = [key_name(i, n_keys) for i in range(n_keys)]
    n_per_key = [
        cfg.events // n_keys + (1 if i < cfg.events % n_keys else 0) for i in range(n_keys)
    ]
    target = round(cfg.anomaly_rate * cfg.events)
    plans = _plan_incidents(np.random.default_rng([_TAG_PLACE, s64]), n_per_key, target, avail)
    by_key: dict[int, list[_Planned]] = {}
    for p in plans:
        by_key.setdefault(p.key, []).append(p)

    start_ms = int(round(start_ts * 1000.0))
    interval_ms = cfg.interval_s * 1000.0
    kind_index = {k: i for i, k in enumerate(ANOMALY_KINDS)}
    all_key, all_ms, all_kind = [], [], []
    cols_by_key: list[list[list[float | int]]] = []
    incidents: list[Incident] = []
    first_field = {ch: f for f, ch in reversed(list(zip(fields, field_channels, strict=True)))}
    for k in range(n_keys):
        n = n_per_key[k]
        rng = np.random.default_rng([_TAG_NOISE, s64, k])
        gaps = interval_ms * rng.gamma(4.0, 0.25, size=n)
        if n:
            gaps[0] = rng.uniform(0.0, interval_ms)
        mods = _Mods.none(n)
        kinds = np.full(n, -1, dtype=np.int64)
        key_plans = sorted(by_key.get(k, []), key=lambda p: p.start)
        for p in key_plans:
            if p.kind == "rate_change" and p.variant == "burst":
                gaps[p.start : p.start + p.length] /= p.magnitude
            elif p.kind == "rate_change":
                gaps[p.start] = interval_ms * p.magnitude
            _apply(p, mods)
            kinds[p.start : p.start + p.length] = kind_index[p.kind]
        ms = start_ms + np.cumsum(np.maximum(1, np.rint(gaps)).astype(np.int64))
        chans = _channel_values(pop[k], ms, rng, mods)
        cols_by_key.append(_field_columns(pop[k], chans, field_channels, rng))
        for p in key_plans:
            incidents.append(
                Incident(
                    key=names[k],
                    kind=p.kind,
                    start_ts=int(ms[p.start]) / 1000.0,
                    end_ts=int(ms[p.start + p.length - 1]) / 1000.0,
                    feature=first_field.get(
                        "cpu" if p.kind == "broken_correlation" else p.channel, ""
                    ),
                    n_events=p.length,
                    detail=_detail(p, ms),
                )
            )
        all_key.append(np.full(n, k, dtype=np.int64))
        all_ms.append(ms)
        all_kind.append(kinds)
    incidents.sort(key=lambda i: (i.start_ts, i.key))

    key_arr = np.concatenate(all_key)
    ms_arr = np.concatenate(all_ms)
    kind_arr = np.concatenate(all_kind)
    row_in_key = np.concatenate([np.arange(n) for n in n_per_key])
    total = len(ms_arr)

    # ---- delivery: late, malformed, out of order
    rng = np.random.default_rng([_TAG_ARRIVAL, s64])
    labelled = kind_arr >= 0
    key_last = np.array([int(m[-1]) if len(m) else 0 for m in all_ms], dtype=np.int64)
    room = np.minimum(key_last[key_arr], int(ms_arr.max())) - ms_arr
    late_cand = np.flatnonzero(~labelled & (room >= _LATE_MIN_MS + 300_000))
    n_late = min(round(cfg.late_rate * total), len(late_cand))
    late_idx = np.sort(rng.choice(late_cand, size=n_late, replace=False))
    arrival = ms_arr.astype(float)
    arrival[late_idx] += rng.uniform(_LATE_MIN_MS, np.minimum(_LATE_MAX_MS, room[late_idx]))
    is_late = np.zeros(total, dtype=bool)
    is_late[late_idx] = True
    mal_cand = np.flatnonzero(~labelled & ~is_late)
    n_mal = min(round(cfg.malformed_rate * total), len(mal_cand))
    mal_idx = np.sort(rng.choice(mal_cand, size=n_mal, replace=False))
    dis_cand = np.flatnonzero(~is_late)
    n_dis = min(round(cfg.disorder_rate * total), len(dis_cand))
    dis_idx = rng.choice(dis_cand, size=n_dis, replace=False)
    arrival[dis_idx] += rng.uniform(*_DISORDER_MS, size=n_dis)
    order = np.lexsort((ms_arr, key_arr, arrival))
    mal_variant = {int(i): v % len(MALFORMED_KINDS) for v, i in enumerate(mal_idx)}

    styles = [_time_style(k, input_cfg.time_format) for k in range(n_keys)]
    label_field = input_cfg.label_field
    payloads: list[bytes] = []
    labels: dict[tuple[str, float], str] = {}
    malformed_kinds: dict[str, int] = {}
    for i in order.tolist():
        k, r, m = int(key_arr[i]), int(row_in_key[i]), int(ms_arr[i])
        kind = ANOMALY_KINDS[kind_arr[i]] if kind_arr[i] >= 0 else ""
        cols = cols_by_key[k]
        obj = _build(
            names[k],
            _format_time(m, styles[k]),
            fields,
            (c[r] for c in cols),
            label_field,
            kind,
            input_cfg,
        )
        if i in mal_variant:
            v = mal_variant[i]
            payloads.append(_malformed(v, obj, input_cfg))
            expected = MALFORMED_KINDS[v][1]
            malformed_kinds[expected] = malformed_kinds.get(expected, 0) + 1
            continue
        payloads.append(_dumps(obj))
        if kind:
            labels[(names[k], m / 1000.0)] = kind
    log.debug(
        "synthetic stream: %d payloads, %d incidents, %d labelled, %d malformed, %d late",
        len(payloads),
        len(incidents),
        len(labels),
        n_mal,
        n_late,
    )
    return SyntheticStream(
        payloads=payloads,
        incidents=incidents,
        labels=labels,
        n_valid=total - n_mal,
        n_malformed=n_mal,
        n_late=n_late,
        keys=tuple(names),
        malformed_kinds=dict(sorted(malformed_kinds.items())),
    )


def history(
    cfg: SyntheticConfig, input_cfg: InputConfig, hours: float, start_ts: float, seed: int
) -> list[bytes]:
    """Clean, normal, in-order history of the same keys, ending just before ``start_ts``.

    Same per-key levels as :func:`generate` with the same ``cfg.seed``; the noise
    comes from ``seed``. No anomalies, no malformed payloads, label "" if labelled.

    >>> from streamsift.config import InputConfig, SyntheticConfig
    >>> h = history(SyntheticConfig(keys=3), InputConfig(), hours=1.0, start_ts=1e9, seed=1)
    >>> len(h), h[-1]
    (177, b'{"key":"host-001","ts":999999974399,"cpu":38.67,"latency_ms":90.02,"requests":110,"errors":1}')
    >>> history(SyntheticConfig(), InputConfig(), hours=0, start_ts=1e9, seed=1)
    Traceback (most recent call last):
    ...
    ValueError: hours must be > 0 and finite; got 0
    """
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours < math.inf:
        raise ValueError(f"hours must be > 0 and finite; got {hours!r}")
    if not math.isfinite(start_ts):
        raise ValueError(f"start_ts must be finite; got {start_ts!r}")
    _check_fields(input_cfg)
    fields = input_cfg.feature_fields
    field_channels = _field_channels(fields)
    pop = _population(cfg.seed, cfg.keys, len(fields))
    end_ms = int(round(start_ts * 1000.0))
    span_ms = hours * 3_600_000.0
    interval_ms = cfg.interval_s * 1000.0
    s64 = _seed64(seed)
    rows: list[tuple[int, int, int]] = []
    cols_by_key = []
    ms_by_key = []
    for k in range(cfg.keys):
        rng = np.random.default_rng([_TAG_HISTORY, s64, k])
        n_est = int(span_ms / interval_ms * 1.2) + 8
        back = np.cumsum(np.maximum(1, np.rint(interval_ms * rng.gamma(4.0, 0.25, size=n_est))))
        while back[-1] < span_ms:
            more = np.maximum(1, np.rint(interval_ms * rng.gamma(4.0, 0.25, size=n_est)))
            back = np.concatenate([back, back[-1] + np.cumsum(more)])
        back = back[back <= span_ms].astype(np.int64)
        ms = (end_ms - back)[::-1]
        chans = _channel_values(pop[k], ms, rng, _Mods.none(len(ms)))
        cols_by_key.append(_field_columns(pop[k], chans, field_channels, rng))
        ms_by_key.append(ms)
        rows.extend((int(m), k, r) for r, m in enumerate(ms.tolist()))
    rows.sort()
    styles = [_time_style(k, input_cfg.time_format) for k in range(cfg.keys)]
    names = [key_name(k, cfg.keys) for k in range(cfg.keys)]
    lf = input_cfg.label_field
    return [
        _dumps(
            _build(
                names[k],
                _format_time(m, styles[k]),
                fields,
                (c[r] for c in cols_by_key[k]),
                lf,
                "",
                input_cfg,
            )
        )
        for m, k, r in rows
    ]


def to_jsonl(payloads: Iterable[bytes], path: str | Path) -> int:
    """Write payloads one per line to ``path``; returns the number written.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "s.jsonl")
    >>> to_jsonl([b'{"a":1}', b'not json'], p), open(p, "rb").read()
    (2, b'{"a":1}\\nnot json\\n')
    >>> to_jsonl([b'a\\nb'], p)
    Traceback (most recent call last):
    ...
    ValueError: payloads[0] must not contain a newline; got b'a\\nb'
    """
    items = list(payloads)
    for i, p in enumerate(items):
        if b"\n" in p:
            raise ValueError(f"payloads[{i}] must not contain a newline; got {p[:60]!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for p in items:
            fh.write(p)
            fh.write(b"\n")
    return len(items)
