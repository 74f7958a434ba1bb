"""The Dataflow flex template (templates/), checked offline: no credentials, no network
to Google Cloud, no docker daemon.

- templates/metadata.json and ``StreamsiftOptions`` are the same contract: every declared
  flag is a template parameter and every parameter is a declared flag, its regexes accept
  what the flag accepts and a value given as a parameter reaches the option.
- ``gcloud dataflow flex-template build --print-only`` accepts the spec. Offline this only
  works with a prebuilt ``--image``: building the image (``--image-gcr-path`` with
  ``--flex-template-base-image``) runs Cloud Build, and without ``--print-only`` the spec
  is written to GCS, both need credentials and network. gcloud parses the metadata JSON
  but does not validate parameter fields, so the schema checks here are our own.
- The Dockerfile installs and stages the project's wheel and points the
  ``FLEX_TEMPLATE_PYTHON_*`` variables at files it copies.
- The launcher main builds the Dataflow job offline (``--dry_run=True``): a streaming job
  with the pipeline's transforms, and the wheel staged for the workers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from streamsift.io.options import BrokerOptions
from streamsift.pipeline.options import StreamsiftOptions

#: the pipeline options the template exposes as parameters
TEMPLATE_OPTIONS = (StreamsiftOptions, BrokerOptions)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
PARAM_TYPES = {
    "TEXT",
    "GCS_READ_BUCKET",
    "GCS_READ_FILE",
    "GCS_READ_FOLDER",
    "GCS_WRITE_BUCKET",
    "GCS_WRITE_FILE",
    "GCS_WRITE_FOLDER",
    "PUBSUB_TOPIC",
    "PUBSUB_SUBSCRIPTION",
    "BIGQUERY_TABLE",
    "JAVASCRIPT_UDF_FILE",
    "SERVICE_ACCOUNT",
    "MACHINE_TYPE",
    "KMS_KEY_NAME",
    "WORKER_REGION",
    "WORKER_ZONE",
    "BOOLEAN",
    "ENUM",
    "NUMBER",
    "KAFKA_TOPIC",
    "KAFKA_READ_TOPIC",
    "KAFKA_WRITE_TOPIC",
}
#: top-level transforms of the detection pipeline (streamsift.pipeline.build), per-element
#: engine (``small_toml`` pins it)
EXPECTED_TRANSFORMS = {
    "Source",
    "Parse",
    "DetectPerKey",
    "BatchWindows",
    "Stage2",
    "ScoredToGlobal",
    "WithKeyExpiry",
    "AlertPerKey",
    "RateLimit",
    "WriteAlerts",
    "WriteDeadLetters",
    "WriteLate",
    "WriteFlagged",
}


def metadata() -> dict:
    return json.loads((TEMPLATES / "metadata.json").read_text())


def declared_flags() -> dict[str, argparse.Action]:
    """The template options' flags by dest, from their own argparse declarations."""
    parser = argparse.ArgumentParser()
    for cls in TEMPLATE_OPTIONS:
        cls._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


#: values a template user would type, for options whose form is not a path
EXAMPLES = {
    "pubsub_project": "streamsift-test",
    "pubsub_subscription": "projects/streamsift-test/subscriptions/events",
    "pubsub_topic": "projects/streamsift-test/topics/events",
    "pubsub_timestamp_attribute": "event_ts",
    "kafka_bootstrap_servers": "kafka-0:9092,kafka-1:9092",
    "kafka_topics": "events,more.events",
    "kafka_group_id": "streamsift",
    "alerts_sink": "pubsub://projects/streamsift-test/topics/alerts",
    "dead_letter_sink": "kafka://dead-letters",
    "late_sink": "gs://streamsift-templates/out/late.jsonl",
}


def example_value(name: str, action: argparse.Action) -> str:
    """A value the option accepts (what a template user would type)."""
    if action.choices:
        return str(list(action.choices)[-1])
    if name in EXAMPLES:
        return EXAMPLES[name]
    if action.type is int:
        return "7"
    if action.type is float:
        return "2.5"
    if "config" in name:
        return "gs://streamsift-templates/config/streamsift.toml"
    return f"gs://streamsift-templates/{name}/x"


def test_every_option_is_a_parameter_and_every_parameter_an_option():
    params = {p["name"] for p in metadata()["parameters"]}
    flags = set(declared_flags())
    assert sorted(flags - params) == [], "template option flags missing from metadata.json"
    assert sorted(params - flags) == [], "metadata.json parameters that are no declared option"


def test_parameters_are_well_formed():
    meta = metadata()
    assert meta["name"] and meta["description"]
    names = [p["name"] for p in meta["parameters"]]
    assert len(names) == len(set(names))
    for p in meta["parameters"]:
        assert set(p) <= {"name", "label", "helpText", "isOptional", "regexes", "paramType"}, p
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"]), p
        assert p["label"].strip() and p["helpText"].strip(), p
        assert p["paramType"] in PARAM_TYPES, p
        assert p["regexes"], p
        for rx in p["regexes"]:
            re.compile(rx)


def test_regexes_accept_exactly_what_the_options_accept():
    flags = declared_flags()
    for p in metadata()["parameters"]:
        action = flags[p["name"]]
        rxs = [re.compile(rx) for rx in p["regexes"]]

        def ok(value: str, rxs=rxs) -> bool:
            return all(rx.fullmatch(value) for rx in rxs)

        assert ok(example_value(p["name"], action)), p
        assert not ok(""), p
        if action.choices:
            assert all(ok(str(c)) for c in action.choices), p
            assert not ok("not-a-choice"), p
        # optional in the template <=> optional flag with no required value
        assert p.get("isOptional", False) == (not action.required), p


def test_a_parameter_value_reaches_its_pipeline_option():
    flags = declared_flags()
    argv = [
        f"--{p['name']}={example_value(p['name'], flags[p['name']])}"
        for p in metadata()["parameters"]
    ]
    options = PipelineOptions(argv)
    views = [options.view_as(cls) for cls in TEMPLATE_OPTIONS]
    for p in metadata()["parameters"]:
        action = flags[p["name"]]
        want = example_value(p["name"], action)
        (got,) = {str(getattr(v, action.dest)) for v in views if hasattr(v, action.dest)}
        assert got == want, p["name"]


def test_gcloud_print_only_accepts_the_template():
    if shutil.which("gcloud") is None:
        pytest.skip("gcloud is not installed")
    image = "europe-west1-docker.pkg.dev/streamsift-test/templates/streamsift:0.1.0"
    out = subprocess.run(
        ["bash", str(TEMPLATES / "build.sh"), "spec", image],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # gcloud prints the spec as a YAML block scalar: "|-" then the indented JSON
    text = out.stdout.strip()
    assert text.startswith("|-"), text[:200]
    spec = json.loads(text[2:])
    assert spec["image"] == image
    assert spec["sdkInfo"] == {"language": "PYTHON"}
    assert spec["metadata"] == metadata()


def dockerfile() -> tuple[str, dict[str, str], list[tuple[str, str]], list[str]]:
    """(FROM image, ENV with ARG defaults substituted, COPY (src, dst) pairs, RUN lines)."""
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    copies: list[tuple[str, str]] = []
    runs: list[str] = []
    base = ""

    def subst(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), env.get(m.group(1), "")), text)

    for raw in (TEMPLATES / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op == "FROM":
            base = rest
        elif op == "ARG":
            k, _, v = rest.partition("=")
            args[k] = subst(v)
        elif op == "ENV":
            k, _, v = rest.partition("=")
            env[k] = subst(v)
        elif op == "COPY":
            src, dst = shlex.split(rest)
            copies.append((subst(src), subst(dst)))
        elif op == "RUN":
            runs.append(subst(rest))
    return base, env, copies, runs


def test_dockerfile_launches_main_and_stages_the_project_wheel():
    base, env, copies, runs = dockerfile()
    assert base == "gcr.io/dataflow-templates-base/python311-template-launcher-base"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(
        1
    )
    wheel = f"streamsift-{version}-py3-none-any.whl"
    dest = dict((src, dst) for src, dst in copies)
    # the launcher runs templates/main.py
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == dest["templates/main.py"]
    # the wheel pip wheel builds for this version is copied, installed and staged
    assert env["FLEX_TEMPLATE_PYTHON_EXTRA_PACKAGES"] == dest[f"dist/{wheel}"]
    assert any(
        r.startswith("pip install") and r.split()[-1] == dest[f"dist/{wheel}"] for r in runs
    ), runs
    for src, _dst in copies:
        if not src.startswith("dist/"):
            assert (ROOT / src).is_file(), src
    # source=kafka: the launcher has Java and the expansion service copied by build.sh
    from streamsift.io.xlang import EXPANSION_JAR_ENV

    jar = env[EXPANSION_JAR_ENV]
    assert jar.startswith(dest["dist/io-expansion-service"] + "/"), (jar, dest)
    assert any("apt-get install" in r and "jre" in r for r in runs), runs
    build = (TEMPLATES / "build.sh").read_text()
    assert 'cp -r "$(dirname "$jar")" "$ROOT/dist/io-expansion-service"' in build


# --- the Dataflow job graph, offline ----------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    (path,) = out.glob("streamsift-*.whl")
    return path


def load_template_main():
    spec = importlib.util.spec_from_file_location("streamsift_template_main", TEMPLATES / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def remote_model_dir(trained, memfs) -> str:
    """The trained artifacts copied to ``memtest://models`` (a non-local file system)."""
    _cfg, model_path = trained
    memfs.upload_tree(str(Path(model_path).parents[1]), "memtest://models")
    yield "memtest://models"


def dataflow_args(wheel: Path, config: Path, model_dir: str, *extra: str) -> list[str]:
    return [
        "--runner=DataflowRunner",
        "--dry_run=True",
        "--project=streamsift-test",
        "--region=europe-west1",
        "--temp_location=gs://streamsift-templates/tmp",
        f"--extra_package={wheel}",
        f"--streamsift_config={config}",
        f"--model_dir={model_dir}",
        "--out_dir=gs://streamsift-templates/out",
        *extra,
    ]


def dry_run(argv: list[str], monkeypatch):
    """(pipeline, result, {top-level label}, {transform unique name: urn}) of a dry run."""
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    pipeline = load_template_main().build_pipeline(argv)
    result = pipeline.run()
    proto = pipeline.runner.proto_pipeline
    transforms = proto.components.transforms
    top = {transforms[t].unique_name for t in proto.root_transform_ids}
    if len(top) == 1:  # a wrapping root
        (root,) = proto.root_transform_ids
        top = {transforms[t].unique_name for t in transforms[root].subtransforms}
    names = {t.unique_name: t.spec.urn for t in transforms.values()}
    return pipeline, result, top, names


@pytest.fixture
def small_toml(tmp_path) -> Path:
    config = tmp_path / "small.toml"
    config.write_text('[synthetic]\nevents = 200\nkeys = 3\n[engine]\nmode = "per_element"\n')
    return config


def test_dataflow_pubsub_job_runs_the_configured_batched_engine(
    wheel, remote_model_dir, tmp_path, monkeypatch
):
    """``[engine] mode = "batched"``: the broker payloads are chunked (``ChunkPayloads``)
    into the batched stages, which also give the parsed events to ``sinks.processed``."""
    config = tmp_path / "batched.toml"
    config.write_text(
        '[engine]\nmode = "batched"\n[sinks]\nprocessed = "gs://streamsift-templates/audit"\n'
    )
    project = "projects/streamsift-test"
    _pipeline, _result, top, names = dry_run(
        dataflow_args(
            wheel,
            config,
            remote_model_dir,
            "--source=pubsub",
            f"--pubsub_subscription={project}/subscriptions/events",
        ),
        monkeypatch,
    )
    batched = {"Source", "ChunkPayloads", "ParseChunks", "DetectShards", "ShardEvents"}
    assert batched | {"RateLimit", "WriteAlerts", "WriteProcessed"} <= top, sorted(top)
    assert not {"Parse", "DetectPerKey", "Stage2", "AlertPerKey"} & top, sorted(top)
    assert "WriteProcessed/WriteToFiles" in names


def test_dataflow_dry_run_builds_a_streaming_job(wheel, small_toml, remote_model_dir, monkeypatch):
    from google.cloud import dataflow

    pipeline, result, top, names = dry_run(
        dataflow_args(wheel, small_toml, remote_model_dir), monkeypatch
    )
    job = result.job
    assert job.proto.type_ == dataflow.JobType.JOB_TYPE_STREAMING
    assert EXPECTED_TRANSFORMS <= top, sorted(top)
    # file outputs go through Beam's file IO (gs://), not the worker's disk
    for label in ("WriteAlerts", "WriteDeadLetters", "WriteLate", "WriteFlagged"):
        assert f"{label}/WriteToFiles" in names, label
    proto = pipeline.runner.proto_pipeline
    # the workers get the project's wheel
    staged = {
        dep.role_payload
        for env in proto.components.environments.values()
        for dep in env.dependencies
    }
    assert any(wheel.name.encode() in payload for payload in staged), staged
    # the template parameters reach the workers' pipeline options
    sdk_options = job.options.get_all_options()
    assert sdk_options["model_dir"] == remote_model_dir
    assert sdk_options["streamsift_config"] == str(small_toml)


def test_dataflow_pubsub_job_reads_and_writes_pubsub(
    wheel, small_toml, remote_model_dir, monkeypatch
):
    from google.cloud import dataflow

    project = "projects/streamsift-test"
    _pipeline, result, top, names = dry_run(
        dataflow_args(
            wheel,
            small_toml,
            remote_model_dir,
            "--source=pubsub",
            f"--pubsub_subscription={project}/subscriptions/events",
            f"--alerts_sink=pubsub://{project}/topics/alerts",
            f"--dead_letter_sink=pubsub://{project}/topics/dead-letters",
        ),
        monkeypatch,
    )
    assert result.job.proto.type_ == dataflow.JobType.JOB_TYPE_STREAMING
    assert EXPECTED_TRANSFORMS <= top, sorted(top)
    read = {u for n, u in names.items() if n.startswith("Source/ReadFromPubSub")}
    assert "beam:transform:pubsub_read:v1" in read, sorted(read)
    assert "Source/EventTime" in names
    for label in ("WriteAlerts", "WriteDeadLetters"):
        urns = {u for n, u in names.items() if n.startswith(f"{label}/WriteToPubSub/")}
        assert "beam:transform:pubsub_write:v1" in urns, label
    assert "WriteAlerts/CountAlerts" in names
    assert "WriteLate/WriteToFiles" in names  # no late_sink: gs:// out_dir
    assert not any(n.startswith("Source/Replay") for n in names)
    # the subscription / topics are in the job's pipeline as given
    blob = _pipeline.runner.proto_pipeline.SerializeToString()
    for name in (b"subscriptions/events", b"topics/alerts", b"topics/dead-letters"):
        assert name in blob, name


def test_dataflow_kafka_job_uses_the_cross_language_kafka_io(
    wheel, small_toml, remote_model_dir, monkeypatch
):
    import os

    from streamsift.io.xlang import EXPANSION_JAR_ENV

    jar = os.environ.get(EXPANSION_JAR_ENV, "")
    if not jar or not os.path.isfile(jar):
        pytest.skip(f"{EXPANSION_JAR_ENV} is not set to the KafkaIO expansion service jar")
    pipeline, result, top, names = dry_run(
        dataflow_args(
            wheel,
            small_toml,
            remote_model_dir,
            "--source=kafka",
            "--kafka_bootstrap_servers=kafka-0:9092",
            "--kafka_topics=events",
            "--alerts_sink=kafka://alerts",
        ),
        monkeypatch,
    )
    assert EXPECTED_TRANSFORMS <= top, sorted(top)
    # the Java KafkaIO, expanded by the local expansion service, runs in a Java environment
    proto = pipeline.runner.proto_pipeline
    envs = proto.components.environments

    def java_envs(prefix: str) -> set[str]:
        return {
            t.environment_id
            for t in proto.components.transforms.values()
            if t.unique_name.startswith(prefix)
            and t.environment_id
            and b"java" in envs[t.environment_id].payload
        }

    assert "Source/ReadFromKafka/KafkaIO.Read" in names, sorted(names)[:20]
    assert java_envs("Source/ReadFromKafka/")
    assert java_envs("WriteAlerts/WriteToKafka/")
    assert result.job is not None


def test_dataflow_refuses_local_outputs_and_model_dir(
    wheel, small_toml, remote_model_dir, trained, tmp_path, monkeypatch
):
    args = dataflow_args(wheel, small_toml, remote_model_dir)
    with pytest.raises(ValueError, match="out_dir must be on a Beam file system .* got '/"):
        dry_run([*args, f"--out_dir={tmp_path}"], monkeypatch)
    with pytest.raises(ValueError, match=r"sinks.alerts \(alerts_sink\) must be on a Beam file"):
        dry_run([*args, f"--alerts_sink=file://{tmp_path}/a.jsonl"], monkeypatch)
    local = str(Path(trained[1]).parents[1])
    with pytest.raises(ValueError, match="model_dir must be on a file system the Dataflow"):
        dry_run([*args, f"--model_dir={local}"], monkeypatch)


def test_launcher_refuses_a_model_dir_without_an_artifact(tmp_path):
    main = load_template_main()
    with pytest.raises(ValueError, match="model_dir must hold a trained artifact"):
        main.build_pipeline([f"--model_dir={tmp_path}", "--source=synthetic"])
