"""Rendering: the console table, the ratios and ``RESULTS.md``.

Everything here reads the results dict the harness builds (see
:func:`benchmarks.harness.run_benchmark`); nothing is measured here.

>>> fmt_rate(1234.5), fmt_ratio(0.4567), fmt_ratio(None)
('1,234', '0.46x', 'n/a')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.contenders import CONTENDERS

__all__ = [
    "NOT_MEASURED",
    "SECTIONS",
    "fmt_latency",
    "console_summary",
    "fmt_rate",
    "fmt_ratio",
    "kept_section",
    "ratios",
    "render_markdown",
]

#: section headings of RESULTS.md, in order
SECTIONS = (
    "## Setup",
    "## Contenders",
    "## Ratios",
    "## Portable runners (Prism, Flink)",
    "## Latency from Kafka (ingest to alert)",
    "## State per key",
    "## Model stage alone",
    "## Profile: where the time goes",
    "## Not measured yet",
)

#: (what, why) - parts of the issue this harness does not measure
NOT_MEASURED = (
    (
        "Dataflow",
        "needs a Google Cloud project; the portable runners measured here are the local "
        "Prism and Flink (embedded cluster) runners",
    ),
    (
        "Kafka latency on Prism and Flink",
        "the latency runs use the DirectRunner with streamsift's native Kafka source; on "
        "Prism / Flink Kafka is read through Beam's cross-language KafkaIO (a Java expansion "
        "service), not measured here",
    ),
    (
        "Beam ZScore over all feature fields (an EnsembleAnomalyDetector of one ZScore per field)",
        "ZScore is univariate; its ensemble aggregates through a GroupByKey in the "
        "global window, which on a streaming runner only fires at the end of the "
        "stream, so it is not a like-for-like streaming contender",
    ),
    (
        "Throughput with more than one worker thread or process",
        "the DirectRunner executes bundles on a single executor thread and Flink runs "
        "with parallelism 1 here (streamsift's default on an embedded cluster, which keeps "
        "results identical to the DirectRunner's); the machine has 2 cores",
    ),
)


def fmt_rate(x: float | None) -> str:
    """Events (or rows) per second, thousands separated.

    >>> fmt_rate(None), fmt_rate(12.3)
    ('n/a', '12')
    """
    return "n/a" if x is None else f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    """A ratio with two decimals and an ``x``.

    >>> fmt_ratio(2.0)
    '2.00x'
    """
    return "n/a" if x is None else f"{x:.2f}x"


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _ok(c: Mapping[str, Any] | None) -> bool:
    return bool(c) and "error" not in c


def ratios(contenders: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``full`` (and ``batched``) against each other contender that ran:
    throughput (events/s), wall time and peak RSS ratios (base / other).

    >>> r = ratios({"full": {"events_per_s": 500.0, "wall_s": 4.0, "peak_rss_mb": 300.0},
    ...             "floor": {"events_per_s": 2000.0, "wall_s": 1.0, "peak_rss_mb": 200.0}})
    >>> r[0]["pair"], r[0]["throughput"], r[0]["wall"], r[0]["peak_rss"]
    ('full / floor', 0.25, 4.0, 1.5)
    """
    out: list[dict[str, Any]] = []

    def div(a: float, b: float) -> float | None:
        return a / b if b else None

    for base_name, others in (
        ("full", ("beam_zscore", "floor", "reference")),
        ("batched", ("beam_zscore", "floor", "reference", "full")),
    ):
        base = contenders.get(base_name)
        if not _ok(base):
            continue
        for name in others:
            other = contenders.get(name)
            if not _ok(other):
                continue
            out.append(
                {
                    "pair": f"{base_name} / {name}",
                    "base": base_name,
                    "other": name,
                    "throughput": div(base["events_per_s"], other["events_per_s"]),
                    "wall": div(base["wall_s"], other["wall_s"]),
                    "peak_rss": div(base["peak_rss_mb"], other["peak_rss_mb"]),
                }
            )
    return out


def _contender_rows(res: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, c in res["contenders"].items():
        label = CONTENDERS[name][0]
        if not _ok(c):
            rows.append([f"{label} (`{name}`)", "failed: " + str(c.get("error", ""))[:80]])
            continue
        rows.append(
            [
                f"{label} (`{name}`)",
                f"{c['events_in']:,}",
                f"{c['valid']:,}",
                f"{c['alerts']:,}",
                f"{c['wall_s']:.1f}",
                fmt_rate(c["events_per_s"]),
                _mb(c["peak_rss_mb"]),
                _mb(c["rss_start_mb"]),
            ]
        )
    return rows


_CONTENDER_HEAD = [
    "contender",
    "events in",
    "valid events",
    "alerts",
    "wall s",
    "events/s",
    "peak RSS MiB",
    "RSS at start MiB",
]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for r in rows:
        cells = r + [""] * (len(head) - len(r))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def console_summary(res: Mapping[str, Any]) -> str:
    """The contender table and the ratios as plain text (what the command prints)."""
    rows = [r + [""] * (len(_CONTENDER_HEAD) - len(r)) for r in _contender_rows(res)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(_CONTENDER_HEAD)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [_CONTENDER_HEAD, *rows]
    ]
    lines.append("")
    for r in res.get("ratios", []):
        lines.append(
            f"{r['pair']}: throughput {fmt_ratio(r['throughput'])}, wall time "
            f"{fmt_ratio(r['wall'])}, peak RSS {fmt_ratio(r['peak_rss'])}"
        )
    for short, entry in res.get("runners", {}).get("runs", {}).items():
        if "skipped" in entry:
            lines.append(f"{entry.get('runner', short)}: {entry['skipped']}")
            continue
        for kind in ("full", "floor"):
            c = entry.get(kind)
            if _ok(c):
                lines.append(
                    f"{entry.get('runner', short)} {kind}: {c['events_in']:,} events in "
                    f"{c['wall_s']:.1f} s ({fmt_rate(c['events_per_s'])}/s), alerts "
                    f"{c['alerts']:,}, peak RSS {_mb(c['peak_rss_mb'])} MiB"
                )
            elif c:
                lines.append(f"{entry.get('runner', short)} {kind}: FAILED")
    lat = res.get("latency", {})
    if "skipped" in lat:
        lines.append(f"latency: {lat['skipped']}")
    for r in lat.get("runs", []):
        if "error" in r:
            lines.append(f"latency {r.get('rate')}/s {r.get('mode')}: FAILED")
            continue
        lines.append(
            f"latency {r['rate']:,.0f}/s {r['mode']} ({r.get('engine_effective', '?')}): "
            f"alert p50/p99 {fmt_latency(r['alert_latency'], 'p50')} / "
            f"{fmt_latency(r['alert_latency'], 'p99')} s ({r['alert_latency']['count']} alerts), "
            f"processed p50/p99 {fmt_latency(r['processed_latency'], 'p50')} / "
            f"{fmt_latency(r['processed_latency'], 'p99')} s, kept up: "
            + ("yes" if r["kept_up"] else "no")
        )
    cons = res.get("consistency", {})
    lines.append(
        "same events for every contender: "
        + ("yes" if cons.get("ok") else "NO - " + "; ".join(cons.get("problems", [])))
    )
    return "\n".join(lines)


def _setup_section(res: Mapping[str, Any]) -> list[str]:
    m, v, spec, stream = res["machine"], res["versions"], res["spec"], res["stream"]
    setup = res.get("setup", {})
    load = ", ".join(str(x) for x in m.get("load_avg", ())) or "n/a"
    load_end = ", ".join(str(x) for x in res.get("load_avg_end", ())) or "n/a"
    lines = [
        "## Setup",
        "",
        f"* command: `{res['command']}`",
        f"* invoked as: `{res['invoked_as']}`",
        f"* date: {res['date']}",
        f"* machine: {m['nproc']} CPUs (nproc), {m['cpu_model']}, "
        f"{m['mem_total_gib']} GiB memory, {m['kernel']}; load average (1, 5, 15 min) at "
        f"start {load}, at the end {load_end} "
        "(the machine may be shared: compare ratios, not absolute numbers)",
        f"* Python {v['python']}, apache-beam {v['apache-beam']}, scikit-learn "
        f"{v['scikit-learn']}, pyod {v['pyod']}, numpy {v['numpy']}, numba "
        f"{v.get('numba', 'not recorded')}, pyinstrument {v['pyinstrument']}",
        f"* stream: `streamsift.synthetic.generate`, seed {spec['seed']}, "
        f"{spec['events']:,} events, {spec['keys']} keys, {spec['features']} feature fields "
        f"({', '.join(res['fields'])}); {stream['valid']:,} valid ({stream['late']} of them "
        f"far too late), {stream['malformed']} malformed, {stream['incidents']} injected "
        f"incidents; payload sha256 `{stream['sha256'][:16]}...`",
        "* fields beyond the generator's four channels (cpu, latency_ms, requests, errors) "
        "re-use a channel by position (field j -> channel j mod 4) with their own per-key "
        "scale and noise",
        f"* models: streamsift's artifact and the reference Isolation Forest are trained on "
        f"{spec['history_hours']:g} h of synthetic history (same keys, seed + 1) with "
        "streamsift's default model config (100 trees, contamination 0.01, seed 42); "
        f"generating {setup.get('generate_s', 0):.1f} s, streamsift training "
        f"{setup.get('model_s', 0):.1f} s, reference training {setup.get('reference_s', 0):.1f} s, "
        f"compiling streamsift's numba kernels {setup.get('kernels_s', 0):.1f} s (cached on disk "
        "for the children) "
        "(done once in a setup process, not part of any contender's time)",
        "* every measurement runs in a fresh child process (`python -m benchmarks.harness "
        '--child TASK`), one after another; "peak RSS" is the child\'s own high-water mark '
        "(`VmHWM`; its `ru_maxrss` is in the JSON: on Linux `ru_maxrss` also covers the "
        "spawning process's peak, which is why the parent stays small - "
        f'{res.get("parent_peak_rss_mb", 0):.0f} MiB here); "RSS at start" is the child\'s '
        "RSS after imports and reading the payloads, just before the run",
        "* wall time: pipeline construction (the replay source reads every payload's "
        "time) + run until the stream is exhausted; events/s = events in / wall time",
        "* every Beam contender (and `floor`) is started the way streamsift starts its own "
        "pipelines, `Pipeline.run(test_runner_api=False)` "
        "(`streamsift.pipeline.options.start_pipeline`): Beam's default `run()` on the "
        "DirectRunner first pickles every transform and rebuilds the graph from its proto, "
        "which for a replay holding the whole stream costs seconds per run (runs before "
        "2026-11-23 19:00 paid it in every contender, the floor most in relative terms)",
        "",
    ]
    return lines


def _contender_section(res: Mapping[str, Any]) -> list[str]:
    lines = ["## Contenders", ""]
    lines += _table(_CONTENDER_HEAD, _contender_rows(res))
    lines.append("")
    for name in res["contenders"]:
        label, what = CONTENDERS[name]
        lines.append(f"* `{name}` - {label}: {what}.")
    lines.append("")
    lines.append(
        '"alerts": `full` = new alerts emitted after dedup and the rate limit (updates '
        "of an open alert not counted); `beam_zscore` = results labelled outlier by "
        "ZScore's FixedThreshold(3); `reference` = rows with decision_function < 0; "
        "`floor` = elements out."
    )
    lines.append("")
    full = res["contenders"].get("full")
    if _ok(full):
        d = full["details"]
        sev = d.get("alerts_by_severity", {})
        lines.append(
            f"`full` detail: processed {d['processed']:,}, dead-lettered "
            f"{d['dead_lettered']:,}, late {d['late']:,}, stage 1 escalated "
            f"{d['escalated']:,}, stage 2 scored {d['stage2_scored']:,}, flagged "
            f"{d['flagged']:,}, alerts opened {d['alerts_opened']:,} (rate-limited "
            f"{d['alerts_suppressed']:,}, severity upgrades {d['alerts_upgraded']:,}); new "
            f"alerts by severity: critical {sev.get('critical', 0)}, warning "
            f"{sev.get('warning', 0)}, info {sev.get('info', 0)}; run_stream's own timer "
            f"(run only) {d['run_s']:.1f} s."
        )
        if d.get("stage2_batches"):
            lines.append(
                f"`full` stage 2: RunInference handed the model {d['stage2_batches']:,} batches "
                f"for {d['stage2_rows']:,} rows, {d['stage2_mean_batch']:.2f} rows per batch "
                "on average (1 s event-time windows, batches up to 256)."
            )
    bat = res["contenders"].get("batched")
    if _ok(bat):
        d = bat["details"]
        lines.append(
            f"`batched` detail: processed {d['processed']:,}, dead-lettered "
            f"{d['dead_lettered']:,}, late {d['late']:,}, stage 1 escalated "
            f"{d['escalated']:,}, stage 2 scored {d['stage2_scored']:,} in "
            f"{d['stage2_batches']:,} model calls ({d['stage2_mean_batch']:.1f} rows per "
            f"call), flagged {d['flagged']:,}, alerts opened {d['alerts_opened']:,}; "
            f"run_stream's own timer (run only) {d['run_s']:.1f} s."
        )
    ident = res.get("identity")
    if ident:
        if "error" in ident:
            lines.append(f"`batched` vs `full` identity: not checked ({ident['error']}).")
        else:
            verdict = "identical" if ident["alerts_identical"] else "DIFFERENT"
            cverdict = "identical" if ident["counters_identical"] else "DIFFERENT"
            lines.append(
                f"`batched` vs `full` on this stream: alerts {verdict} ({ident['alerts']:,} "
                f"alert lines compared on every field but the detection time: alert_id, "
                f"severity, score, explanation, ...); detection counters {cverdict} "
                f"({', '.join(ident['counters_compared'])})"
                + (f"; differences: {ident['differences']}" if ident.get("differences") else "")
                + "."
            )
    ref = res["contenders"].get("reference")
    if _ok(ref):
        d = ref["details"]
        lines.append(
            f"`reference` detail: {d['us_per_decision_function']:,.0f} us per one-row "
            f"decision_function, {100 * d['decision_function_share']:.0f}% of its wall time."
        )
    z = res["contenders"].get("beam_zscore")
    if _ok(z):
        d = z["details"]
        lines.append(
            f"`beam_zscore` detail: scores field `{d['scored_feature']}` only (ZScore is "
            f"univariate); {d['unscored_warmup']:,} results unscored while its windows warm up."
        )
    cons = res.get("consistency", {})
    lines.append("")
    lines.append(
        "Consistency: "
        + (
            f"every contender read the same payloads (sha256), counted all {cons['events_in']:,} "
            f"of them in and saw the stream's {cons['valid']:,} valid events (`floor`: every "
            "payload passes through)."
            if cons.get("ok")
            else "PROBLEMS - " + "; ".join(cons.get("problems", []))
        )
    )
    lines.append("")
    return lines


#: issue #5 targets on the same runner and stream: (label, base, other, minimum ratio)
TARGETS = (
    ("at least 25x Beam's AnomalyDetection(ZScore)", "beam_zscore", 25.0),
    ("at least 50% of the runner's floor", "floor", 0.5),
)
#: the stretch goal, events/s on the DirectRunner
STRETCH_EVENTS_PER_S = 50_000.0


def _targets(res: Mapping[str, Any]) -> list[str]:
    """Issue #5's throughput targets against each engine that ran.

    >>> lines = _targets({"ratios": [{"base": "full", "other": "floor", "throughput": 0.6}],
    ...                   "contenders": {"full": {"events_per_s": 3000.0}}})
    >>> print(lines[4])
    | `full` | at least 50% of the runner's floor | 0.60x | met |
    """
    rs = res.get("ratios", [])
    rows = []
    for base in ("full", "batched"):
        c = res.get("contenders", {}).get(base)
        if not c or "error" in c:
            continue
        for label, other, minimum in TARGETS:
            r = next((r for r in rs if r.get("base", "full") == base and r["other"] == other), None)
            if r is None or r["throughput"] is None:
                continue
            ok = "met" if r["throughput"] >= minimum else "not met"
            rows.append([f"`{base}`", label, fmt_ratio(r["throughput"]), ok])
        eps = c["events_per_s"]
        ok = "met" if eps >= STRETCH_EVENTS_PER_S else "not met"
        rows.append([f"`{base}`", "stretch: 50,000 events/s", f"{fmt_rate(eps)} events/s", ok])
    if not rows:
        return []
    return (
        ["Targets of issue #5 (throughput):", ""]
        + _table(["engine", "target", "measured", "verdict"], rows)
        + [""]
    )


def _ratio_section(res: Mapping[str, Any]) -> list[str]:
    lines = ["## Ratios", ""]
    rs = res.get("ratios", [])
    if not rs:
        return lines + ["Not available: `full` or its comparison contenders did not run.", ""]
    lines += _table(
        ["pair", "throughput (events/s)", "wall time", "peak RSS"],
        [
            [
                f"`{r['pair']}`",
                fmt_ratio(r["throughput"]),
                fmt_ratio(r["wall"]),
                fmt_ratio(r["peak_rss"]),
            ]
            for r in rs
        ],
    )
    lines.append("")
    lines.append(
        "Throughput below 1x means the full pipeline (`full`: per-element engine, "
        "`batched`: micro-batched engine) processes fewer events per second than the "
        "other contender; wall time and RSS above 1x mean it takes longer / holds more "
        "memory."
    )
    lines.append("")
    lines += _targets(res)
    return lines


def fmt_latency(summary: Mapping[str, Any] | None, key: str) -> str:
    """One latency statistic in seconds; ``>=`` when it is a lower bound (events
    still unprocessed when the measurement stopped), ``n/a`` without samples.

    >>> fmt_latency({"p50": 0.41234, "p50_lower_bound": False}, "p50")
    '0.412'
    >>> fmt_latency({"p99": 61.2, "p99_lower_bound": True}, "p99")
    '>= 61.2'
    >>> fmt_latency({"p99": None}, "p99")
    'n/a'
    """
    if not summary or summary.get(key) is None:
        return "n/a"
    v = float(summary[key])
    text = f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return (">= " if summary.get(f"{key}_lower_bound") else "") + text


def _lat3(summary: Mapping[str, Any] | None) -> str:
    return " / ".join(fmt_latency(summary, k) for k in ("p50", "p99", "max"))


def _runners_section(res: Mapping[str, Any]) -> list[str]:
    lines = ["## Portable runners (Prism, Flink)", ""]
    rn = res.get("runners")
    if not rn or not rn.get("runs"):
        return lines + ["Not measured in this run (`--runners` empty).", ""]
    engine = rn.get("engine", "per_element")
    lines.append(
        f"`full` (streamsift's pipeline, engine `{engine}`) and `floor` (the stateful "
        "pass-through) on Beam's portable runners, on the same payload file as the "
        "contenders above, each in a fresh process, the runner built by streamsift's "
        "`make_runner` from the locally installed binaries (`scripts/services.sh env`): "
        "**PrismRunner** (the `prism` binary as job service) and **FlinkRunner** (Beam's "
        "Flink job server jar with its embedded Flink cluster, `--flink_master=[local]`, "
        "parallelism 1). The Python SDK harness runs inside the contender's process "
        '(LOOPBACK), so "peak RSS" is that process\'s high-water mark (Python side: '
        "pipeline construction, the SDK worker, the model); the runner's own processes "
        'are separate and sampled every 0.25 s ("runner processes": the peak of each, '
        '"tree": the highest summed RSS of the contender process and all of them). '
        "Wall time includes starting and stopping the job service (seconds for Prism, "
        "tens of seconds for Flink's JVM and cluster), which the DirectRunner does not pay; "
        "the **trivial job** row measures that cost alone (a streaming `Create` of 10 "
        'numbers and one `Map`, in its own process), and "events/s net" divides the '
        "events by the wall time minus the trivial job's (an estimate: start-up times vary "
        "by a few seconds from run to run)."
    )
    lines.append("")
    rows = []
    direct = res.get("contenders", {})
    ratio_lines = []
    for _short, entry in rn["runs"].items():
        runner = entry.get("runner", _short)
        if "skipped" in entry:
            rows.append([runner, "-", entry["skipped"]])
            continue
        empty = entry.get("empty")
        empty_s = empty["wall_s"] if _ok(empty) else None
        for kind in ("empty", "full", "floor"):
            c = entry.get(kind)
            if c is None:
                continue
            label = {"empty": "trivial job (start-up, teardown)", "full": f"`full` ({engine})"}
            label = label.get(kind, f"`{kind}`")
            if not _ok(c):
                rows.append([runner, label, "failed: " + str((c or {}).get("error", ""))[:120]])
                continue
            net = None
            if kind != "empty" and empty_s is not None and c["wall_s"] > empty_s:
                net = c["events_in"] / (c["wall_s"] - empty_s)
            procs = c["details"].get("runner_processes", {})
            names = ", ".join(
                f"{p['name']} {p.get('peak_rss_mb', 0):,.0f}" for p in procs.get("processes", [])
            )
            rows.append(
                [
                    runner,
                    label,
                    f"{c['events_in']:,}",
                    f"{c['valid']:,}" if "valid" in c else "-",
                    f"{c['alerts']:,}" if "alerts" in c else "-",
                    f"{c['wall_s']:.1f}",
                    fmt_rate(c["events_per_s"]) if kind != "empty" else "-",
                    fmt_rate(net) if kind != "empty" else "-",
                    _mb(c["peak_rss_mb"]),
                    names or "-",
                    _mb(procs.get("tree_peak_mb")),
                ]
            )
        full, floor = entry.get("full"), entry.get("floor")
        parts = []
        if _ok(full) and _ok(floor) and floor["events_per_s"]:
            parts.append(
                f"`full / floor` throughput {fmt_ratio(full['events_per_s'] / floor['events_per_s'])}"
            )
        d_full = direct.get("full") if engine == "per_element" else direct.get("batched")
        d_name = "full" if engine == "per_element" else "batched"
        if _ok(full) and _ok(d_full) and d_full["events_per_s"]:
            parts.append(
                f"`full` on {runner} / `{d_name}` on the DirectRunner "
                f"{fmt_ratio(full['events_per_s'] / d_full['events_per_s'])}"
            )
        d_floor = direct.get("floor")
        if _ok(floor) and _ok(d_floor) and d_floor["events_per_s"]:
            parts.append(
                f"`floor` on {runner} / on the DirectRunner "
                f"{fmt_ratio(floor['events_per_s'] / d_floor['events_per_s'])}"
            )
        if _ok(full) and _ok(d_full):
            parts.append(
                f"new alerts {full['alerts']:,} (DirectRunner `{d_name}`: {d_full['alerts']:,}), "
                f"late events {full['details'].get('late', 0):,} "
                f"({d_full['details'].get('late', 0):,})"
            )
        cons = entry.get("consistency", {})
        if cons and not cons.get("ok", True):
            parts.append("consistency PROBLEMS: " + "; ".join(cons.get("problems", [])))
        if parts:
            ratio_lines.append(f"* {runner}: " + "; ".join(parts) + ".")
    lines += _table(
        [
            "runner",
            "contender",
            "events in",
            "valid events",
            "alerts",
            "wall s",
            "events/s",
            "events/s net",
            "peak RSS MiB (contender process)",
            "runner processes, peak RSS MiB",
            "tree peak RSS MiB",
        ],
        rows,
    )
    lines.append("")
    if ratio_lines:
        lines += ratio_lines + [""]
        lines.append(
            "Alert counts may differ from the DirectRunner's by a few on this stream: it "
            "has far-late events, and whether one is late depends on the order in which a "
            "runner hands over the elements of one replayed chunk (Prism orders them by "
            "event time); tests/services/test_runners.py checks that the alerts are "
            "identical on a stream without far-late events."
        )
        lines.append("")
    return lines


#: issue #5's latency target: p99 ingest-to-alert at most this at LATENCY_TARGET_RATE
LATENCY_TARGET_S = 1.0
LATENCY_TARGET_RATE = 5000


def _latency_section(res: Mapping[str, Any]) -> list[str]:
    lines = ["## Latency from Kafka (ingest to alert)", ""]
    lat = res.get("latency")
    if not lat:
        return lines + ["Not measured in this run (`--latency-loads` empty).", ""]
    if "skipped" in lat:
        return lines + [f"Not measured: {lat['skipped']}.", ""]
    runs = lat.get("runs", [])
    ok_runs = [r for r in runs if "error" not in r]
    engine = lat.get("engine", "per_element")
    effective = sorted({r.get("engine_effective", "?") for r in ok_runs})
    lines.append(
        f"A producer process publishes the bench stream's events (its keys, fields and "
        f"injected incidents) to a fresh topic on the Kafka broker at `{lat['bootstrap']}` "
        f"at a fixed offered rate for {lat['seconds']:g} s (paced: event i is due at "
        "start + i / rate; each event's time field and its Kafka record timestamp are the "
        "wall-clock send time, in ms), while `streamsift run --source kafka` (DirectRunner, "
        f"native Kafka source, engine `{engine}` requested, "
        f"{', '.join(effective) or 'n/a'} measured from its counters) consumes it in a child "
        "process and writes its alerts and the `sinks.processed` audit to two Kafka topics. "
        "**Alert latency** = the alert record's Kafka timestamp (when the pipeline's sink "
        "produced it) - the send time of the event that raised or updated the alert "
        "(`last_event_time_ms`); **processed latency** = the processed record's timestamp - "
        "the event's send time, one sample per event (the audit is written right after "
        "parsing; the native source polls only when the whole pipeline is idle, so it "
        "still shows whether the pipeline keeps up). Before the measured phase, warm-up "
        "events until the first processed record comes back; after it, a few heartbeat "
        "events per second until every measured event can have been released, then the "
        "pipeline drains and exits. **Backlog at end**: measured events without a "
        "processed record when the last one was sent (kept up = at most 1 s of input); "
        "events never processed (the pipeline is stopped after "
        f"`--latency-drain-timeout`) count as censored: a percentile they reach is shown "
        "as `>=` (a lower bound). p50 / p99 are nearest-rank percentiles. Everything runs "
        "on this machine: the producer, the broker and the pipeline share its cores."
    )
    lines.append("")
    rows = []
    for r in runs:
        mode = r.get("mode", "?")
        if "error" in r:
            rows.append([f"{r.get('rate', 0):,}", f"`{mode}`", "failed: " + r["error"][:150]])
            continue
        a, p = r["alert_latency"], r["processed_latency"]
        rows.append(
            [
                f"{r['rate']:,.0f}",
                f"`{mode}`"
                + (
                    f" (lateness {r['allowed_lateness_s']:g} s)"
                    if r["ordering"] == "event_time"
                    else ""
                ),
                r.get("engine_effective", "?"),
                fmt_rate(r["achieved_per_s"]),
                f"{r['sent_valid']:,}",
                f"{r['processed_in_window']:,}",
                f"{r['alerts_new']:,} + {r['alerts_updates']:,}",
                _lat3(a),
                _lat3(p),
                f"{r['backlog_at_end']:,} ({r['backlog_at_end_s']:.1f} s)",
                "yes" if r["kept_up"] else "no",
                _mb(r.get("pipeline_peak_rss_mb")),
            ]
        )
    lines += _table(
        [
            "offered events/s",
            "mode",
            "engine",
            "achieved events/s",
            "events sent",
            "processed",
            "alerts (new + updates)",
            "alert latency p50 / p99 / max s",
            "processed latency p50 / p99 / max s",
            "backlog at end",
            "kept up",
            "pipeline peak RSS MiB",
        ],
        rows,
    )
    lines.append("")
    target_rows = []
    for r in ok_runs:
        if int(r["rate"]) != LATENCY_TARGET_RATE:
            continue
        a = r["alert_latency"]
        if a.get("p99") is None:
            verdict = "no alerts in the window"
        else:
            met = a["p99"] <= LATENCY_TARGET_S and not a.get("p99_lower_bound") and r["kept_up"]
            verdict = "met" if met else "not met"
        target_rows.append(
            [f"`{r['mode']}`", r.get("engine_effective", "?"), fmt_latency(a, "p99"), verdict]
        )
    if target_rows:
        lines.append(
            f"Target of issue #5: p99 ingest-to-alert latency at most {LATENCY_TARGET_S:g} s "
            f"at {LATENCY_TARGET_RATE:,} events/s from Kafka (and the pipeline keeping up):"
        )
        lines.append("")
        lines += _table(["mode", "engine", "p99 s", "verdict"], target_rows)
        lines.append("")
    lines.append(
        "Why the modes differ: with `event_time` ordering (the default) the per-key stage "
        "buffers every event until the watermark passes its event time + "
        "`event_time.allowed_lateness_s` (30 s by default), so that out-of-order arrivals "
        "within that bound give exactly the results of in-order arrival; one release timer "
        "per key covers all its pending events, so an event waits between 1 and 2 allowed "
        "latenesses. Latency there is by design at least the allowed lateness (and the "
        "source commits offsets only after the same wait). With `arrival` ordering "
        "(`--ordering arrival`) each event is processed when it arrives (an event more "
        "than the allowed lateness older than its key's newest is late); what remains is "
        "stage 2's 1 s event-time windows (RunInference batches across keys per window, "
        "released when the watermark passes the window end), the runner's bundle "
        "scheduling and the sinks. `event_time:L` runs event-time ordering with an allowed "
        "lateness of L seconds: exact ordering for disorder up to L, alert latency about "
        "L to 2L plus the rest (about a second: stage 2's windows, or the batched engine's "
        "release quantum, `engine.release_quantum_s`) plus any processing backlog."
    )
    lines.append("")
    for r in ok_runs:
        if r.get("log_tail"):
            lines.append(
                f"Run {r['rate']:,.0f}/s `{r['mode']}` ended `{r['pipeline_end']}` "
                f"(after {r['after_sending_s']:.0f} s of catching up)."
            )
    if any(r.get("log_tail") for r in ok_runs):
        lines.append("")
    return lines


#: median final AlertState size over the NAB dev series (external measurement, see the text)
NAB_MEDIAN_SKETCH_B = 123


def _state_section(res: Mapping[str, Any]) -> list[str]:
    lines = ["## State per key", ""]
    st = res.get("state")
    if not st:
        return lines + ["Not measured in this run (`--key-counts` empty).", ""]
    b = st.get("breakdown", {})
    d = st.get("breakdown_default", {})
    if b:
        cols = [b] + ([d] if d else [])
        lines.append(
            "Encoded state cells per key, for the bench stream"
            + (" and for streamsift's default config" if d else "")
            + " (default horizons and detector settings):"
        )
        lines.append("")

        def row(label: str, key: str) -> list[str]:
            return [label] + [f"{c[key]:,}" for c in cols]

        lines += _table(
            ["cell"]
            + [
                f"bytes, {c['fields']} fields x {c['horizons']} horizons "
                f"({c['model_features']} model features)"
                for c in cols
            ],
            [
                row("DetectPerKey: KeyLogic state (`KeyLogic.encode_state`)", "keylogic"),
                row("... of which the seasonal detector", "keylogic_detector"),
                row("DetectPerKey: Meta (ordering/timer bookkeeping)", "meta"),
                row("AlertPerKey: AlertState, empty sketch", "alert_empty"),
                row("AlertPerKey: AlertState, all 192 sketch bins used (max)", "alert_max"),
                row("AlertPerKey: order chain", "alert_chain"),
                ["**total per key (min - max)**"]
                + [f"**{c['total_min']:,} - {c['total_max']:,}**" for c in cols],
                [
                    "for comparison: Beam ZScore detector per key, cloudpickled after 1000 values",
                    str(b.get("beam_zscore_1000", b.get("beam_zscore_error", "n/a"))),
                ]
                + (["-"] if d else []),
            ],
        )
        lines.append("")
        if d:
            verdict = "met" if d["total_min"] <= 2048 else "not met"
            lines.append(
                f"Target of issue #5, at most 2 KB (2,048 B) of state per key with the default "
                f"horizons: default config {d['total_min']:,} B with an empty alert sketch "
                f"(**{verdict}**). The sketch grows with the distinct score levels a key has "
                "seen: on the 23 NAB dev series (about two weeks per key; measured with "
                "`streamsift evaluate` on 2026-11-23, not by this harness) its final size had "
                f"a median of {NAB_MEDIAN_SKETCH_B} B (range 87-195 B), i.e. "
                f"{d['total_min'] - d['alert_empty'] + NAB_MEDIAN_SKETCH_B:,} B per key in "
                "all; the maximum (every one of the 192 bins used) is the column's upper "
                "bound. The bench stream's 8 fields need twice the per-field state."
            )
            lines.append("")
        lines.append(
            "Not counted: events waiting in the DetectPerKey buffer (event-time ordering "
            "holds each event until the watermark passes it + allowed lateness) and "
            "escalated events waiting in the AlertPerKey order buffer; both are bounded "
            "by the event rate x allowed lateness, not by the number of keys."
        )
        lines.append("")
    scaling = st.get("scaling", [])
    if scaling:
        lines.append(
            "Process RSS with many keys - mode **direct**: events fed to the per-key logic "
            "(`KeyLogic.step` + `AlertLogic.step`, decode/step/encode per event as the DoFns "
            "do, round-robin over keys), every key's encoded cells kept in a dict as an "
            "in-memory state backend would; no runner. Each count in a fresh process:"
        )
        lines.append("")
        rows = []
        for s in scaling:
            if "error" in s:
                rows.append([f"{s.get('n_keys', '?'):,}", "failed: " + s["error"][:80]])
                continue
            rows.append(
                [
                    f"{s['n_keys']:,}",
                    f"{s['events']:,}",
                    f"{s['state_bytes_per_key']:,.0f}",
                    f"{s['rss_before_mb']:,.0f}",
                    f"{s['rss_after_mb']:,.0f}",
                    f"{s['rss_per_key_bytes']:,.0f}",
                    f"{s['peak_rss_mb']:,.0f}",
                    f"{s['us_per_event']:,.0f}",
                ]
            )
        lines += _table(
            [
                "keys",
                "events fed",
                "encoded state B/key",
                "RSS before MiB",
                "RSS after MiB",
                "RSS growth B/key",
                "peak RSS MiB",
                "us/event (logic)",
            ],
            rows,
        )
        lines.append("")
        lines.append(
            "RSS growth per key = encoded bytes + Python object overhead (bytes objects, "
            "tuple, dict entry, key string); a runner's per-key bookkeeping (state tables, "
            "timers) comes on top."
        )
        lines.append("")
        shard_rows = [
            [
                f"{s['n_keys']:,}",
                str(s["shards"]),
                f"{s['shard_bytes_per_key']:,.0f}",
                f"{s['shard_write_ms']:,.1f}",
                f"{s['shard_read_ms']:,.1f}",
                f"{s['step_write_ms']:,.2f}" if "step_write_ms" in s else "-",
                f"{s['step_compaction_ms']:,.2f}" if "step_compaction_ms" in s else "-",
                f"{s['heap_build_ms']:,.2f}" if "heap_build_ms" in s else "-",
                f"{s['step_scan_ms']:,.3f}" if "step_scan_ms" in s else "-",
            ]
            for s in scaling
            if "error" not in s and "shard_bytes_per_key" in s
        ]
        if shard_rows:
            touched = next((s.get("step_keys") for s in scaling if "step_keys" in s), None)
            lines.append(
                "The batched engine keeps a shard's keys in one state (the same per-key "
                "cells, no events buffered here). Before its change log it read and wrote "
                "the whole shard as one cell every step (**full**), a cost per step that "
                "grew with the keys per shard; now Beam state holds a snapshot plus one "
                "element of changed keys per step, and each process caches the decoded "
                "shard (valid while the version cell in Beam state matches), so a warm "
                f"step reads only the version and writes the {touched or '?'} keys it "
                "touched (**step write**), plus a snapshot once the log outgrows the shard "
                "(**compaction**, amortised per step). A cache miss (first step in a "
                "process, another worker wrote since) rebuilds the shard at the **full "
                "read** cost, and the first step after it builds the shard's timer heap "
                "(**heap build**, grows with the keys per shard); after that, finding the "
                "due timers costs O(due timers) per step (**timers ms/step**, nothing due):"
            )
            lines.append("")
            lines += _table(
                [
                    "keys",
                    "shards",
                    "shard B/key",
                    "full write ms/shard",
                    "full read ms/shard",
                    "step write ms/shard",
                    "compaction ms/step",
                    "heap build ms/shard",
                    "timers ms/step",
                ],
                shard_rows,
            )
            lines.append("")
    return lines


def _model_section(res: Mapping[str, Any]) -> list[str]:
    lines = ["## Model stage alone", ""]
    ms = res.get("model_stage")
    if not ms:
        return lines + ["Not measured in this run (`--batch-sizes` empty).", ""]
    if "error" in ms:
        return lines + [f"Failed: {ms['error']}", ""]
    lines.append(
        f"streamsift's artifact ({ms['detector']}, {ms['n_estimators']} trees, "
        f"{ms['model_features']} model features; load + verify {ms['model_load_s']:.2f} s, "
        f"not included below) scoring the stream's own feature rows "
        f"({ms['rows_available']:,} available, tiled to the row count shown), the same rows "
        "for each method. **pipeline**: a batch pipeline `Create | RunInference("
        "StreamsiftModelHandler(min_batch_size = max_batch_size = b)) | Count` on the "
        "DirectRunner, construction to finish (fastest of up to 3 runs); **baseline**: the "
        "same without RunInference (`Create | Count`: runner start-up, Create, moving and "
        "counting the rows); **RunInference net** = pipeline - baseline, RunInference's own "
        'cost (BatchElements, its DoFn, the handler, the model; "noise" when the '
        "difference is under 10% of the baseline); **handler**: "
        "`StreamsiftModelHandler.run_inference` called directly (stack + score + calibrate); "
        "**decision_function**: the estimator alone; **forest scorer**: the batched "
        "engine's `streamsift.models.batch.ForestScorer` on the same batches (all trees "
        "walked at once in numpy, bit-identical scores)."
    )
    lines.append("")

    def us(x: float | None) -> str:
        return "noise" if x is None else f"{x:,.0f}"

    rows = []
    for e in ms["batches"]:
        net, raw = e["runinference_us_per_row"], e["decision_function_us_per_row"]
        rows.append(
            [
                str(e["batch_size"]),
                f"{e['rows']:,} ({e['rows_out']:,} out)",
                f"{e['pipeline_s']:.2f} / {e['baseline_s']:.2f}",
                fmt_rate(e["pipeline_rows_per_s"]),
                fmt_rate(e["decision_function_rows_per_s"]),
                us(1e6 * e["pipeline_s"] / e["rows"]),
                us(1e6 * e["baseline_s"] / e["rows"]),
                us(net),
                us(e["handler_us_per_row"]),
                us(raw),
                fmt_ratio(net / raw if net is not None and raw else None),
                us(e.get("fast_forest_us_per_row"))
                + ("" if e.get("fast_forest_identical", True) else " (NOT identical)"),
            ]
        )
    lines += _table(
        [
            "batch size",
            "rows",
            "pipeline / baseline s",
            "pipeline rows/s",
            "decision_function rows/s",
            "pipeline us/row",
            "baseline us/row",
            "RunInference net us/row",
            "handler us/row",
            "decision_function us/row",
            "net / raw",
            "forest scorer us/row",
        ],
        rows,
    )
    lines.append("")
    by_b = {e["batch_size"]: e for e in ms["batches"]}
    lo, hi = by_b[min(by_b)], by_b[max(by_b)]
    if lo is not hi:
        lines.append(
            f"Batching: batches of {lo['batch_size']} cost "
            f"{lo['decision_function_us_per_row']:,.0f} us/row raw, batches of "
            f"{hi['batch_size']} {hi['decision_function_us_per_row']:,.0f} us/row "
            f"({lo['decision_function_us_per_row'] / hi['decision_function_us_per_row']:,.0f}x "
            f"less). Through the pipeline: {us(1e6 * lo['pipeline_s'] / lo['rows'])} vs "
            f"{us(1e6 * hi['pipeline_s'] / hi['rows'])} us/row, of which the runner alone "
            f"(baseline) {us(1e6 * hi['baseline_s'] / hi['rows'])} us/row at "
            f"b={hi['batch_size']}."
        )
        lines.append("")
    return lines


def _pct(x: float, total: float) -> str:
    return f"{100.0 * x / total:.1f}%" if total else "n/a"


def _profile_summary(w: Mapping[str, Any]) -> list[str]:
    """Bullet points naming the biggest stages, their dominant layers and the top frames.

    >>> w = {"total_s": 10.0,
    ...      "stages": {"DetectPerKey": 6.0, "runner (between stages)": 4.0},
    ...      "layers": {"Beam (runner, coders, state, metrics)": 7.0,
    ...                 "streamsift logic (models/, parsing.py)": 3.0},
    ...      "stage_layers": {"DetectPerKey": {"Beam (runner, coders, state, metrics)": 3.0,
    ...                                        "streamsift logic (models/, parsing.py)": 3.0},
    ...                       "runner (between stages)": {
    ...                           "Beam (runner, coders, state, metrics)": 4.0}},
    ...      "top_self": [{"frame": "f (a.py:1)", "seconds": 2.0, "share": 0.2}]}
    >>> print("\\n".join(_profile_summary(w)))
    * DetectPerKey: 60.0% of the worker thread (of which Beam (runner, coders, state, metrics) 30.0%, streamsift logic (models/, parsing.py) 30.0%)
    * runner (between stages): 40.0% of the worker thread (of which Beam (runner, coders, state, metrics) 40.0%)
    * by layer: Beam (runner, coders, state, metrics) 70.0%, streamsift logic (models/, parsing.py) 30.0%
    * hottest frames (self time): `f (a.py:1)` 20.0%
    """
    total = w["total_s"]
    out = []
    for stage, secs in sorted(w["stages"].items(), key=lambda kv: -kv[1])[:3]:
        if secs <= 0:
            continue
        split = sorted(w["stage_layers"].get(stage, {}).items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{k} {_pct(v, total)}" for k, v in split[:2] if v > 0)
        out.append(f"* {stage}: {_pct(secs, total)} of the worker thread (of which {parts})")
    out.append(
        "* by layer: "
        + ", ".join(
            f"{k} {_pct(v, total)}"
            for k, v in sorted(w["layers"].items(), key=lambda kv: -kv[1])
            if v > 0
        )
    )
    out.append(
        "* hottest frames (self time): "
        + ", ".join(f"`{t['frame']}` {_pct(t['seconds'], total)}" for t in w["top_self"][:5])
    )
    return out


def _profile_section(
    res: Mapping[str, Any], key: str = "profile", contender: str = "full"
) -> list[str]:
    lines = ["## Profile: where the time goes", ""] if key == "profile" else []
    pr = res.get(key)
    if key != "profile":
        if not pr:
            return []
        lines += [f"### The `{contender}` contender", ""]
    if not pr:
        return lines + ["Not profiled in this run (`--profile-events 0`).", ""]
    if "skipped" in pr:
        return lines + [f"Skipped: {pr['skipped']}", ""]
    if "error" in pr:
        return lines + [f"Failed: {pr['error']}", ""]
    w = pr["worker"]
    total = w["total_s"]
    full = pr["full"]
    lines.append(
        f"pyinstrument {pr['pyinstrument']} (1 ms sampling) on the `{contender}` contender, "
        f"{pr['events']:,} events of the same stream settings: profiled wall time "
        f"{full['wall_s']:.1f} s ({fmt_rate(full['events_per_s'])} events/s under the "
        f"profiler). The runner executes every bundle on {pr['worker_threads']} executor "
        f"worker thread(s); their samples cover {total:.1f} s. Main thread "
        f"({pr['main']['total']:.1f} s): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in pr["main"].items() if k != "total" and v > 0)
        + "."
    )
    lines.append("")
    lines.append("**Summary (generated from the samples):**")
    lines.append("")
    lines += _profile_summary(w)
    lines.append("")
    lines.append(
        'By stage (outermost stage frame on the stack; "runner" = no stage frame: '
        "bundle scheduling, watermarks, coders, windowing between stages). Columns split "
        "each stage by layer: the innermost frame that is not the Python standard library "
        "or a builtin, so stdlib time counts for the library that called it:"
    )
    lines.append("")
    layer_names = list(w["layers"])
    short = ["logic", "glue", "numpy/sklearn/pyod", "Beam", "stdlib"]
    rows = []
    for stage, secs in w["stages"].items():
        if secs <= 0:
            continue
        split = w["stage_layers"].get(stage, {})
        rows.append(
            [stage, f"{secs:.1f}", _pct(secs, total)]
            + [_pct(split.get(layer, 0.0), total) for layer in layer_names]
        )
    lines += _table(["stage", "s", "share"] + [f"{s}" for s in short], rows)
    lines.append("")
    lines.append(
        "Layers: logic = streamsift/models + parsing.py (Python, and the numba kernels the "
        "models call: their time counts for the calling frame); glue = "
        "streamsift/transforms + pipeline (the DoFns); Beam = apache_beam (state, timers, "
        "coders, metrics, runner); stdlib = stacks with no other frame (thread start-up)."
    )
    lines.append("")
    lines.append("Top frames by self time (worker thread):")
    lines.append("")
    lines += _table(
        ["frame", "self s", "share"],
        [
            [f"`{t['frame']}`", f"{t['seconds']:.2f}", _pct(t["seconds"], total)]
            for t in w["top_self"]
        ],
    )
    lines.append("")
    lines.append("Top streamsift frames by inclusive time (worker thread):")
    lines.append("")
    lines += _table(
        ["frame", "inclusive s", "share"],
        [
            [f"`{t['frame']}`", f"{t['seconds']:.2f}", _pct(t["seconds"], total)]
            for t in w["top_streamsift_inclusive"]
        ],
    )
    lines.append("")
    lines.append("<details><summary>pyinstrument call tree (worker thread, truncated)</summary>")
    lines.append("")
    lines.append("```")
    lines.append(pr["tree"])
    if pr.get("tree_truncated"):
        lines.append("... (truncated)")
    lines.append("```")
    lines.append("")
    lines.append("</details>")
    lines.append("")
    return lines


def _not_measured_section() -> list[str]:
    lines = ["## Not measured yet", ""]
    for what, why in NOT_MEASURED:
        lines.append(f"* **{what}**: {why}.")
    lines.append("")
    return lines


def _quality_section(res: Mapping[str, Any]) -> list[str]:
    """Sections kept from the previous RESULTS.md that this harness does not write
    (see :func:`kept_section`), carried over verbatim at the end."""
    text = res.get("kept_quality_section")
    return [text.rstrip(), ""] if text else []


def kept_section(markdown: str) -> str | None:
    r"""The sections of ``markdown`` this harness does not write (a ``## `` heading
    not in :data:`SECTIONS`, e.g. a detection-quality section maintained by the
    evaluation tooling), up to the next heading of the harness, or None.

    >>> kept_section("# t\n## Setup\nx\n## Detection quality\nq 1\n\n## Ratios\ny\n")
    '## Detection quality\nq 1\n'
    """
    out: list[str] = []
    inside = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("## "):
            inside = not any(line.startswith(h) for h in SECTIONS)
        if inside:
            out.append(line)
    text = "".join(out).rstrip("\n")
    return text + "\n" if text else None


def render_markdown(res: Mapping[str, Any]) -> str:
    """The whole ``RESULTS.md``."""
    lines = [
        "# streamsift benchmark results",
        "",
        "Generated by `streamsift bench` (benchmarks/harness.py); the file is rewritten "
        "on every run.",
        "",
    ]
    lines += _setup_section(res)
    lines += _contender_section(res)
    lines += _ratio_section(res)
    lines += _runners_section(res)
    lines += _latency_section(res)
    lines += _state_section(res)
    lines += _model_section(res)
    lines += _profile_section(res)
    lines += _profile_section(res, "profile_batched", "batched")
    lines += _not_measured_section()
    lines += _quality_section(res)
    return "\n".join(lines).rstrip() + "\n"
