"""Fixtures for tests that talk to the services started by ``scripts/services.sh``.

Each fixture reads one variable printed by ``scripts/services.sh env`` and skips the test with
the variable's name when it is not set, so ``pytest`` without the services stays green::

    scripts/services.sh install && scripts/services.sh start
    eval "$(scripts/services.sh env)"
    pytest -m services tests/services
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

HOW_TO = 'run `scripts/services.sh install && scripts/services.sh start` and `eval "$(scripts/services.sh env)"`'


def env_or_skip(name: str) -> str:
    """The value of environment variable ``name``, or skip the calling test."""
    value = os.environ.get(name, "")
    if not value:
        pytest.skip(f"{name} is not set: {HOW_TO}")
    return value


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A resource name unique to this test run (topics, subscriptions, consumer groups)."""
    # parametrized ids ("[batched]") are not valid in topic / subscription names
    name = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name.replace("_", "-")).strip("-")
    return f"streamsift-{name[:40]}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_bootstrap() -> str:
    return env_or_skip("STREAMSIFT_KAFKA_BOOTSTRAP")


@pytest.fixture
def pubsub_emulator() -> tuple[str, str]:
    """(emulator host:port, project id)."""
    host = env_or_skip("PUBSUB_EMULATOR_HOST")
    return host, os.environ.get("STREAMSIFT_PUBSUB_PROJECT") or "streamsift-test"


@pytest.fixture
def prism_bin() -> str:
    return env_or_skip("STREAMSIFT_PRISM_BIN")


@pytest.fixture
def flink_job_server_jar() -> str:
    return env_or_skip("STREAMSIFT_FLINK_JOB_SERVER_JAR")


@pytest.fixture
def flink_java_opts() -> list[str]:
    return env_or_skip("STREAMSIFT_FLINK_JAVA_OPTS").split()


@pytest.fixture
def expansion_service_jar() -> str:
    return env_or_skip("STREAMSIFT_EXPANSION_SERVICE_JAR")


@pytest.fixture
def kafka_home() -> str:
    return env_or_skip("STREAMSIFT_KAFKA_HOME")


@pytest.fixture
def services_script() -> str:
    return env_or_skip("STREAMSIFT_SERVICES_SCRIPT")
