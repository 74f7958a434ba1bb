"""Configuration: one TOML file loaded into frozen, validated dataclasses.

Every section is a frozen dataclass validated in ``__post_init__``. A bad value
fails at start with a :class:`ConfigError` naming the field, the bound and the
value received:

>>> ThresholdConfig(quantile=1.5)
Traceback (most recent call last):
...
streamsift.config.ConfigError: thresholds.quantile must be in (0, 1); got 1.5

>>> cfg = load_config(None)
>>> cfg.features.horizons_s
(60.0, 900.0, 3600.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

__all__ = [
    "AlertConfig",
    "Config",
    "ConfigError",
    "EventTimeConfig",
    "FeatureConfig",
    "InputConfig",
    "ModelConfig",
    "OutputConfig",
    "PrefilterConfig",
    "SyntheticConfig",
    "ThresholdConfig",
    "load_config",
    "apply_overrides",
]

TIME_FORMATS = ("auto", "iso8601", "epoch_ms", "epoch_s")
ORDERINGS = ("event_time", "arrival")
PREFILTER_METHODS = ("ewma", "mad")
DETECTORS = ("iforest", "pyod_iforest")


class ConfigError(ValueError):
    """A configuration value is out of bounds or of the wrong type."""


def _fail(name: str, bound: str, value: Any) -> None:
    raise ConfigError(f"{name} must be {bound}; got {value!r}")


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, "a number", value)
    if not math.isfinite(value):
        _fail(name, "finite", value)
    return float(value)


def _positive(name: str, value: Any) -> None:
    if _check_number(name, value) <= 0:
        _fail(name, "> 0", value)


def _non_negative(name: str, value: Any) -> None:
    if _check_number(name, value) < 0:
        _fail(name, ">= 0", value)


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, "an integer", value)
    if value < minimum:
        _fail(name, f">= {minimum}", value)


def _open_unit(name: str, value: Any) -> None:
    v = _check_number(name, value)
    if not 0.0 < v < 1.0:
        _fail(name, "in (0, 1)", value)


def _one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(name, f"one of {list(choices)}", value)


def _nonempty_str(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        _fail(name, "a non-empty string", value)


@dataclass(frozen=True)
class InputConfig:
    """How to read one JSON event."""

    key_field: str = "key"
    time_field: str = "ts"
    time_format: str = "auto"
    feature_fields: tuple[str, ...] = ("cpu", "latency_ms", "requests", "errors")
    max_payload_bytes: int = 65536
    #: optional ground-truth field, carried through for self-evaluation only;
    #: detectors never read it.
    label_field: str = ""

    def __post_init__(self) -> None:
        _nonempty_str("input.key_field", self.key_field)
        _nonempty_str("input.time_field", self.time_field)
        _one_of("input.time_format", self.time_format, TIME_FORMATS)
        if isinstance(self.feature_fields, (str, bytes)) or not isinstance(
            self.feature_fields, (list, tuple)
        ):
            _fail("input.feature_fields", "a list of field names", self.feature_fields)
        object.__setattr__(self, "feature_fields", tuple(self.feature_fields))
        if not self.feature_fields:
            _fail("input.feature_fields", "a non-empty list", list(self.feature_fields))
        for f in self.feature_fields:
            _nonempty_str("input.feature_fields[]", f)
        if len(set(self.feature_fields)) != len(self.feature_fields):
            _fail("input.feature_fields", "free of duplicates", list(self.feature_fields))
        reserved = {self.key_field, self.time_field}
        clash = reserved.intersection(self.feature_fields)
        if clash:
            _fail("input.feature_fields", "distinct from key_field and time_field", sorted(clash))
        _positive_int("input.max_payload_bytes", self.max_payload_bytes, 16)
        if not isinstance(self.label_field, str):
            _fail("input.label_field", "a string", self.label_field)


@dataclass(frozen=True)
class EventTimeConfig:
    """Watermarks, lateness, ordering and idle-key expiry."""

    #: how far behind the watermark an event may arrive and still be processed
    #: in order; later ones go to the late output.
    allowed_lateness_s: float = 30.0
    #: "event_time": exact (buffer until the watermark passes);
    #: "arrival": lower latency, order of arrival.
    ordering: str = "event_time"
    #: per-key state is cleared after this much event time without events.
    idle_ttl_s: float = 7200.0

    def __post_init__(self) -> None:
        _non_negative("event_time.allowed_lateness_s", self.allowed_lateness_s)
        _one_of("event_time.ordering", self.ordering, ORDERINGS)
        _positive("event_time.idle_ttl_s", self.idle_ttl_s)


@dataclass(frozen=True)
class FeatureConfig:
    """Per-key rolling features over event-time horizons."""

    horizons_s: tuple[float, ...] = (60.0, 900.0, 3600.0)

    def __post_init__(self) -> None:
        if not isinstance(self.horizons_s, (list, tuple)) or not self.horizons_s:
            _fail("features.horizons_s", "a non-empty list of seconds", self.horizons_s)
        hs = tuple(float(_check_number("features.horizons_s[]", h)) for h in self.horizons_s)
        for h in hs:
            if h <= 0:
                _fail("features.horizons_s[]", "> 0", h)
        if list(hs) != sorted(set(hs)):
            _fail("features.horizons_s", "strictly increasing", list(hs))
        object.__setattr__(self, "horizons_s", hs)


@dataclass(frozen=True)
class PrefilterConfig:
    """Stage 1: cheap per-key robust statistics."""

    method: str = "ewma"
    #: suspicion score above which an event is escalated to stage 2.
    escalate_score: float = 3.0
    #: events per key before stage 1 may escalate anything.
    warmup_events: int = 20
    #: half-life (seconds of event time) of the baseline statistics.
    half_life_s: float = 1800.0
    #: consecutive flagged events after which the baseline accepts a new level.
    readapt_after: int = 15

    def __post_init__(self) -> None:
        _one_of("prefilter.method", self.method, PREFILTER_METHODS)
        _positive("prefilter.escalate_score", self.escalate_score)
        _positive_int("prefilter.warmup_events", self.warmup_events, 1)
        _positive("prefilter.half_life_s", self.half_life_s)
        _positive_int("prefilter.readapt_after", self.readapt_after, 1)


@dataclass(frozen=True)
class ModelConfig:
    """Stage 2: the model and its training."""

    dir: str = "streamsift-out/model"
    detector: str = "pyod_iforest"
    contamination: float = 0.01
    n_estimators: int = 100
    seed: int = 42
    min_batch_size: int = 1
    max_batch_size: int = 256
    #: seconds between checks for a new model artifact; 0 disables the watch.
    watch_interval_s: float = 0.0
    #: synthetic training history when no model exists yet (hours of event time).
    history_hours: float = 24.0

    def __post_init__(self) -> None:
        _nonempty_str("model.dir", self.dir)
        _one_of("model.detector", self.detector, DETECTORS)
        v = _check_number("model.contamination", self.contamination)
        if not 0.0 < v <= 0.5:
            _fail("model.contamination", "in (0, 0.5]", self.contamination)
        _positive_int("model.n_estimators", self.n_estimators, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            _fail("model.seed", "an integer", self.seed)
        _positive_int("model.min_batch_size", self.min_batch_size, 1)
        _positive_int("model.max_batch_size", self.max_batch_size, 1)
        if self.max_batch_size < self.min_batch_size:
            _fail(
                "model.max_batch_size",
                f">= model.min_batch_size ({self.min_batch_size})",
                self.max_batch_size,
            )
        _non_negative("model.watch_interval_s", self.watch_interval_s)
        _positive("model.history_hours", self.history_hours)


@dataclass(frozen=True)
class ThresholdConfig:
    """Calibrated scores in [0, 1], per-key adaptive thresholds, severity tiers."""

    #: floor of every key's threshold (calibrated score).
    min_score: float = 0.9
    #: per-key threshold = this quantile of the key's recent escalated scores.
    quantile: float = 0.9
    #: escalated events a key needs before its adaptive threshold applies.
    warmup: int = 30
    warning: float = 0.97
    critical: float = 0.995

    def __post_init__(self) -> None:
        _open_unit("thresholds.min_score", self.min_score)
        _open_unit("thresholds.quantile", self.quantile)
        _positive_int("thresholds.warmup", self.warmup, 0)
        _open_unit("thresholds.warning", self.warning)
        _open_unit("thresholds.critical", self.critical)
        if not self.min_score <= self.warning <= self.critical:
            _fail(
                "thresholds.warning/critical",
                f"ordered min_score ({self.min_score}) <= warning <= critical",
                (self.warning, self.critical),
            )


@dataclass(frozen=True)
class AlertConfig:
    """Deduplication and rate limiting of alerts."""

    #: a key's open alert absorbs exceedances until this much event time passes
    #: without one.
    cooldown_s: float = 600.0
    top_reasons: int = 3
    #: global cap on new alerts per minute of event time; 0 = unlimited.
    rate_limit_per_min: int = 120

    def __post_init__(self) -> None:
        _non_negative("alerts.cooldown_s", self.cooldown_s)
        _positive_int("alerts.top_reasons", self.top_reasons, 1)
        _positive_int("alerts.rate_limit_per_min", self.rate_limit_per_min, 0)


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded synthetic stream."""

    events: int = 20000
    keys: int = 50
    seed: int = 7
    #: mean seconds between two events of one key.
    interval_s: float = 60.0
    #: fraction of keys' time covered by injected incidents (approximate).
    anomaly_rate: float = 0.02
    #: malformed payloads mixed into the stream (exercises the dead-letter path).
    malformed_rate: float = 0.001
    #: fraction of events delivered out of order (within the allowed lateness).
    disorder_rate: float = 0.05
    #: fraction of events delivered far too late (exercises the late output).
    late_rate: float = 0.001

    def __post_init__(self) -> None:
        _positive_int("synthetic.events", self.events, 1)
        _positive_int("synthetic.keys", self.keys, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            _fail("synthetic.seed", "an integer", self.seed)
        _positive("synthetic.interval_s", self.interval_s)
        for name in ("anomaly_rate", "malformed_rate", "disorder_rate", "late_rate"):
            v = _check_number(f"synthetic.{name}", getattr(self, name))
            if not 0.0 <= v < 1.0:
                _fail(f"synthetic.{name}", "in [0, 1)", v)


@dataclass(frozen=True)
class OutputConfig:
    """Where results go."""

    dir: str = "streamsift-out"
    print_alerts: bool = True

    def __post_init__(self) -> None:
        _nonempty_str("output.dir", self.dir)
        if not isinstance(self.print_alerts, bool):
            _fail("output.print_alerts", "true or false", self.print_alerts)


@dataclass(frozen=True)
class Config:
    input: InputConfig = field(default_factory=InputConfig)
    event_time: EventTimeConfig = field(default_factory=EventTimeConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    prefilter: PrefilterConfig = field(default_factory=PrefilterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in fields(self)}


_SECTIONS = {f.name: f.type for f in fields(Config)}


def _section_class(name: str) -> type:
    return {
        "input": InputConfig,
        "event_time": EventTimeConfig,
        "features": FeatureConfig,
        "prefilter": PrefilterConfig,
        "model": ModelConfig,
        "thresholds": ThresholdConfig,
        "alerts": AlertConfig,
        "synthetic": SyntheticConfig,
        "output": OutputConfig,
    }[name]


def from_mapping(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a :class:`Config` from nested mappings, on top of ``base``.

    Unknown sections or keys are errors (a typo must not be silently ignored).
    """
    base = base or Config()
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTIONS:
            _fail("config section", f"one of {sorted(_SECTIONS)}", name)
        if not isinstance(values, Mapping):
            _fail(name, "a table", values)
        cls = _section_class(name)
        known = {f.name for f in fields(cls)}
        for k in values:
            if k not in known:
                _fail(f"{name}.{k}", f"a known key of [{name}] ({sorted(known)})", k)
        current = getattr(base, name)
        try:
            sections[name] = dataclasses.replace(current, **dict(values))
        except TypeError as exc:  # pragma: no cover - defensive
            raise ConfigError(f"[{name}]: {exc}") from exc
    return dataclasses.replace(base, **sections)


def load_config(path: str | Path | None) -> Config:
    """Load a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    return from_mapping(data)


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Apply dotted overrides such as ``{"synthetic.events": 5000}`` (CLI flags)."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            _fail("override", "of the form section.key", dotted)
        nested.setdefault(section, {})[key] = value
    return from_mapping(nested, base=cfg)
