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
    "DetectorConfig",
    "EngineConfig",
    "EventTimeConfig",
    "FeatureConfig",
    "InputConfig",
    "KafkaConfig",
    "ModelConfig",
    "OutputConfig",
    "PrefilterConfig",
    "PubSubConfig",
    "SinksConfig",
    "SourceConfig",
    "SyntheticConfig",
    "ThresholdConfig",
    "load_config",
    "apply_overrides",
]

TIME_FORMATS = ("auto", "iso8601", "epoch_ms", "epoch_s")
ORDERINGS = ("event_time", "arrival")
PREFILTER_METHODS = ("ewma", "mad")
DETECTORS = ("iforest", "pyod_iforest")
EVENT_TIME_SOURCES = ("payload", "broker")
OFFSET_RESETS = ("earliest", "latest")
ENGINE_MODES = ("per_element", "batched")


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
class DetectorConfig:
    """Per-key seasonal detector with anomaly-likelihood scores
    (:class:`streamsift.models.seasonal.SeasonalDetector`). Counts are in events of the key."""

    #: run the detector in the per-key stage (its score is ``StepResult.anomaly``).
    enabled: bool = True
    #: |z| at or above which a point is flagged and not learnt by its baselines.
    flag_z: float = 8.0
    #: consecutive flagged points after which a baseline accepts the new level.
    readapt_after: int = 12
    #: half-life (events) of the level baseline.
    level_half_life: float = 1000.0
    #: seasonal period (seconds of event time; 86400 = time of day, 604800 = time of week).
    season_period_s: float = 86400.0
    #: bins per period (each holds a baseline of its own).
    season_bins: int = 48
    #: half-life (visits of a bin) of the seasonal baselines.
    season_half_life: float = 7.0
    #: visits a bin needs before its baseline is scored.
    season_min_visits: int = 3
    #: raw scores in the likelihood's short-term mean.
    likelihood_window: int = 10
    #: half-life (events) of the likelihood's long-term distribution.
    likelihood_half_life: float = 500.0
    #: events before the detector scores anything above 0.
    warmup_events: int = 300
    #: a value beyond the key's seen range by this share of the range scores 1.0
    #: (after the warm-up); 0 disables.
    spatial_margin: float = 0.05
    #: score at which the detector counts as alerting (and starts its quiet period).
    alert_score: float = 0.5
    #: events after an alert during which the score stays below alert_score.
    suppress_events: int = 288
    #: once a key's detector is past its warm-up it decides what alerts: an event
    #: whose score >= alert_score is escalated and alerts (explained by the
    #: detector), stage 1 then escalates only event-rate deviations (see KeyLogic.step).
    #: false: stage 1 -> stage 2 -> adaptive thresholds decide throughout.
    escalate: bool = True

    def __post_init__(self) -> None:
        for name in ("enabled", "escalate"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"detector.{name}", "true or false", getattr(self, name))
        _positive("detector.flag_z", self.flag_z)
        _positive_int("detector.readapt_after", self.readapt_after, 1)
        _positive("detector.level_half_life", self.level_half_life)
        _positive("detector.season_period_s", self.season_period_s)
        _positive_int("detector.season_bins", self.season_bins, 1)
        if self.season_bins > 10080:
            _fail("detector.season_bins", "<= 10080", self.season_bins)
        _positive("detector.season_half_life", self.season_half_life)
        _positive_int("detector.season_min_visits", self.season_min_visits, 1)
        _positive_int("detector.likelihood_window", self.likelihood_window, 1)
        _positive("detector.likelihood_half_life", self.likelihood_half_life)
        _positive_int("detector.warmup_events", self.warmup_events, 1)
        _non_negative("detector.spatial_margin", self.spatial_margin)
        _open_unit("detector.alert_score", self.alert_score)
        _positive_int("detector.suppress_events", self.suppress_events, 0)


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
class SourceConfig:
    """Broker sources (Kafka, Pub/Sub): event time, watermark and stopping."""

    #: "payload": event time from ``input.time_field``; "broker": the Kafka record
    #: timestamp / the Pub/Sub timestamp attribute (else the publish time).
    event_time: str = "payload"
    #: the watermark trails the newest event time of the slowest active partition by this.
    watermark_lag_s: float = 0.0
    #: a partition without records for this many wall seconds does not hold the watermark.
    idle_partition_s: float = 10.0
    #: > 0: stop (drain, then end the run) after this many wall seconds without input.
    stop_when_idle_s: float = 0.0
    #: most records read per poll.
    max_batch: int = 500
    #: wall seconds a poll waits for records.
    poll_timeout_s: float = 0.2
    #: wall seconds to reach the broker at start before failing.
    connect_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        _one_of("source.event_time", self.event_time, EVENT_TIME_SOURCES)
        _non_negative("source.watermark_lag_s", self.watermark_lag_s)
        _positive("source.idle_partition_s", self.idle_partition_s)
        _non_negative("source.stop_when_idle_s", self.stop_when_idle_s)
        _positive_int("source.max_batch", self.max_batch, 1)
        _positive("source.poll_timeout_s", self.poll_timeout_s)
        _positive("source.connect_timeout_s", self.connect_timeout_s)


def _string_pairs(name: str, value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in value
    ):
        items = [tuple(p) for p in value]
    else:
        _fail(name, "a table of string keys and values", value)
    out = []
    for k, v in items:
        if not isinstance(k, str) or not k:
            _fail(f"{name} key", "a non-empty string", k)
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, (str, int, float)):
            _fail(f"{name}.{k}", "a string or number", type(v).__name__)
        out.append((k, str(v)))
    return tuple(sorted(out))


#: property names whose values are never shown (logs, printed config, reprs).
SECRET_MARKERS = ("password", "secret", "token", "key", "credential", "jaas")


def is_secret_property(name: str) -> bool:
    """True for a property whose value must never be shown.

    >>> [is_secret_property(n) for n in ("sasl.password", "ssl.key.location", "acks")]
    [True, True, False]
    """
    low = name.lower()
    return any(m in low for m in SECRET_MARKERS)


def redact_pairs(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Properties with secret values replaced by ``"***"``.

    >>> redact_pairs((("sasl.password", "hunter2"), ("security.protocol", "SASL_SSL")))
    {'sasl.password': '***', 'security.protocol': 'SASL_SSL'}
    """
    return {k: ("***" if is_secret_property(k) else v) for k, v in pairs}


@dataclass(frozen=True, repr=False)
class KafkaConfig:
    """``--source kafka`` and Kafka sinks."""

    bootstrap_servers: str = ""
    topics: tuple[str, ...] = ()
    group_id: str = "streamsift"
    #: where a new consumer group starts.
    auto_offset_reset: str = "earliest"
    #: passed to the client as-is (security.protocol, sasl.*, ssl.*, ...); secret
    #: values are never logged or printed.
    properties: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str):
            _fail(
                "kafka.bootstrap_servers", "a string host:port[,host:port]", self.bootstrap_servers
            )
        topics = self.topics
        if isinstance(topics, str):
            topics = tuple(t.strip() for t in topics.split(",") if t.strip())
        if not isinstance(topics, (list, tuple)):
            _fail("kafka.topics", "a list of topic names", topics)
        for t in topics:
            _nonempty_str("kafka.topics[]", t)
        object.__setattr__(self, "topics", tuple(topics))
        _nonempty_str("kafka.group_id", self.group_id)
        _one_of("kafka.auto_offset_reset", self.auto_offset_reset, OFFSET_RESETS)
        object.__setattr__(self, "properties", _string_pairs("kafka.properties", self.properties))

    def __repr__(self) -> str:
        return (
            f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, topics={self.topics!r}, "
            f"group_id={self.group_id!r}, auto_offset_reset={self.auto_offset_reset!r}, "
            f"properties={redact_pairs(self.properties)!r})"
        )


@dataclass(frozen=True)
class PubSubConfig:
    """``--source pubsub`` and Pub/Sub sinks."""

    project: str = ""
    #: read this subscription ...
    subscription: str = ""
    #: ... or create ``subscription`` (or ``streamsift-<topic>``) on this topic.
    topic: str = ""
    #: attribute with the event time (epoch ms or RFC 3339) for ``source.event_time = "broker"``;
    #: "" = the publish time.
    timestamp_attribute: str = ""
    #: ack deadline (seconds) requested for pulled messages; extended while pending.
    ack_deadline_s: int = 60

    def __post_init__(self) -> None:
        for name in ("project", "subscription", "topic", "timestamp_attribute"):
            if not isinstance(getattr(self, name), str):
                _fail(f"pubsub.{name}", "a string", getattr(self, name))
        _positive_int("pubsub.ack_deadline_s", self.ack_deadline_s, 10)
        if self.ack_deadline_s > 600:
            _fail("pubsub.ack_deadline_s", "<= 600", self.ack_deadline_s)


@dataclass(frozen=True)
class SinksConfig:
    """Where alerts, dead letters and late events go: ``file://PATH``,
    ``kafka://TOPIC``, ``pubsub://projects/P/topics/T`` or a Beam file system URL
    (``gs://BUCKET/PATH``, written with Beam's file IO); "" = a file in output.dir.

    >>> SinksConfig(alerts="gs://b/alerts.jsonl").alerts
    'gs://b/alerts.jsonl'
    >>> SinksConfig(late="late.jsonl")
    Traceback (most recent call last):
    ...
    streamsift.config.ConfigError: sinks.late must be file://PATH, kafka://TOPIC, pubsub://projects/P/topics/T or a Beam file system URL such as gs://BUCKET/PATH; got 'late.jsonl'
    """

    alerts: str = ""
    dead_letter: str = ""
    late: str = ""
    #: optional audit of every processed event id (key, event time): same URL forms.
    processed: str = ""

    def __post_init__(self) -> None:
        for name in ("alerts", "dead_letter", "late", "processed"):
            v = getattr(self, name)
            if not isinstance(v, str):
                _fail(f"sinks.{name}", "a string URL", v)
            scheme, sep, rest = v.partition("://")
            if v and (not sep or not rest or not scheme.replace("-", "").isalnum()):
                _fail(
                    f"sinks.{name}",
                    "file://PATH, kafka://TOPIC, pubsub://projects/P/topics/T or a Beam file "
                    "system URL such as gs://BUCKET/PATH",
                    v,
                )


@dataclass(frozen=True)
class EngineConfig:
    """How the detection stages run (both give the same alerts and counters)."""

    #: "per_element": one Beam element per event through Parse, DetectPerKey,
    #: RunInference and AlertPerKey; "batched": chunks of events, one stateful
    #: DoFn per shard, one model call per step (streamsift/transforms/batched.py).
    #: The default: same alerts and counters, several times the throughput.
    mode: str = "batched"
    #: batched: keys are spread over this many shards (stateful DoFn keys).
    shards: int = 4
    #: batched, sources without watermark hints: shard timers are rounded up to
    #: this many seconds of event time (fewer firings, at most this much later).
    release_quantum_s: float = 1.0

    def __post_init__(self) -> None:
        _one_of("engine.mode", self.mode, ENGINE_MODES)
        _positive_int("engine.shards", self.shards, 1)
        _non_negative("engine.release_quantum_s", self.release_quantum_s)


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
    source: SourceConfig = field(default_factory=SourceConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    pubsub: PubSubConfig = field(default_factory=PubSubConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every section as a plain dict, secret Kafka properties shown as ``"***"``
        (the dict is for printing and logging; clients read ``kafka.properties``).

        >>> c = Config(kafka=KafkaConfig(properties={"sasl.password": "hunter2", "acks": "all"}))
        >>> c.to_dict()["kafka"]["properties"]
        {'acks': 'all', 'sasl.password': '***'}
        """
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in fields(self)}
        out["kafka"]["properties"] = redact_pairs(self.kafka.properties)
        return out


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
        "source": SourceConfig,
        "kafka": KafkaConfig,
        "pubsub": PubSubConfig,
        "sinks": SinksConfig,
        "detector": DetectorConfig,
        "engine": EngineConfig,
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
