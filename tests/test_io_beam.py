"""Beam's own IO for Dataflow (streamsift/io/beam_pubsub.py), offline: the Pub/Sub read's
event-time step, the Pub/Sub messages' routing attributes, file output through Beam's file
IO on a non-local file system, and which writer each runner gets."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from streamsift.config import Config, InputConfig, PubSubConfig, SinksConfig, SourceConfig
from streamsift.io.beam_pubsub import (
    WriteFilesBeam,
    _PayloadTime,
    pubsub_read_args,
    to_pubsub_message,
)
from streamsift.io.run import attach_sinks, destinations, pubsub_impl_for
from streamsift.pipeline.options import make_runner
from streamsift.transforms.sinks import dead_letter_to_dict

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def assert_stamped(payloads_and_times, broker: bool, expected) -> None:
    """Messages published at the given times, through the event-time step, are
    ``expected`` (payload, element timestamp) pairs."""
    with beam.Pipeline(runner=make_runner("DirectRunner")) as p:
        stamped = (
            p
            | beam.Create(payloads_and_times)
            | "Publish" >> beam.Map(lambda pt: TimestampedValue(pt[0], pt[1]))
            | "EventTime" >> beam.ParDo(_PayloadTime(InputConfig(), broker))
            | "Out" >> beam.Map(lambda e, ts=beam.DoFn.TimestampParam: (e, float(ts)))
        )
        assert_that(stamped, equal_to(expected))


def test_payload_event_time_restamps_each_message():
    a = json.dumps({"key": "a", "ts": T0 + 5, "cpu": 1.0}).encode()
    b = json.dumps({"key": "b", "ts": T0 - 3600, "cpu": 1.0}).encode()
    # published "now" (T0 + 100): the element timestamps become the payloads' times;
    # what has no readable time keeps the publish time (the parser dead-letters it)
    assert_stamped(
        [(a, T0 + 100), (b, T0 + 100), (b"junk", T0 + 100)],
        False,
        [(a, T0 + 5.0), (b, T0 - 3600.0), (b"junk", T0 + 100.0)],
    )


def test_broker_event_time_keeps_the_publish_time_and_writes_it_into_the_payload():
    a = json.dumps({"key": "a", "ts": T0 + 5}).encode()
    rewritten = json.dumps({"key": "a", "ts": (T0 + 100) * 1000 + 500}, separators=(",", ":"))
    assert_stamped([(a, T0 + 100.5)], True, [(rewritten.encode(), T0 + 100.5)])


def test_read_args_follow_the_config():
    sub = Config(pubsub=PubSubConfig(subscription="projects/p/subscriptions/s", topic="t"))
    assert pubsub_read_args(sub) == {"subscription": "projects/p/subscriptions/s"}
    # the timestamp attribute is used only for broker event time
    payload = Config(pubsub=PubSubConfig(project="p", topic="t", timestamp_attribute="ts"))
    assert pubsub_read_args(payload) == {"topic": "projects/p/topics/t"}
    with pytest.raises(ValueError, match="pubsub.project must be set for the short topics"):
        pubsub_read_args(Config(pubsub=PubSubConfig(topic="t")))
    with pytest.raises(ValueError, match="pubsub.subscription or pubsub.topic must be set"):
        pubsub_read_args(Config(source=SourceConfig(event_time="broker")))


def test_pubsub_messages_carry_the_native_sinks_routing_attributes():
    alert = {"alert_id": "k1-7", "key": "k1", "severity": "critical", "score": 0.99}
    m = to_pubsub_message(json.dumps(alert))
    assert json.loads(m.data) == alert
    assert m.attributes == {"alert_id": "k1-7", "key": "k1", "severity": "critical"}
    from streamsift.records import DeadLetter

    fields = DeadLetter._fields
    dl = DeadLetter(**{f: "x" for f in fields} | {"error_kind": "malformed_json"})
    m = to_pubsub_message(dl, dead_letter_to_dict)
    assert m.attributes == {"error_kind": "malformed_json"}


def test_pubsub_runs_on_the_direct_and_dataflow_runners_only():
    assert pubsub_impl_for("DirectRunner") == "native"
    assert pubsub_impl_for("DataflowRunner") == "beam"
    for runner in ("PrismRunner", "FlinkRunner"):
        with pytest.raises(ValueError, match="DirectRunner .* or the DataflowRunner"):
            pubsub_impl_for(runner)


def test_files_go_through_beams_file_io_to_a_non_local_file_system(memfs):
    rows = [{"key": f"k{i}", "n": i} for i in range(5)]
    with beam.Pipeline(runner=make_runner("DirectRunner")) as p:
        (
            p
            | beam.Create([(r, T0 + 10 * r["n"]) for r in rows])
            | beam.Map(lambda rt: TimestampedValue(json.dumps(rt[0]), rt[1]))
            | WriteFilesBeam("memtest://bucket/out/alerts.jsonl", parameter="out_dir")
        )
    written = {k: v for k, v in memfs.FILES.items() if "/.temp" not in k}
    assert written and all(
        k.startswith("memtest://bucket/out/alerts-") and k.endswith(".jsonl") for k in written
    ), sorted(memfs.FILES)
    lines = [json.loads(line) for v in written.values() for line in v.decode().splitlines()]
    assert sorted(lines, key=lambda r: r["n"]) == rows


def test_local_file_outputs_are_refused_on_dataflow(tmp_path):
    with pytest.raises(ValueError, match="out_dir must be on a Beam file system .* got '/"):
        WriteFilesBeam(str(tmp_path / "a.jsonl"), parameter="out_dir")
    cfg = Config(sinks=SinksConfig(late=f"file://{tmp_path}/late.jsonl"))
    pcoll = beam.Pipeline() | beam.Create([])  # built, never run
    outputs = {n: pcoll for n in ("alerts", "dead_letter", "late", "flagged")}
    dests = destinations(cfg, "gs://bucket/out")
    assert str(dests["alerts"]) == "gs://bucket/out/alerts.jsonl"
    with pytest.raises(ValueError, match=r"sinks.late \(late_sink\) must be on a Beam file"):
        attach_sinks(outputs, cfg, dests, "gs://bucket/out", runner="DataflowRunner")


def test_pubsub_sinks_are_refused_on_portable_runners_other_than_dataflow():
    cfg = Config(sinks=SinksConfig(alerts="pubsub://projects/p/topics/alerts"))
    pcoll = beam.Pipeline() | beam.Create([])  # built, never run
    outputs = {n: pcoll for n in ("alerts", "dead_letter", "late", "flagged")}
    with pytest.raises(ValueError, match=r"sinks.alerts \(alerts_sink\) = pubsub://.*Flink"):
        attach_sinks(outputs, cfg, destinations(cfg, "/o"), "/o", runner="FlinkRunner")
