"""End-to-end: ``streamsift run --source kafka|pubsub`` against the real brokers.

5,000 synthetic events with injected anomalies plus 50 malformed messages go to a
3-partition topic (keyed by the event key); the pipeline runs as a subprocess in
streaming mode on the DirectRunner with the native Kafka source and Kafka sinks,
and drains after ``--stop-when-idle`` seconds. Its alerts must equal, as a set of
(alert_id, severity), those of a file replay of the same events. The Pub/Sub test
does the same against the emulator, with streamsift's pull source (acks after results
are emitted) and with Beam's reader (``--pubsub-impl beam``: streamsift holds its
watermark from the payload times; Beam acknowledges on pull, so a killed run loses
what it held: at-most-once, pinned by its own test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from streamsift.config import Config, apply_overrides

pytestmark = [pytest.mark.services, pytest.mark.slow]

WAIT_S = 120.0  # upper bound for loops waiting on a service; not a performance assertion
N_EVENTS = 5000
N_MALFORMED = 50
#: ``engine.mode`` values (``--engine``): broker runs honour both
ENGINES = ["per_element", "batched"]
#: (engine, ``--pubsub-impl``) of the Pub/Sub end-to-end test
PUBSUB_CASES = [("per_element", "native"), ("batched", "native"), ("batched", "beam")]


# --- helpers ----------------------------------------------------------------------------------
def _cfg(model_dir: str, out_dir: str) -> Config:
    return apply_overrides(
        Config(),
        {
            "synthetic.events": N_EVENTS,
            "model.dir": model_dir,
            "output.dir": out_dir,
            "model.history_hours": 6.0,  # a smaller training set: faster, same for both runs
        },
    )


def malformed_messages() -> list[bytes]:
    """50 bad messages of 5 kinds, each identifiable by its ``n``."""
    out = []
    for n in range(N_MALFORMED):
        kind = n % 5
        if kind == 0:
            out.append(f'{{"n": {n}, "key": "bad", "ts": '.encode())  # truncated JSON
        elif kind == 1:
            out.append(f'{{"n": {n}, "ts": 1767225600000, "cpu": 1}}'.encode())  # no key
        elif kind == 2:
            out.append(f'{{"n": {n}, "key": "bad", "ts": "never"}}'.encode())  # bad time
        elif kind == 3:
            out.append(f"[{n}]".encode())  # not an object
        else:
            out.append(f'{{"n": {n}, "key": "bad", "ts": 1767225600000, "cpu": "x"}}'.encode())
    return out


EXPECTED_KINDS = ["malformed_json", "missing_key", "bad_time", "not_an_object"]


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """(payloads in arrival order, model dir, file-replay result) shared by the tests."""
    from streamsift import synthetic
    from streamsift.pipeline.run import ensure_model, run_stream

    base = tmp_path_factory.mktemp("e2e-kafka")
    cfg = _cfg(str(base / "model"), str(base / "replay"))
    stream = synthetic.generate(cfg.synthetic, cfg.input)
    bad = malformed_messages()
    payloads = list(stream.payloads)
    step = len(payloads) // (len(bad) + 1)
    for i, m in enumerate(bad):  # spread through the stream
        payloads.insert((i + 1) * step + i, m)
    model = ensure_model(cfg)
    replay = run_stream(
        payloads, cfg, model, cfg.output.dir, print_alerts=False, show_progress=False
    )
    return payloads, str(base / "model"), replay


def _event_key(raw: bytes) -> bytes | None:
    try:
        obj = json.loads(raw)
        return str(obj["key"]).encode() if isinstance(obj, dict) and "key" in obj else None
    except Exception:
        return None


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions) for n in names])
    for f in futures.values():
        f.result(timeout=WAIT_S)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(names).values():
        try:
            f.result(timeout=WAIT_S)
        except Exception:
            pass


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    """Keyed by the event key; idempotent, so retries cannot reorder a partition."""
    from confluent_kafka import Producer

    errors: list[str] = []
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for raw in payloads:
        producer.produce(
            topic,
            value=raw,
            key=_event_key(raw),
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
    assert producer.flush(WAIT_S) == 0
    assert errors == []


def consume_all(bootstrap: str, topic: str, quiet_s: float = 3.0) -> list:
    """Every message of ``topic`` from the start: (key, headers dict, value dict)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s + (
            10.0 if not out else 0.0
        ):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            last = time.monotonic()
            headers = {k: v.decode() for k, v in (msg.headers() or [])}
            key = msg.key().decode() if msg.key() is not None else None
            out.append((key, headers, json.loads(msg.value())))
    finally:
        consumer.close()
    return out


def committed_total(bootstrap: str, topic: str, group: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = c.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


def streamsift_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamsift.pipeline.cli", "run", "--quiet", *args]


def run_cli(args: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        streamsift_cmd(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alert_set(alerts) -> set[tuple[str, str]]:
    return {(a["alert_id"], a["severity"]) for a in alerts}


def assert_engine_ran(counters: dict, engine: str) -> None:
    """Only the batched engine counts its model calls per shard step (``stage2_batches``);
    both engines escalate on these workloads."""
    assert counters.get("escalated", 0) > 0
    assert ("stage2_batches" in counters) == (engine == "batched"), sorted(counters)


# --- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_kafka_stream_matches_file_replay(kafka_bootstrap, unique_name, workload, tmp_path, engine):
    pytest.importorskip("confluent_kafka")
    payloads, model_dir, replay = workload
    src, alerts_t, dead_t = unique_name, f"{unique_name}-alerts", f"{unique_name}-dead"
    create_topics(kafka_bootstrap, [src, alerts_t, dead_t])
    try:
        produce(kafka_bootstrap, src, payloads)
        summary = tmp_path / "summary.json"
        res = run_cli(
            [
                "--source=kafka",
                f"--bootstrap-servers={kafka_bootstrap}",
                f"--topic={src}",
                f"--group-id={unique_name}-g",
                f"--alerts-to=kafka://{alerts_t}",
                f"--dead-letters-to=kafka://{dead_t}",
                f"--model-dir={model_dir}",
                f"--out-dir={tmp_path / 'out'}",
                "--stop-when-idle=3",
                f"--summary-json={summary}",
                f"--engine={engine}",
            ]
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "(reconciled: in = processed + dead-lettered + late)" in res.stdout
        counters = json.loads(summary.read_text())["counters"]
        assert_engine_ran(counters, engine)
        n_in = len(payloads)
        assert counters["events_in"] == n_in
        assert counters["source_read"] == n_in
        assert counters["source_committed"] == n_in
        assert n_in == counters["processed"] + counters["dead_lettered"] + counters.get("late", 0)
        # the same accounting as the replay
        for name in ("processed", "dead_lettered", "late", "escalated"):
            assert counters.get(name, 0) == replay.counter(name), name

        alerts = consume_all(kafka_bootstrap, alerts_t)
        assert alerts, "no alerts on the alert topic"
        assert _alert_set(a for _, _, a in alerts) == _alert_set(replay.alerts)
        for key, headers, a in alerts:  # routing fields as key and headers
            assert key == a["key"]
            assert headers["severity"] == a["severity"]
            assert headers["alert_id"] == a["alert_id"]

        dead = consume_all(kafka_bootstrap, dead_t)
        assert len(dead) == counters["dead_lettered"]
        by_n = {}
        for _, headers, d in dead:
            assert headers["error_kind"] == d["error_kind"]
            try:
                obj = json.loads(d["payload"])
            except ValueError:
                obj = None
            n = obj.get("n") if isinstance(obj, dict) else None
            if n is None and d["payload"].startswith('{"n": '):
                n = int(d["payload"].split(",")[0].split(":")[1])
            if n is None and isinstance(obj, list):
                n = obj[0]
            if n is not None:
                by_n[n] = d
        assert sorted(by_n) == list(range(N_MALFORMED))
        for n, d in by_n.items():
            if n % 5 < 4:
                assert d["error_kind"] == EXPECTED_KINDS[n % 5], (n, d)
            else:
                assert d["error_kind"] == "bad_feature", (n, d)
            assert d["message"]
    finally:
        delete_topics(kafka_bootstrap, [src, alerts_t, dead_t])


@pytest.mark.parametrize("engine", ENGINES)
def test_kafka_sigkill_and_restart_processes_everything(
    kafka_bootstrap, unique_name, workload, tmp_path, engine
):
    pytest.importorskip("confluent_kafka")
    payloads, model_dir, _replay = workload
    src, alerts_t = unique_name, f"{unique_name}-alerts"
    group = f"{unique_name}-g"
    create_topics(kafka_bootstrap, [src, alerts_t])
    try:
        produce(kafka_bootstrap, src, payloads)
        common = [
            "--source=kafka",
            f"--bootstrap-servers={kafka_bootstrap}",
            f"--topic={src}",
            f"--group-id={group}",
            f"--alerts-to=kafka://{alerts_t}",
            f"--model-dir={model_dir}",
            f"--engine={engine}",
        ]
        audit1, audit2 = tmp_path / "processed1.jsonl", tmp_path / "processed2.jsonl"
        proc = subprocess.Popen(
            streamsift_cmd(*common, f"--processed-to=file://{audit1}", f"--out-dir={tmp_path}/o1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + WAIT_S
            committed = 0
            while time.monotonic() < deadline and proc.poll() is None:
                committed = committed_total(kafka_bootstrap, src, group)
                if committed > 0:
                    break
                time.sleep(0.5)
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert 0 < committed
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            proc.stderr.close()
        committed = committed_total(kafka_bootstrap, src, group)
        assert committed < len(payloads), "the first run finished before it was killed"

        res = run_cli(
            [
                *common,
                f"--processed-to=file://{audit2}",
                f"--out-dir={tmp_path}/o2",
                "--stop-when-idle=3",
            ]
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert committed_total(kafka_bootstrap, src, group) == len(payloads)

        # every valid input event was processed at least once over the two runs
        def ids(path):
            if not path.exists():
                return []
            with open(path) as fh:
                return [(d["key"], d["event_time_ms"]) for d in map(json.loads, fh)]

        first, second = ids(audit1), ids(audit2)
        seen = set(first) | set(second)
        from streamsift.config import InputConfig
        from streamsift.parsing import EventParser
        from streamsift.records import Event

        parser = EventParser(InputConfig())
        expected = Counter()
        for raw in payloads:
            e = parser.parse(raw)
            if isinstance(e, Event):
                expected[(e.key, int(round(e.ts * 1000)))] += 1
        assert set(expected) <= seen
        # the restart resumed from the committed offsets: it did not read everything again
        assert len(second) < sum(expected.values())

        # alerts re-emitted after the restart carry the same id for the same incident
        alerts = [a for _, _, a in consume_all(kafka_bootstrap, alerts_t)]
        ids_by_incident: dict = {}
        for a in alerts:
            ids_by_incident.setdefault((a["key"], a["first_event_time_ms"]), set()).add(
                a["alert_id"]
            )
        assert alerts
        assert all(len(v) == 1 for v in ids_by_incident.values())
    finally:
        delete_topics(kafka_bootstrap, [src, alerts_t])


def test_kafka_unreachable_fails_fast_with_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[source]\nconnect_timeout_s = 5\n")
    start = time.monotonic()
    res = run_cli(
        [
            f"--config={cfg_file}",
            "--source=kafka",
            f"--bootstrap-servers=127.0.0.1:{port}",
            "--topic=nowhere",
            f"--model-dir={tmp_path / 'model'}",
            f"--out-dir={tmp_path / 'out'}",
        ],
        timeout=WAIT_S,
    )
    assert res.returncode == 3, res.stderr[-3000:]
    assert f"kafka.bootstrap_servers='127.0.0.1:{port}'" in res.stderr
    assert "did not answer within source.connect_timeout_s=5 s" in res.stderr
    assert time.monotonic() - start < WAIT_S


def _valid_ids(payloads: list[bytes]) -> set[tuple[str, int]]:
    from streamsift.config import InputConfig
    from streamsift.parsing import EventParser
    from streamsift.records import Event

    parser = EventParser(InputConfig())
    out = set()
    for raw in payloads:
        e = parser.parse(raw)
        if isinstance(e, Event):
            out.add((e.key, int(round(e.ts * 1000))))
    return out


def test_kafka_broker_restart_while_running_loses_nothing(
    kafka_bootstrap, unique_name, workload, tmp_path, services_script
):
    """The broker restarts mid-stream; input keeps being produced around the restart."""
    import threading

    pytest.importorskip("confluent_kafka")
    from confluent_kafka import Producer

    payloads, model_dir, _replay = workload
    src, group = unique_name, f"{unique_name}-g"
    create_topics(kafka_bootstrap, [src])
    half = len(payloads) // 2
    produce(kafka_bootstrap, src, payloads[:half])
    audit = tmp_path / "processed.jsonl"
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        streamsift_cmd(
            "--source=kafka",
            f"--bootstrap-servers={kafka_bootstrap}",
            f"--topic={src}",
            f"--group-id={group}",
            f"--model-dir={model_dir}",
            f"--out-dir={tmp_path / 'out'}",
            f"--processed-to=file://{audit}",
            "--stop-when-idle=20",
            f"--summary-json={summary}",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    errors: list[str] = []

    def trickle() -> None:  # the second half, produced slowly through the restart
        producer = Producer(
            {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        for i in range(half, len(payloads), 100):
            for raw in payloads[i : i + 100]:
                producer.produce(
                    src,
                    value=raw,
                    key=_event_key(raw),
                    on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
                )
            producer.poll(0)
            time.sleep(0.5)
        if producer.flush(WAIT_S) != 0:
            errors.append("not flushed")

    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and committed_total(kafka_bootstrap, src, group) == 0:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.5)
        feeder = threading.Thread(target=trickle)
        feeder.start()
        time.sleep(2.0)
        restart = subprocess.run(
            ["bash", services_script, "restart-kafka"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert restart.returncode == 0, restart.stderr[-3000:]
        feeder.join(WAIT_S)
        assert errors == []
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-3000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        delete_topics(kafka_bootstrap, [src])
    counters = json.loads(summary.read_text())["counters"]
    assert counters["source_read"] >= len(payloads)
    assert counters["source_committed"] == counters["source_read"]
    assert counters["events_in"] == counters["processed"] + counters[
        "dead_lettered"
    ] + counters.get("late", 0)
    with open(audit) as fh:
        seen = {(d["key"], d["event_time_ms"]) for d in map(json.loads, fh)}
    assert _valid_ids(payloads) <= seen


# --- Pub/Sub ----------------------------------------------------------------------------------
class _PubSub:
    def __init__(self, project: str) -> None:
        from google.cloud import pubsub_v1

        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topics: list[str] = []
        self.subs: list[str] = []

    def topic(self, name: str) -> str:
        path = self.publisher.topic_path(self.project, name)
        self.publisher.create_topic(request={"name": path})
        self.topics.append(path)
        return path

    def subscription(self, name: str, topic: str, ack_deadline_s: int = 60) -> str:
        path = self.subscriber.subscription_path(self.project, name)
        self.subscriber.create_subscription(
            request={"name": path, "topic": topic, "ack_deadline_seconds": ack_deadline_s}
        )
        self.subs.append(path)
        return path

    def publish(self, topic: str, payloads: list[bytes]) -> None:
        """Publish in order: one batch at a time (the client sends batches concurrently)."""
        for i in range(0, len(payloads), 200):
            futures = [self.publisher.publish(topic, raw) for raw in payloads[i : i + 200]]
            for f in futures:
                f.result(timeout=WAIT_S)

    def pull_all(self, subscription: str, quiet_s: float = 3.0) -> list[tuple[dict, dict]]:
        """(attributes, JSON body) of every message, acknowledged."""
        out = []
        deadline = time.monotonic() + WAIT_S
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            try:
                resp = self.subscriber.pull(
                    request={"subscription": subscription, "max_messages": 500}, timeout=5
                )
            except Exception:
                continue
            if not resp.received_messages:
                continue
            last = time.monotonic()
            for rm in resp.received_messages:
                out.append((dict(rm.message.attributes), json.loads(rm.message.data)))
            self.subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [rm.ack_id for rm in resp.received_messages],
                }
            )
        return out

    def cleanup(self) -> None:
        for s in self.subs:
            try:
                self.subscriber.delete_subscription(request={"subscription": s})
            except Exception:
                pass
        for t in self.topics:
            try:
                self.publisher.delete_topic(request={"topic": t})
            except Exception:
                pass


def _dead_letter_numbers(dead: list[tuple[dict, dict]]) -> dict[int, str]:
    """Malformed message number -> error kind, from dead letters (attributes, body)."""
    kinds = {}
    for attrs, d in dead:
        assert attrs["error_kind"] == d["error_kind"] and d["message"]
        p = d["payload"]
        if p.startswith('{"n": ') or p.startswith("["):
            kinds[int(p.strip("[]").split(",")[0].split(":")[-1])] = d["error_kind"]
    return kinds


def _audit_ids(path) -> set[tuple[str, int]]:
    """(key, event time ms) of a processed-ids audit file (empty if not written yet)."""
    if not os.path.exists(path):
        return set()
    with open(path) as fh:
        return {(d["key"], d["event_time_ms"]) for d in map(json.loads, fh)}


@pytest.mark.parametrize(("engine", "impl"), PUBSUB_CASES)
def test_pubsub_stream_matches_file_replay(
    pubsub_emulator, unique_name, workload, tmp_path, engine, impl
):
    """Test 1 of the issue on Pub/Sub. With Beam's reader (``impl = beam``) the payload
    times are months behind the wall clock, yet the alerts equal a file replay's: the
    watermark is held from the event times, not Beam's wall clock."""
    pytest.importorskip("google.cloud.pubsub_v1")
    from streamsift.io.beam_pubsub import AT_MOST_ONCE_NOTICE
    from streamsift.models.artifact import latest_artifact
    from streamsift.pipeline.run import run_stream

    payloads, model_dir, _ = workload
    # Pub/Sub does not keep publish order (the emulator reorders too, and with ordering
    # keys it holds a key's next messages until the previous ones are acked, which the
    # source does only after their results): with an allowed lateness that covers the
    # subscription's disorder, both runs place every event in event-time order.
    lateness = 900
    cfg = apply_overrides(
        _cfg(model_dir, str(tmp_path / "replay")), {"event_time.allowed_lateness_s": lateness}
    )
    replay = run_stream(
        payloads,
        cfg,
        latest_artifact(model_dir),
        cfg.output.dir,
        print_alerts=False,
        show_progress=False,
    )
    _host, project = pubsub_emulator
    ps = _PubSub(project)
    try:
        src = ps.topic(unique_name)
        sub = ps.subscription(unique_name, src)
        alerts_t = ps.topic(f"{unique_name}-alerts")
        alerts_s = ps.subscription(f"{unique_name}-alerts", alerts_t)
        dead_t = ps.topic(f"{unique_name}-dead")
        dead_s = ps.subscription(f"{unique_name}-dead", dead_t)
        ps.publish(src, payloads)
        summary = tmp_path / "summary.json"
        res = run_cli(
            [
                "--source=pubsub",
                f"--project={project}",
                f"--subscription={unique_name}",
                f"--alerts-to=pubsub://{alerts_t}",
                f"--dead-letters-to=pubsub://{dead_t}",
                f"--model-dir={model_dir}",
                f"--out-dir={tmp_path / 'out'}",
                "--stop-when-idle=3",
                f"--allowed-lateness={lateness}",
                f"--watermark-lag={lateness}",
                f"--summary-json={summary}",
                f"--engine={engine}",
                f"--pubsub-impl={impl}",
            ]
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "(reconciled: in = processed + dead-lettered + late)" in res.stdout
        # the mode says what it guarantees
        assert (AT_MOST_ONCE_NOTICE in res.stderr) == (impl == "beam")
        counters = json.loads(summary.read_text())["counters"]
        assert_engine_ran(counters, engine)
        n_in = len(payloads)
        assert counters["events_in"] == n_in
        # native: acknowledged after results; beam: acknowledged by Beam on pull
        assert counters["source_committed"] == counters["source_read"] == n_in
        assert n_in == counters["processed"] + counters["dead_lettered"] + counters.get("late", 0)
        for name in ("processed", "dead_lettered", "late", "escalated"):
            assert counters.get(name, 0) == replay.counter(name), name

        alerts = ps.pull_all(alerts_s)
        assert alerts
        assert _alert_set(a for _, a in alerts) == _alert_set(replay.alerts)
        for attrs, a in alerts:
            assert attrs["severity"] == a["severity"] and attrs["key"] == a["key"]

        dead = ps.pull_all(dead_s)
        assert len(dead) == counters["dead_lettered"]
        kinds = _dead_letter_numbers(dead)
        assert sorted(kinds) == list(range(N_MALFORMED))
        for n, kind in kinds.items():
            assert kind == (EXPECTED_KINDS[n % 5] if n % 5 < 4 else "bad_feature")
        # everything was acknowledged: nothing is left on the input subscription
        assert ps.pull_all(sub, quiet_s=2.0) == []
    finally:
        ps.cleanup()


def test_pubsub_sigkill_and_restart_processes_everything(
    pubsub_emulator, unique_name, workload, tmp_path
):
    """Messages read but not acknowledged by a killed run are redelivered to the next."""
    pytest.importorskip("google.cloud.pubsub_v1")
    payloads, model_dir, _ = workload
    payloads = payloads[:2500]  # half the workload keeps the test short
    _host, project = pubsub_emulator
    ps = _PubSub(project)
    cfg_file = tmp_path / "c.toml"
    # short leases so the restart gets the killed run's messages back quickly
    cfg_file.write_text("[pubsub]\nack_deadline_s = 10\n")
    try:
        src = ps.topic(unique_name)
        # the subscription's own deadline too: messages the killed run pulled less
        # than one lease extension (ack_deadline_s / 3) before it died still carry
        # the deadline they were pulled with, and must come back within the restart
        ps.subscription(unique_name, src, ack_deadline_s=10)
        ps.publish(src, payloads)
        common = [
            f"--config={cfg_file}",
            "--source=pubsub",
            f"--project={project}",
            f"--subscription={unique_name}",
            f"--model-dir={model_dir}",
        ]
        audit1, audit2 = tmp_path / "processed1.jsonl", tmp_path / "processed2.jsonl"
        proc = subprocess.Popen(
            streamsift_cmd(*common, f"--processed-to=file://{audit1}", f"--out-dir={tmp_path}/o1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if audit1.exists() and len(audit1.read_text().splitlines()) >= 600:
                    break
                time.sleep(0.5)
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            proc.stderr.close()
        summary = tmp_path / "summary.json"
        res = run_cli(
            [
                *common,
                f"--processed-to=file://{audit2}",
                f"--out-dir={tmp_path}/o2",
                "--stop-when-idle=12",
                f"--summary-json={summary}",
            ]
        )
        assert res.returncode == 0, res.stderr[-3000:]
        counters = json.loads(summary.read_text())["counters"]
        assert counters["source_read"] > 0  # the killed run's unacknowledged messages came back
        assert counters["source_committed"] == counters["source_read"]
        assert _valid_ids(payloads) <= _audit_ids(audit1) | _audit_ids(audit2)
        # everything is acknowledged now
        assert ps.pull_all(ps.subs[0], quiet_s=2.0) == []
    finally:
        ps.cleanup()


def test_beam_pubsub_on_direct_runner_is_at_most_once(
    pubsub_emulator, unique_name, workload, tmp_path
):
    """Pins the documented guarantee of ``--pubsub-impl beam``: Beam's DirectRunner reader
    acknowledges on pull, so the messages of a run killed before it finished them are
    never redelivered: lost (the native source's test above redelivers them)."""
    from streamsift.config import InputConfig
    from streamsift.parsing import EventParser
    from streamsift.records import Event

    payloads, model_dir, _ = workload
    payloads = payloads[:600]
    sent = set(payloads)
    malformed = [n for n, m in enumerate(malformed_messages()) if m in sent]
    valid = _valid_ids(payloads)
    parser = EventParser(InputConfig())
    n_dead = sum(1 for raw in payloads if not isinstance(parser.parse(raw), Event))
    _host, project = pubsub_emulator
    ps = _PubSub(project)
    held = tmp_path / "held.toml"
    # the run finishes nothing: its watermark stays far behind every event time, so the
    # per-key stage keeps every event buffered
    held.write_text("[source]\nwatermark_lag_s = 1e9\nidle_partition_s = 3600\n")
    try:
        src = ps.topic(unique_name)
        sub = ps.subscription(unique_name, src)  # ack deadline 10 s
        dead_t = ps.topic(f"{unique_name}-dead")
        dead_s = ps.subscription(f"{unique_name}-dead", dead_t)
        ps.publish(src, payloads)
        audit = tmp_path / "processed.jsonl"
        proc = subprocess.Popen(
            streamsift_cmd(
                f"--config={held}",
                "--source=pubsub",
                "--pubsub-impl=beam",
                f"--project={project}",
                f"--subscription={unique_name}",
                f"--dead-letters-to=pubsub://{dead_t}",
                f"--model-dir={model_dir}",
                f"--processed-to=file://{audit}",
                f"--out-dir={tmp_path}/o1",
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        dead: list = []
        try:  # until the run has read (parsed or dead-lettered) every message
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and not (
                len(dead) == n_dead and _audit_ids(audit) == valid
            ):
                assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
                dead += ps.pull_all(dead_s, quiet_s=1.0)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            proc.stderr.close()
        assert len(dead) == n_dead and sorted(_dead_letter_numbers(dead)) == malformed
        assert _audit_ids(audit) == valid
        out = tmp_path / "o1"
        for name in ("flagged.jsonl", "alerts.jsonl"):  # ... and finished none
            assert not (out / name).exists() or (out / name).read_text() == ""

        # Beam acknowledged everything the run pulled: nothing comes back to a reader
        # started after the kill, even past the 10 s ack deadline (an unacknowledged
        # message would be redelivered within it); the events the run held are lost
        assert ps.pull_all(sub, quiet_s=12.0) == []
    finally:
        ps.cleanup()


def test_kafka_xlang_on_prism(
    kafka_bootstrap, unique_name, workload, tmp_path, prism_bin, expansion_service_jar
):
    """Beam's cross-language KafkaIO (local expansion service jar) on Prism, reading a
    bounded number of records; alerts go to Kafka through ``WriteToKafka``."""
    pytest.importorskip("confluent_kafka")
    from streamsift.config import InputConfig
    from streamsift.parsing import EventParser
    from streamsift.records import Event

    payloads = workload[0][:2000]
    model_dir = workload[1]
    src, alerts_t = unique_name, f"{unique_name}-alerts"
    create_topics(kafka_bootstrap, [src, alerts_t])
    try:
        produce(kafka_bootstrap, src, payloads)
        summary = tmp_path / "summary.json"
        res = run_cli(
            [
                "--runner=PrismRunner",
                "--source=kafka",
                f"--bootstrap-servers={kafka_bootstrap}",
                f"--topic={src}",
                f"--group-id={unique_name}-g",
                f"--alerts-to=kafka://{alerts_t}",
                f"--max-records={len(payloads)}",
                f"--model-dir={model_dir}",
                f"--out-dir={tmp_path / 'out'}",
                f"--summary-json={summary}",
                "--",
                f"--prism_location={prism_bin}",
                "--environment_type=LOOPBACK",
            ]
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "(reconciled: in = processed + dead-lettered + late)" in res.stdout
        counters = json.loads(summary.read_text())["counters"]
        parser = EventParser(InputConfig())
        n_bad = sum(1 for raw in payloads if not isinstance(parser.parse(raw), Event))
        assert counters["events_in"] == len(payloads)
        assert counters["dead_lettered"] == n_bad
        with open(tmp_path / "out" / "dead_letter.jsonl") as fh:
            assert len(fh.readlines()) == n_bad
        alerts = consume_all(kafka_bootstrap, alerts_t)
        assert alerts
        for key, headers, a in alerts:  # routed by key, alert id and severity headers
            assert key == a["key"] and a["alert_id"] and a["severity"]
            assert headers == {
                "alert_id": a["alert_id"],
                "key": a["key"],
                "severity": a["severity"],
            }
    finally:
        delete_topics(kafka_bootstrap, [src, alerts_t])
