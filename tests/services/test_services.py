"""Smoke tests of the external services set up by ``scripts/services.sh``.

They talk to the real Kafka broker, the real Pub/Sub emulator, the Prism binary and the Beam
Java jars. Each test skips (naming the missing variable) unless ``scripts/services.sh env`` has
been evaluated; see ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
import zipfile
from collections import defaultdict

import pytest

pytestmark = pytest.mark.services

WAIT_S = 60.0  # upper bound for loops waiting on a service; not a performance assertion


# --- helpers ----------------------------------------------------------------------------------
def read_manifest(jar: str) -> dict[str, str]:
    """Main attributes of a jar's MANIFEST.MF (continuation lines joined)."""
    with zipfile.ZipFile(jar) as archive:
        text = archive.read("META-INF/MANIFEST.MF").decode("utf-8")
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        elif raw:
            lines.append(raw)
        else:
            break  # end of the main section
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def classpath_of(jar: str) -> list[str]:
    """The jar itself plus every jar its manifest Class-Path names, as local paths."""
    paths = [jar]
    for entry in read_manifest(jar).get("Class-Path", "").split():
        parsed = urllib.parse.urlparse(entry)
        if parsed.scheme == "file":
            paths.append(urllib.request.url2pathname(parsed.path))
        else:
            paths.append(os.path.join(os.path.dirname(jar), urllib.request.url2pathname(entry)))
    return paths


def check_runnable_jar(jar: str, main_class: str) -> None:
    assert os.path.isfile(jar), f"{jar} does not exist"
    with zipfile.ZipFile(jar) as archive:
        assert archive.testzip() is None, f"{jar} has a corrupt entry"
    assert read_manifest(jar).get("Main-Class") == main_class
    paths = classpath_of(jar)
    bad = [p for p in paths if not zipfile.is_zipfile(p)]
    assert not bad, f"Class-Path entries of {jar} that are not valid jars: {bad[:5]}"
    entry = main_class.replace(".", "/") + ".class"
    holders = [p for p in paths if entry in zipfile.ZipFile(p).namelist()]
    assert holders, f"{main_class} is not in {jar} nor on its Class-Path"


def leaf_transforms(components, transform) -> list:
    """All leaf PTransform protos below ``transform`` in a pipeline's components."""
    if not transform.subtransforms:
        return [transform]
    leaves = []
    for child in transform.subtransforms:
        leaves.extend(leaf_transforms(components, components.transforms[child]))
    return leaves


def produce(bootstrap: str, topic: str, records: list[tuple[str, str]]) -> None:
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(WAIT_S)
    assert remaining == 0, f"{remaining} messages were not delivered"
    assert errors == []


def consume(bootstrap: str, topic: str, group: str, expected: int) -> list[tuple[str, str]]:
    """Read until ``expected`` messages arrived (bounded), commit, and return (key, value)s."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[tuple[str, str]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        while len(received) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append((msg.key().decode(), msg.value().decode()))
        # nothing beyond what was expected may show up
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None, "consumer read more than expected"
        if received:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, unique_name: str):
    pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = admin.create_topics([NewTopic(unique_name, num_partitions=3, replication_factor=1)])
    created[unique_name].result(timeout=WAIT_S)
    yield unique_name
    admin.delete_topics([unique_name])[unique_name].result(timeout=WAIT_S)


# --- Kafka ------------------------------------------------------------------------------------
def test_kafka_produce_and_consume_100_messages(kafka_bootstrap, kafka_topic, unique_name):
    records = [(f"sensor-{i % 7}", json.dumps({"seq": i, "value": i * 0.5})) for i in range(100)]
    produce(kafka_bootstrap, kafka_topic, records)

    received = consume(kafka_bootstrap, kafka_topic, f"{unique_name}-group", expected=100)

    assert sorted(received) == sorted(records)
    # one key always lands on one partition, so per-key order is preserved
    sent_by_key: dict[str, list[int]] = defaultdict(list)
    got_by_key: dict[str, list[int]] = defaultdict(list)
    for key, value in records:
        sent_by_key[key].append(json.loads(value)["seq"])
    for key, value in received:
        got_by_key[key].append(json.loads(value)["seq"])
    assert got_by_key == sent_by_key


def test_kafka_restart_keeps_messages_and_committed_offsets(
    kafka_bootstrap, kafka_topic, unique_name, services_script
):
    group = f"{unique_name}-group"
    before = [(f"k{i % 3}", f"before-{i}") for i in range(20)]
    after = [(f"k{i % 3}", f"after-{i}") for i in range(20)]
    produce(kafka_bootstrap, kafka_topic, before)
    assert sorted(consume(kafka_bootstrap, kafka_topic, group, expected=20)) == sorted(before)

    result = subprocess.run(
        ["bash", services_script, "restart-kafka"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    produce(kafka_bootstrap, kafka_topic, after)
    # the group resumes from the offsets committed before the restart
    assert sorted(consume(kafka_bootstrap, kafka_topic, group, expected=20)) == sorted(after)
    # and the log itself survived the restart
    fresh = consume(kafka_bootstrap, kafka_topic, f"{group}-fresh", expected=40)
    assert sorted(fresh) == sorted(before + after)


def test_kafka_libs_contain_the_broker(kafka_home):
    libs = os.path.join(kafka_home, "libs")
    brokers = [name for name in os.listdir(libs) if name.startswith("kafka_2.13-")]
    assert len(brokers) == 1, brokers
    with zipfile.ZipFile(os.path.join(libs, brokers[0])) as archive:
        assert "kafka/Kafka.class" in archive.namelist()
        assert "kafka/tools/StorageTool.class" in archive.namelist()


# --- Pub/Sub emulator -------------------------------------------------------------------------
def test_pubsub_emulator_publish_and_pull(pubsub_emulator, unique_name):
    pubsub_v1 = pytest.importorskip("google.cloud.pubsub_v1")
    _, project = pubsub_emulator
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, unique_name)
    subscription = subscriber.subscription_path(project, unique_name)
    publisher.create_topic(request={"name": topic})
    try:
        subscriber.create_subscription(request={"name": subscription, "topic": topic})
        try:
            sent = {str(i): f'{{"seq": {i}}}'.encode() for i in range(25)}
            futures = [publisher.publish(topic, data, seq=seq) for seq, data in sent.items()]
            message_ids = [future.result(timeout=WAIT_S) for future in futures]
            assert len(set(message_ids)) == len(sent)

            received: dict[str, bytes] = {}
            deadline = time.monotonic() + WAIT_S
            while len(received) < len(sent) and time.monotonic() < deadline:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 10}, timeout=10
                )
                for item in response.received_messages:
                    received[item.message.attributes["seq"]] = item.message.data
                if response.received_messages:
                    subscriber.acknowledge(
                        request={
                            "subscription": subscription,
                            "ack_ids": [m.ack_id for m in response.received_messages],
                        }
                    )
            assert received == sent
        finally:
            subscriber.delete_subscription(request={"subscription": subscription})
    finally:
        publisher.delete_topic(request={"topic": topic})
        subscriber.close()


# --- Prism ------------------------------------------------------------------------------------
def test_prism_binary_runs(prism_bin):
    result = subprocess.run(
        [prism_bin, "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "-job_port" in result.stdout + result.stderr


def test_prism_runs_a_python_pipeline(prism_bin, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    options = PipelineOptions(
        ["--runner=PrismRunner", f"--prism_location={prism_bin}", "--environment_type=LOOPBACK"]
    )
    with beam.Pipeline(options=options) as pipeline:
        sums = (
            pipeline
            | beam.Create([("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)])
            | beam.CombinePerKey(sum)
        )
        assert_that(sums, equal_to([("a", 4), ("b", 6), ("c", 5)]))


# --- Beam Java jars ---------------------------------------------------------------------------
def test_flink_job_server_jar_is_runnable(flink_job_server_jar):
    check_runnable_jar(flink_job_server_jar, "org.apache.beam.runners.flink.FlinkJobServerDriver")


def test_expansion_service_jar_is_runnable_and_has_kafka_io(expansion_service_jar):
    check_runnable_jar(
        expansion_service_jar, "org.apache.beam.sdk.expansion.service.ExpansionService"
    )
    needed = {
        "org/apache/beam/sdk/io/kafka/KafkaIO.class",
        "org/apache/kafka/clients/consumer/KafkaConsumer.class",
        "org/apache/beam/fn/harness/FnHarness.class",
    }
    found = set()
    for path in classpath_of(expansion_service_jar):
        with zipfile.ZipFile(path) as archive:
            found |= needed & set(archive.namelist())
    assert found == needed


def test_expansion_service_expands_kafka_read_and_write(expansion_service_jar, kafka_bootstrap):
    import apache_beam as beam
    from apache_beam.io.kafka import ReadFromKafka, WriteToKafka
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms.external import JavaJarExpansionService

    service = JavaJarExpansionService(expansion_service_jar)
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    records = pipeline | "Read" >> ReadFromKafka(
        consumer_config={"bootstrap.servers": kafka_bootstrap},
        topics=["streamsift-expansion-check"],
        max_num_records=1,
        expansion_service=service,
    )
    _ = (
        records
        | "PyIdentity" >> beam.Map(lambda kv: kv)
        | "Write"
        >> WriteToKafka(
            producer_config={"bootstrap.servers": kafka_bootstrap},
            topic="streamsift-expansion-check-out",
            expansion_service=service,
        )
    )
    proto = pipeline.to_runner_api()
    components = proto.components
    by_name = {t.unique_name: t for t in components.transforms.values()}
    (python_leaf,) = leaf_transforms(components, by_name["PyIdentity"])
    python_env = python_leaf.environment_id
    assert python_env
    for name in ("Read", "Write"):
        # the Java service replaced the external transform with a real sub-graph ...
        assert by_name[name].subtransforms, f"{name} was not expanded"
        leaves = leaf_transforms(components, by_name[name])
        env_ids = {leaf.environment_id for leaf in leaves if leaf.environment_id}
        assert env_ids, f"{name} has no leaf with an environment"
        # ... whose leaves run in an environment of their own, not the Python one
        assert env_ids <= set(components.environments)
        assert python_env not in env_ids


def test_kafka_read_through_expansion_service_on_prism(
    kafka_bootstrap, kafka_topic, expansion_service_jar, prism_bin
):
    """Cross-language KafkaIO without docker: the Java transforms run in the expansion
    service's loopback worker (Beam adds --alsoStartLoopbackWorker while a runner is live)."""
    import apache_beam as beam
    from apache_beam.io.kafka import ReadFromKafka
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.external import JavaJarExpansionService

    records = [(f"k{i % 2}", f"reading-{i}") for i in range(5)]
    produce(kafka_bootstrap, kafka_topic, records)
    options = PipelineOptions(
        ["--runner=PrismRunner", f"--prism_location={prism_bin}", "--environment_type=LOOPBACK"]
    )
    with beam.Pipeline(options=options) as pipeline:
        values = (
            pipeline
            | ReadFromKafka(
                consumer_config={
                    "bootstrap.servers": kafka_bootstrap,
                    "auto.offset.reset": "earliest",
                },
                topics=[kafka_topic],
                max_num_records=len(records),
                expansion_service=JavaJarExpansionService(expansion_service_jar),
            )
            | beam.MapTuple(lambda key, value: (key.decode(), value.decode()))
        )
        assert_that(values, equal_to(records))


def test_flink_job_server_runs_a_python_pipeline(flink_job_server_jar, flink_java_opts):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    options = PipelineOptions(
        [
            "--runner=FlinkRunner",
            f"--flink_job_server_jar={flink_job_server_jar}",
            "--environment_type=LOOPBACK",
            "--parallelism=1",
        ]
        + [f"--job_server_jvm_property={opt}" for opt in flink_java_opts]
    )
    with beam.Pipeline(options=options) as pipeline:
        counts = (
            pipeline | beam.Create(["x", "y", "x", "z", "x"]) | beam.combiners.Count.PerElement()
        )
        assert_that(counts, equal_to([("x", 3), ("y", 1), ("z", 1)]))
