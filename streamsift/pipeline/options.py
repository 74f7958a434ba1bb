"""Pipeline flags as ``PipelineOptions`` subclasses, and an explicit runner choice."""

from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

__all__ = ["StreamsiftOptions", "make_runner", "merge_pipeline_flags", "RUNNERS"]

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
            choices=["synthetic", "file"],
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
    return name


def streaming_options(argv: list[str] | None = None, **kwargs) -> PipelineOptions:
    opts = PipelineOptions(argv or [], **kwargs)
    opts.view_as(StandardOptions).streaming = True
    return opts
