"""Beam's own Pub/Sub IO (streamsift/io/beam_pubsub.py: the Dataflow path, and
``--pubsub-impl beam`` on the DirectRunner) against the Pub/Sub emulator, run on the
DirectRunner: ``ReadPubSubBeam`` re-stamps messages with their payload event time and
holds the watermark from it, ``WritePubSubBeam`` publishes the routing attributes. The
end-to-end runs of ``--pubsub-impl beam`` (same alerts as a file replay; a killed run
loses what Beam's reader had acknowledged: at-most-once, as documented) are in
test_e2e_io.py next to the native source's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.services]

T0 = 1_767_225_600


def _pubsub(project: str, name: str) -> tuple[str, str]:
    """(topic path, subscription path) of a new topic with one subscription."""
    from google.cloud import pubsub_v1

    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = pub.topic_path(project, name)
    pub.create_topic(request={"name": topic})
    subscription = sub.subscription_path(project, name)
    sub.create_subscription(request={"name": subscription, "topic": topic})
    return topic, subscription


def _pull(subscription: str, want: int, timeout_s: float) -> list:
    from google.cloud import pubsub_v1

    sub = pubsub_v1.SubscriberClient()
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        try:
            r = sub.pull(request={"subscription": subscription, "max_messages": 100}, timeout=2)
        except Exception:  # the emulator answers an empty pull with DEADLINE_EXCEEDED
            continue
        if r.received_messages:
            sub.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in r.received_messages],
                }
            )
        got += [m.message for m in r.received_messages]
    return got


def test_write_pubsub_beam_publishes_alerts_with_routing_attributes(pubsub_emulator, unique_name):
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream

    from streamsift.io.beam_pubsub import WritePubSubBeam
    from streamsift.pipeline.options import make_runner, streaming_options

    _host, project = pubsub_emulator
    topic, subscription = _pubsub(project, unique_name)
    alerts = [
        {"alert_id": f"k{i}-{T0 + i}", "key": f"k{i}", "severity": "high", "score": i / 10}
        for i in range(4)
    ]
    with beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options()) as p:
        (
            p
            | TestStream()
            .add_elements([json.dumps(a) for a in alerts])
            .advance_watermark_to_infinity()
            | WritePubSubBeam(topic, count_alerts=True)
        )
    got = _pull(subscription, len(alerts), 30)
    assert sorted((json.loads(m.data) for m in got), key=lambda a: a["key"]) == alerts
    attrs = sorted((dict(m.attributes) for m in got), key=lambda a: a["alert_id"])
    assert attrs == [
        {"alert_id": a["alert_id"], "key": a["key"], "severity": "high"} for a in alerts
    ]


_READ_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import apache_beam as beam
    from streamsift.config import Config, PubSubConfig
    from streamsift.io.beam_pubsub import ReadPubSubBeam, WritePubSubBeam
    from streamsift.pipeline.options import make_runner, streaming_options

    cfg = Config(pubsub=PubSubConfig(subscription=sys.argv[1]))
    p = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    (
        p
        | "Source" >> ReadPubSubBeam(cfg)
        | beam.Map(lambda b, ts=beam.DoFn.TimestampParam: json.dumps(
            {**json.loads(b), "element_time": float(ts)}))
        | WritePubSubBeam(sys.argv[2])
    )
    p.run().wait_until_finish()
    """
)


def test_read_pubsub_beam_stamps_messages_with_their_payload_time(pubsub_emulator, unique_name):
    from google.cloud import pubsub_v1

    _host, project = pubsub_emulator
    in_topic, in_sub = _pubsub(project, unique_name + "-in")
    out_topic, out_sub = _pubsub(project, unique_name + "-out")
    pub = pubsub_v1.PublisherClient()
    events = [{"key": f"k{i}", "ts": T0 - 3600 * i, "cpu": 1.0} for i in range(3)]
    for e in events:  # published now, event times hours in the past
        pub.publish(in_topic, json.dumps(e).encode()).result(timeout=30)
    # an unbounded read never ends: run it in a child process and kill it once checked
    proc = subprocess.Popen(
        [sys.executable, "-c", _READ_SCRIPT, in_sub, out_topic],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        got = _pull(out_sub, len(events), 60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _out, err = proc.communicate(timeout=30)
    assert len(got) == len(events), err[-2000:]
    rows = sorted((json.loads(m.data) for m in got), key=lambda r: r["key"])
    assert rows == [{**e, "element_time": float(e["ts"])} for e in events]


# --- streamsift run --source pubsub --pubsub-impl beam (DirectRunner) -------------------------
def test_pubsub_impl_flag_names_unsupported_combinations(capsys):
    from streamsift.pipeline import cli

    argv = ["run", "--source=pubsub", "--project=p", "--subscription=s"]
    assert cli.main([*argv, "--runner=DataflowRunner", "--pubsub-impl=native"]) == 2
    assert "--pubsub-impl native runs on the DirectRunner only" in capsys.readouterr().err
    assert cli.main([*argv, "--runner=FlinkRunner", "--pubsub-impl=beam"]) == 2
    assert "got --runner FlinkRunner" in capsys.readouterr().err


def test_beam_pubsub_on_direct_runner_fails_fast_on_a_missing_subscription(
    pubsub_emulator, unique_name, tmp_path, capsys
):
    from streamsift.pipeline import cli

    _host, project = pubsub_emulator
    rc = cli.main(
        [
            "run",
            "--source=pubsub",
            "--pubsub-impl=beam",
            f"--project={project}",
            f"--subscription={unique_name}",
            f"--model-dir={tmp_path / 'model'}",
            f"--out-dir={tmp_path / 'out'}",
        ]
    )
    assert rc == 3
    err = capsys.readouterr().err
    assert "Pub/Sub subscription or topic not found" in err
    assert f"projects/{project}/subscriptions/{unique_name}" in err
    assert not (tmp_path / "model").exists()  # before any model training
