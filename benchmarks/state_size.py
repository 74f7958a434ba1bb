"""State bytes per key and process RSS at many keys.

:func:`state_breakdown` lists the encoded size of each per-key state cell the
pipeline keeps (``DetectPerKey``: the :class:`~streamsift.models.keylogic.KeyLogic`
state and its ``Meta`` bookkeeping; ``AlertPerKey``: the
:class:`~streamsift.models.alerting.AlertState` and its order chain), next to
what Beam's ``ZScore`` keeps per key (its cloudpickled detector).

:func:`measure_keys` feeds events to the per-key logic directly, not through
the DoFn or a runner: for each of ``n_keys`` keys it runs ``events_per_key``
events through ``KeyLogic.step`` and ``AlertLogic.step`` in the DoFns' access
pattern (round-robin over keys; decode the key's bytes, step, encode, store),
and keeps every key's encoded cells in a dict, as an in-memory state backend
would. The RSS growth over the dict's creation divided by ``n_keys`` is the
process memory per key (encoded bytes plus Python object overhead); runner
bookkeeping per key (state tables, timers) comes on top.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from benchmarks.common import BenchSpec, current_rss_mb, peak_rss_mb

__all__ = ["measure_keys", "state_breakdown", "zscore_state_bytes"]

_START_TS = 1_767_225_600.0


def zscore_state_bytes(values: int = 1000) -> int:
    """Bytes of the cloudpickled Beam ``ZScore`` detector of one key after ``values``
    learnt values (its default sliding windows hold 1000), i.e. what
    ``AnomalyDetection`` reads and writes per element in its ``saved_model`` state.

    >>> zscore_state_bytes(10) < zscore_state_bytes(1000)
    True
    """
    import apache_beam as beam
    from apache_beam.coders import CloudpickleCoder
    from apache_beam.ml.anomaly.detectors.zscore import ZScore
    from apache_beam.ml.anomaly.specifiable import Specifiable

    spec = ZScore(features=["x"]).to_spec()
    spec.config["_run_init"] = True  # as AnomalyDetection's DoFn builds it
    detector = Specifiable.from_spec(spec)
    rng = np.random.default_rng(0)
    for v in rng.normal(50.0, 5.0, size=values).tolist():
        detector.learn_one(beam.Row(x=v))
    return len(CloudpickleCoder().encode(detector))


def state_breakdown(spec: BenchSpec) -> dict[str, Any]:
    """Encoded size (bytes) of every per-key state cell, for ``spec.features`` fields
    (default config otherwise); ``keylogic_detector`` is the seasonal detector's
    share of ``keylogic``.

    >>> b = state_breakdown(BenchSpec(features=1))
    >>> b["keylogic"] == b["keylogic_state_size"], b["alert_max"] > b["alert_empty"] > 0
    (True, True)
    >>> 0 < b["keylogic_detector"] < b["keylogic"]
    True
    >>> b["total_min"] == b["keylogic"] + b["meta"] + b["alert_empty"] + b["alert_chain"]
    True
    """
    from streamsift.config import (
        AlertConfig,
        DetectorConfig,
        FeatureConfig,
        PrefilterConfig,
        ThresholdConfig,
    )
    from streamsift.models.alerting import AlertLogic, AlertState, alert_id_for
    from streamsift.models.keylogic import KeyLogic
    from streamsift.models.thresholds import NBINS
    from streamsift.transforms import alerts as alert_transforms
    from streamsift.transforms.keyed import Meta

    logic = KeyLogic(spec.fields, FeatureConfig(), PrefilterConfig())
    state = logic.new_state()
    logic.step(state, _START_TS, [1.0] * len(spec.fields))
    alert_logic = AlertLogic(ThresholdConfig(), AlertConfig(), logic.feature_names)
    empty = alert_logic.new_state()
    full = AlertState(
        sketch=alert_logic.new_state().sketch,
        alert_id=alert_id_for("host-000", _START_TS),
        first_event_time=_START_TS,
        last_event_time=_START_TS,
        count=1,
        severity="info",
        max_score=0.95,
    )
    for i in range(NBINS):
        full.sketch.weights[i] = 1.0
    # the alert stage's order chain (private to the alert transform; 0 if renamed)
    chain_cls = getattr(alert_transforms, "_Chain", None)
    chain = len(chain_cls().encode()) if chain_cls is not None else 0
    out = {
        "fields": len(spec.fields),
        "horizons": len(FeatureConfig().horizons_s),
        "model_features": len(logic.feature_names),
        "keylogic": len(logic.encode_state(state)),
        "keylogic_state_size": logic.state_size,
        "keylogic_detector": logic.state_size
        - KeyLogic(
            spec.fields, FeatureConfig(), PrefilterConfig(), DetectorConfig(enabled=False)
        ).state_size,
        "meta": len(Meta().encode()),
        "alert_empty": len(empty.encode()),
        "alert_max": len(full.encode()),
        "alert_chain": chain,
    }
    out["total_min"] = out["keylogic"] + out["meta"] + out["alert_empty"] + chain
    out["total_max"] = out["keylogic"] + out["meta"] + out["alert_max"] + chain
    try:
        out["beam_zscore_1000"] = zscore_state_bytes(1000)
    except Exception as exc:  # Beam's detector API is experimental; report, do not fail
        out["beam_zscore_error"] = f"{type(exc).__name__}: {exc}"
    return out


def measure_keys(
    spec: BenchSpec, n_keys: int, events_per_key: int = 2, seed: int = 0
) -> dict[str, Any]:
    """RSS per key with ``n_keys`` keys of encoded state (see the module docstring).

    Run it in a fresh process: RSS is the process's, before and after.

    >>> r = measure_keys(BenchSpec(features=2), 50, events_per_key=2)
    >>> r["n_keys"], r["events"], r["mode"]
    (50, 100, 'direct')
    >>> r["state_bytes_per_key"] > r["keylogic_bytes"] > 0
    True
    """
    from streamsift.config import AlertConfig, FeatureConfig, PrefilterConfig, ThresholdConfig
    from streamsift.models.alerting import AlertLogic, AlertState
    from streamsift.models.keylogic import KeyLogic
    from streamsift.records import Event, Scored
    from streamsift.synthetic import key_name
    from streamsift.transforms.keyed import Meta

    if isinstance(n_keys, bool) or not isinstance(n_keys, int) or n_keys < 1:
        raise ValueError(f"n_keys must be an integer >= 1; got {n_keys!r}")
    if (
        isinstance(events_per_key, bool)
        or not isinstance(events_per_key, int)
        or events_per_key < 1
    ):
        raise ValueError(f"events_per_key must be an integer >= 1; got {events_per_key!r}")
    fields = spec.fields
    nf = len(fields)
    logic = KeyLogic(fields, FeatureConfig(), PrefilterConfig())
    alert_logic = AlertLogic(ThresholdConfig(), AlertConfig(), logic.feature_names)
    rng = np.random.default_rng([seed, n_keys, nf])
    levels = rng.lognormal(3.0, 1.0, size=(n_keys, nf))
    names = [key_name(k, n_keys) for k in range(n_keys)]
    gc.collect()
    rss0 = current_rss_mb()
    store: dict[str, tuple[bytes, bytes, bytes]] = {}
    t0 = time.perf_counter()
    for j in range(events_per_key):
        noise = np.exp(0.05 * rng.standard_normal((n_keys, nf)))
        scores = rng.beta(2.0, 8.0, size=n_keys).tolist()
        values_all = (levels * noise).tolist()
        ts = _START_TS + 60.0 * j
        for k in range(n_keys):
            key = names[k]
            cells = store.get(key)
            if cells is None:
                state, meta, astate = logic.new_state(), Meta(), alert_logic.new_state()
            else:
                state = logic.decode_state(cells[0])
                meta = Meta.decode(cells[1])
                astate = AlertState.decode(cells[2])
            values = values_all[k]
            res = logic.step(state, ts, values)
            meta.last_ts = ts
            scored = Scored(
                Event(key, ts, tuple(values)),
                res.features,
                res.stage1,
                res.reasons,
                True,
                stage2=scores[k],
                seq=j,
            )
            alert_logic.step(astate, scored, ts)
            store[key] = (logic.encode_state(state), meta.encode(), astate.encode())
    elapsed = time.perf_counter() - t0
    del values_all, noise, scores
    gc.collect()
    rss1 = current_rss_mb()
    shard = _shard_cells(store, n_shards=4)
    sizes = np.array([[len(c) for c in cells] for cells in store.values()], dtype=np.float64)
    mean = sizes.mean(axis=0)
    n_events = n_keys * events_per_key
    return {
        "mode": "direct",
        "n_keys": n_keys,
        "events_per_key": events_per_key,
        "events": n_events,
        "keylogic_bytes": float(mean[0]),
        "meta_bytes": float(mean[1]),
        "alert_bytes": float(mean[2]),
        "state_bytes_per_key": float(mean.sum()),
        "rss_before_mb": rss0,
        "rss_after_mb": rss1,
        "rss_per_key_bytes": (rss1 - rss0) * 1024.0 * 1024.0 / n_keys,
        "peak_rss_mb": peak_rss_mb(),
        "us_per_event": 1e6 * elapsed / n_events,
        **shard,
    }


def _shard_cells(
    store: dict[str, tuple[bytes, bytes, bytes]], n_shards: int, touched: int = 125
) -> dict[str, Any]:
    """The batched engine's view of the same keys: per shard, the state of all its
    keys (:class:`~streamsift.models.batch.ShardState`) and what it costs per
    step. ``full``: marshalling the whole shard into one cell and back (the
    engine's layout before its change log; still what a snapshot and a rebuild
    after a cache miss cost); ``step``: what a step with a warm cache writes, the
    ``touched`` keys it changed (500-payload chunks over 4 shards: about 125
    keys), plus the compaction that rewrites the shard once per ``keys``
    records, amortised per step; ``heap``: building the shard's timer heap (once per
    process and shard, on first use after a rebuild); ``scan``: what finding the due
    timers costs per step once the heap exists (:meth:`ShardLogic.advance` with nothing
    due: O(due timers), not O(keys))."""
    import marshal

    from streamsift.config import Config
    from streamsift.models.batch import KeySlot, ShardLogic, ShardState, _Meta, shard_of
    from streamsift.transforms.keyed import Meta

    shards = [ShardState() for _ in range(n_shards)]
    for key, (logic_raw, meta_raw, alert_raw) in store.items():
        m = Meta.decode(meta_raw)
        st = shards[shard_of(key, n_shards)]
        st.keys[key] = KeySlot(
            _Meta(m.released_until, m.timer_at, m.last_ts, m.expire_at, m.max_seen, m.next_seq),
            release_us=None if m.timer_at == float("inf") else int(m.timer_at * 1e6),
            expire_us=int(m.expire_at * 1e6) if m.expire_at > -float("inf") else None,
            logic_raw=logic_raw,
        )
        st.alerts[key] = alert_raw
    logic = ShardLogic.from_config(Config())
    total = 0
    enc_s = dec_s = step_s = scan_s = heap_s = 0.0
    amortised_s = 0.0
    for st in shards:
        t0 = time.perf_counter()
        blob = marshal.dumps(st.to_plain(), 4)
        enc = time.perf_counter() - t0
        enc_s += enc
        t0 = time.perf_counter()
        ShardState.from_plain(marshal.loads(blob))
        dec_s += time.perf_counter() - t0
        total += len(blob)
        keys = list(st.keys)[:touched]
        st.dirty.update(keys)
        st.dirty_alerts.update(keys)
        t0 = time.perf_counter()
        logic.pack(st)
        marshal.dumps((1, "c", st.take_changes()), 4)
        step_s += time.perf_counter() - t0
        size = len(st.keys) + len(st.alerts)
        amortised_s += enc * (2 * len(keys)) / max(1, size)
        t0 = time.perf_counter()
        logic.advance(st, -(2**62), {})  # first use builds the timer heap
        heap_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        logic.advance(st, -(2**62), {})
        st.next_timer_us()
        scan_s += time.perf_counter() - t0
    return {
        "shards": n_shards,
        "shard_bytes_per_key": total / max(1, len(store)),
        "shard_write_ms": 1e3 * enc_s / n_shards,
        "shard_read_ms": 1e3 * dec_s / n_shards,
        "step_keys": touched,
        "step_write_ms": 1e3 * step_s / n_shards,
        "step_compaction_ms": 1e3 * amortised_s / n_shards,
        "step_scan_ms": 1e3 * scan_s / n_shards,
        "heap_build_ms": 1e3 * heap_s / n_shards,
    }
