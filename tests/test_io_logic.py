"""Broker I/O without brokers: watermark and commit logic, config, secrets, destinations."""

from __future__ import annotations

import json
import logging
import math

import pytest

from streamsift.config import ConfigError, KafkaConfig, apply_overrides, from_mapping, load_config
from streamsift.io.clients import BrokerRecord, kafka_client_config, pubsub_subscription_path
from streamsift.io.direct import event_time_of
from streamsift.io.sinks import parse_destination, routing_fields
from streamsift.io.watermark import CommitLedger, PartitionWatermark
from streamsift.pipeline import cli


# --- watermark -------------------------------------------------------------------------------
def test_watermark_is_the_slowest_active_partition_minus_the_lag():
    wm = PartitionWatermark(lag_s=5.0, idle_s=10.0)
    s = wm.new_state()
    for p in ("a", "b", "c"):
        wm.declare(s, p, now=0.0)
    wm.learn_one(s, "a", 1000.0, now=1.0)
    wm.learn_one(s, "b", 900.0, now=1.0)
    assert wm.current(s, now=1.0) == -math.inf  # "c" has not been read yet
    wm.learn_one(s, "c", 950.0, now=2.0)
    assert wm.current(s, now=2.0) == 895.0
    wm.learn_one(s, "b", 990.0, now=3.0)
    assert wm.current(s, now=3.0) == 945.0


def test_an_idle_partition_stops_holding_and_all_idle_follows_the_wall_clock():
    wm = PartitionWatermark(lag_s=0.0, idle_s=10.0)
    s = wm.new_state()
    wm.learn_one(s, "slow", 100.0, now=0.0)
    wm.learn_one(s, "fast", 500.0, now=0.0)
    assert wm.current(s, now=5.0) == 100.0
    wm.learn_one(s, "fast", 600.0, now=9.0)
    assert wm.current(s, now=10.0) == 600.0  # "slow" idle since 0
    # everything idle: event time moves with the wall clock since the last record
    assert wm.current(s, now=29.0) == 620.0
    # a late record of the slow partition never moves the watermark back
    wm.learn_one(s, "slow", 110.0, now=30.0)
    assert wm.current(s, now=30.0) == 620.0


def test_records_without_event_time_do_not_advance_the_watermark():
    wm = PartitionWatermark(lag_s=0.0, idle_s=10.0)
    s = wm.new_state()
    wm.learn_one(s, "a", None, now=0.0)
    assert wm.current(s, now=1.0) == -math.inf
    wm.learn_one(s, "a", 50.0, now=2.0)
    assert wm.current(s, now=2.0) == 50.0


@pytest.mark.parametrize("bad", [{"lag_s": -1.0}, {"idle_s": 0.0}])
def test_watermark_rejects_bad_parameters(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PartitionWatermark(**bad)


def test_ledger_commits_per_partition_prefixes_only():
    ledger = CommitLedger(lateness_s=0.0, margin_s=0.0)
    s = ledger.new_state()
    ledger.learn_one(s, "p0", ("t", 0, 0), 10.0, "a")
    ledger.learn_one(s, "p0", ("t", 0, 1), 50.0, "b")
    ledger.learn_one(s, "p0", ("t", 0, 2), 20.0, "c")
    ledger.learn_one(s, "p1", ("t", 1, 0), 30.0, "d")
    assert ledger.ready(s, done_until=40.0) == [("t", 0, 0), ("t", 1, 0)]
    # offset 2 is safe but offset 1 is not: committing 2 would skip 1
    assert ledger.ready(s, done_until=45.0) == []
    assert ledger.ready(s, done_until=60.0) == [("t", 0, 1), ("t", 0, 2)]
    assert s.size() == 0


def test_ledger_waits_for_the_keys_newest_event_when_the_release_timer_was_rearmed():
    """An event still buffered when its key's timer fired is released at the key's
    newest event time + lateness (the re-armed timer), not at its own."""
    ledger = CommitLedger(lateness_s=30.0, margin_s=2.0)
    s = ledger.new_state()
    ledger.learn_one(s, "p0", 1, 100.0, "k")
    ledger.learn_one(s, "p0", 2, 500.0, "k")  # the key ran far ahead of the watermark
    assert ledger.ready(s, done_until=140.0) == []  # 100 + 30 passed: fixed at 500 + 30 + 2
    ledger.learn_one(s, "p0", 3, 900.0, "k")  # does not delay record 1 any further
    assert ledger.ready(s, done_until=531.0) == []
    assert ledger.ready(s, done_until=532.5) == [1]  # 2 was fixed at 900 + 30 + 2 (at 531)
    assert ledger.ready(s, done_until=931.0) == []
    assert ledger.ready(s, done_until=933.0) == [2, 3]


@pytest.mark.parametrize(
    ("engine", "quantum", "delay"),
    [("per_element", 5.0, 0.0), ("batched", 5.0, 5.0), ("batched", 0.0, 0.0)],
)
def test_native_source_waits_for_the_batched_engines_release_quantum(engine, quantum, delay):
    """The batched engine's shard timers fire up to ``engine.release_quantum_s`` after the
    key's timer: the native source's commit ledger waits that much longer."""
    import apache_beam as beam

    from streamsift.io.run import broker_source

    cfg = apply_overrides(
        from_mapping({}),
        {"engine.mode": engine, "engine.release_quantum_s": quantum},
    )
    read, _payloads = broker_source(beam.Pipeline(), cfg, "kafka", "native")
    assert read.release_delay_s == delay
    with pytest.raises(ValueError, match=r"release_delay_s must be >= 0; got -1"):
        type(read)("kafka", cfg.kafka, cfg.source, cfg.input, 30.0, release_delay_s=-1)


# --- event time ------------------------------------------------------------------------------
def test_broker_event_time_is_written_into_the_payload_in_the_configured_format():
    from streamsift.config import InputConfig

    rec = BrokerRecord("p", 1, 1767225601.25, b'{"key": "k", "ts": "2026-01-01T00:00:00Z"}')
    ts, payload = event_time_of(rec, InputConfig(time_format="iso8601"), True)
    assert ts == 1767225601.25
    assert json.loads(payload)["ts"] == "2026-01-01T00:00:01.250000+00:00"
    ts, payload = event_time_of(rec, InputConfig(), False)
    assert ts == 1767225600.0 and payload == rec.payload


# --- config and secrets ----------------------------------------------------------------------
SECRET = "s3cr3t-Value-42"


def _secret_cfg():
    return from_mapping(
        {
            "kafka": {
                "bootstrap_servers": "b:9093",
                "topics": ["events"],
                "properties": {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "PLAIN",
                    "sasl.username": "alice",
                    "sasl.password": SECRET,
                    "ssl.key.password": SECRET + "2",
                    "oauth.token": SECRET + "3",
                },
            }
        }
    )


def test_kafka_properties_pass_through_to_the_client():
    cfg = _secret_cfg()
    conf = kafka_client_config(cfg.kafka, **{"group.id": "g"})
    assert conf["sasl.password"] == SECRET
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["bootstrap.servers"] == "b:9093" and conf["group.id"] == "g"


def test_secrets_never_appear_in_repr_or_printed_config(tmp_path, capsys):
    cfg = _secret_cfg()
    assert SECRET not in repr(cfg)
    assert SECRET not in repr(cfg.kafka)
    assert "alice" in repr(cfg.kafka)  # non-secret values stay visible
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[kafka]\nbootstrap_servers = 'b:9093'\ntopics = ['events']\n"
        f"[kafka.properties]\n'sasl.password' = '{SECRET}'\n'security.protocol' = 'SASL_SSL'\n"
    )
    rc = cli.main(
        [
            "run",
            f"--config={toml}",
            "--kafka-property",
            f"ssl.key.password={SECRET}x",
            "--print-config",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0
    printed = json.loads(out.out)
    assert printed["kafka"]["properties"]["sasl.password"] == "***"
    assert printed["kafka"]["properties"]["ssl.key.password"] == "***"
    assert printed["kafka"]["properties"]["security.protocol"] == "SASL_SSL"
    assert SECRET not in out.out + out.err


def test_secrets_never_appear_in_logs_when_the_broker_is_unreachable(tmp_path, caplog, capsys):
    pytest.importorskip("confluent_kafka")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    toml = tmp_path / "c.toml"
    toml.write_text(
        f"[source]\nconnect_timeout_s = 2\n[kafka]\nbootstrap_servers = '127.0.0.1:{port}'\n"
        f"topics = ['t']\n[kafka.properties]\n'sasl.password' = '{SECRET}'\n"
        "'sasl.username' = 'alice'\n'security.protocol' = 'SASL_PLAINTEXT'\n"
        "'sasl.mechanism' = 'PLAIN'\n"
    )
    with caplog.at_level(logging.DEBUG):
        rc = cli.main(["run", f"--config={toml}", "--source=kafka", "-v"])
    out = capsys.readouterr()
    assert rc == 3
    assert "did not answer" in out.err
    assert "kafka consumer config" in caplog.text  # the config was logged ...
    assert SECRET not in caplog.text + out.out + out.err  # ... without the secret


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="source.event_time must be one of"):
        apply_overrides(load_config(None), {"source.event_time": "wall"})
    with pytest.raises(ConfigError, match="sinks.alerts must be file://PATH"):
        apply_overrides(load_config(None), {"sinks.alerts": "alerts.jsonl"})
    # other Beam file systems are file sinks written with Beam's file IO
    assert (
        apply_overrides(load_config(None), {"sinks.alerts": "s3://b/x"}).sinks.alerts == "s3://b/x"
    )
    with pytest.raises(ConfigError, match="kafka.properties"):
        KafkaConfig(properties="sasl.password=x")


# --- destinations ----------------------------------------------------------------------------
def test_destinations_and_routing_fields():
    assert parse_destination("file:///tmp/a.jsonl").target == "/tmp/a.jsonl"
    assert parse_destination("kafka://alerts").kind == "kafka"
    with pytest.raises(ValueError, match="destination must be"):
        parse_destination("no scheme://bucket/x")
    s3 = parse_destination("s3://bucket/x")
    assert (s3.kind, s3.target, str(s3)) == ("file", "s3://bucket/x", "s3://bucket/x")
    key, attrs = routing_fields({"alert_id": "a", "key": "k", "severity": "warning", "x": 1})
    assert key == "k" and attrs == {"alert_id": "a", "key": "k", "severity": "warning"}
    assert pubsub_subscription_path(
        __import__("streamsift.config", fromlist=["PubSubConfig"]).PubSubConfig(
            project="p", subscription="s"
        )
    ) == ("projects/p/subscriptions/s", "")


def test_pubsub_unreachable_fails_fast_with_a_clear_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("google.cloud.pubsub_v1")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    toml = tmp_path / "c.toml"
    toml.write_text("[source]\nconnect_timeout_s = 2\n")
    rc = cli.main(["run", f"--config={toml}", "--source=pubsub", "--project=p", "--subscription=s"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "Pub/Sub did not answer within source.connect_timeout_s=2 s" in err
    assert "projects/p/subscriptions/s" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--source=pubsub", "--runner=FlinkRunner", "--project=p", "--subscription=s"],
            "--source pubsub runs on the DirectRunner (native pull source) or the DataflowRunner "
            "(Beam's Pub/Sub IO); got --runner FlinkRunner",
        ),
        (
            ["--source=kafka", "--runner=PrismRunner", "--kafka-impl=native", "--topic=t"],
            "--kafka-impl native runs on the DirectRunner only",
        ),
        (
            ["--source=kafka", "--kafka-impl=xlang", "--topic=t"],
            "the DirectRunner cannot run cross-language transforms",
        ),
    ],
)
def test_unsupported_runner_and_impl_combinations_are_named(argv, message, capsys):
    rc = cli.main(["run", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
