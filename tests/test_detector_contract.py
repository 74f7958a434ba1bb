"""Contract every stage-1 detector honours: the scalar detectors, KeyLogic
(both methods) and the seasonal likelihood detector (alone and as
``StepResult.anomaly``) are picklable, deterministic, leave their input alone,
give finite non-negative scores and rank injected spikes above normal points."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from streamsift.config import DetectorConfig, FeatureConfig, PrefilterConfig
from streamsift.models.keylogic import KeyLogic
from streamsift.models.prefilter import EWMAZScore, MADZScore
from streamsift.models.seasonal import SeasonalDetector

WARMUP = 20


class ScalarAdapter:
    """Scores column 0 with a river-style scalar detector (score, then learn)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.det = make()

    def score_learn(self, ts: float, row: np.ndarray) -> float:
        x = row[0]
        s = self.det.score_one(x)
        self.det.learn_one(x, t=ts)
        return s


class KeyLogicAdapter:
    """Scores all columns with KeyLogic.step (stage-1 score)."""

    def __init__(self, method: str, n_fields: int) -> None:
        self.logic = KeyLogic(
            tuple(f"f{i}" for i in range(n_fields)),
            FeatureConfig(),
            PrefilterConfig(method=method, warmup_events=WARMUP),
        )
        self.state = self.logic.new_state()

    def score_learn(self, ts: float, row: np.ndarray) -> float:
        return self.logic.step(self.state, ts, row).stage1


class KeyLogicAnomalyAdapter(KeyLogicAdapter):
    """Scores all columns with KeyLogic.step (the seasonal detector's ``anomaly``)."""

    def __init__(self, n_fields: int) -> None:
        self.logic = KeyLogic(
            tuple(f"f{i}" for i in range(n_fields)),
            FeatureConfig(),
            PrefilterConfig(warmup_events=WARMUP),
            DETECTOR_CFG,
        )
        self.state = self.logic.new_state()

    def score_learn(self, ts: float, row: np.ndarray) -> float:
        return self.logic.step(self.state, ts, row).anomaly


class SeasonalAdapter:
    """Scores all columns with a SeasonalDetector on its own buffer."""

    def __init__(self, n_fields: int) -> None:
        self.det = SeasonalDetector(tuple(f"f{i}" for i in range(n_fields)), DETECTOR_CFG)
        self.buf = self.det.new_buffer()

    def score_learn(self, ts: float, row: np.ndarray) -> float:
        return self.det.step(self.buf, ts, row.tolist()).score


#: the detector with the contract's warm-up and no quiet period after an alert
DETECTOR_CFG = DetectorConfig(warmup_events=WARMUP, suppress_events=0)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], object]
    #: escalation level of the score (z-scores: 3; likelihood scores in [0, 1]: alert_score)
    alert: float = 3.0
    #: AUC floor on isolated +-5 sd spikes. The likelihood detector averages raw
    #: scores over 10 events (it trades isolated moderate spikes for far fewer
    #: false alarms on real streams), so its floor is lower and its hit rate is
    #: checked on new extremes and level shifts in tests/test_seasonal.py instead.
    auc: float = 0.9
    spike_hits: bool = True


CASES = [
    Case("EWMAZScore", lambda: ScalarAdapter(lambda: EWMAZScore(half_life=1800.0, warmup=WARMUP))),
    Case("MADZScore", lambda: ScalarAdapter(lambda: MADZScore(half_life=1800.0, warmup=WARMUP))),
    Case("KeyLogic-ewma", lambda: KeyLogicAdapter("ewma", 3)),
    Case("KeyLogic-mad", lambda: KeyLogicAdapter("mad", 3)),
    Case("Seasonal", lambda: SeasonalAdapter(3), alert=0.5, auc=0.7, spike_hits=False),
    Case("KeyLogic-anomaly", lambda: KeyLogicAnomalyAdapter(3), 0.5, 0.7, False),
]


def stream(seed: int = 0, n: int = 1500, n_fields: int = 3, n_spikes: int = 25):
    """Seeded Gaussian stream (regular-ish arrivals) with +-5 sd spikes in column 0
    after the warm-up; returns (ts, X, labels)."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000.0 + np.cumsum(rng.uniform(50.0, 70.0, n))
    X = rng.normal(loc=[10.0 * (i + 1) for i in range(n_fields)], scale=2.0, size=(n, n_fields))
    labels = np.zeros(n, dtype=bool)
    spikes = rng.choice(np.arange(3 * WARMUP, n), size=n_spikes, replace=False)
    X[spikes, 0] += rng.choice([-10.0, 10.0], size=n_spikes)
    labels[spikes] = True
    return ts, X, labels


def scores_of(adapter, ts: np.ndarray, X: np.ndarray, start: int = 0, stop: int | None = None):
    stop = len(ts) if stop is None else stop
    return np.array([adapter.score_learn(float(ts[i]), X[i]) for i in range(start, stop)])


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request) -> Case:
    return request.param


def test_picklable_mid_stream_and_resumes_identically(case):
    ts, X, _ = stream(seed=1, n=400)
    a = case.make()
    scores_of(a, ts, X, 0, 200)
    b = pickle.loads(pickle.dumps(a))
    assert np.array_equal(scores_of(a, ts, X, 200), scores_of(b, ts, X, 200))


def test_deterministic(case):
    ts, X, _ = stream(seed=2, n=400)
    assert np.array_equal(scores_of(case.make(), ts, X), scores_of(case.make(), ts, X))


def test_input_is_not_mutated(case):
    ts, X, _ = stream(seed=3, n=300)
    X_copy, ts_copy = X.copy(), ts.copy()
    X.flags.writeable = False  # any in-place write would raise
    ts.flags.writeable = False
    scores_of(case.make(), ts, X)
    assert np.array_equal(X, X_copy) and np.array_equal(ts, ts_copy)


def test_scores_are_finite_and_non_negative(case):
    ts, X, _ = stream(seed=4, n=500)
    s = scores_of(case.make(), ts, X)
    assert np.all(np.isfinite(s)) and np.all(s >= 0.0)
    assert all(type(v) is float for v in s.tolist())


@pytest.mark.parametrize("seed", [5, 6])
def test_quality_floor_spikes_rank_on_top(case, seed):
    ts, X, labels = stream(seed=seed)
    s = scores_of(case.make(), ts, X)
    keep = np.arange(len(s)) >= WARMUP
    assert roc_auc_score(labels[keep], s[keep]) >= case.auc
    # and the escalation threshold separates them: most spikes above it, few normals
    if case.spike_hits:
        assert np.mean(s[labels] >= case.alert) >= 0.9
    assert np.mean(s[keep & ~labels] >= case.alert) <= 0.05
