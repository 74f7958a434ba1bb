"""Pipeline flags as ``PipelineOptions`` subclasses, and an explicit runner choice."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from apache_beam import Pipeline
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner

__all__ = [
    "StreamsiftOptions",
    "make_runner",
    "merge_pipeline_flags",
    "RUNNERS",
    "FlinkCheckpointOptions",
    "local_runner_settings",
    "apply_local_runner_settings",
]

_LOG = logging.getLogger(__name__)

RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner", "DataflowRunner")


class StreamsiftOptions(PipelineOptions):
    """streamsift's own pipeline flags (declared so Beam does not drop them).

    They can be given as Beam pipeline options (after ``--`` on the command
    line, or as template parameters); a CLI flag of the same meaning wins.

    >>> o = PipelineOptions(["--streamsift_config=s.toml", "--out_dir=/tmp/o"])
    >>> merge_pipeline_flags({"config": None, "out_dir": "x"}, o)
    {'config': 's.toml', 'out_dir': 'x'}
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--streamsift_config", default=None, help="Path of the streamsift TOML config."
        )
        parser.add_argument(
            "--source",
            default=None,
            choices=["synthetic", "file", "kafka", "pubsub"],
            help="Where events come from (default synthetic).",
        )
        parser.add_argument("--path", default=None, help="Input JSONL file for --source file.")
        parser.add_argument("--model_dir", default=None, help="Model artifact directory.")
        parser.add_argument("--out_dir", default=None, help="Directory for JSONL outputs.")


#: CLI argument name -> StreamsiftOptions attribute
_PIPELINE_FLAGS = {
    "config": "streamsift_config",
    "source": "source",
    "path": "path",
    "model_dir": "model_dir",
    "out_dir": "out_dir",
}


def merge_pipeline_flags(cli: dict, options: PipelineOptions) -> dict:
    """Fill CLI values that were not given from the pipeline options."""
    own = options.view_as(StreamsiftOptions)
    out = dict(cli)
    for cli_name, opt_name in _PIPELINE_FLAGS.items():
        if cli_name in out and out[cli_name] is None:
            out[cli_name] = getattr(own, opt_name)
    return out


def make_runner(name: str) -> PipelineRunner | str:
    """The runner to use, chosen explicitly.

    Beam 2.77's ``DirectRunner`` first tries Prism (a download that fails
    offline, then falls back after a delay); streamsift maps ``DirectRunner`` to
    the in-process ``BundleBasedDirectRunner``, which supports streaming, state,
    timers and ``TestStream`` without downloading anything.
    """
    if name == "DirectRunner":
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        from streamsift.pipeline.beam_fixes import apply_direct_runner_fixes

        apply_direct_runner_fixes()
        return BundleBasedDirectRunner()
    if name not in RUNNERS:
        raise ValueError(f"runner must be one of {list(RUNNERS)}; got {name!r}")
    if name in _LOCAL_RUNNERS:
        return _local_runner_class(name)()
    return name


def start_pipeline(pipeline: Pipeline) -> PipelineResult:
    """Start ``pipeline`` on its runner and return the result (not waited for).

    ``Pipeline.run()`` on a runner that is not portable (the DirectRunner in
    streaming mode) first pickles every transform and then rebuilds the whole
    graph from its runner-API proto, a serialisability test that runs the copy
    instead of the graph that was built. With a replay source that holds the
    stream (a ``TestStream``) the test costs seconds per run (bz2-compressed
    pickles of every payload); it adds nothing a run needs - the DirectRunner
    still pickles every DoFn per bundle, and portable runners (Prism, Flink,
    Dataflow) translate the graph to the proto themselves - so streamsift
    skips it (``test_runner_api=False``) and the built graph is the one that runs.
    """
    return pipeline.run(test_runner_api=False)


def streaming_options(argv: list[str] | None = None, **kwargs) -> PipelineOptions:
    opts = PipelineOptions(argv or [], **kwargs)
    opts.view_as(StandardOptions).streaming = True
    return opts


# --- local portable runners (Prism, Flink) ---------------------------------------------
#: environment variables naming locally installed runner binaries (``scripts/services.sh env``)
PRISM_BIN_ENV = "STREAMSIFT_PRISM_BIN"
FLINK_JOB_SERVER_JAR_ENV = "STREAMSIFT_FLINK_JOB_SERVER_JAR"
FLINK_JAVA_OPTS_ENV = "STREAMSIFT_FLINK_JAVA_OPTS"
CHECKPOINTING_MODES = ("EXACTLY_ONCE", "AT_LEAST_ONCE")
#: JVM flags Flink 1.19/1.20 needs on Java 17 (Flink's own ``env.java.opts.all``)
FLINK_JAVA17_OPTS = (
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
)
_LOCAL_RUNNERS = ("PrismRunner", "FlinkRunner")


class FlinkCheckpointOptions(PipelineOptions):
    """Flink checkpointing, handed to the Flink job server as its
    ``checkpointingInterval`` / ``checkpointingMode`` pipeline options.

    Beam's Python ``FlinkRunnerOptions`` does not declare them and the portable
    runner drops undeclared flags, so they are declared here. Other runners
    ignore them.

    >>> o = PipelineOptions(["--checkpointing_interval=5000", "--checkpointing_mode=AT_LEAST_ONCE"])
    >>> c = o.view_as(FlinkCheckpointOptions)
    >>> (c.checkpointing_interval, c.checkpointing_mode)
    (5000, 'AT_LEAST_ONCE')
    >>> PipelineOptions([]).view_as(FlinkCheckpointOptions).checkpointing_interval is None
    True
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--checkpointing_interval",
            type=int,
            default=None,
            help="Flink: milliseconds between checkpoints (>= 1); unset = no checkpointing.",
        )
        parser.add_argument(
            "--checkpointing_mode",
            default=None,
            choices=list(CHECKPOINTING_MODES),
            help="Flink: checkpointing mode (Flink's default EXACTLY_ONCE when unset).",
        )


def _local_file(value: str, what: str) -> str:
    if "://" in value:
        raise ValueError(
            f"{what} must be a local file (streamsift never downloads runner binaries); "
            f"got the URL {value!r}"
        )
    if not os.path.isfile(value):
        raise ValueError(f"{what} must be an existing file; got {value!r}")
    return value


def local_runner_settings(
    runner: str, options: PipelineOptions, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The option values streamsift fills in so Prism and Flink run from locally
    installed binaries and never download one (pure: returns, does not set).

    Prism: ``prism_location`` from ``--prism_location`` or ``$STREAMSIFT_PRISM_BIN``.
    Flink, unless ``--job_endpoint`` names a running job server:
    ``flink_job_server_jar`` from the flag or ``$STREAMSIFT_FLINK_JOB_SERVER_JAR``,
    and the Java 17 JVM flags (``$STREAMSIFT_FLINK_JAVA_OPTS``, else
    :data:`FLINK_JAVA17_OPTS`) unless ``--job_server_jvm_property`` is given; on an
    embedded cluster (``--flink_master=[local]`` or ``[auto]``) parallelism 1 unless
    ``--parallelism`` is given.

    >>> import sys
    >>> env = {"STREAMSIFT_PRISM_BIN": sys.executable}
    >>> local_runner_settings("PrismRunner", PipelineOptions([]), env) == {
    ...     "prism_location": sys.executable}
    True
    >>> env = {"STREAMSIFT_FLINK_JOB_SERVER_JAR": sys.executable, "STREAMSIFT_FLINK_JAVA_OPTS": "-Da=1 -Db"}
    >>> s = local_runner_settings("FlinkRunner", PipelineOptions([]), env)
    >>> s["job_server_jvm_properties"], s["flink_job_server_jar"] == sys.executable
    (['-Da=1', '-Db'], True)
    >>> local_runner_settings("FlinkRunner", PipelineOptions(["--job_endpoint=localhost:8099"]), {})
    {'parallelism': 1}
    >>> local_runner_settings("FlinkRunner", PipelineOptions(["--job_endpoint=localhost:8099",
    ...     "--parallelism=4"]), {})
    {}
    >>> local_runner_settings("PrismRunner", PipelineOptions([]), {})
    Traceback (most recent call last):
    ...
    ValueError: PrismRunner needs a local prism binary: pass --prism_location=PATH or set STREAMSIFT_PRISM_BIN; got neither
    >>> local_runner_settings("FlinkRunner", PipelineOptions(["--checkpointing_interval=0",
    ...     "--job_endpoint=localhost:8099"]), {})
    Traceback (most recent call last):
    ...
    ValueError: checkpointing_interval must be >= 1 ms; got 0
    """
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        JobServerOptions,
        PortableOptions,
        PrismRunnerOptions,
    )

    out: dict[str, Any] = {}
    if runner == "PrismRunner":
        given = options.view_as(PrismRunnerOptions).prism_location
        if options.view_as(PortableOptions).job_endpoint:
            return out
        if given:
            _local_file(given, "--prism_location")
            return out
        path = environ.get(PRISM_BIN_ENV, "")
        if not path:
            raise ValueError(
                f"PrismRunner needs a local prism binary: pass --prism_location=PATH or set "
                f"{PRISM_BIN_ENV}; got neither"
            )
        out["prism_location"] = _local_file(path, PRISM_BIN_ENV)
        return out
    if runner != "FlinkRunner":
        return out
    interval = options.view_as(FlinkCheckpointOptions).checkpointing_interval
    if interval is not None and interval < 1:
        raise ValueError(f"checkpointing_interval must be >= 1 ms; got {interval}")
    flink = options.view_as(FlinkRunnerOptions)
    if flink.parallelism == -1 and flink.flink_master in ("[local]", "[auto]"):
        # Embedded cluster: Flink would default to one subtask per core, and a
        # redistribution between subtasks changes each key's arrival order (and
        # so which events are late). One subtask gives the DirectRunner's results.
        out["parallelism"] = 1
    if options.view_as(PortableOptions).job_endpoint:
        return out
    given = options.view_as(FlinkRunnerOptions).flink_job_server_jar
    if given:
        _local_file(given, "--flink_job_server_jar")
    else:
        jar = environ.get(FLINK_JOB_SERVER_JAR_ENV, "")
        if not jar:
            raise ValueError(
                f"FlinkRunner needs a local Flink job server jar: pass "
                f"--flink_job_server_jar=PATH or set {FLINK_JOB_SERVER_JAR_ENV} "
                "(streamsift never downloads one); got neither"
            )
        out["flink_job_server_jar"] = _local_file(jar, FLINK_JOB_SERVER_JAR_ENV)
    if not options.view_as(JobServerOptions).job_server_jvm_properties:
        opts = environ.get(FLINK_JAVA_OPTS_ENV, "").split()
        out["job_server_jvm_properties"] = opts or list(FLINK_JAVA17_OPTS)
    return out


def apply_local_runner_settings(
    runner: str, options: PipelineOptions, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Set :func:`local_runner_settings` on ``options``; returns what was set."""
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        JobServerOptions,
        PrismRunnerOptions,
    )

    views = {
        "prism_location": PrismRunnerOptions,
        "flink_job_server_jar": FlinkRunnerOptions,
        "job_server_jvm_properties": JobServerOptions,
        "parallelism": FlinkRunnerOptions,
    }
    settings = local_runner_settings(runner, options, os.environ if environ is None else environ)
    for name, value in settings.items():
        setattr(options.view_as(views[name]), name, value)
        _LOG.info("%s: %s=%s", runner, name, value)
    return settings


@functools.cache
def _local_runner_class(name: str) -> type:
    """Beam's Prism / Flink runner, filling in the local binaries before it starts."""
    if name == "PrismRunner":
        from apache_beam.runners.portability.prism_runner import PrismRunner as base
    else:
        from apache_beam.runners.portability.flink_runner import FlinkRunner as base

    def run_portable_pipeline(self, pipeline, options):
        apply_local_runner_settings(name, options)
        return base.run_portable_pipeline(self, pipeline, options)

    return type(f"Local{name}", (base,), {"run_portable_pipeline": run_portable_pipeline})
