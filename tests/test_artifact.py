"""Training, versioned artifacts, manifest checks and calibration."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from streamsift.config import ModelConfig
from streamsift.models.artifact import (
    METADATA_FILE,
    MODEL_FILE,
    N_QUANTILES,
    ArtifactError,
    latest_artifact,
    load_artifact,
    save_artifact,
    train_model,
)

NAMES = ("cpu", "latency_ms", "errors")
PERIOD = (1_700_000_000.0, 1_700_086_400.0)
HORIZONS = (60.0, 900.0)


def _data(seed: int = 0, n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(NAMES)))


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(n_estimators=20, **kw)


def _train(detector: str = "pyod_iforest", seed: int = 42, data_seed: int = 0):
    return train_model(
        _data(data_seed), NAMES, _cfg(detector=detector, seed=seed), PERIOD, HORIZONS
    )


class _MkdirOnLoad:
    """Pickle payload that creates a directory when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _write_manifest(model_path: str, **changes) -> None:
    meta_path = os.path.join(os.path.dirname(model_path), METADATA_FILE)
    meta = json.loads(Path(meta_path).read_text())
    meta.update(changes)
    Path(meta_path).write_text(json.dumps(meta))


@pytest.mark.parametrize("detector", ["pyod_iforest", "iforest"])
def test_round_trip_scores_match(tmp_path, detector):
    trained = _train(detector)
    path = save_artifact(trained, str(tmp_path), created_at=123.0)
    loaded = load_artifact(path, expected_feature_names=NAMES)
    X = _data(seed=9, n=50)
    np.testing.assert_array_equal(loaded.score(X), trained.score(X))
    assert loaded.version == "v0001"
    assert loaded.feature_names == NAMES
    assert loaded.metadata["detector"] == detector
    cal = loaded.calibrated(X)
    assert cal.shape == (50,)
    assert np.all((cal >= 0.0) & (cal <= 1.0))


def test_higher_raw_score_means_more_anomalous(tmp_path):
    loaded = load_artifact(save_artifact(_train(), str(tmp_path), created_at=0.0))
    normal = np.zeros((1, len(NAMES)))
    outlier = np.full((1, len(NAMES)), 8.0)
    assert loaded.score(outlier)[0] > loaded.score(normal)[0]
    assert loaded.calibrated(outlier)[0] > 0.99 > loaded.calibrated(normal)[0]


def test_training_is_deterministic_for_a_seed():
    X = _data(seed=5, n=80)
    a, b = _train(seed=7), _train(seed=7)
    np.testing.assert_array_equal(a.score(X), b.score(X))
    assert a.score_quantiles == b.score_quantiles
    c = _train(seed=8)
    assert not np.array_equal(a.score(X), c.score(X))


def test_versions_increase_and_latest_is_newest(tmp_path):
    d = str(tmp_path)
    assert latest_artifact(d) is None
    first = save_artifact(_train(seed=1), d, created_at=1.0)
    second = save_artifact(_train(seed=2), d, created_at=2.0)
    assert first == os.path.join(d, "v0001", MODEL_FILE)
    assert second == os.path.join(d, "v0002", MODEL_FILE)
    assert latest_artifact(d) == second
    # nothing half-built is left where a watcher globbing */model.joblib could see it
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/model.joblib")) == [
        "v0001/model.joblib",
        "v0002/model.joblib",
    ]
    assert list((tmp_path / ".staging").iterdir()) == []
    assert load_artifact(second).version == "v0002"


def test_latest_artifact_skips_incomplete_version(tmp_path):
    d = str(tmp_path)
    first = save_artifact(_train(), d, created_at=1.0)
    (tmp_path / "v0002").mkdir()  # e.g. a directory created by hand, no files
    assert latest_artifact(d) == first


def test_metadata_fields(tmp_path):
    trained = _train()
    path = save_artifact(trained, str(tmp_path), created_at=1_700_100_000.0)
    meta = json.loads((Path(path).parent / METADATA_FILE).read_text())
    assert meta["version"] == "v0001"
    assert meta["created_at"] == 1_700_100_000.0
    assert meta["detector"] == "pyod_iforest"
    assert meta["feature_names"] == list(NAMES)
    assert meta["horizons_s"] == list(HORIZONS)
    assert meta["training_period"] == list(PERIOD)
    assert meta["n_train"] == 400
    assert meta["contamination"] == 0.01
    assert meta["n_estimators"] == 20
    assert meta["seed"] == 42
    assert set(meta["libraries"]) == {"python", "numpy", "sklearn", "pyod", "joblib"}
    assert all(isinstance(v, str) and v for v in meta["libraries"].values())
    q = meta["score_quantiles"]
    assert len(q) == N_QUANTILES
    assert q == sorted(q)
    train_scores = trained.score(_data(0))
    assert q[0] == pytest.approx(train_scores.min())
    assert q[-1] == pytest.approx(train_scores.max())
    assert meta["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_created_at_from_model_then_clock(tmp_path):
    trained = train_model(_data(), NAMES, _cfg(), PERIOD, HORIZONS, created_at=55.0)
    p1 = save_artifact(trained, str(tmp_path))
    assert load_artifact(p1).metadata["created_at"] == 55.0
    p2 = save_artifact(_train(), str(tmp_path), clock=lambda: 77.0)
    assert load_artifact(p2).metadata["created_at"] == 77.0


def test_tampered_bytes_are_rejected(tmp_path):
    path = save_artifact(_train(), str(tmp_path), created_at=0.0)
    blob = bytearray(Path(path).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(blob))
    manifest_sha = json.loads((Path(path).parent / METADATA_FILE).read_text())["sha256"]
    with pytest.raises(ArtifactError) as info:
        load_artifact(path)
    msg = str(info.value)
    assert msg.startswith(f"checksum mismatch for {path}: manifest sha256 {manifest_sha[:12]}..")
    assert hashlib.sha256(bytes(blob)).hexdigest()[:12] in msg


def test_malicious_pickle_is_never_unpickled(tmp_path):
    model_dir = tmp_path / "models"
    path = save_artifact(_train(), str(model_dir), created_at=0.0)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_MkdirOnLoad(str(marker)))
    Path(path).write_bytes(payload)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(path)
    assert not marker.exists()

    # a missing manifest is refused too, before any unpickling
    (Path(path).parent / METADATA_FILE).unlink()
    with pytest.raises(ArtifactError, match="manifest .* is missing"):
        load_artifact(path)
    assert not marker.exists()

    # control: the payload is live, so the checks above are what kept it inert
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_MkdirOnLoad(str(control))))
    assert control.is_dir()


def test_schema_is_checked_before_unpickling(tmp_path):
    path = save_artifact(_train(), str(tmp_path / "m"), created_at=0.0)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_MkdirOnLoad(str(marker)))
    Path(path).write_bytes(payload)
    # the manifest matches the payload, so only the schema check stands in the way
    _write_manifest(path, sha256=hashlib.sha256(payload).hexdigest())
    with pytest.raises(ArtifactError, match="feature schema mismatch"):
        load_artifact(path, expected_feature_names=("cpu", "latency_ms", "disk"))
    assert not marker.exists()


def test_schema_mismatch_names_missing_and_extra(tmp_path):
    path = save_artifact(_train(), str(tmp_path), created_at=0.0)
    with pytest.raises(ArtifactError) as info:
        load_artifact(path, expected_feature_names=("cpu", "latency_ms", "disk", "mem"))
    assert str(info.value) == (
        "feature schema mismatch: model expects ['cpu', 'latency_ms', 'errors'] but pipeline "
        "produces ['cpu', 'latency_ms', 'disk', 'mem']; missing: ['errors']; "
        "extra: ['disk', 'mem']"
    )


def test_schema_mismatch_names_order(tmp_path):
    path = save_artifact(_train(), str(tmp_path), created_at=0.0)
    with pytest.raises(ArtifactError) as info:
        load_artifact(path, expected_feature_names=("cpu", "errors", "latency_ms"))
    msg = str(info.value)
    assert "missing: []; extra: []" in msg
    assert msg.endswith("order differs at position 1 ('latency_ms' vs 'errors')")


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_unreadable_manifest_is_rejected(tmp_path, content, expected):
    path = save_artifact(_train(), str(tmp_path), created_at=0.0)
    (Path(path).parent / METADATA_FILE).write_text(content)
    with pytest.raises(ArtifactError, match=expected):
        load_artifact(path)


def test_manifest_missing_keys_are_named(tmp_path):
    path = save_artifact(_train(), str(tmp_path), created_at=0.0)
    meta_path = Path(path).parent / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    del meta["sha256"], meta["feature_names"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"lacks required keys \['feature_names', 'sha256'\]"):
        load_artifact(path)


def test_missing_model_file(tmp_path):
    path = save_artifact(_train(), str(tmp_path), created_at=0.0)
    os.remove(path)
    with pytest.raises(ArtifactError, match="model file .* is missing"):
        load_artifact(path)


def test_calibration_is_the_training_cdf(tmp_path):
    X = _data(0)
    loaded = load_artifact(save_artifact(_train(), str(tmp_path), created_at=0.0))
    cal = loaded.calibrated(X)
    for p in (0.1, 0.5, 0.9, 0.99):
        assert np.mean(cal <= p) == pytest.approx(p, abs=0.01)


def test_calibration_is_monotone_and_ordered_beyond_training_range(tmp_path):
    loaded = load_artifact(save_artifact(_train(), str(tmp_path), created_at=0.0))
    # rows spread well beyond the training data score above its range
    X = _data(seed=3, n=300) * 3.0
    raw, cal = loaded.score(X), loaded.calibrated(X)
    q = np.array(loaded.metadata["score_quantiles"])
    assert raw.max() > q[-1]
    assert np.all(np.diff(cal[np.argsort(raw)]) >= 0)
    assert np.all((cal >= 0.0) & (cal <= 1.0))
    # above the largest training score: strictly increasing towards 1
    scale = loaded.calibrator.scale
    beyond = q[-1] + scale * np.array([1e-3, 0.1, 1.0, 5.0, 20.0])
    tail = loaded.calibrator.calibrate_many(beyond)
    assert np.all(np.diff(tail) > 0)
    assert tail[0] > loaded.calibrator.calibrate_many(q[-1:])[0]
    assert 0.9999 < tail[-1] < 1.0


def test_score_validates_shape_and_values(tmp_path):
    loaded = load_artifact(save_artifact(_train(), str(tmp_path), created_at=0.0))
    with pytest.raises(ValueError, match="X must have 3 feature columns; got 2"):
        loaded.score(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"X must be a 2-D array .* got shape \(3,\)"):
        loaded.score(np.zeros(3))
    bad = np.zeros((2, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="X must be finite; got nan at row 1, column 2"):
        loaded.calibrated(bad)


def test_train_model_validates_inputs():
    X = _data()
    with pytest.raises(ValueError, match="feature_names must name every column"):
        train_model(X, NAMES[:2], _cfg(), PERIOD, HORIZONS)
    with pytest.raises(ValueError, match="distinct"):
        train_model(X, ("a", "a", "b"), _cfg(), PERIOD, HORIZONS)
    with pytest.raises(ValueError, match=r"training_period .* got \(2.0, 1.0\)"):
        train_model(X, NAMES, _cfg(), (2.0, 1.0), HORIZONS)
    with pytest.raises(ValueError, match="horizons_s must be finite and > 0"):
        train_model(X, NAMES, _cfg(), PERIOD, (0.0,))
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match="features must be finite; got inf at row 3, column 1"):
        train_model(X, NAMES, _cfg(), PERIOD, HORIZONS)


# --- artifacts on a non-local Beam file system (gs:// on Dataflow workers) ------------------
def test_remote_model_dir_lists_loads_and_verifies(tmp_path, memfs):
    from apache_beam.io.filesystems import FileSystems

    from streamsift.models.artifact import list_versions

    trained = _train()
    save_artifact(trained, str(tmp_path), created_at=1.0)
    save_artifact(_train(seed=7), str(tmp_path), created_at=2.0)
    os.makedirs(tmp_path / "v0003")  # incomplete: no files
    (tmp_path / "v0004").mkdir()
    (tmp_path / "v0004" / MODEL_FILE).write_bytes(b"no manifest")
    memfs.upload_tree(str(tmp_path), "memtest://bucket/models")
    url = "memtest://bucket/models"
    assert FileSystems.get_filesystem(url).scheme() == "memtest"
    assert list_versions(url) == ["v0001", "v0002", "v0004"]
    path = latest_artifact(url)
    assert path == "memtest://bucket/models/v0002/model.joblib"
    loaded = load_artifact(path, expected_feature_names=NAMES)
    assert loaded.version == "v0002"
    local = load_artifact(os.path.join(str(tmp_path), "v0002", MODEL_FILE))
    X = _data(3, 50)
    assert np.array_equal(loaded.score(X), local.score(X))
    assert latest_artifact("memtest://bucket/empty") is None


def test_remote_artifact_is_verified_before_unpickling(tmp_path, memfs):
    marker = tmp_path / "pwned"
    local_dir = tmp_path / "models"
    path = save_artifact(_train(), str(local_dir), created_at=1.0)
    Path(path).write_bytes(pickle.dumps(_MkdirOnLoad(str(marker))))
    memfs.upload_tree(str(local_dir), "memtest://b/m")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact("memtest://b/m/v0001/model.joblib")
    assert not marker.exists()
    del memfs.FILES["memtest://b/m/v0001/metadata.json"]
    with pytest.raises(ArtifactError, match="manifest .*metadata.json is missing"):
        load_artifact("memtest://b/m/v0001/model.joblib")
    with pytest.raises(ArtifactError, match="model file .* is missing"):
        save = save_artifact(_train(), str(tmp_path / "m2"), created_at=1.0)
        memfs.upload_tree(str(tmp_path / "m2"), "memtest://b/m2")
        del memfs.FILES["memtest://b/m2/v0001/model.joblib"]
        load_artifact("memtest://b/m2/v0001/model.joblib")
    assert os.path.exists(save)
