"""The ``streamsift`` command line: ``run`` and ``train``.

Flags override the TOML config (``--config``); anything after ``--`` goes to
Beam as pipeline options.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from streamsift.config import Config, ConfigError, apply_overrides, load_config

__all__ = ["main"]

_LOG = logging.getLogger("streamsift")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (see README: config reference)")
    p.add_argument("--model-dir", help="model artifact directory (model.dir)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="streamsift",
        description="Streaming anomaly detection on Apache Beam.",
    )
    sub = ap.add_subparsers(dest="command")

    run = sub.add_parser(
        "run",
        help="run the streaming pipeline (default: synthetic stream on the DirectRunner)",
        description="Run the streaming pipeline. Arguments after `--` are passed to Beam.",
    )
    _add_common(run)
    run.add_argument("--runner", default="DirectRunner", help="Beam runner (default DirectRunner)")
    run.add_argument(
        "--source",
        choices=["synthetic", "file", "kafka", "pubsub"],
        default=None,
        help="event source (synthetic)",
    )
    run.add_argument("--path", help="JSONL file of events for --source file")
    run.add_argument("--out-dir", help="directory for alerts / dead letters / late (output.dir)")
    run.add_argument("--events", type=int, help="synthetic events (synthetic.events)")
    run.add_argument("--keys", type=int, help="synthetic keys (synthetic.keys)")
    run.add_argument("--seed", type=int, help="synthetic seed (synthetic.seed)")
    run.add_argument("--ordering", choices=["event_time", "arrival"], help="event_time.ordering")
    run.add_argument("--allowed-lateness", type=float, help="event_time.allowed_lateness_s")
    run.add_argument(
        "--engine",
        choices=["per_element", "batched"],
        help="engine.mode: per-element stages or micro-batches per shard (same alerts)",
    )
    run.add_argument("--retrain", action="store_true", help="train a new model before running")
    run.add_argument("--no-print", action="store_true", help="do not print alerts")
    run.add_argument("--quiet", action="store_true", help="no progress line, no alerts")
    run.add_argument("--summary-json", help="also write the summary as JSON to this file")
    from streamsift.io import cli as io_cli

    io_cli.add_arguments(run)

    train = sub.add_parser("train", help="train a model artifact from a JSONL history of events")
    _add_common(train)
    train.add_argument("--input", required=True, help="JSONL file, one event per line")

    for name, module, text in _EXTRA_COMMANDS:
        mod = _optional_module(module)
        if mod is not None:
            sp = sub.add_parser(name, help=text, description=text)
            mod.add_arguments(sp)
    return ap


#: subcommands implemented in their own modules: (name, module, help)
_EXTRA_COMMANDS = (
    (
        "evaluate",
        "streamsift.evaluation.evaluate",
        "replay labelled CSV series (NAB format) through the pipeline and score it",
    ),
    (
        "bench",
        "benchmarks.harness",
        "benchmark the pipeline against Beam's built-in detector and the runner's floor",
    ),
)


def _optional_module(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None  # not shipped in this installation
        raise


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(getattr(args, "config", None))
    overrides = {"model.dir": getattr(args, "model_dir", None)}
    if args.command == "run":
        overrides.update(
            {
                "output.dir": args.out_dir,
                "synthetic.events": args.events,
                "synthetic.keys": args.keys,
                "synthetic.seed": args.seed,
                "event_time.ordering": args.ordering,
                "event_time.allowed_lateness_s": args.allowed_lateness,
                "engine.mode": args.engine,
            }
        )
        from streamsift.io import cli as io_cli

        overrides.update(io_cli.overrides(args, cfg))
    return apply_overrides(cfg, overrides)


def _read_lines(path: str) -> list[bytes]:
    with open(path, "rb") as fh:
        return [line.rstrip(b"\r\n") for line in fh if line.strip()]


def _cmd_train(args: argparse.Namespace, cfg: Config) -> int:
    from streamsift.pipeline.run import train_from_payloads

    if not os.path.exists(args.input):
        print(f"streamsift train: --input {args.input!r} does not exist", file=sys.stderr)
        return 2
    path = train_from_payloads(_read_lines(args.input), cfg, cfg.model.dir)
    with open(os.path.join(os.path.dirname(path), "metadata.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    print(
        f"trained {meta.get('detector')} {meta.get('version')} on {meta.get('n_train')} rows "
        f"x {len(meta.get('feature_names', []))} features -> {path}"
    )
    return 0


def _runner_problem(runner: str, beam_args: Sequence[str]) -> str | None:
    """Why ``runner`` cannot start with these Beam flags (one line), or None.

    Checked before any training so a missing Prism binary or Flink jar is a
    one-line error, not a traceback minutes later.

    >>> _runner_problem("NoSuchRunner", [])
    "runner must be one of ['DirectRunner', 'PrismRunner', 'FlinkRunner', 'DataflowRunner']; got 'NoSuchRunner'"
    >>> _runner_problem("PrismRunner", ["--prism_location=/nonexistent/prism"])
    "--prism_location must be an existing file; got '/nonexistent/prism'"
    >>> _runner_problem("DirectRunner", []) is None
    True
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from streamsift.pipeline.options import RUNNERS, local_runner_settings

    if runner not in RUNNERS:
        return f"runner must be one of {list(RUNNERS)}; got {runner!r}"
    try:
        local_runner_settings(runner, PipelineOptions(list(beam_args)), os.environ)
    except ValueError as exc:
        return str(exc)
    return None


def _cmd_run(args: argparse.Namespace, cfg: Config, beam_args: list[str]) -> int:
    from streamsift.pipeline.console import console
    from streamsift.pipeline.run import (
        ensure_model,
        format_summary,
        run_stream,
        train_on_synthetic_history,
    )

    if args.quiet:
        console.enabled = False
    if getattr(args, "print_config", False) or args.source in ("kafka", "pubsub"):
        from streamsift.io import cli as io_cli

        if args.print_config:
            return io_cli.print_config(cfg)
        return io_cli.cmd_run_broker(args, cfg, beam_args)
    problem = _runner_problem(args.runner, beam_args)
    if problem:
        print(f"streamsift run: {problem}", file=sys.stderr)
        return 2
    evaluation = None
    if args.source == "file":
        if not args.path:
            print("streamsift run: --source file needs --path", file=sys.stderr)
            return 2
        if not os.path.exists(args.path):
            print(f"streamsift run: --path {args.path!r} does not exist", file=sys.stderr)
            return 2
        payloads = _read_lines(args.path)
        stream = None
    else:
        from streamsift import synthetic

        stream = synthetic.generate(cfg.synthetic, cfg.input)
        payloads = stream.payloads
    if args.retrain:
        model_path = train_on_synthetic_history(cfg)
    else:
        model_path = ensure_model(cfg)
    console.line(
        f"streamsift: {len(payloads):,} events from {args.source} on {args.runner}; "
        f"model {model_path}"
    )
    res = run_stream(
        payloads,
        cfg,
        model_path,
        cfg.output.dir,
        runner=args.runner,
        beam_args=beam_args,
        print_alerts=cfg.output.print_alerts and not args.no_print and not args.quiet,
        show_progress=not args.quiet,
    )
    if stream is not None:
        from streamsift.evaluation.metrics import event_metrics, incident_metrics

        flagged = [(f["key"], f["ts"]) for f in res.flagged]
        ev = event_metrics(stream.labels, flagged)
        inc = incident_metrics(stream.incidents, [a for a in res.alerts if not a.get("update")])
        evaluation = {"event": _as_dict(ev), "incident": _as_dict(inc)}
    text = format_summary(res, evaluation)
    print(text)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "counters": res.counters,
                    "elapsed_s": res.elapsed_s,
                    "alerts": len([a for a in res.alerts if not a.get("update")]),
                    "evaluation": evaluation,
                },
                fh,
                indent=2,
            )
    return 0


def _as_dict(pr) -> dict:
    out = {k: getattr(pr, k) for k in ("precision", "recall", "f1", "tp", "fp", "fn")}
    per_kind = getattr(pr, "per_kind_recall", None)
    if per_kind:
        out["recall_by_kind"] = dict(per_kind)
    ttd = getattr(pr, "time_to_detect_s", None)
    if ttd:
        values = sorted(ttd.values())
        out["median_time_to_detect_s"] = values[len(values) // 2]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, beam_args = argv[:i], argv[i + 1 :]
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args(["run"])
    if args.command == "run":
        from apache_beam.options.pipeline_options import PipelineOptions

        from streamsift.pipeline.options import merge_pipeline_flags

        merged = merge_pipeline_flags(vars(args), PipelineOptions(beam_args))
        args = argparse.Namespace(**merged)
        args.source = args.source or "synthetic"
    # Beam logs through the root logger; keep its chatter out of the console
    # unless asked for, but keep streamsift's own warnings.
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("streamsift").setLevel(
        logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    )
    try:
        cfg = _config(args)
    except ConfigError as exc:
        print(f"streamsift: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "train":
        return _cmd_train(args, cfg)
    for name, module, _text in _EXTRA_COMMANDS:
        if args.command == name:
            return int(_optional_module(module).main(args))
    return _cmd_run(args, cfg, beam_args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
