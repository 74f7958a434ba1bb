"""Stage 2 on Beam: a RunInference model handler for streamsift artifacts.

:class:`StreamsiftModelHandler` loads a verified artifact (manifest, checksum
and feature schema are checked before unpickling, see
:mod:`streamsift.models.artifact`) and scores a whole batch with one vectorised
call. :class:`ScoreEscalated` wraps it for :class:`~streamsift.records.Scored`
records.

Model refresh without a restart comes in two modes:

``"poll"`` (default, works on every runner, including the in-process
``BundleBasedDirectRunner``)
    The handler itself looks for a newer artifact in the model directory at
    most once every ``watch_interval_s`` seconds, from inside
    ``run_inference``. The logic is :class:`ModelRefresher` (pure python, the
    time is passed in) over a :class:`ModelRefreshState`; :class:`LiveModel`
    makes it thread-safe and is the object RunInference shares between DoFn
    instances, so one swap is seen by every thread of the worker.

``"side_input"``
    New artifacts arrive as a RunInference model side input, from Beam's
    ``WatchFilePattern`` or from any PCollection of ``ModelMetadata``. Needs a
    runner that can run the splittable ``Watch`` transform (Prism, Flink,
    Dataflow) for ``watch_pattern``.

>>> h = StreamsiftModelHandler("m/v0001/model.joblib", ["cpu"], max_batch_size=64)
>>> h.batch_elements_kwargs()
{'min_batch_size': 1, 'max_batch_size': 64}
>>> h.get_metrics_namespace()
'streamsift'
>>> h.model_dir, h.watch_interval_s
('m', 0.0)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from streamsift.config import ModelConfig
from streamsift.models.artifact import (
    METADATA_FILE,
    ArtifactError,
    LoadedModel,
    latest_artifact,
    load_artifact,
)
from streamsift.records import Scored

__all__ = [
    "METRICS_NAMESPACE",
    "WATCH_MODES",
    "LiveModel",
    "ModelRefreshState",
    "ModelRefresher",
    "RefreshOutcome",
    "ScoreEscalated",
    "StreamsiftModelHandler",
    "clear_model_cache",
]

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "streamsift"
WATCH_MODES = ("poll", "side_input")

#: (model path, model mtime_ns, model size, manifest mtime_ns, manifest size)
Fingerprint = tuple[str, int, int, int, int]

# Artifacts rejected in this process, per feature schema: a LiveModel rebuilt
# after eviction does not hash, log and count a known-bad file again.
_PROCESS_REJECTED: dict[tuple[str, ...], set[Fingerprint]] = {}
_PROCESS_REJECTED_LOCK = threading.Lock()

# Live models of this process, most recently used last. RunInference shares its
# model through ``shared.Shared``, but its own per-setup ``load_model_status``
# acquire displaces the keep-alive reference, so on runners that set up and tear
# down a DoFn per bundle (BundleBasedDirectRunner) the model would be reloaded
# for every bundle and a refreshed model would be forgotten. This cache keeps it.
_LIVE_MODELS: OrderedDict[tuple[Any, ...], LiveModel] = OrderedDict()
_LIVE_MODELS_LOCK = threading.Lock()
#: live models kept per process (one per distinct handler configuration)
LIVE_MODEL_CACHE_SIZE = 4


def _rejected_registry(feature_names: tuple[str, ...]) -> set[Fingerprint]:
    with _PROCESS_REJECTED_LOCK:
        return _PROCESS_REJECTED.setdefault(feature_names, set())


def clear_model_cache() -> int:
    """Forget the live models and rejected artifacts of this process; return how many
    live models were dropped. The next ``load_model`` starts afresh, as in a new worker.

    >>> clear_model_cache() >= 0
    True
    """
    with _LIVE_MODELS_LOCK:
        n = len(_LIVE_MODELS)
        _LIVE_MODELS.clear()
    with _PROCESS_REJECTED_LOCK:
        _PROCESS_REJECTED.clear()
    return n


def _fingerprint(model_path: str) -> Fingerprint | None:
    """Identity of an artifact's files on disk; None if either cannot be stat'ed."""
    try:
        m = os.stat(model_path)
        j = os.stat(os.path.join(os.path.dirname(model_path), METADATA_FILE))
    except OSError:
        return None
    return (model_path, m.st_mtime_ns, m.st_size, j.st_mtime_ns, j.st_size)


def _default_model_dir(model_path: str) -> str:
    """``<model_dir>/<version>/model.joblib`` -> ``<model_dir>``."""
    return os.path.dirname(os.path.dirname(model_path)) or "."


def _check_interval(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return float(value)


# ----------------------------------------------------------------- refresh logic


@dataclass
class ModelRefreshState:
    """What one live model serves and what its refresh checks have seen.

    ``model``/``path``/``fingerprint`` describe the artifact being served;
    ``last_check`` is the clock reading of the last directory check (None:
    never); ``rejected`` holds fingerprints of artifacts that failed to load,
    which are not tried again until their files change.

    >>> s = ModelRefreshState()
    >>> s.model is None, s.last_check, s.rejected
    (True, None, set())
    """

    model: LoadedModel | None = None
    path: str | None = None
    fingerprint: Fingerprint | None = None
    last_check: float | None = None
    rejected: set[Fingerprint] = field(default_factory=set)

    @property
    def version(self) -> str | None:
        return None if self.model is None else self.model.version


@dataclass(frozen=True)
class RefreshOutcome:
    """Result of one directory check by :meth:`ModelRefresher.check`.

    ``kind`` is one of ``"absent"`` (no complete artifact in the directory, or
    it cannot be listed), ``"unchanged"`` (the newest artifact is the one being
    served), ``"known_bad"`` (the newest artifact was rejected before and has
    not changed since), ``"loaded"`` (first model of a state with none),
    ``"refreshed"`` (a different artifact verified and loaded) or
    ``"rejected"`` (a different artifact failed verification or loading).

    >>> RefreshOutcome("unchanged", "m/v0001/model.joblib").swapped
    False
    """

    kind: str
    path: str | None = None
    fingerprint: Fingerprint | None = None
    model: LoadedModel | None = field(default=None, repr=False)
    error: str | None = None

    @property
    def swapped(self) -> bool:
        """True if applying this outcome replaces the model being served."""
        return self.kind in ("loaded", "refreshed")


class ModelRefresher:
    """Decides when to look for a newer artifact and loads it; state is passed in.

    ``due`` is true once at least ``interval_s`` has passed since the last
    check (``interval_s == 0`` means never). ``check`` looks up the newest
    complete artifact in ``model_dir`` (:func:`latest_artifact`) and, if its
    files differ from the ones being served and were not rejected before,
    loads it with :func:`load_artifact` (manifest, checksum and feature schema
    verified before unpickling). ``check`` does not change the state;
    ``apply`` does, and logs swaps and rejections. A "different" artifact can
    also be an older version, e.g. after the newest one was deleted.

    >>> import tempfile
    >>> from streamsift.models.artifact import save_artifact, train_model
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> m = train_model(X, ["x", "y"], ModelConfig(n_estimators=3), (0.0, 1.0), [60.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     refresher = ModelRefresher(d, ["x", "y"], interval_s=30.0)
    ...     state = ModelRefreshState()
    ...     print(refresher.check(state).kind)
    ...     _ = save_artifact(m, d, created_at=0.0)
    ...     refresher.apply(state, refresher.check(state), now=0.0)
    ...     _ = save_artifact(m, d, created_at=1.0)
    ...     print(state.version, refresher.due(state, 29.0), refresher.due(state, 30.0))
    ...     outcome = refresher.check(state)
    ...     refresher.apply(state, outcome, now=30.0)
    ...     print(outcome.kind, state.version, refresher.check(state).kind)
    absent
    v0001 False True
    refreshed v0002 unchanged
    """

    def __init__(self, model_dir: str, feature_names: Sequence[str], interval_s: float) -> None:
        if not isinstance(model_dir, str) or not model_dir:
            raise ValueError(f"model_dir must be a non-empty string; got {model_dir!r}")
        names = tuple(feature_names)
        if not names:
            raise ValueError(f"feature_names must be non-empty; got {list(names)}")
        self.model_dir = model_dir
        self.feature_names = names
        self.interval_s = _check_interval("watch_interval_s", interval_s)

    def due(self, state: ModelRefreshState, now: float) -> bool:
        """True if a directory check is due at clock reading ``now``."""
        if self.interval_s <= 0:
            return False
        return state.last_check is None or now - state.last_check >= self.interval_s

    def check(self, state: ModelRefreshState) -> RefreshOutcome:
        """Look for a different artifact than ``state``'s and try to load it."""
        try:
            path = latest_artifact(self.model_dir)
        except OSError as exc:
            return RefreshOutcome("absent", error=f"cannot list {self.model_dir}: {exc}")
        if path is None:
            return RefreshOutcome("absent")
        fp = _fingerprint(path)
        if fp is not None and state.model is not None and fp == state.fingerprint:
            return RefreshOutcome("unchanged", path, fp)
        if fp is not None and fp in state.rejected:
            return RefreshOutcome("known_bad", path, fp)
        kind = "loaded" if state.model is None else "refreshed"
        try:
            model = load_artifact(path, expected_feature_names=self.feature_names)
        except Exception as exc:  # any failure keeps the current model
            return RefreshOutcome("rejected", path, fp, error=f"{type(exc).__name__}: {exc}")
        return RefreshOutcome(kind, path, fp, model=model)

    def apply(self, state: ModelRefreshState, outcome: RefreshOutcome, now: float) -> None:
        """Record ``outcome`` (checked at clock reading ``now``) in ``state``."""
        state.last_check = now
        if outcome.swapped:
            previous = state.version
            state.model = outcome.model
            state.path = outcome.path
            state.fingerprint = outcome.fingerprint
            if outcome.kind == "refreshed":
                log.info(
                    "model refreshed: now serving %s from %s (was %s)",
                    state.version,
                    outcome.path,
                    previous,
                )
        elif outcome.kind == "rejected":
            if outcome.fingerprint is not None:
                state.rejected.add(outcome.fingerprint)
            serving = state.version or "the configured artifact"
            log.error(
                "rejected model artifact %s (%s); serving %s instead",
                outcome.path,
                outcome.error,
                serving,
            )
        elif outcome.kind == "absent" and outcome.error:
            log.warning("model refresh check failed: %s", outcome.error)


class LiveModel:
    """A thread-safe, swappable model: the object RunInference shares across threads.

    :meth:`poll` returns the model to score the next batch with, after a
    directory check if one is due. Only one thread checks at a time (others
    keep scoring with the current model meanwhile), and reads and swaps of the
    served model are done under a lock, so a batch is always scored and
    labelled by one and the same model.

    >>> import tempfile
    >>> from streamsift.models.artifact import save_artifact, train_model
    >>> X = np.random.default_rng(1).normal(size=(100, 2))
    >>> m = train_model(X, ["x", "y"], ModelConfig(n_estimators=3), (0.0, 1.0), [60.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save_artifact(m, d, created_at=0.0)
    ...     refresher = ModelRefresher(d, ["x", "y"], interval_s=10.0)
    ...     state = ModelRefreshState()
    ...     refresher.apply(state, refresher.check(state), now=0.0)
    ...     live = LiveModel(refresher, state)
    ...     _ = save_artifact(m, d, created_at=1.0)
    ...     early, _ = live.poll(5.0)
    ...     late, outcomes = live.poll(12.0)
    ...     print(early.version, late.version, [o.kind for o in outcomes])
    v0001 v0002 ['refreshed']
    """

    def __init__(
        self,
        refresher: ModelRefresher,
        state: ModelRefreshState,
        pending: Sequence[RefreshOutcome] = (),
    ) -> None:
        if state.model is None:
            raise ValueError("state.model must be a loaded model; got None")
        self._refresher = refresher
        self._state = state
        self._pending = list(pending)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    @property
    def current(self) -> LoadedModel:
        with self._lock:
            return self._state.model

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def path(self) -> str | None:
        with self._lock:
            return self._state.path

    @property
    def fingerprint(self) -> Fingerprint | None:
        with self._lock:
            return self._state.fingerprint

    def poll(self, now: float) -> tuple[LoadedModel, list[RefreshOutcome]]:
        """The model for the next batch, and outcomes not yet reported.

        Outcomes are reported once: those of checks made by this call, plus
        any recorded when this live model was built.
        """
        with self._lock:
            outcomes, self._pending = self._pending, []
            model = self._state.model
            due = self._refresher.due(self._state, now)
            if due:
                self._state.last_check = now  # claim this check
        if not due or not self._refresh_lock.acquire(blocking=False):
            return model, outcomes
        try:
            # fingerprint and rejected only change under _refresh_lock
            outcome = self._refresher.check(self._state)
            with self._lock:
                self._refresher.apply(self._state, outcome, now)
                model = self._state.model
        finally:
            self._refresh_lock.release()
        outcomes.append(outcome)
        return model, outcomes

    def __repr__(self) -> str:
        return f"LiveModel({self.version!r}, {self.path!r})"


# -------------------------------------------------------------------- the handler


class StreamsiftModelHandler(ModelHandler[np.ndarray, PredictionResult, LiveModel]):
    """RunInference handler: feature vectors in, calibrated stage-2 scores out.

    ``run_inference`` stacks the batch into one 2-D array and calls
    :meth:`LoadedModel.calibrated` once; each :class:`PredictionResult` carries
    the calibrated score (a float in [0, 1]) and the artifact version as
    ``model_id``.

    ``load_model`` returns a :class:`LiveModel`. With ``watch_interval_s > 0``
    (poll mode) it starts from the newest artifact in ``model_dir`` that
    verifies (falling back to ``model_path``), and ``run_inference`` checks
    ``model_dir`` again whenever ``watch_interval_s`` has passed on ``clock``
    since the last check. A different artifact is verified and loaded, and
    the batch being scored and all later ones use it; the swap is counted in
    ``streamsift/model_refreshed``. An artifact that fails verification is
    logged once and counted once in ``streamsift/model_rejected``, and the
    current model keeps scoring. ``model_dir`` defaults to the grandparent of
    ``model_path`` (``<model_dir>/<version>/model.joblib``).

    The live model is kept per process and configuration and handed to every
    DoFn instance (and every handler copy) that loads it, so it is loaded once
    per process, not once per DoFn set-up; handlers of one configuration
    should therefore share a time base (``clock``). Without polling, a kept
    model is reused only while its files are unchanged.

    When RunInference hands over a new artifact path (side-input refresh) and
    that artifact fails verification, the handler keeps serving the last model
    it loaded successfully (or, in a fresh worker, the artifact it was built
    with), logs the reason and counts it in ``streamsift/model_rejected``. A
    failure of the artifact it was built with is not masked.

    >>> h = StreamsiftModelHandler("m/v0001/model.joblib", ["cpu", "errors"])
    >>> h.update_model_path("m/v0002/model.joblib")
    >>> h.model_path
    'm/v0002/model.joblib'
    >>> h.update_model_path("")  # WatchFilePattern's "nothing newer" marker
    >>> h.model_path
    'm/v0002/model.joblib'
    >>> StreamsiftModelHandler("p", ["cpu"], watch_interval_s=-1)
    Traceback (most recent call last):
    ...
    ValueError: watch_interval_s must be a finite number >= 0; got -1
    """

    def __init__(
        self,
        model_path: str,
        feature_names: Sequence[str],
        *,
        min_batch_size: int = 1,
        max_batch_size: int = 256,
        model_dir: str | None = None,
        watch_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(model_path, str) or not model_path:
            raise ValueError(f"model_path must be a non-empty string; got {model_path!r}")
        names = tuple(feature_names)
        if not names:
            raise ValueError(f"feature_names must be non-empty; got {list(names)}")
        if min_batch_size < 1:
            raise ValueError(f"min_batch_size must be >= 1; got {min_batch_size}")
        if max_batch_size < min_batch_size:
            raise ValueError(
                f"max_batch_size must be >= min_batch_size ({min_batch_size}); got {max_batch_size}"
            )
        if model_dir is not None and (not isinstance(model_dir, str) or not model_dir):
            raise ValueError(f"model_dir must be a non-empty string or None; got {model_dir!r}")
        interval = _check_interval("watch_interval_s", watch_interval_s)
        if not callable(clock):
            raise ValueError(f"clock must be callable; got {clock!r}")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._model_path = model_path
        self._initial_path = model_path
        self._feature_names = names
        self._min_batch_size = min_batch_size
        self._max_batch_size = max_batch_size
        self._model_dir = model_dir if model_dir is not None else _default_model_dir(model_path)
        self._watch_interval_s = interval
        self._clock = clock
        self._last_good: tuple[LoadedModel, str] | None = None

    @classmethod
    def from_config(
        cls,
        model_path: str,
        feature_names: Sequence[str],
        cfg: ModelConfig,
        *,
        model_dir: str | None = None,
        watch_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> StreamsiftModelHandler:
        """Handler with the batch sizes (and, unless given, the watch interval) of ``cfg``.

        >>> cfg = ModelConfig(max_batch_size=8, watch_interval_s=30.0)
        >>> h = StreamsiftModelHandler.from_config("m/v0001/model.joblib", ["a"], cfg)
        >>> h.batch_elements_kwargs()["max_batch_size"], h.watch_interval_s, h.model_dir
        (8, 30.0, 'm')
        """
        return cls(
            model_path,
            feature_names,
            min_batch_size=cfg.min_batch_size,
            max_batch_size=cfg.max_batch_size,
            model_dir=model_dir,
            watch_interval_s=cfg.watch_interval_s if watch_interval_s is None else watch_interval_s,
            clock=clock,
        )

    @property
    def model_path(self) -> str:
        return self._model_path

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    @property
    def model_dir(self) -> str:
        return self._model_dir

    @property
    def watch_interval_s(self) -> float:
        return self._watch_interval_s

    def _load_requested(self) -> tuple[LoadedModel, str]:
        """The artifact at ``model_path`` and its path, with the side-input fallback rules."""
        try:
            model = load_artifact(self._model_path, expected_feature_names=self._feature_names)
        except ArtifactError as exc:
            if self._model_path == self._initial_path:
                raise
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "model_rejected").inc()
            if self._last_good is None:
                self._last_good = (
                    load_artifact(self._initial_path, expected_feature_names=self._feature_names),
                    self._initial_path,
                )
            log.error(
                "rejected model artifact %s (%s); serving %s instead",
                self._model_path,
                exc,
                self._last_good[0].version,
            )
            return self._last_good
        self._last_good = (model, self._model_path)
        return self._last_good

    def load_model(self) -> LiveModel:
        # One live model per configuration and process, reused by every DoFn
        # instance (see _LIVE_MODELS). Without polling, a cached model is only
        # reused while the files it was loaded from are unchanged.
        key = (self._model_dir, self._feature_names, self._model_path, self._watch_interval_s)
        with _LIVE_MODELS_LOCK:
            live = _LIVE_MODELS.get(key)
            if live is not None and (
                self._watch_interval_s > 0 or live.fingerprint == _fingerprint(self._model_path)
            ):
                _LIVE_MODELS.move_to_end(key)
                return live
            # built under the lock: concurrent DoFn set-ups load an artifact once
            live = self._build_live_model()
            if live.path == self._model_path or self._watch_interval_s > 0:
                _LIVE_MODELS[key] = live
                _LIVE_MODELS.move_to_end(key)
                while len(_LIVE_MODELS) > LIVE_MODEL_CACHE_SIZE:
                    _LIVE_MODELS.popitem(last=False)
        return live

    def _build_live_model(self) -> LiveModel:
        refresher = ModelRefresher(self._model_dir, self._feature_names, self._watch_interval_s)
        state = ModelRefreshState(rejected=_rejected_registry(self._feature_names))
        pending: list[RefreshOutcome] = []
        if self._watch_interval_s > 0:
            # start from the newest good artifact: a worker that (re)builds
            # its model after a refresh must not go back to an older one
            outcome = refresher.check(state)
            if outcome.kind == "rejected" and outcome.path == self._model_path:
                self._load_requested()  # the configured artifact is bad: raise its error
            refresher.apply(state, outcome, now=self._clock())
            if outcome.kind == "rejected":
                pending.append(outcome)
        if state.model is None:
            fingerprint = _fingerprint(self._model_path)
            state.model, state.path = self._load_requested()
            if state.path != self._model_path:  # side-input fallback
                fingerprint = _fingerprint(state.path)
            state.fingerprint = fingerprint
        state.last_check = self._clock()
        return LiveModel(refresher, state, pending)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: LiveModel | LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        if isinstance(model, LiveModel):
            current, outcomes = model.poll(self._clock())
            for outcome in outcomes:
                if outcome.kind == "refreshed":
                    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "model_refreshed").inc()
                elif outcome.kind == "rejected":
                    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "model_rejected").inc()
        else:
            current = model
        if not batch:
            return []
        X = np.stack([np.asarray(x, dtype=np.float64) for x in batch])
        scores = current.calibrated(X)
        version = current.version
        return [
            PredictionResult(example, float(s), version)
            for example, s in zip(batch, scores, strict=True)
        ]

    def update_model_path(self, model_path: str | None = None) -> None:
        # WatchFilePattern sends "" when no file newer than the pipeline start
        # exists; keep the current path then.
        if model_path:
            self._model_path = model_path

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError(
                f"inference_args must be empty for StreamsiftModelHandler; got {inference_args!r}"
            )

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(x).nbytes for x in batch))

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self._min_batch_size, "max_batch_size": self._max_batch_size}

    def __getstate__(self) -> dict[str, Any]:
        # a model loaded in this process is never shipped with the handler
        state = self.__dict__.copy()
        state["_last_good"] = None
        return state

    def __repr__(self) -> str:
        return f"StreamsiftModelHandler({self._model_path!r}, {list(self._feature_names)!r})"


def scored_to_keyed(scored: Scored) -> tuple[Scored, np.ndarray]:
    """Key a record by itself so it rides through RunInference next to its features.

    >>> from streamsift.records import Event
    >>> s = Scored(Event("k", 1.0, (1.0, 2.0)), (1.0, 2.0), 4.0, (), True)
    >>> key, x = scored_to_keyed(s)
    >>> key is s, x.tolist()
    (True, [1.0, 2.0])
    """
    return scored, np.asarray(scored.features, dtype=np.float64)


def attach_stage2(keyed: tuple[Scored, PredictionResult]) -> Scored:
    """Copy a prediction's calibrated score and model version into its record.

    >>> from streamsift.records import Event
    >>> s = Scored(Event("k", 1.0, (1.0,)), (1.0,), 4.0, (), True)
    >>> out = attach_stage2((s, PredictionResult(None, 0.75, "v0003")))
    >>> out.stage2, out.model_version
    (0.75, 'v0003')
    """
    scored, result = keyed
    return scored._replace(stage2=float(result.inference), model_version=str(result.model_id))


@beam.typehints.with_input_types(Scored)
@beam.typehints.with_output_types(Scored)
class ScoreEscalated(beam.PTransform):
    """Stage-2 scoring of escalated :class:`Scored` records with RunInference.

    Output records are the inputs with ``stage2`` (calibrated, in [0, 1]) and
    ``model_version`` filled.

    ``watch_mode="poll"`` (default, any runner): with ``watch_interval_s > 0``
    the model handler checks ``model_dir`` (default: the grandparent of
    ``model_path``, i.e. ``<model_dir>/<version>/model.joblib``) for a newer
    artifact at most once per ``watch_interval_s`` seconds of ``clock`` and
    swaps it in without a restart; 0 never checks. ``watch_pattern``,
    ``watch_stop_timestamp`` and ``model_metadata`` are refused in this mode.

    ``watch_mode="side_input"``: new artifacts arrive as the RunInference
    model side input, either from a :class:`WatchFilePattern` over
    ``watch_pattern`` (e.g. ``f"{model_dir}/*/model.joblib"``, checked every
    ``watch_interval_s`` seconds, bounded by ``watch_stop_timestamp`` in epoch
    seconds; without it the watch, and the pipeline, never end) or from
    ``model_metadata``, any PCollection of :class:`ModelMetadata`
    (``model_id`` = artifact path), e.g. built from storage notifications.

    Runner notes (Beam 2.77): WatchFilePattern is built on the splittable
    ``Watch`` transform, which the legacy ``BundleBasedDirectRunner`` cannot
    run, so ``watch_pattern`` is refused there. On that runner a global-window
    model side input also holds back the main input until the side input is
    complete; side-input refresh there only works with matching fixed windows
    on the main input and ``model_metadata``. Poll mode has neither limit.

    >>> t = ScoreEscalated("m/v0001/model.joblib", ["cpu"], ModelConfig(), watch_interval_s=60)
    >>> t.handler.model_path, t.handler.model_dir, t.handler.watch_interval_s
    ('m/v0001/model.joblib', 'm', 60.0)
    >>> ScoreEscalated("m/v0001/model.joblib", ["cpu"], ModelConfig(), watch_pattern="m/*/x")
    Traceback (most recent call last):
    ...
    ValueError: watch_pattern needs watch_mode='side_input' (watch_mode='poll' checks model_dir); got watch_pattern='m/*/x'
    """

    def __init__(
        self,
        model_path: str,
        feature_names: Sequence[str],
        cfg: ModelConfig,
        watch_pattern: str | None = None,
        watch_interval_s: float = 0,
        watch_stop_timestamp: float | None = None,
        *,
        model_metadata: beam.PCollection | None = None,
        model_dir: str | None = None,
        watch_mode: str = "poll",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if watch_mode not in WATCH_MODES:
            raise ValueError(f"watch_mode must be one of {list(WATCH_MODES)}; got {watch_mode!r}")
        interval = _check_interval("watch_interval_s", watch_interval_s)
        if watch_mode == "poll":
            if watch_pattern is not None:
                raise ValueError(
                    "watch_pattern needs watch_mode='side_input' (watch_mode='poll' checks "
                    f"model_dir); got watch_pattern={watch_pattern!r}"
                )
            if model_metadata is not None:
                raise ValueError(
                    "model_metadata needs watch_mode='side_input'; got a model_metadata "
                    "PCollection with watch_mode='poll'"
                )
            if watch_stop_timestamp is not None:
                raise ValueError(
                    "watch_stop_timestamp only applies to watch_mode='side_input'; "
                    f"got {watch_stop_timestamp} with watch_mode='poll'"
                )
            handler_interval = interval
        else:
            if watch_pattern is not None and model_metadata is not None:
                raise ValueError(
                    "watch_pattern and model_metadata are alternatives; got both "
                    f"(watch_pattern={watch_pattern!r})"
                )
            if watch_pattern is None and model_metadata is None:
                raise ValueError(
                    "watch_mode='side_input' needs watch_pattern or model_metadata; got neither"
                )
            if watch_pattern is not None and interval <= 0:
                raise ValueError(
                    f"watch_interval_s must be > 0 when watch_pattern is set; got {watch_interval_s}"
                )
            handler_interval = 0.0
        self.handler = StreamsiftModelHandler.from_config(
            model_path,
            feature_names,
            cfg,
            model_dir=model_dir,
            watch_interval_s=handler_interval,
            clock=clock,
        )
        self._model_path = model_path
        self._watch_mode = watch_mode
        self._watch_pattern = watch_pattern
        self._watch_interval_s = interval
        self._watch_stop_timestamp = watch_stop_timestamp
        self._model_metadata = model_metadata

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        keyed_handler = (
            KeyedModelHandler(self.handler)
            .with_preprocess_fn(scored_to_keyed)
            .with_postprocess_fn(attach_stage2)
        )
        extra: dict[str, Any] = {}
        if self._model_metadata is not None:
            extra["model_metadata_pcoll"] = self._model_metadata
        if self._watch_pattern:
            # Imported here: the module records its import time as the cut-off
            # before which existing files do not count as new models.
            from apache_beam.ml.inference.utils import WatchFilePattern
            from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

            if isinstance(pcoll.pipeline.runner, BundleBasedDirectRunner):
                raise ValueError(
                    "watch_pattern is not supported on BundleBasedDirectRunner (Beam's "
                    "WatchFilePattern uses the splittable Watch transform, which that runner "
                    f"cannot run); got watch_pattern={self._watch_pattern!r}. Use "
                    "watch_mode='poll' (works on every runner) or a portable runner "
                    "(Prism, Flink, Dataflow)"
                )
            stop = (
                MAX_TIMESTAMP
                if self._watch_stop_timestamp is None
                else Timestamp.of(self._watch_stop_timestamp)
            )
            extra["model_metadata_pcoll"] = pcoll.pipeline | "WatchModelArtifacts" >> (
                WatchFilePattern(
                    file_pattern=self._watch_pattern,
                    interval=self._watch_interval_s,
                    stop_timestamp=stop,
                )
            )
        scored = pcoll | "RunInference" >> RunInference(
            keyed_handler,
            model_identifier=f"streamsift:{self._model_path}",
            **extra,
        )
        return scored
