"""Per-key stateful logic: rolling features + stage-1 pre-filter + seasonal detector.

:class:`KeyLogic` composes
:class:`~streamsift.models.features.RollingFeatures` (event-time decayed mean,
std, min, max, count and rate per field and horizon; the model input vector)
and :class:`~streamsift.models.prefilter.Prefilter` (per-signal
:class:`~streamsift.models.prefilter.EWMAZScore` or
:class:`~streamsift.models.prefilter.MADZScore` baselines; the stage-1 score and
reasons) and, unless disabled, :class:`~streamsift.models.seasonal.SeasonalDetector`
(seasonal/level/range baselines with an anomaly-likelihood score in [0, 1],
``StepResult.anomaly``). It holds no per-key data: everything a key needs lives in a
:class:`KeyState` that the caller keeps (a Beam state cell in the pipeline) and
that round-trips through :meth:`KeyLogic.encode_state` /
:meth:`KeyLogic.decode_state` as a compact explicit little-endian binary (no
pickle; 1.6-1.9 KB for 8 fields and 3 horizons without the detector, plus its
compact state, ``8 + 4 * (2 + likelihood_window) + 44 F + 4 F season_bins`` bytes
(see :mod:`~streamsift.models.seasonal`): 1.0 KB for 4 fields and 48 bins;
918 + 1,000 = 1,918 bytes per key for 4 fields with the defaults).
``step`` is causal: the
features and the score of an event are computed from the state before it, then
the state learns the event. State per key is O(fields x (horizons + season_bins)),
independent of the event rate.

>>> from streamsift.config import FeatureConfig, PrefilterConfig
>>> logic = KeyLogic(("cpu", "lat"), FeatureConfig(), PrefilterConfig(warmup_events=5))
>>> state = logic.new_state()
>>> for i in range(30):
...     res = logic.step(state, 60.0 * i, [50.0 + i % 3, 100.0 + i % 3])
>>> res.escalated
False
>>> res = logic.step(state, 1800.0, [95.0, 101.0])
>>> res.escalated, res.reasons[0].feature, res.reasons[0].deviation
(True, 'cpu', 50.0)
>>> len(res.features) == len(logic.feature_names)
True
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from streamsift.config import DetectorConfig, FeatureConfig, PrefilterConfig
from streamsift.models.features import MAX_ABS_VALUE, MAX_DT_S, RollingFeatures, clamp_value
from streamsift.models.prefilter import Z_BOUND, Prefilter
from streamsift.models.seasonal import (
    DETECTOR_REASON,
    DetectorResult,
    SeasonalDetector,
    SeasonalState,
)
from streamsift.records import Reason

__all__ = ["KeyState", "StepResult", "KeyLogic", "compute_features"]

_FORMAT_VERSION = 4
_METHOD_CODES = {"ewma": 0, "mad": 1}
#: version, method, n_fields, n_horizons, n events, first_ts, last_ts
_HEADER = struct.Struct("<BBHHQdd")  # module level: KeyLogic itself stays picklable
_Z_CLIP = 50.0
#: the stage-1 z-scores are already clipped to +-Z_BOUND: clipping them again is a no-op
_ZS_CLIPPED = Z_BOUND <= _Z_CLIP
_tuple_new = tuple.__new__
_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass
class KeyState:
    """All per-key state (mutable; :meth:`KeyLogic.step` updates it in place).

    * ``n``: events processed for the key;
    * ``first_ts`` / ``last_ts``: event time of its first and latest event;
    * ``rolling``: rolling-feature buffer, ``array("d")`` (layout:
      :class:`RollingFeatures`);
    * ``prefilter``: stage-1 buffer, ``array("d")`` (layout: :class:`Prefilter`);
    * ``detector``: :class:`~streamsift.models.seasonal.SeasonalState` (an
      empty list when the detector is disabled).

    >>> KeyState().n
    0
    """

    n: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    rolling: array = field(default_factory=lambda: array("d"))
    prefilter: array = field(default_factory=lambda: array("d"))
    detector: SeasonalState | list[float] = field(default_factory=list)


class StepResult(NamedTuple):
    """Output of :meth:`KeyLogic.step` for one event.

    >>> StepResult((0.0,), 1.5, (), False).stage1
    1.5
    """

    #: model input vector, order = ``KeyLogic.feature_names``
    features: tuple[float, ...]
    #: stage-1 suspicion score, >= 0, higher = more anomalous
    stage1: float
    #: most deviating stage-1 signals first (at most 5 of them); filled only when
    #: stage1 >= escalate_score (warm-up included), else () - saves time per event.
    #: When the detector escalates, its verdict comes first: a ``DETECTOR_REASON``
    #: line (value = anomaly, baseline = alert_score, deviation = largest z), then
    #: 1-3 ``<field>.seasonal`` / ``<field>.level`` lines (value, baseline mean, z).
    reasons: tuple[Reason, ...]
    #: see :meth:`KeyLogic.step` (which events go to stage 2)
    escalated: bool
    #: SeasonalDetector score in [0, 1] (likelihood-normalised; 0 when disabled)
    anomaly: float = 0.0


class KeyLogic:
    """Rolling features and the stage-1 pre-filter of one key, step by step.

    ``field_names`` are the feature fields in the order of the values passed to
    :meth:`step`. ``feature_names`` names the model input vector (see
    :class:`~streamsift.models.features.RollingFeatures`); ``signal_names`` the
    stage-1 signals that appear in reasons (see
    :class:`~streamsift.models.prefilter.Prefilter`).

    Input values are clamped to +-1e100 (NaN becomes 0) so that no squared
    deviation can overflow; every feature is bounded to +-50 and the stage-1
    score to [0, 50], so no inf/NaN ever leaves :meth:`step`.

    >>> logic = KeyLogic(("x",), FeatureConfig(horizons_s=(60.0,)), PrefilterConfig())
    >>> logic.feature_names
    ('x.log_ratio', 'log_gap_rel', 's1.x', 's1.interarrival_s')
    >>> s = logic.new_state()
    >>> logic.step(s, 0.0, [1.0])
    StepResult(features=(0.0, 0.0, 0.0, 0.0), stage1=0.0, reasons=(), escalated=False, anomaly=0.0)
    >>> logic.decode_state(logic.encode_state(s)) == s
    True
    """

    def __init__(
        self,
        field_names: Sequence[str],
        features: FeatureConfig,
        prefilter: PrefilterConfig,
        detector: DetectorConfig | None = None,
    ) -> None:
        if detector is None:
            detector = DetectorConfig()
        if not isinstance(detector, DetectorConfig):
            raise ValueError(f"detector must be a DetectorConfig; got {type(detector).__name__}")
        if not isinstance(features, FeatureConfig):
            raise ValueError(f"features must be a FeatureConfig; got {type(features).__name__}")
        if not isinstance(prefilter, PrefilterConfig):
            raise ValueError(f"prefilter must be a PrefilterConfig; got {type(prefilter).__name__}")
        self._rolling = RollingFeatures(field_names, features.horizons_s)
        self._prefilter = Prefilter(self._rolling.field_names, prefilter)
        self.field_names: tuple[str, ...] = self._rolling.field_names
        self.signal_names: tuple[str, ...] = self._prefilter.signal_names
        # Model input: the scale-free rolling features that carry signal for
        # stage 2 (ratio to baseline, gap, burstiness) and the stage-1
        # deviations. The per-horizon z-scores are left out: on escalated
        # events they rank anomalies *below* stage-1 noise (their statistics
        # adapt to a persisting anomaly within a horizon), measured on the
        # synthetic stream; they stay available through :meth:`describe`.
        self._model_idx = tuple(i for i, n in enumerate(self._rolling.names) if ".z_" not in n)
        n_z = self._rolling.n_horizons * self._rolling.n_fields
        if self._model_idx != tuple(range(n_z, len(self._rolling.names))):
            # step() takes the model part from RollingFeatures.step_model: the
            # features after the n_horizons * n_fields z-scores, in order
            raise ValueError(
                f"rolling feature names must put the {n_z} z-scores first; "
                f"got {self._rolling.names}"
            )
        self.feature_names: tuple[str, ...] = tuple(
            self._rolling.names[i] for i in self._model_idx
        ) + tuple(f"s1.{name}" for name in self.signal_names)
        self.features_config = features
        self.prefilter_config = prefilter
        self.detector_config = detector
        self._detector = SeasonalDetector(self.field_names, detector) if detector.enabled else None
        self._det_size = self._detector.nbytes if self._detector is not None else 0
        self._det_escalate = self._detector is not None and detector.escalate
        self._alert_score = detector.alert_score
        self._det_warmup = detector.warmup_events
        # the event-rate signal: the detector models values, not the rate
        self._rate_signal = self.signal_names[len(self.field_names)]
        self._n_fields = len(self.field_names)
        self._warmup = prefilter.warmup_events
        self._threshold = prefilter.escalate_score
        self._method_code = _METHOD_CODES[prefilter.method]
        self._n_floats = self._rolling.size + self._prefilter.size
        # a format string, not a struct.Struct, so that KeyLogic stays picklable
        self._body_fmt = f"<{self._n_floats}d"
        self._body_size = struct.calcsize(self._body_fmt)
        # the detector's state follows (SeasonalDetector.encode)
        self.state_size = _HEADER.size + self._body_size + self._det_size

    def new_state(self) -> KeyState:
        """Empty state of a key that has not been seen yet."""
        return KeyState(
            rolling=self._rolling.new_buffer(),
            prefilter=self._prefilter.new_buffer(),
            detector=self._detector.new_buffer() if self._detector is not None else [],
        )

    def warm_up(self) -> None:
        """Compile (or load from numba's on-disk cache) the kernels ``step`` runs,
        by stepping a throwaway state through two events; the first ``step`` of a
        process otherwise pays it. Idempotent, no effect on any other state.

        >>> KeyLogic(("x",), FeatureConfig(), PrefilterConfig()).warm_up()
        """
        state = self.new_state()
        zeros = [0.0] * self._n_fields
        self.step(state, 0.0, zeros)
        self.step(state, 1.0, zeros)

    def step(self, state: KeyState, ts: float, values: Sequence[float]) -> StepResult:
        """Score one event of the key at event time ``ts`` (epoch seconds), then
        learn it (mutates ``state``). Events should come in nondecreasing ``ts``;
        an older one counts as no elapsed time.

        Escalation (the events stage 2 and the alert stage see): past the stage-1
        warm-up, ``stage1 >= escalate_score``. With ``detector.escalate`` (the
        default), once the key's detector is past its own warm-up it decides
        instead: an event whose ``anomaly >= alert_score`` is escalated with the
        detector's reasons first (the alert stage alerts on it, see
        :class:`~streamsift.models.alerting.AlertLogic`), and stage 1 escalates
        only events whose most deviating signal is the event rate
        (``interarrival_s``, which the detector does not model)."""
        nf = self._n_fields
        if len(values) != nf:
            raise ValueError(
                f"values must have {nf} items (one per field {list(self.field_names)}); "
                f"got {len(values)}"
            )
        if type(ts) is not float:
            ts = float(ts)
        if ts - ts != 0.0:
            raise ValueError(f"ts must be a finite number of seconds; got {ts!r}")
        # The models take the values as one float64 buffer (their compiled kernels
        # read it directly): values that are plain floats within +-MAX_ABS_VALUE
        # (what the engines pass: Event.values) go in as they are; anything else
        # is converted and clamped first.
        for x in values:
            if type(x) is not float or not -MAX_ABS_VALUE <= x <= MAX_ABS_VALUE:
                xs = array("d", [clamp_value(v) for v in values])
                break
        else:
            xs = values if type(values) is array else array("d", values)
        n = state.n
        if n == 0:
            state.first_ts = state.last_ts = ts
            dt = 0.0
            age = 0.0
        else:
            last_ts = state.last_ts
            dt = ts - last_ts
            if dt > 0.0:
                state.last_ts = last_ts = ts
                if dt > MAX_DT_S:
                    dt = MAX_DT_S
            else:
                dt = 0.0
            age = last_ts - state.first_ts
            if age > MAX_DT_S:
                age = MAX_DT_S
        # the model input: the rolling features without their z-scores (see
        # __init__), computed without them, then the stage-1 deviations
        feats = self._rolling.step_model(state.rolling, dt, age, xs)
        pf = self._prefilter
        score, reasons, zs = (pf._step_ewma if pf._fused else pf.step)(state.prefilter, n, dt, xs)
        det = self._detector
        if det is not None:
            # the deviations stay packed until an alert needs them (_detector_reasons)
            dparts = det.step_parts(state.detector, ts, xs)
            anomaly = dparts[0]
        else:
            dparts = None
            anomaly = 0.0
        state.n = n + 1
        # The stage-1 deviations join the model input: their baselines do not
        # learn from flagged points, so a persisting anomaly stays visible to
        # stage 2 (the rolling features adapt to it within a horizon).
        if _ZS_CLIPPED:
            feats.extend(zs)
        else:  # pragma: no cover - only if the bounds are changed apart
            app = feats.append
            for z in zs:
                app(_Z_CLIP if z > _Z_CLIP else (-_Z_CLIP if z < -_Z_CLIP else z))
        if self._det_escalate and n + 1 >= self._det_warmup:
            if anomaly >= self._alert_score:
                escalated = True
                reasons = self._detector_reasons(det.result(*dparts)) + reasons
            else:
                escalated = (
                    score >= self._threshold
                    and bool(reasons)
                    and reasons[0].feature == self._rate_signal
                )
        else:
            escalated = n >= self._warmup and score >= self._threshold
        # StepResult(...) without the namedtuple's Python-level __new__
        return _tuple_new(StepResult, (tuple(feats), score, reasons, escalated, anomaly))

    def _detector_reasons(self, dres: DetectorResult) -> tuple[Reason, ...]:
        """The detector's verdict line, then its most deviating fields (|z| >= 3,
        at least one, at most 3)."""
        order = sorted(range(len(dres.deviations)), key=lambda j: -dres.deviations[j][0])
        top = dres.deviations[order[0]]
        out = [Reason(DETECTOR_REASON, dres.score, self._alert_score, top[3])]
        for k, j in enumerate(order[:3]):
            az, x, base, z, seasonal = dres.deviations[j]
            if k and az < 3.0:
                break
            kind = "seasonal" if seasonal else "level"
            out.append(Reason(f"{self.field_names[j]}.{kind}", x, base, z))
        return tuple(out)

    def describe(
        self, state: KeyState, ts: float, values: Sequence[float] | None = None
    ) -> dict[str, float]:
        """Raw rolling statistics of the key as seen at ``ts`` (mean, std, min, max
        per field and horizon, count and rate per horizon, time since the previous
        event, burstiness, and with ``values`` the ratio to baseline). Read-only.

        >>> logic = KeyLogic(("x",), FeatureConfig(horizons_s=(60.0,)), PrefilterConfig())
        >>> s = logic.new_state()
        >>> _ = logic.step(s, 0.0, [2.0]); _ = logic.step(s, 0.0, [4.0])
        >>> d = logic.describe(s, 0.0, [6.0])
        >>> d["x.mean_60s"], d["x.std_60s"], d["x.max_60s"], d["x.ratio_to_baseline"]
        (3.0, 1.0, 4.0, 2.0)
        """
        dt = float(ts) - state.last_ts if state.n else 0.0
        dt = min(max(dt, 0.0), MAX_DT_S)
        age = min(max(float(ts), state.last_ts) - state.first_ts, MAX_DT_S) if state.n else 0.0
        return self._rolling.describe(state.rolling, dt, age, values)

    # -- serialisation -------------------------------------------------------
    def encode_state(self, state: KeyState) -> bytes:
        """Compact little-endian binary of ``state``: a 30-byte header
        (version, method, field and horizon counts, event count, first/last ts),
        the float64 rolling and stage-1 buffers, then the detector's state
        (:meth:`SeasonalDetector.encode`, ``nbytes``)."""
        n_rolling = len(state.rolling)
        if n_rolling != self._rolling.size or len(state.prefilter) != self._prefilter.size:
            raise ValueError(
                f"state buffers must hold {self._rolling.size} + {self._prefilter.size} "
                f"floats for this KeyLogic; got {n_rolling} + {len(state.prefilter)}"
            )
        det = self._detector
        if det is not None and not isinstance(state.detector, SeasonalState):
            raise ValueError(
                "state.detector must be a SeasonalState for this KeyLogic; "
                f"got {type(state.detector).__name__}"
            )
        return (
            _HEADER.pack(
                _FORMAT_VERSION,
                self._method_code,
                self._n_fields,
                self._rolling.n_horizons,
                state.n,
                state.first_ts,
                state.last_ts,
            )
            + (
                state.rolling.tobytes() + state.prefilter.tobytes()
                if _LITTLE_ENDIAN
                and type(state.rolling) is array
                and type(state.prefilter) is array
                else struct.pack(self._body_fmt, *state.rolling, *state.prefilter)
            )
            + (det.encode(state.detector) if det is not None else b"")
        )

    def decode_state(self, data: bytes) -> KeyState:
        """Inverse of :meth:`encode_state`; rejects data of another layout."""
        if len(data) != self.state_size:
            raise ValueError(
                f"state data must be {self.state_size} bytes for {self._n_fields} fields and "
                f"{self._rolling.n_horizons} horizons; got {len(data)}"
            )
        version, method, nf, nh, n, first_ts, last_ts = _HEADER.unpack_from(data, 0)
        if version != _FORMAT_VERSION:
            raise ValueError(f"state format version must be {_FORMAT_VERSION}; got {version}")
        if (method, nf, nh) != (self._method_code, self._n_fields, self._rolling.n_horizons):
            raise ValueError(
                "state layout (method, fields, horizons) must be "
                f"{(self._method_code, self._n_fields, self._rolling.n_horizons)}; "
                f"got {(method, nf, nh)}"
            )
        body = array("d")
        body.frombytes(data[_HEADER.size : _HEADER.size + self._body_size])
        if not _LITTLE_ENDIAN:
            body.byteswap()
        k = self._rolling.size
        detector: SeasonalState | list[float] = []
        if self._detector is not None:
            detector = self._detector.decode(data[_HEADER.size + self._body_size :])
        return KeyState(n, first_ts, last_ts, body[:k], body[k:], detector)


def compute_features(
    logic: KeyLogic, events: Iterable[tuple[str, float, Sequence[float]]]
) -> tuple[list[tuple[str, float]], np.ndarray, np.ndarray]:
    """Batch path for training: run ``logic.step`` over ``(key, ts, values)`` events.

    Events may come in any order: they are grouped per key (keys in sorted
    order) and sorted by ``ts`` within a key, equal times by their values - the
    order the pipeline's per-key DoFn uses - so the result does not depend on
    the input order. Returns the ``(key, ts)`` of each row, the feature matrix
    (float64, one column per ``logic.feature_names``) and the stage-1 scores -
    exactly what calling ``step`` event by event in that order gives.

    >>> logic = KeyLogic(("x",), FeatureConfig(horizons_s=(60.0,)), PrefilterConfig())
    >>> rows, X, s1 = compute_features(logic, [("b", 5.0, [1.0]), ("a", 9.0, [2.0]), ("b", 1.0, [3.0])])
    >>> rows, X.shape, s1.shape
    ([('a', 9.0), ('b', 1.0), ('b', 5.0)], (3, 4), (3,))
    """
    per_key: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    for key, ts, values in events:
        per_key.setdefault(key, []).append((float(ts), tuple(float(v) for v in values)))
    rows: list[tuple[str, float]] = []
    feats: list[tuple[float, ...]] = []
    stage1: list[float] = []
    step = logic.step
    for key in sorted(per_key):
        evs = per_key[key]
        evs.sort()  # by (ts, values)
        state = logic.new_state()
        for ts, values in evs:
            res = step(state, ts, values)
            rows.append((key, ts))
            feats.append(res.features)
            stage1.append(res.stage1)
    width = len(logic.feature_names)
    X = np.array(feats, dtype=np.float64).reshape(len(feats), width)
    return rows, X, np.array(stage1, dtype=np.float64)
