"""Kafka on portable runners (Prism, Flink, Dataflow): Beam's cross-language KafkaIO.

The Java ``ReadFromKafka`` / ``WriteToKafka`` are expanded by the local expansion
service jar named by ``STREAMSIFT_EXPANSION_SERVICE_JAR`` (``scripts/services.sh
install`` builds it with mvn; nothing is downloaded at run time). Each record is
re-stamped with its payload's event time (``source.event_time = "payload"``) or
keeps the Kafka record timestamp (``"broker"``, CreateTime policy). KafkaIO's
watermark follows its timestamp policy, not the partitions' payload times, and
offsets are committed by KafkaIO when a bundle is finalized
(``commit_offset_in_finalize``): at-least-once on runners that finalize after
checkpointing (Flink, Dataflow).

On Flink (no Docker for the Java SDK container here) the Java transforms run on the
expansion service's loopback Java worker as an EXTERNAL environment: see
:func:`expansion_service`. Tested with the Flink 1.19 job server of Beam 2.62, the
expansion service and Java harness of Beam 2.73 and the Python SDK 2.77.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms.window import TimestampedValue

from streamsift.config import Config, InputConfig
from streamsift.io.clients import BrokerRecord, kafka_client_config
from streamsift.io.direct import record_info
from streamsift.io.sinks import Destination, routing_fields

__all__ = [
    "EXPANSION_JAR_ENV",
    "ExternalEnvironmentService",
    "KafkaHeader",
    "KafkaRecordRow",
    "ReadKafkaXlang",
    "WriteKafkaXlang",
    "expansion_service",
    "kafka_record_row",
    "needs_external_worker",
    "prefer_external_environments",
]

EXPANSION_JAR_ENV = "STREAMSIFT_EXPANSION_SERVICE_JAR"
_LOG = logging.getLogger(__name__)


def expansion_service(prefer_external: bool = False):
    """The local Java expansion service (never a download).

    ``prefer_external``: resolve the Java transforms' environment to the EXTERNAL
    loopback Java worker the expansion service starts (``--alsoStartLoopbackWorker``,
    set by Beam when the run keeps its subprocesses cached, as ``run_broker`` does).
    The service offers ``anyof(DOCKER, EXTERNAL)``; Prism picks the worker, but the
    Flink job server takes the first alternative and would ``docker run`` the Java SDK.

    >>> saved = os.environ.pop(EXPANSION_JAR_ENV, None)
    >>> try:
    ...     expansion_service(True)
    ... except ValueError as exc:
    ...     print(str(exc).split(" (")[0])
    STREAMSIFT_EXPANSION_SERVICE_JAR must name the KafkaIO expansion service jar
    >>> if saved is not None:
    ...     os.environ[EXPANSION_JAR_ENV] = saved
    """
    from apache_beam.transforms.external import JavaJarExpansionService

    jar = os.environ.get(EXPANSION_JAR_ENV, "")
    if not jar or not os.path.isfile(jar):
        raise ValueError(
            f"{EXPANSION_JAR_ENV} must name the KafkaIO expansion service jar "
            f'(scripts/services.sh install; eval "$(scripts/services.sh env)"); got {jar!r}'
        )
    service = JavaJarExpansionService(jar)
    return ExternalEnvironmentService(service) if prefer_external else service


def needs_external_worker(runner: str) -> bool:
    """Whether ``runner`` must run the Java transforms on an EXTERNAL Java worker
    (no Docker: the Flink job server would otherwise start the Java SDK container).

    >>> needs_external_worker("FlinkRunner"), needs_external_worker("PrismRunner")
    (True, False)
    """
    return runner == "FlinkRunner"


def prefer_external_environments(components) -> int:
    """Replace each ``anyof`` environment in ``components`` (a ``Components`` proto)
    by its EXTERNAL alternative, if it has one; returns how many were replaced.

    >>> from apache_beam.portability import common_urns
    >>> from apache_beam.portability.api import beam_runner_api_pb2 as rp
    >>> from apache_beam.transforms.environments import AnyOfEnvironment
    >>> docker = rp.Environment(urn=common_urns.environments.DOCKER.urn)
    >>> ext = rp.Environment(urn=common_urns.environments.EXTERNAL.urn)
    >>> c = rp.Components(environments={"java": AnyOfEnvironment.create_proto([docker, ext])})
    >>> prefer_external_environments(c), c.environments["java"].urn == ext.urn
    (1, True)
    >>> prefer_external_environments(c)
    0
    """
    from apache_beam.portability import common_urns
    from apache_beam.transforms.environments import expand_anyof_environments

    anyof, external = common_urns.environments.ANYOF.urn, common_urns.environments.EXTERNAL.urn
    replaced = 0
    for env_id, env in list(components.environments.items()):
        if env.urn != anyof:
            continue
        for alt in expand_anyof_environments(env):
            if alt.urn == external:
                components.environments[env_id].CopyFrom(alt)
                replaced += 1
                break
    return replaced


def _java_docker_images(components) -> list[str]:
    """Docker images of the Java SDK named by environments in ``components``.

    >>> from apache_beam.portability.api import beam_runner_api_pb2 as rp
    >>> from apache_beam.transforms.environments import DockerEnvironment
    >>> env = DockerEnvironment("apache/beam_java17_sdk:2.73.0").to_runner_api(None)
    >>> _java_docker_images(rp.Components(environments={"java": env}))
    ['apache/beam_java17_sdk:2.73.0']
    """
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    out = []
    for env in components.environments.values():
        if env.urn == common_urns.environments.DOCKER.urn:
            image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
            if "beam_java" in image:
                out.append(image)
    return out


class _ExternalStub:
    """An expansion stub whose responses name the EXTERNAL alternative of ``anyof``."""

    def __init__(self, stub) -> None:
        self._stub = stub

    def Expand(self, request, *args, **kwargs):  # noqa: N802 (gRPC method name)
        response = self._stub.Expand(request, *args, **kwargs)
        if response.error:
            return response
        if prefer_external_environments(response.components):
            _LOG.info("xlang: Java transforms run on the expansion service's loopback worker")
        docker = _java_docker_images(response.components)
        if docker:
            raise RuntimeError(
                f"KafkaIO on Flink needs the expansion service's loopback Java worker "
                f"(no Docker here); got only the Docker environment {docker[0]} (run through "
                "streamsift.io.run.run_broker, which keeps the expansion service cached)"
            )
        return response

    def artifact_service(self):
        return self._stub.artifact_service()

    def ready(self, timeout_sec):
        return self._stub.ready(timeout_sec)


class ExternalEnvironmentService:
    """A ``JavaJarExpansionService`` whose expansions run on its EXTERNAL (loopback)
    Java worker instead of a Docker container (see :func:`expansion_service`).

    >>> from apache_beam.portability import common_urns
    >>> from apache_beam.portability.api import beam_expansion_api_pb2 as ep
    >>> from apache_beam.portability.api import beam_runner_api_pb2 as rp
    >>> from apache_beam.transforms.environments import AnyOfEnvironment, DockerEnvironment
    >>> docker = DockerEnvironment("apache/beam_java17_sdk:2.73.0").to_runner_api(None)
    >>> ext = rp.Environment(urn=common_urns.environments.EXTERNAL.urn)
    >>> class Stub:
    ...     def Expand(self, request):
    ...         envs = {"java": AnyOfEnvironment.create_proto([docker, ext])}
    ...         return ep.ExpansionResponse(components=rp.Components(environments=envs))
    >>> class Service:
    ...     def __enter__(self):
    ...         return Stub()
    ...     def __exit__(self, *args):
    ...         return None
    >>> with ExternalEnvironmentService(Service()) as stub:
    ...     response = stub.Expand(ep.ExpansionRequest())
    >>> response.components.environments["java"].urn == ext.urn
    True
    """

    def __init__(self, service) -> None:
        self._service = service

    def __enter__(self):
        return _ExternalStub(self._service.__enter__())

    def __exit__(self, *args):
        return self._service.__exit__(*args)


class _Stamp(beam.DoFn):
    def __init__(self, input_cfg: InputConfig) -> None:
        self._cfg = input_cfg

    def process(self, kv):
        ts, _key, payload = record_info(BrokerRecord("", 0, None, kv[1] or b""), self._cfg, False)
        if ts is None:
            yield payload  # keeps the record's own timestamp; the parser dead-letters it
        else:
            yield TimestampedValue(payload, ts)


class ReadKafkaXlang(beam.PTransform):
    """Payload bytes from Kafka through Beam's cross-language ``ReadFromKafka``
    (``runner``: ``FlinkRunner`` runs the Java transforms on the loopback Java worker)."""

    def __init__(self, cfg: Config, max_records: int = 0, runner: str = "") -> None:
        super().__init__()
        self._cfg = cfg
        self._max = max_records
        self._runner = runner

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        k = self._cfg.kafka
        consumer = {
            k2: str(v)
            for k2, v in kafka_client_config(
                k, **{"group.id": k.group_id, "auto.offset.reset": k.auto_offset_reset}
            ).items()
        }
        kwargs: dict[str, Any] = {
            "consumer_config": consumer,
            "topics": list(k.topics),
            "expansion_service": expansion_service(needs_external_worker(self._runner)),
            "commit_offset_in_finalize": True,
        }
        if self._max:
            kwargs["max_num_records"] = self._max
        broker_time = self._cfg.source.event_time == "broker"
        if broker_time:
            kwargs["timestamp_policy"] = ReadFromKafka.create_time_policy
        records = pbegin | "ReadFromKafka" >> ReadFromKafka(**kwargs)
        if broker_time:
            return records | "Values" >> beam.Map(lambda kv: kv[1] or b"").with_output_types(bytes)
        return records | "EventTime" >> beam.ParDo(_Stamp(self._cfg.input)).with_output_types(bytes)


# The functional NamedTuple form keeps real field types under ``from __future__ import
# annotations`` (class-body annotations would be strings, which Beam's schema inference
# turns into opaque Python-only fields the Java side cannot decode).
#: One Kafka record header (the Java side's ``Row(key: str, value: bytes)``).
KafkaHeader = NamedTuple("KafkaHeader", [("key", str), ("value", bytes)])  # noqa: UP014
#: The row KafkaIO's ``kafka_write_with_headers`` expands to a ProducerRecord.
KafkaRecordRow = NamedTuple(  # noqa: UP014
    "KafkaRecordRow", [("key", bytes), ("value", bytes), ("headers", Sequence[KafkaHeader])]
)


coders.registry.register_coder(KafkaHeader, coders.RowCoder)
coders.registry.register_coder(KafkaRecordRow, coders.RowCoder)


def kafka_record_row(obj: Any) -> KafkaRecordRow:
    """One output object (dict or JSON string) -> the record the xlang sink writes:
    key = the object's ``key``, value = its compact JSON, headers = its routing
    fields (as the native sink and the Pub/Sub attributes).

    >>> r = kafka_record_row('{"alert_id": "a1", "key": "web-1", "severity": "critical"}')
    >>> r.key, r.value
    (b'web-1', b'{"alert_id":"a1","key":"web-1","severity":"critical"}')
    >>> [(h.key, h.value) for h in r.headers]
    [('alert_id', b'a1'), ('key', b'web-1'), ('severity', b'critical')]
    """
    import json

    obj = json.loads(obj) if isinstance(obj, str) else obj
    key, attrs = routing_fields(obj)
    return KafkaRecordRow(
        (key or "").encode(),
        json.dumps(obj, separators=(",", ":")).encode(),
        [KafkaHeader(k, v.encode()) for k, v in attrs.items()],
    )


class WriteKafkaXlang(beam.PTransform):
    """JSON strings (or ``to_dict`` results) to a Kafka topic via ``WriteToKafka``
    with headers (record key = the object's ``key``; headers = its routing fields
    ``alert_id`` / ``key`` / ``severity`` or ``error_kind``, as the native sink)."""

    def __init__(self, dest: Destination, cfg: Config, to_dict=None, runner: str = "") -> None:
        super().__init__()
        self._dest = dest
        self._cfg = cfg
        self._to_dict = to_dict
        self._runner = runner

    def expand(self, pcoll):
        from apache_beam.io.kafka import WriteToKafka

        to_dict = self._to_dict

        def row(element) -> KafkaRecordRow:
            return kafka_record_row(to_dict(element) if to_dict else element)

        producer = {k: str(v) for k, v in kafka_client_config(self._cfg.kafka).items()}
        return (
            pcoll
            | "ToRecord" >> beam.Map(row).with_output_types(KafkaRecordRow)
            | "WriteToKafka"
            >> WriteToKafka(
                producer_config=producer,
                topic=self._dest.target,
                with_headers=True,
                expansion_service=expansion_service(needs_external_worker(self._runner)),
            )
        )
