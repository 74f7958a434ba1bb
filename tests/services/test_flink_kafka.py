"""Kafka -> pipeline -> Kafka on Flink with Beam's cross-language KafkaIO, real broker.

1,500 synthetic events (10 keys, injected incidents, a few malformed payloads) go to
a 3-partition topic keyed by the event key. ``streamsift run --runner FlinkRunner
--kafka-impl xlang`` reads them with ``ReadFromKafka`` (bounded by ``--max-records``)
on Flink's embedded cluster and writes its alerts with ``WriteToKafka``. The Java
transforms run on the expansion service's loopback Java worker (EXTERNAL
environment: there is no Docker for the Java SDK container), the Python ones on a
LOOPBACK Python worker. The alerts on the output topic must equal, as a set of
(alert_id, severity), those of a file replay of the same events on the DirectRunner,
and the counters must reconcile with the replay's.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from streamsift.config import Config, apply_overrides

pytestmark = [pytest.mark.services, pytest.mark.slow]

N_EVENTS = 1500
RUN_TIMEOUT_S = 240.0  # upper bound for the Flink run; not a performance assertion


def _e2e_helpers():
    """tests/services/test_e2e_io.py as a module (pytest imports tests with importlib)."""
    path = os.path.join(os.path.dirname(__file__), "test_e2e_io.py")
    spec = importlib.util.spec_from_file_location("_streamsift_e2e_io_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _e2e_helpers()


def _cfg(model_dir: str, out_dir: str) -> Config:
    return apply_overrides(
        Config(),
        {
            "synthetic.events": N_EVENTS,
            "synthetic.keys": 10,
            "synthetic.anomaly_rate": 0.05,
            "synthetic.malformed_rate": 0.005,
            "synthetic.disorder_rate": 0.0,
            "synthetic.late_rate": 0.0,
            "model.dir": model_dir,
            "output.dir": out_dir,
            "model.history_hours": 6.0,
        },
    )


@pytest.fixture(scope="module")
def flink_workload(tmp_path_factory):
    """(payloads, model dir, DirectRunner file-replay result)."""
    from streamsift import synthetic
    from streamsift.pipeline.run import ensure_model, run_stream

    base = tmp_path_factory.mktemp("flink-kafka")
    cfg = _cfg(str(base / "model"), str(base / "replay"))
    payloads = list(synthetic.generate(cfg.synthetic, cfg.input).payloads)
    model = ensure_model(cfg)
    replay = run_stream(
        payloads, cfg, model, cfg.output.dir, print_alerts=False, show_progress=False
    )
    return payloads, str(base / "model"), replay


@pytest.mark.parametrize("engine", e2e.ENGINES)
def test_kafka_xlang_on_flink_matches_file_replay(
    kafka_bootstrap,
    unique_name,
    flink_workload,
    tmp_path,
    flink_job_server_jar,
    expansion_service_jar,
    engine,
):
    """Either engine (``--engine``; batched: ``ChunkPayloads`` of Flink's bundles)."""
    pytest.importorskip("confluent_kafka")
    payloads, model_dir, replay = flink_workload
    assert replay.alerts and replay.counters.get("dead_lettered", 0) > 0  # a real workload
    src, alerts_t = unique_name, f"{unique_name}-alerts"
    e2e.create_topics(kafka_bootstrap, [src, alerts_t])
    try:
        e2e.produce(kafka_bootstrap, src, payloads)
        summary = tmp_path / "summary.json"
        res = e2e.run_cli(
            [
                "--runner=FlinkRunner",
                "--source=kafka",
                "--kafka-impl=xlang",
                f"--bootstrap-servers={kafka_bootstrap}",
                f"--topic={src}",
                f"--group-id={unique_name}-g",
                f"--alerts-to=kafka://{alerts_t}",
                f"--max-records={len(payloads)}",
                f"--model-dir={model_dir}",
                f"--out-dir={tmp_path / 'out'}",
                f"--summary-json={summary}",
                f"--engine={engine}",
                "--",
                "--flink_master=[local]",
                "--environment_type=LOOPBACK",
            ],
            timeout=RUN_TIMEOUT_S,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "(reconciled: in = processed + dead-lettered + late)" in res.stdout
        counters = json.loads(summary.read_text())["counters"]
        e2e.assert_engine_ran(counters, engine)
        for name in ("events_in", "processed", "dead_lettered", "alerts_emitted"):
            assert counters.get(name, 0) == replay.counters.get(name, 0), name
        assert counters["events_in"] == len(payloads)
        with open(tmp_path / "out" / "dead_letter.jsonl") as fh:
            assert len(fh.readlines()) == replay.counters["dead_lettered"]
        alerts = e2e.consume_all(kafka_bootstrap, alerts_t)
        for key, headers, a in alerts:  # routed by key, alert id and severity headers
            assert key == a["key"]
            assert headers == {
                "alert_id": a["alert_id"],
                "key": a["key"],
                "severity": a["severity"],
            }
        assert len(alerts) == len(replay.alerts)
        assert e2e._alert_set(a for _k, _h, a in alerts) == e2e._alert_set(replay.alerts)
    finally:
        e2e.delete_topics(kafka_bootstrap, [src, alerts_t])
