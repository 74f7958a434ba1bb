"""Stage-2 model: training, versioned artifacts with a manifest, and safe loading.

An artifact is one directory ``<model_dir>/<version>/`` holding ``model.joblib``
(the fitted estimator) and ``metadata.json`` (the manifest). Versions are
``v0001``, ``v0002``, ... so lexical order is age order. A version directory is
built under ``<model_dir>/.staging/`` and renamed into place, so a watcher
globbing ``<model_dir>/*/model.joblib`` never sees a half-written artifact.

A joblib file is a pickle: loading one runs code. :func:`load_artifact`
therefore checks the manifest (present, parseable, complete), the SHA-256 of the
model bytes and the feature schema *before* unpickling, and unpickles exactly
the bytes it hashed. The checksum protects against corruption, truncation and
mismatched files; it is not a signature (whoever can write the directory can
rewrite both files).

>>> import tempfile
>>> import numpy as np
>>> from streamsift.config import ModelConfig
>>> X = np.random.default_rng(0).normal(size=(300, 2))
>>> cfg = ModelConfig(n_estimators=10)
>>> trained = train_model(X, ["cpu", "latency"], cfg, (0.0, 3600.0), [60.0])
>>> with tempfile.TemporaryDirectory() as d:
...     path = save_artifact(trained, d, created_at=1700000000.0)
...     loaded = load_artifact(path, expected_feature_names=["cpu", "latency"])
...     print(loaded.version, bool(np.allclose(loaded.score(X), trained.score(X))))
v0001 True
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np

from streamsift.config import ModelConfig
from streamsift.models.thresholds import Calibrator

__all__ = [
    "ArtifactError",
    "LoadedModel",
    "MODEL_FILE",
    "METADATA_FILE",
    "N_QUANTILES",
    "TrainedModel",
    "latest_artifact",
    "list_versions",
    "load_artifact",
    "save_artifact",
    "train_model",
]

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
#: number of stored training-score quantiles (probabilities 0, 0.001, ..., 1)
N_QUANTILES = 1001
#: manifest format version
FORMAT_VERSION = 1
_STAGING = ".staging"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_REQUIRED_KEYS = (
    "format",
    "version",
    "created_at",
    "detector",
    "feature_names",
    "horizons_s",
    "training_period",
    "n_train",
    "contamination",
    "n_estimators",
    "seed",
    "libraries",
    "score_quantiles",
    "sha256",
)


class ArtifactError(RuntimeError):
    """A model artifact is missing, corrupt, or does not match the pipeline."""


# --------------------------------------------------------------------------- scoring


def _raw_scores(estimator: Any, detector: str, X: np.ndarray) -> np.ndarray:
    """Raw anomaly scores, higher = more anomalous."""
    if detector == "pyod_iforest":
        return np.asarray(estimator.decision_function(X), dtype=np.float64)
    return -np.asarray(estimator.score_samples(X), dtype=np.float64)


def _as_matrix(X: Any, n_features: int, name: str = "X") -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, features); got shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} feature columns; got {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite; got {arr[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]}"
        )
    return arr


# -------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainedModel:
    """A freshly fitted detector plus everything its manifest records.

    >>> X = np.random.default_rng(1).normal(size=(200, 3))
    >>> m = train_model(X, ["a", "b", "c"], ModelConfig(n_estimators=5), (0.0, 60.0), [60.0])
    >>> m.detector, m.n_train, len(m.score_quantiles), m.feature_names
    ('pyod_iforest', 200, 1001, ('a', 'b', 'c'))
    """

    estimator: Any
    detector: str
    feature_names: tuple[str, ...]
    horizons_s: tuple[float, ...]
    training_period: tuple[float, float]
    n_train: int
    contamination: float
    n_estimators: int
    seed: int
    score_quantiles: tuple[float, ...]
    #: epoch seconds; if None, :func:`save_artifact` takes it from its caller or clock
    created_at: float | None = None

    def score(self, X: np.ndarray) -> np.ndarray:
        """Raw anomaly scores (higher = more anomalous) for rows of ``X``."""
        arr = _as_matrix(X, len(self.feature_names))
        return _raw_scores(self.estimator, self.detector, arr)


def train_model(
    features: np.ndarray,
    feature_names: Sequence[str],
    cfg: ModelConfig,
    training_period: tuple[float, float],
    horizons_s: Sequence[float],
    created_at: float | None = None,
) -> TrainedModel:
    """Fit the configured isolation forest and record its training-score quantiles.

    ``cfg.detector`` picks PyOD ``IForest`` ("pyod_iforest") or scikit-learn
    ``IsolationForest`` ("iforest"); both are seeded with ``cfg.seed``.

    >>> X = np.random.default_rng(2).normal(size=(200, 2))
    >>> cfg = ModelConfig(detector="iforest", n_estimators=5, seed=3)
    >>> a = train_model(X, ["x", "y"], cfg, (0.0, 1.0), [60.0])
    >>> b = train_model(X, ["x", "y"], cfg, (0.0, 1.0), [60.0])
    >>> bool(np.array_equal(a.score(X), b.score(X)))
    True
    >>> train_model(X, ["x"], cfg, (0.0, 1.0), [60.0])
    Traceback (most recent call last):
    ...
    ValueError: feature_names must name every column (2); got 1 names: ['x']
    """
    names = tuple(feature_names)
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"features must be a 2-D array (rows, features); got shape {arr.shape}")
    if len(names) != arr.shape[1]:
        raise ValueError(
            f"feature_names must name every column ({arr.shape[1]}); "
            f"got {len(names)} names: {list(names)}"
        )
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"feature_names must be distinct non-empty strings; got {list(names)}")
    arr = _as_matrix(arr, len(names), "features")
    if arr.shape[0] < 2:
        raise ValueError(f"features must have >= 2 rows to train; got {arr.shape[0]}")
    start, end = (float(t) for t in training_period)
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(
            f"training_period must be finite [start, end] with start <= end; got {training_period}"
        )
    horizons = tuple(float(h) for h in horizons_s)
    if any(not math.isfinite(h) or h <= 0 for h in horizons):
        raise ValueError(f"horizons_s must be finite and > 0; got {list(horizons_s)}")

    if cfg.detector == "pyod_iforest":
        from pyod.models.iforest import IForest

        estimator = IForest(
            n_estimators=cfg.n_estimators,
            contamination=cfg.contamination,
            random_state=cfg.seed,
            n_jobs=1,
        )
    elif cfg.detector == "iforest":
        from sklearn.ensemble import IsolationForest

        estimator = IsolationForest(
            n_estimators=cfg.n_estimators,
            contamination=cfg.contamination,
            random_state=cfg.seed,
            n_jobs=1,
        )
    else:  # pragma: no cover - ModelConfig validates detector
        raise ValueError(
            f"model.detector must be one of ['iforest', 'pyod_iforest']; got {cfg.detector!r}"
        )
    estimator.fit(arr)
    train_scores = _raw_scores(estimator, cfg.detector, arr)
    quantiles = Calibrator.from_scores(train_scores, n_quantiles=N_QUANTILES).quantiles
    log.info(
        "trained %s on %d rows x %d features (%s)",
        cfg.detector,
        arr.shape[0],
        arr.shape[1],
        ", ".join(names),
    )
    return TrainedModel(
        estimator=estimator,
        detector=cfg.detector,
        feature_names=names,
        horizons_s=horizons,
        training_period=(start, end),
        n_train=int(arr.shape[0]),
        contamination=float(cfg.contamination),
        n_estimators=int(cfg.n_estimators),
        seed=int(cfg.seed),
        score_quantiles=tuple(float(v) for v in quantiles),
        created_at=created_at,
    )


# --------------------------------------------------------------------------- storage


def _library_versions() -> dict[str, str]:
    import sklearn

    try:
        import pyod

        pyod_version = str(pyod.__version__)
    except ImportError:  # pragma: no cover - pyod is a dependency
        pyod_version = "absent"
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "pyod": pyod_version,
        "joblib": joblib.__version__,
    }


def _is_local(path: str) -> bool:
    return "://" not in path


def _read_bytes(path: str) -> bytes:
    """The file's bytes, locally through ``open`` and elsewhere (``gs://``, ...) through
    Beam's ``FileSystems``; a missing file raises ``FileNotFoundError``."""
    if _is_local(path):
        with open(path, "rb") as f:
            return f.read()
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(path)
    with FileSystems.open(path) as f:
        return f.read()


def _join(base: str, *parts: str) -> str:
    if _is_local(base):
        return os.path.join(base, *parts)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(base, *parts)


def _dirname(path: str) -> str:
    if _is_local(path):
        return os.path.dirname(path)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.split(path)[0]


def _remote_version_files(model_dir: str) -> dict[str, set[str]]:
    """{version dir name: file names in it} under a non-local ``model_dir``."""
    from apache_beam.io.filesystems import FileSystems

    pattern = _join(model_dir, "*", "*")
    (result,) = FileSystems.match([pattern])
    prefix = _join(model_dir, "")
    out: dict[str, set[str]] = {}
    for meta in result.metadata_list:
        rel = meta.path[len(prefix) :] if meta.path.startswith(prefix) else ""
        name, _, file = rel.partition("/")
        if name and file and "/" not in file:
            out.setdefault(name, set()).add(file)
    return out


def _version_dirs(model_dir: str) -> list[tuple[int, str]]:
    if not _is_local(model_dir):
        names = list(_remote_version_files(model_dir))
        return sorted((int(m.group(1)), n) for n in names if (m := _VERSION_RE.match(n)))
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _VERSION_RE.match(name)
        if m and os.path.isdir(os.path.join(model_dir, name)):
            out.append((int(m.group(1)), name))
    return sorted(out)


def list_versions(model_dir: str) -> list[str]:
    """Version directory names in ``model_dir``, oldest first (local or any Beam
    file system, e.g. ``gs://``).

    >>> with tempfile.TemporaryDirectory() as d:
    ...     os.makedirs(os.path.join(d, "v0002")); os.makedirs(os.path.join(d, "v0001"))
    ...     print(list_versions(d))
    ['v0001', 'v0002']
    """
    return [name for _, name in _version_dirs(model_dir)]


def save_artifact(
    model: TrainedModel,
    model_dir: str,
    *,
    created_at: float | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """Write ``model`` as a new version directory under ``model_dir``; return its model path.

    ``created_at`` (epoch seconds) defaults to ``model.created_at``, then to
    ``clock()``. The version directory appears atomically (staged, then renamed).

    >>> X = np.random.default_rng(4).normal(size=(100, 2))
    >>> m = train_model(X, ["x", "y"], ModelConfig(n_estimators=3), (0.0, 1.0), [60.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     first = save_artifact(m, d, created_at=1.0)
    ...     second = save_artifact(m, d, created_at=2.0)
    ...     print(os.path.relpath(first, d), os.path.relpath(second, d))
    ...     print(sorted(os.listdir(os.path.dirname(second))))
    v0001/model.joblib v0002/model.joblib
    ['metadata.json', 'model.joblib']
    """
    if created_at is None:
        created_at = model.created_at if model.created_at is not None else float(clock())
    staging_root = os.path.join(model_dir, _STAGING)
    os.makedirs(staging_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="build-", dir=staging_root)
    os.chmod(tmp, 0o755)
    try:
        buf = io.BytesIO()
        joblib.dump(model.estimator, buf)
        blob = buf.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        with open(os.path.join(tmp, MODEL_FILE), "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        metadata: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "version": "",
            "created_at": float(created_at),
            "detector": model.detector,
            "feature_names": list(model.feature_names),
            "horizons_s": list(model.horizons_s),
            "training_period": list(model.training_period),
            "n_train": model.n_train,
            "contamination": model.contamination,
            "n_estimators": model.n_estimators,
            "seed": model.seed,
            "libraries": _library_versions(),
            "score_quantiles": list(model.score_quantiles),
            "sha256": digest,
        }
        existing = _version_dirs(model_dir)
        number = existing[-1][0] + 1 if existing else 1
        while True:
            version = f"v{number:04d}"
            metadata["version"] = version
            with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            final = os.path.join(model_dir, version)
            if os.path.exists(final):
                number += 1
                continue
            try:
                os.rename(tmp, final)
            except OSError:
                # another writer took this version between the check and the rename
                if os.path.isdir(final) and os.listdir(final):
                    number += 1
                    continue
                raise
            break
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    path = os.path.join(final, MODEL_FILE)
    log.info("saved model artifact %s (sha256 %s)", path, digest[:12])
    return path


def latest_artifact(model_dir: str) -> str | None:
    """Path of the newest complete artifact's ``model.joblib``, or None (local or any
    Beam file system, e.g. ``gs://``).

    >>> with tempfile.TemporaryDirectory() as d:
    ...     print(latest_artifact(d))
    None
    """
    if not _is_local(model_dir):
        files = _remote_version_files(model_dir)
        for _, name in reversed(_version_dirs(model_dir)):
            if {MODEL_FILE, METADATA_FILE} <= files[name]:
                return _join(model_dir, name, MODEL_FILE)
        return None
    for _, name in reversed(_version_dirs(model_dir)):
        base = os.path.join(model_dir, name)
        model_path = os.path.join(base, MODEL_FILE)
        if os.path.isfile(model_path) and os.path.isfile(os.path.join(base, METADATA_FILE)):
            return model_path
    return None


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A verified, unpickled model with its manifest and calibrator.

    ``calibrator`` is a :class:`streamsift.models.thresholds.Calibrator` built
    from the manifest's ``score_quantiles``.

    >>> X = np.random.default_rng(5).normal(size=(200, 2))
    >>> m = train_model(X, ["x", "y"], ModelConfig(n_estimators=5), (0.0, 1.0), [60.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     loaded = load_artifact(save_artifact(m, d, created_at=0.0))
    >>> c = loaded.calibrated(np.array([[0.0, 0.0], [8.0, -8.0]]))
    >>> bool(0.0 <= c[0] < c[1] <= 1.0)
    True
    """

    model: Any
    metadata: dict[str, Any]
    version: str
    calibrator: Any = field(repr=False)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["feature_names"])

    def score(self, X: np.ndarray) -> np.ndarray:
        """Raw anomaly scores (higher = more anomalous), one per row of ``X``."""
        arr = _as_matrix(X, len(self.metadata["feature_names"]))
        return _raw_scores(self.model, self.metadata["detector"], arr)

    def calibrated(self, X: np.ndarray) -> np.ndarray:
        """Scores mapped through the training-score CDF into [0, 1]."""
        return np.asarray(self.calibrator.calibrate_many(self.score(X)), dtype=np.float64)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _short(digest: str) -> str:
    return f"{digest[:12]}.." if len(digest) > 12 else digest


def _schema_diff(expected: Sequence[str], actual: Sequence[str]) -> str:
    exp, act = list(expected), list(actual)
    missing = [n for n in act if n not in exp]
    extra = [n for n in exp if n not in act]
    parts = [f"feature schema mismatch: model expects {act} but pipeline produces {exp}"]
    parts.append(f"missing: {missing}")
    parts.append(f"extra: {extra}")
    if not missing and not extra:
        pos = next(i for i, (a, b) in enumerate(zip(act, exp, strict=True)) if a != b)
        parts.append(f"order differs at position {pos} ({act[pos]!r} vs {exp[pos]!r})")
    return "; ".join(parts)


def _read_manifest(model_path: str) -> dict[str, Any]:
    meta_path = _join(_dirname(model_path), METADATA_FILE)
    try:
        text = _read_bytes(meta_path).decode("utf-8")
    except FileNotFoundError:
        raise ArtifactError(
            f"manifest {meta_path} is missing; refusing to load {model_path}"
        ) from None
    except OSError as exc:
        raise ArtifactError(f"manifest {meta_path} cannot be read: {exc.strerror}") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"manifest {meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(
            f"manifest {meta_path} must be a JSON object; got {type(meta).__name__}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise ArtifactError(f"manifest {meta_path} lacks required keys {missing}")
    if meta["format"] != FORMAT_VERSION:
        raise ArtifactError(
            f"manifest {meta_path} format must be {FORMAT_VERSION}; got {meta['format']!r}"
        )
    if meta["detector"] not in ("iforest", "pyod_iforest"):
        raise ArtifactError(
            f"manifest {meta_path} detector must be 'iforest' or 'pyod_iforest'; "
            f"got {meta['detector']!r}"
        )
    names = meta["feature_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ArtifactError(
            f"manifest {meta_path} feature_names must be a non-empty list of strings; got {names!r}"
        )
    q = meta["score_quantiles"]
    if not isinstance(q, list) or len(q) != N_QUANTILES:
        got = len(q) if isinstance(q, list) else type(q).__name__
        raise ArtifactError(
            f"manifest {meta_path} score_quantiles must be a list of {N_QUANTILES} numbers; got {got}"
        )
    if not isinstance(meta["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", meta["sha256"]):
        raise ArtifactError(
            f"manifest {meta_path} sha256 must be 64 lowercase hex digits; got {meta['sha256']!r}"
        )
    return meta


def load_artifact(
    model_path: str, expected_feature_names: Sequence[str] | None = None
) -> LoadedModel:
    """Verify an artifact's manifest, checksum and feature schema, then unpickle it.

    Nothing is unpickled unless every check passes, and the bytes unpickled are
    exactly the bytes whose checksum was verified.

    >>> X = np.random.default_rng(6).normal(size=(100, 2))
    >>> m = train_model(X, ["x", "y"], ModelConfig(n_estimators=3), (0.0, 1.0), [60.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_artifact(m, d, created_at=0.0)
    ...     load_artifact(p, expected_feature_names=["y", "x"])
    Traceback (most recent call last):
    ...
    streamsift.models.artifact.ArtifactError: feature schema mismatch: model expects ['x', 'y'] but pipeline produces ['y', 'x']; missing: []; extra: []; order differs at position 0 ('x' vs 'y')
    """
    meta = _read_manifest(model_path)
    try:
        blob = _read_bytes(model_path)
    except FileNotFoundError:
        raise ArtifactError(f"model file {model_path} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"model file {model_path} cannot be read: {exc.strerror}") from exc
    actual = _sha256_hex(blob)
    if actual != meta["sha256"]:
        raise ArtifactError(
            f"checksum mismatch for {model_path}: manifest sha256 {_short(meta['sha256'])} "
            f"but file has {_short(actual)}; refusing to unpickle"
        )
    if expected_feature_names is not None:
        expected = [str(n) for n in expected_feature_names]
        if expected != meta["feature_names"]:
            raise ArtifactError(_schema_diff(expected, meta["feature_names"]))
    try:
        calibrator = Calibrator(meta["score_quantiles"])
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"manifest of {model_path} has bad score_quantiles: {exc}") from exc
    libs = meta.get("libraries") or {}
    here = _library_versions()
    drift = {k: (libs.get(k), v) for k, v in here.items() if libs.get(k) != v}
    if drift:
        log.warning(
            "artifact %s was written with different library versions: %s", model_path, drift
        )
    model = joblib.load(io.BytesIO(blob))
    version = str(meta["version"])
    log.info("loaded model %s from %s", version, model_path)
    return LoadedModel(model=model, metadata=meta, version=version, calibrator=calibrator)
