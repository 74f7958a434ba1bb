import dataclasses

import pytest

from streamsift.config import (
    Config,
    ConfigError,
    EventTimeConfig,
    FeatureConfig,
    InputConfig,
    ModelConfig,
    ThresholdConfig,
    apply_overrides,
    load_config,
)


def test_defaults_are_valid_and_frozen():
    cfg = Config()
    assert cfg.event_time.ordering == "event_time"
    assert cfg.features.horizons_s == (60.0, 900.0, 3600.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.input.key_field = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ThresholdConfig(quantile=1.5), "thresholds.quantile must be in (0, 1); got 1.5"),
        (
            lambda: EventTimeConfig(allowed_lateness_s=-1),
            "event_time.allowed_lateness_s must be >= 0; got -1",
        ),
        (
            lambda: EventTimeConfig(ordering="random"),
            "event_time.ordering must be one of ['event_time', 'arrival']; got 'random'",
        ),
        (
            lambda: FeatureConfig(horizons_s=(900, 60)),
            "features.horizons_s must be strictly increasing; got [900.0, 60.0]",
        ),
        (
            lambda: InputConfig(feature_fields=()),
            "input.feature_fields must be a non-empty list; got []",
        ),
        (
            lambda: InputConfig(feature_fields=("a", "a")),
            "input.feature_fields must be free of duplicates",
        ),
        (
            lambda: ModelConfig(contamination=0.9),
            "model.contamination must be in (0, 0.5]; got 0.9",
        ),
        (
            lambda: ModelConfig(min_batch_size=10, max_batch_size=5),
            "model.max_batch_size must be >= model.min_batch_size (10); got 5",
        ),
        (
            lambda: ThresholdConfig(min_score=0.99, warning=0.5),
            "thresholds.warning/critical must be ordered",
        ),
    ],
)
def test_bad_values_name_field_bound_and_value(build, message):
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_nan_and_bool_are_rejected():
    with pytest.raises(ConfigError, match="event_time.idle_ttl_s must be finite; got nan"):
        EventTimeConfig(idle_ttl_s=float("nan"))
    with pytest.raises(ConfigError, match="model.n_estimators must be an integer; got True"):
        ModelConfig(n_estimators=True)


def test_load_toml_and_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        """
[input]
key_field = "host"
time_field = "time"
feature_fields = ["a", "b"]

[event_time]
allowed_lateness_s = 5
ordering = "arrival"

[thresholds]
min_score = 0.8
"""
    )
    cfg = load_config(path)
    assert cfg.input.key_field == "host"
    assert cfg.input.feature_fields == ("a", "b")
    assert cfg.event_time.ordering == "arrival"
    assert cfg.thresholds.min_score == 0.8
    cfg2 = apply_overrides(
        cfg, {"event_time.ordering": "event_time", "synthetic.events": 10, "x.y": None}
    )
    assert cfg2.event_time.ordering == "event_time"
    assert cfg2.synthetic.events == 10
    assert cfg2.input.key_field == "host"  # untouched


def test_unknown_keys_and_sections_fail(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[thresholds]\nquantil = 0.5\n")
    with pytest.raises(
        ConfigError, match=r"thresholds.quantil must be a known key of \[thresholds\]"
    ):
        load_config(path)
    path.write_text("[nope]\na = 1\n")
    with pytest.raises(ConfigError, match="config section must be one of"):
        load_config(path)


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[input\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.toml")


def test_value_in_toml_is_validated(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[features]\nhorizons_s = [60, -5]\n")
    with pytest.raises(ConfigError, match=r"features.horizons_s\[\] must be > 0; got -5.0"):
        load_config(path)
