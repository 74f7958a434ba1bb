"""``streamsift evaluate``: replay labelled CSV series through the pipeline and score them.

Every CSV under ``--data`` (a ``timestamp`` column and one or more numeric
columns; one key per file, the key being the file's path relative to the data
directory) is turned into JSON payloads, sorted by event time, and replayed in
event time through the streaming pipeline itself
(:func:`streamsift.pipeline.run.run_stream`: TestStream source, parser,
per-key stage, RunInference, alerting, rate limit), one bounded run per file.
Timestamps without a zone are UTC.

Per file a scores CSV ``timestamp,<value columns>,anomaly_score,alert`` is
written (one row per input row, in input order):

* ``alert`` is 1 on the row where the pipeline opened an alert (the alert's
  first event; severity upgrades and rate-limited alerts are not new alerts);
* ``anomaly_score`` in [0, 1] (higher = more anomalous) is the per-key
  :class:`~streamsift.models.seasonal.SeasonalDetector` score that the
  pipeline's per-key stage computes for every event (``StepResult.anomaly``:
  seasonal and level baselines, range rule, anomaly-likelihood normalisation,
  one alert per incident), read from the stage's per-event ``scores`` output
  (``DetectPerKey(emit_scores=True)``; the run always uses the per-element
  engine, whatever ``engine.mode`` the config names: the batched engine has no
  per-event scores output), 0
  for rows the pipeline dead-letters. With ``[detector] enabled = false`` it
  comes from :func:`event_score` instead: ``0.5 + 0.5 * stage2`` for events the
  pipeline escalated (``stage2``: the model's calibrated score; the pipeline
  emits it only for flagged events, so for the others it comes from the replay
  below), ``0.5 * (1 - exp(-stage1 / escalate_score))`` in [0, 0.5) for the
  others, and 0 for rows the pipeline dead-letters (a missing or non-numeric
  value).

Cross-check: a bounded replay of the same code
(:class:`~streamsift.models.keylogic.KeyLogic` and the same model artifact,
about a second per file) must give every row the same stage-1 and detector
scores as the pipeline, the same processed and escalated counts as its
counters and scores output, and every flagged event's stage-2 score. A
mismatch is reported per file (``checks``, ``consistent``) and logged.

``--detector beam-zscore`` runs Beam's built-in ``apache_beam.ml.anomaly``
:class:`ZScore` (``AnomalyDetection`` transform, default window of 1000 points,
``FixedThreshold(3)``) on the same replay (TestStream source and parser): one
ZScore per numeric column, their max for several columns. Its score ``z`` is
mapped to ``1 - exp(-z / 3)`` (monotone, so NAB's threshold sweep sees the same
ranking; ``z = 3`` gives 0.632); rows it cannot score yet (warm-up) get 0;
``alert`` is its outlier label.

Scoring (:mod:`streamsift.evaluation.nab`): per file and overall, window-level
precision / recall / F1 of the alerts, time to detect per window, false alerts
per day, and the NAB score of ``anomaly_score`` for the three NAB profiles (one
threshold optimised over all files), after the probationary period.

Outputs under ``--out`` (default ``streamsift-out/evaluate``)::

    <detector>/<subdir>/<detector>_<file>.csv   scores, one per input file
    <detector>/summary.json                     everything printed, as JSON
    <detector>/runs/<file>/                     the pipeline's own JSONL outputs
    model/<columns>/                            model artifacts per column set (streamsift;
                                                trained on the synthetic history if none)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamsift.config import Config, ConfigError, InputConfig, load_config
from streamsift.evaluation.nab import (
    PROBATION_PERCENT,
    NABScorer,
    WindowMetrics,
    load_labels,
    pool_window_metrics,
    window_metrics,
)
from streamsift.parsing import parse_time

__all__ = [
    "DETECTORS",
    "Detection",
    "Series",
    "StageScores",
    "add_arguments",
    "event_score",
    "evaluate",
    "format_report",
    "input_config_for",
    "main",
    "read_series",
    "replay_stage_scores",
    "series_payloads",
    "write_scores_csv",
    "zscore_to_unit",
]

_LOG = logging.getLogger(__name__)

DETECTORS = ("streamsift", "beam-zscore")
DEFAULT_OUT = "streamsift-out/evaluate"
_TIME_COLUMN = "timestamp"
_ZSCORE_SCALE = 3.0
#: largest float below 0.5: keeps non-escalated scores strictly under escalated ones
_BELOW_HALF = math.nextafter(0.5, 0.0)


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class Series:
    """One CSV file: its rows in input order.

    ``values[i][j]`` is column ``fields[j]`` of row ``i`` (None when the cell is
    empty); ``cells`` keeps the original text of those cells for the output.

    >>> s = Series("a.csv", "timestamp", ("value",), ("2014-01-01 00:00:00",), (1388534400.0,),
    ...            ((2.5,),), (("2.5",),))
    >>> s.n_rows, s.time_order()
    (1, [0])
    """

    name: str
    time_column: str
    fields: tuple[str, ...]
    times: tuple[str, ...]
    ts: tuple[float, ...]
    values: tuple[tuple[float | None, ...], ...]
    cells: tuple[tuple[str, ...], ...]

    @property
    def n_rows(self) -> int:
        return len(self.ts)

    def time_order(self) -> list[int]:
        """Row indices in event-time order (stable: equal times keep input order)."""
        return sorted(range(len(self.ts)), key=lambda i: self.ts[i])


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_series(path: str, name: str) -> Series:
    """Read one CSV: a ``timestamp`` column (ISO 8601 or epoch; no zone = UTC)
    and the columns whose non-empty cells are all finite numbers (other columns
    are ignored, with a log line).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "x.csv")
    ...     _ = open(p, "w").write("timestamp,value,host\\n2014-01-01 00:00:00,1.5,a\\n2014-01-01 00:05:00,,a\\n")
    ...     s = read_series(p, "x.csv")
    >>> s.fields, s.ts, s.values
    (('value',), (1388534400.0, 1388534700.0), ((1.5,), (None,)))
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{name}: CSV must have a header row; got an empty file")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    lowered = [h.lower() for h in header]
    if _TIME_COLUMN not in lowered:
        raise ValueError(f"{name}: CSV must have a {_TIME_COLUMN!r} column; got columns {header}")
    t_col = lowered.index(_TIME_COLUMN)
    if not body:
        raise ValueError(f"{name}: CSV must have at least one data row; got none")
    for line, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise ValueError(
                f"{name}:{line}: row must have {len(header)} cells like the header; got {len(r)}"
            )
    fields: list[int] = []
    for j, h in enumerate(header):
        if j == t_col:
            continue
        cells = [r[j].strip() for r in body]
        filled = [c for c in cells if c]
        if filled and all(_number(c) is not None for c in filled):
            fields.append(j)
        else:
            _LOG.info("%s: column %r is not numeric; ignored", name, h)
    if not fields:
        raise ValueError(f"{name}: CSV must have at least one numeric column; got {header}")
    names = tuple(header[j] for j in fields)
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"{name}: numeric column names must be unique and non-empty; got {names}")
    ts: list[float] = []
    for line, r in enumerate(body, start=2):
        try:
            ts.append(parse_time(r[t_col].strip()))
        except ValueError as exc:
            raise ValueError(f"{name}:{line}: {exc}") from None
    values = tuple(
        tuple(_number(r[j].strip()) if r[j].strip() else None for j in fields) for r in body
    )
    return Series(
        name=name,
        time_column=header[t_col],
        fields=names,
        times=tuple(r[t_col].strip() for r in body),
        ts=tuple(ts),
        values=values,
        cells=tuple(tuple(r[j].strip() for j in fields) for r in body),
    )


def input_config_for(series: Series, base: InputConfig | None = None) -> InputConfig:
    """The input section for replaying ``series``: key field ``key`` (or a free
    name), time field = the CSV's timestamp column, features = its numeric columns.

    >>> s = Series("a.csv", "timestamp", ("key", "v"), (), (), (), ())
    >>> c = input_config_for(s)
    >>> c.key_field, c.time_field, c.feature_fields
    ('series_key', 'timestamp', ('key', 'v'))
    """
    key_field = "key"
    while key_field in series.fields or key_field == series.time_column:
        key_field = "series_" + key_field
    max_bytes = base.max_payload_bytes if base is not None else InputConfig().max_payload_bytes
    return InputConfig(
        key_field=key_field,
        time_field=series.time_column,
        time_format="auto",
        feature_fields=series.fields,
        max_payload_bytes=max_bytes,
    )


def series_payloads(series: Series, input_cfg: InputConfig) -> list[bytes]:
    """JSON payloads of the rows in event-time order (key = the series name; an
    empty cell leaves its field out, so the pipeline dead-letters that row).

    >>> s = Series("a.csv", "timestamp", ("value",), ("t2", "t1"), (2e9, 1e9), ((2.0,), (None,)),
    ...            (("2",), ("",)))
    >>> series_payloads(s, input_config_for(s))
    [b'{"key":"a.csv","timestamp":"t1"}', b'{"key":"a.csv","timestamp":"t2","value":2.0}']
    """
    out = []
    for i in series.time_order():
        obj: dict[str, Any] = {
            input_cfg.key_field: series.name,
            input_cfg.time_field: series.times[i],
        }
        for f, v in zip(series.fields, series.values[i], strict=True):
            if v is not None:
                obj[f] = v
        out.append(json.dumps(obj, separators=(",", ":")).encode("utf-8"))
    return out


def _ms(ts: float) -> int:
    return math.floor(ts * 1000.0 + 0.5)


def _rows_by_ms(series: Series) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i in series.time_order():
        out.setdefault(_ms(series.ts[i]), []).append(i)
    return out


# --------------------------------------------------------------------------- scores


def event_score(stage1: float, stage2: float, escalate_score: float) -> float:
    """Per-event anomaly score in [0, 1] from the two pipeline stages.

    Escalated events (``stage2`` in [0, 1]) map to ``0.5 + 0.5 * stage2``; the
    others (``stage2 < 0``) to ``0.5 * (1 - exp(-stage1 / escalate_score))``,
    strictly below 0.5. Monotone in each stage; every escalated event ranks above
    every non-escalated one.

    >>> [round(event_score(s1, -1.0, 3.0), 4) for s1 in (0.0, 1.5, 3.0, 50.0)]
    [0.0, 0.1967, 0.3161, 0.5]
    >>> event_score(50.0, -1.0, 3.0) < 0.5, event_score(4.0, 0.0, 3.0), event_score(9.0, 0.98, 3.0)
    (True, 0.5, 0.99)
    >>> event_score(-1.0, -1.0, 3.0)
    Traceback (most recent call last):
    ...
    ValueError: stage1 must be a finite number >= 0; got -1.0
    """
    if not escalate_score > 0:
        raise ValueError(f"escalate_score must be > 0; got {escalate_score!r}")
    if stage2 >= 0.0:
        if not stage2 <= 1.0:
            raise ValueError(f"stage2 must be in [0, 1] or negative (not scored); got {stage2!r}")
        return 0.5 + 0.5 * stage2
    if not (math.isfinite(stage1) and stage1 >= 0.0):
        raise ValueError(f"stage1 must be a finite number >= 0; got {stage1!r}")
    return min(0.5 * (1.0 - math.exp(-stage1 / escalate_score)), _BELOW_HALF)


def zscore_to_unit(z: float | None) -> float:
    """Beam ZScore score -> [0, 1): ``1 - exp(-z / 3)``; missing / NaN (warm-up) -> 0.

    >>> [round(zscore_to_unit(z), 4) for z in (None, float("nan"), 0.0, 3.0, 10.0)]
    [0.0, 0.0, 0.0, 0.6321, 0.9643]
    """
    if z is None or not math.isfinite(z) or z <= 0.0:
        return 0.0
    return 1.0 - math.exp(-z / _ZSCORE_SCALE)


@dataclass(frozen=True)
class StageScores:
    """Replayed stage scores per row (input order): ``stage1`` (NaN for rows the
    pipeline dead-letters) and ``stage2`` (-1 where not escalated), with the
    counts to compare against the pipeline's ``processed`` / ``escalated`` counters,
    and the detector score ``anomaly`` per row (NaN for dead-lettered rows).

    >>> StageScores((0.5, 4.0), (-1.0, 0.9), processed=2, escalated=1).stage2
    (-1.0, 0.9)
    """

    stage1: tuple[float, ...]
    stage2: tuple[float, ...]
    processed: int
    escalated: int
    anomaly: tuple[float, ...] = ()


def replay_stage_scores(series: Series, cfg: Config, model: Any) -> StageScores:
    """Bounded replay of the per-key stage and stage 2 with the pipeline's own code:
    :meth:`KeyLogic.step` over the key's events in the per-key stage's order
    (event time, ties by values), then ``model.calibrated`` on the escalated ones
    (``model``: a :class:`~streamsift.models.artifact.LoadedModel`).

    >>> from streamsift.config import FeatureConfig, PrefilterConfig
    >>> cfg = dataclasses.replace(Config(), prefilter=PrefilterConfig(warmup_events=3))
    >>> vals = tuple((v,) for v in (1.0, 1.1, 0.9, 1.0, 1.05, 9.0))
    >>> s = Series("a", "timestamp", ("v",), ("",) * 6, tuple(60.0 * i for i in range(6)), vals, ())
    >>> class Const:  # stands in for a LoadedModel
    ...     def calibrated(self, X):
    ...         return np.full(len(X), 0.75)
    >>> r = replay_stage_scores(s, cfg, Const())
    >>> r.processed, r.escalated, r.stage2
    (6, 1, (-1.0, -1.0, -1.0, -1.0, -1.0, 0.75))
    """
    from streamsift.models.keylogic import KeyLogic

    logic = KeyLogic(series.fields, cfg.features, cfg.prefilter, cfg.detector)
    n = series.n_rows
    rows = [i for i in range(n) if all(v is not None for v in series.values[i])]
    rows.sort(key=lambda i: (series.ts[i], series.values[i]))
    state = logic.new_state()
    stage1 = [math.nan] * n
    stage2 = [-1.0] * n
    anomaly = [math.nan] * n
    esc_rows: list[int] = []
    feats: list[tuple[float, ...]] = []
    for i in rows:
        res = logic.step(state, series.ts[i], series.values[i])
        stage1[i] = res.stage1
        anomaly[i] = res.anomaly
        if res.escalated:
            esc_rows.append(i)
            feats.append(res.features)
    if feats:
        calibrated = model.calibrated(np.asarray(feats, dtype=np.float64))
        for i, c in zip(esc_rows, calibrated, strict=True):
            stage2[i] = float(c)
    return StageScores(tuple(stage1), tuple(stage2), len(rows), len(esc_rows), tuple(anomaly))


@dataclass(frozen=True)
class Detection:
    """A detector's output for one series: one score and one alert flag per row
    (input order), plus run information.

    >>> Detection((0.1, 0.9), (False, True), {"alerts": 1}).alerts
    (False, True)
    """

    scores: tuple[float, ...]
    alerts: tuple[bool, ...]
    info: dict[str, Any] = field(default_factory=dict)


def _schema_slug(fields: Sequence[str]) -> str:
    text = "-".join(fields)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40]
    if slug != text or len(text) > 40:
        slug += "-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return slug


def _detect_streamsift(
    series: Series,
    cfg: Config,
    model_path: str,
    run_dir: str,
    runner: str,
) -> Detection:
    from streamsift.models.artifact import load_artifact
    from streamsift.models.keylogic import KeyLogic
    from streamsift.pipeline.run import run_stream

    if cfg.engine.mode != "per_element":
        # the per-event scores output exists on the per-element engine only
        _LOG.info("%s: evaluating with engine.mode = 'per_element'", series.name)
        cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, mode="per_element"))
    payloads = series_payloads(series, cfg.input)
    res = run_stream(
        payloads,
        cfg,
        model_path,
        run_dir,
        runner=runner,
        print_alerts=False,
        show_progress=False,
        emit_scores=True,
    )
    # every processed event's scores, from the pipeline's per-key stage
    by_event: dict[tuple[int, tuple[float, ...]], list[int]] = {}
    for i in series.time_order():
        if all(v is not None for v in series.values[i]):
            by_event.setdefault((_ms(series.ts[i]), series.values[i]), []).append(i)
    n = series.n_rows
    stage1 = [math.nan] * n
    anomaly = [math.nan] * n
    escalated = [False] * n
    unmatched = 0
    for r in sorted(res.extra["scores"], key=lambda r: (r["ts"], r["values"])):
        rows = by_event.get((_ms(float(r["ts"])), tuple(float(v) for v in r["values"])))
        if not rows:
            unmatched += 1
            continue
        i = rows.pop(0)
        stage1[i] = float(r["stage1"])
        anomaly[i] = float(r["anomaly"])
        escalated[i] = bool(r["escalated"])
    # cross-check: a bounded replay of the same code must give the same scores
    feature_names = KeyLogic(series.fields, cfg.features, cfg.prefilter, cfg.detector).feature_names
    replay = replay_stage_scores(series, cfg, load_artifact(model_path, feature_names))
    by_ms = _rows_by_ms(series)
    stage2 = list(replay.stage2)
    mismatched = 0
    for f in res.flagged:
        score = float(f["score"])
        rows = by_ms.get(_ms(float(f["ts"])), [])
        esc = [i for i in rows if stage2[i] >= 0.0]
        match = next((i for i in esc if abs(stage2[i] - score) <= 1e-9), None)
        if match is None:
            mismatched += 1
        if match is not None:  # the pipeline's own value wins
            stage2[match] = score

    def _same(a: float, b: float) -> bool:
        return (math.isnan(a) and math.isnan(b)) or a == b

    scores_mismatched = sum(
        1
        for i in range(n)
        if not (_same(anomaly[i], replay.anomaly[i]) and _same(stage1[i], replay.stage1[i]))
    )
    checks = {
        "processed": [res.counter("processed"), len(res.extra["scores"]), replay.processed],
        "escalated": [res.counter("escalated"), sum(escalated), replay.escalated],
        "scores_unmatched": unmatched,
        "scores_mismatched": scores_mismatched,
        "flagged": len(res.flagged),
        "flagged_mismatched": mismatched,
    }
    consistent = (
        len(set(checks["processed"])) == 1
        and len(set(checks["escalated"])) == 1
        and unmatched == 0
        and scores_mismatched == 0
        and mismatched == 0
    )
    if not consistent:
        _LOG.warning(
            "%s: the replayed scores do not match the pipeline run: %s", series.name, checks
        )
    esc = cfg.prefilter.escalate_score
    if cfg.detector.enabled:
        scores = tuple(0.0 if math.isnan(a) else a for a in anomaly)
    else:
        scores = tuple(
            0.0 if math.isnan(s1) else event_score(s1, s2 if e else -1.0, esc)
            for s1, s2, e in zip(stage1, stage2, escalated, strict=True)
        )
    alerts = [False] * series.n_rows
    n_alerts = 0
    for a in res.alerts:
        if a.get("update"):
            continue
        rows = by_ms.get(int(a["first_event_time_ms"]))
        if rows:
            alerts[rows[0]] = True
            n_alerts += 1
    info = {
        "counters": res.counters,
        "pipeline_s": round(res.elapsed_s, 3),
        "alerts": n_alerts,
        "checks": checks,
        "consistent": consistent,
        "model": model_path,
    }
    return Detection(scores, tuple(alerts), info)


def _zscore_result(kv) -> dict[str, Any]:
    result = kv[1]
    pred = next(iter(result.predictions))
    score = pred.score
    return {
        "ts": result.example.ts,
        "score": None
        if score is None or (isinstance(score, float) and math.isnan(score))
        else score,
        "label": pred.label,
    }


def _zscore_detector(n_fields: int):
    from apache_beam.ml.anomaly.aggregations import MaxScore
    from apache_beam.ml.anomaly.base import EnsembleAnomalyDetector
    from apache_beam.ml.anomaly.detectors.zscore import ZScore
    from apache_beam.ml.anomaly.thresholds import FixedThreshold

    if n_fields == 1:
        return ZScore(features=["f0"])
    return EnsembleAnomalyDetector(
        sub_detectors=[ZScore(features=[f"f{j}"]) for j in range(n_fields)],
        aggregation_strategy=MaxScore(),
        threshold_criterion=FixedThreshold(3),
    )


def _to_row(event):
    import apache_beam as beam

    return (event.key, beam.Row(ts=event.ts, **{f"f{j}": v for j, v in enumerate(event.values)}))


def _detect_beam_zscore(series: Series, cfg: Config, run_dir: str, runner: str) -> Detection:
    import typing

    import apache_beam as beam
    from apache_beam.ml.anomaly.transforms import AnomalyDetection

    from streamsift.pipeline.options import make_runner, start_pipeline, streaming_options
    from streamsift.pipeline.run import read_jsonl
    from streamsift.transforms import sinks
    from streamsift.transforms.parse import ParseEvents
    from streamsift.transforms.source import ReplayStream

    os.makedirs(run_dir, exist_ok=True)
    out_path = os.path.join(run_dir, "zscore.jsonl")
    sinks.close_all()
    if os.path.exists(out_path):
        os.remove(out_path)
    payloads = series_payloads(series, cfg.input)
    pipeline = beam.Pipeline(runner=make_runner(runner), options=streaming_options([]))
    parsed = (
        pipeline | "Source" >> ReplayStream(payloads, cfg.input) | "Parse" >> ParseEvents(cfg.input)
    )
    (
        parsed["events"]
        | "ToRow" >> beam.Map(_to_row).with_output_types(typing.Tuple[str, beam.Row])  # noqa: UP006
        | "ZScore" >> AnomalyDetection(_zscore_detector(len(series.fields)))
        | "Write" >> sinks.WriteJsonLines(out_path, _zscore_result)
    )
    start = time.monotonic()
    start_pipeline(pipeline).wait_until_finish()
    elapsed = time.monotonic() - start
    sinks.close_all()
    by_ms = _rows_by_ms(series)
    used: dict[int, int] = {}
    scores = [0.0] * series.n_rows
    alerts = [False] * series.n_rows
    results = read_jsonl(out_path)
    for r in results:
        ms = _ms(float(r["ts"]))
        rows = by_ms.get(ms, [])
        k = used.get(ms, 0)
        if k >= len(rows):
            continue
        used[ms] = k + 1
        scores[rows[k]] = zscore_to_unit(r["score"])
        alerts[rows[k]] = r["label"] == 1
    info = {"pipeline_s": round(elapsed, 3), "results": len(results), "alerts": sum(alerts)}
    return Detection(tuple(scores), tuple(alerts), info)


# --------------------------------------------------------------------------- outputs


def _scores_csv_path(out_dir: str, detector: str, name: str) -> str:
    sub, base = os.path.split(name)
    return os.path.join(out_dir, detector, sub, f"{detector}_{base}")


def write_scores_csv(path: str, series: Series, detection: Detection) -> None:
    """``timestamp,<value columns>,anomaly_score,alert``, one row per input row
    (scores written exactly, so scoring the file again gives the same result).

    >>> import tempfile
    >>> s = Series("a.csv", "timestamp", ("value",), ("2014-01-01 00:00:00",), (1388534400.0,),
    ...            ((2.5,),), (("2.50",),))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_scores_csv(os.path.join(d, "o.csv"), s, Detection((0.25,), (True,)))
    ...     print(open(os.path.join(d, "o.csv")).read(), end="")
    timestamp,value,anomaly_score,alert
    2014-01-01 00:00:00,2.50,0.25,1
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([series.time_column, *series.fields, "anomaly_score", "alert"])
        for i in range(series.n_rows):
            w.writerow(
                [
                    series.times[i],
                    *series.cells[i],
                    repr(float(detection.scores[i])),
                    int(detection.alerts[i]),
                ]
            )


def _metrics_dict(m: WindowMetrics) -> dict[str, Any]:
    d = m._asdict()
    d["time_to_detect_s"] = list(m.time_to_detect_s)
    found = [t for t in m.time_to_detect_s if t is not None]
    d["median_time_to_detect_s"] = statistics.median(found) if found else None
    return d


def _csv_files(data_dir: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(".csv"):
                rel = os.path.relpath(os.path.join(root, f), data_dir)
                out.append(rel.replace(os.sep, "/"))
    return out


# --------------------------------------------------------------------------- evaluate


def evaluate(
    data_dir: str,
    labels_path: str,
    out_dir: str,
    detector: str = "streamsift",
    cfg: Config | None = None,
    *,
    model_dir: str | None = None,
    runner: str = "DirectRunner",
    probation_percent: float = PROBATION_PERCENT,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay and score every CSV under ``data_dir`` against ``labels_path``; write
    the scores CSVs and ``<out_dir>/<detector>/summary.json``; return the summary.

    ``model_dir`` (streamsift only): where the model artifact for each column set
    is reused or trained (:func:`~streamsift.pipeline.run.ensure_model`); default
    ``<out_dir>/model/<columns>``. ``progress`` receives one line per file.

    >>> evaluate(".", "labels.json", "out", detector="prophet")
    Traceback (most recent call last):
    ...
    ValueError: detector must be one of ['streamsift', 'beam-zscore']; got 'prophet'
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {list(DETECTORS)}; got {detector!r}")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir must be a directory; got {data_dir!r}")
    cfg = cfg or Config()
    labels = load_labels(labels_path)
    files = _csv_files(data_dir)
    if not files:
        raise ValueError(f"data_dir must contain CSV files; got none under {data_dir!r}")
    unlabelled = [f for f in files if f not in labels]
    if unlabelled:
        raise ValueError(
            f"every CSV must have an entry in {labels_path!r} (an empty list if it has no "
            f"anomaly); got none for {unlabelled}"
        )
    extra = sorted(set(labels) - set(files))
    if extra:
        _LOG.warning("labels for files not under %s are ignored: %s", data_dir, extra)
    say = progress or (lambda _line: None)
    started = time.monotonic()
    models: dict[tuple[str, ...], str] = {}
    scorer = NABScorer(probation_percent=probation_percent)
    per_file: dict[str, dict[str, Any]] = {}
    window_stats: dict[str, WindowMetrics] = {}
    for k, name in enumerate(files, start=1):
        t0 = time.monotonic()
        series = read_series(os.path.join(data_dir, name), name)
        run_cfg = dataclasses.replace(cfg, input=input_config_for(series, cfg.input))
        run_dir = os.path.join(out_dir, detector, "runs", os.path.splitext(name)[0])
        if detector == "streamsift":
            # a fixed artifact per column set: no refresh during an evaluation
            mdir = model_dir or os.path.join(out_dir, "model", _schema_slug(series.fields))
            run_cfg = dataclasses.replace(
                run_cfg, model=dataclasses.replace(cfg.model, dir=mdir, watch_interval_s=0.0)
            )
            if series.fields not in models:
                from streamsift.pipeline.run import ensure_model

                models[series.fields] = ensure_model(run_cfg, mdir)
            det = _detect_streamsift(series, run_cfg, models[series.fields], run_dir, runner)
        else:
            det = _detect_beam_zscore(series, run_cfg, run_dir, runner)
        scores_path = _scores_csv_path(out_dir, detector, name)
        write_scores_csv(scores_path, series, det)
        order = series.time_order()
        ts = [series.ts[i] for i in order]
        windows = labels[name]
        scorer.learn_file(name, ts, [det.scores[i] for i in order], windows)
        wm = window_metrics(ts, [det.alerts[i] for i in order], windows, probation_percent)
        window_stats[name] = wm
        elapsed = time.monotonic() - t0
        per_file[name] = {
            "rows": series.n_rows,
            "fields": list(series.fields),
            "runtime_s": round(elapsed, 3),
            "events_per_s": round(series.n_rows / elapsed, 1) if elapsed > 0 else None,
            "scores_csv": scores_path,
            "window_metrics": _metrics_dict(wm),
            **det.info,
        }
        note = "" if det.info.get("consistent", True) else "  (replay does not match the run!)"
        say(
            f"[{k}/{len(files)}] {name}: {series.n_rows} rows in {elapsed:.1f} s, "
            f"{wm.alerts} alerts, {wm.detected}/{wm.windows} windows detected{note}"
        )
    nab = scorer.score_all()
    for name in files:
        per_file[name]["nab"] = {
            p: {"raw": r.per_file[name].raw, "score": r.per_file[name].normalized}
            for p, r in nab.items()
        }
    pooled = pool_window_metrics(list(window_stats.values()))
    summary = {
        "detector": detector,
        "data_dir": data_dir,
        "labels": labels_path,
        "out_dir": out_dir,
        "files": per_file,
        "overall": {"files": len(files), "window_metrics": _metrics_dict(pooled)},
        "nab": {
            p: {
                "threshold": r.threshold,
                "raw": r.raw,
                "null": r.null,
                "perfect": r.perfect,
                "score": r.normalized,
            }
            for p, r in nab.items()
        },
        "probation_percent": probation_percent,
        "runtime_s": round(time.monotonic() - started, 3),
    }
    if detector == "streamsift":
        summary["overall"]["consistent"] = all(v.get("consistent") for v in per_file.values())
        summary["models"] = sorted(set(models.values()))
    path = os.path.join(out_dir, detector, "summary.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    return summary


# --------------------------------------------------------------------------- report


def _fmt_ttd(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 3600.0:.1f}h" if seconds >= 3600 else f"{seconds / 60.0:.0f}m"


def _fmt_score(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_report(summary: dict[str, Any]) -> str:
    """Per-file and overall tables of a summary returned by :func:`evaluate`.

    >>> wm = {"windows": 1, "detected": 1, "alerts": 2, "false_alerts": 1, "precision": 0.5,
    ...       "recall": 1.0, "f1": 2 / 3, "false_alerts_per_day": 0.5,
    ...       "median_time_to_detect_s": 600.0, "time_to_detect_s": [600.0]}
    >>> nab = {p: {"threshold": 0.9, "raw": 0.5, "null": -1.0, "perfect": 1.0, "score": 75.0}
    ...        for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")}
    >>> s = {"detector": "streamsift", "files": {"a.csv": {"rows": 10, "window_metrics": wm,
    ...      "nab": {p: {"raw": 0.5, "score": 75.0} for p in nab}}},
    ...      "overall": {"files": 1, "window_metrics": wm}, "nab": nab, "runtime_s": 1.0}
    >>> print(format_report(s).splitlines()[-4])
    NAB standard              75.0  (raw 0.500, null -1.000, perfect 1.000, threshold 0.900000)
    """
    profiles = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
    lines = [
        f"== streamsift evaluate: detector {summary['detector']} ==",
        f"{'file':<52} {'rows':>5} {'win':>3} {'det':>3} {'alrt':>4} {'FP':>4} "
        f"{'prec':>5} {'rec':>5} {'F1':>5} {'FA/day':>6} "
        f"{'std':>6} {'lowFP':>6} {'lowFN':>6}  time to detect per window",
    ]
    for name, f in summary["files"].items():
        wm = f["window_metrics"]
        nab = f.get("nab", {})
        lines.append(
            f"{name[-52:]:<52} {f['rows']:>5} {wm['windows']:>3} {wm['detected']:>3} "
            f"{wm['alerts']:>4} {wm['false_alerts']:>4} {wm['precision']:>5.2f} "
            f"{wm['recall']:>5.2f} {wm['f1']:>5.2f} {wm['false_alerts_per_day']:>6.2f} "
            + " ".join(f"{_fmt_score(nab.get(p, {}).get('score')):>6}" for p in profiles)
            + "  "
            + (" ".join(_fmt_ttd(t) for t in wm["time_to_detect_s"]) or "-")
        )
    wm = summary["overall"]["window_metrics"]
    lines += [
        "",
        f"overall ({summary['overall']['files']} files): windows {wm['windows']}, detected "
        f"{wm['detected']}, alerts {wm['alerts']} ({wm['false_alerts']} false)",
        f"  window precision {wm['precision']:.3f}  recall {wm['recall']:.3f}  "
        f"F1 {wm['f1']:.3f}  false alerts/day {wm['false_alerts_per_day']:.2f}  "
        f"median time to detect {_fmt_ttd(wm['median_time_to_detect_s'])}",
    ]
    for p in profiles:
        r = summary["nab"][p]
        lines.append(
            f"NAB {p:<20} {r['score']:>5.1f}  (raw {r['raw']:.3f}, null {r['null']:.3f}, "
            f"perfect {r['perfect']:.3f}, threshold {r['threshold']:.6f})"
        )
    lines.append(f"runtime {summary['runtime_s']:.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``streamsift evaluate``.

    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> a = p.parse_args(["--data", "d", "--labels", "l.json"])
    >>> a.out, a.detector, a.runner
    ('streamsift-out/evaluate', 'streamsift', 'DirectRunner')
    """
    parser.add_argument(
        "--data", required=True, help="directory of CSV files (searched recursively)"
    )
    parser.add_argument(
        "--labels", required=True, help="labels.json: file path -> list of [start, end] windows"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--detector", choices=DETECTORS, default="streamsift", help="detector to evaluate"
    )
    parser.add_argument("--config", help="TOML config file (see README: config reference)")
    parser.add_argument(
        "--model-dir",
        help="model artifact directory (default: <out>/model/<columns>, trained if missing)",
    )
    parser.add_argument(
        "--runner", default="DirectRunner", help="Beam runner (default DirectRunner)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def main(args: argparse.Namespace) -> int:
    """Run ``streamsift evaluate``; print per-file lines and the report; 0 on
    success, 2 on bad input (the reason goes to stderr).

    >>> main(argparse.Namespace(data="/nonexistent", labels="labels.json", out="o",
    ...                         detector="streamsift"))
    2
    """
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"streamsift evaluate: config error: {exc}", file=sys.stderr)
        return 2
    for flag, path, check in (
        ("--data", args.data, os.path.isdir),
        ("--labels", args.labels, os.path.isfile),
    ):
        if not check(path):
            print(f"streamsift evaluate: {flag} {path!r} does not exist", file=sys.stderr)
            return 2
    try:
        summary = evaluate(
            args.data,
            args.labels,
            args.out,
            args.detector,
            cfg,
            model_dir=getattr(args, "model_dir", None),
            runner=getattr(args, "runner", "DirectRunner"),
            progress=lambda line: print(line, flush=True),
        )
    except ValueError as exc:
        print(f"streamsift evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_report(summary))
    print(f"scores and summary: {os.path.join(args.out, args.detector)}/")
    return 0
