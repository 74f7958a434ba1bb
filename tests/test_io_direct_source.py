"""The DirectRunner broker source with an in-memory broker: commits only after results.

The broker is a small in-memory client (3 partitions) behind the same protocol as the
Kafka and Pub/Sub clients; the source, its evaluator, the watermark, the commit
ledger and the pipeline are the real ones.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import apache_beam as beam
import pytest

from streamsift import synthetic
from streamsift.config import Config, apply_overrides
from streamsift.io import direct
from streamsift.io.clients import BrokerRecord
from streamsift.io.run import build_broker_pipeline
from streamsift.pipeline.options import make_runner, streaming_options
from streamsift.pipeline.run import ensure_model, read_jsonl, run_stream
from streamsift.transforms import sinks as file_sinks

pytestmark = pytest.mark.slow


class MemoryBroker:
    """Partitioned in-memory log; records commits and what was processed at commit time."""

    def __init__(self, payloads: list[bytes], partitions: int, audit_path: str) -> None:
        self.logs: dict[str, list[bytes]] = {f"p{i}": [] for i in range(partitions)}
        for raw in payloads:
            try:
                key = json.loads(raw)["key"]
            except Exception:
                key = "?"
            self.logs[f"p{sum(map(ord, str(key))) % partitions}"].append(raw)
        self.pos = {p: 0 for p in self.logs}
        self.committed = {p: 0 for p in self.logs}
        self.audit_path = audit_path
        self.violations: list[Any] = []
        self.commits = 0
        self.lock = threading.Lock()
        #: the running pipeline's result, to read its counters at commit time
        self.result = None
        self.accounting_violations: list[tuple[int, int]] = []


BROKERS: dict[str, MemoryBroker] = {}


class MemoryClient:
    def __init__(self, name: str, batch: int = 40) -> None:
        self.broker = BROKERS[name]
        self.batch = batch

    def open(self) -> None:
        pass

    def partitions(self) -> list[str]:
        return list(self.broker.logs)

    def busy_partitions(self) -> set[str]:
        b = self.broker
        return {p for p, log in b.logs.items() if b.pos[p] < len(log)}

    def poll(self, max_records: int, timeout_s: float) -> list[BrokerRecord]:
        out = []
        b = self.broker
        # partitions read at different speeds: keys of the fast one run far ahead
        # of the watermark (the slowest partition's)
        for i, (p, log) in enumerate(b.logs.items()):
            start, n = b.pos[p], self.batch * (1 + 2 * i)
            for off in range(start, min(start + n, len(log))):
                out.append(BrokerRecord(p, (p, off), None, log[off]))
            b.pos[p] = min(start + n, len(log))
        return out

    def commit(self, tokens) -> None:
        b = self.broker
        tokens = list(tokens)
        if not tokens:
            return
        processed = {(d["key"], d["event_time_ms"]) for d in read_jsonl(b.audit_path)}
        for p, off in tokens:
            try:
                obj = json.loads(b.logs[p][off])
                from streamsift.parsing import parse_time

                ident = (obj["key"], int(round(parse_time(obj["ts"]) * 1000)))
            except Exception:
                ident = None  # dead letters: no id to check
            if ident is not None and ident not in processed:
                b.violations.append((p, off, ident))
            b.committed[p] = max(b.committed[p], off + 1)
        b.commits += 1
        # every committed record has left the per-key stage (processed, late or
        # dead-lettered): nothing committed is still buffered in the pipeline
        if b.result is not None:
            from streamsift.pipeline.run import _counters

            c = _counters(b.result)
            done = c.get("processed", 0) + c.get("late", 0) + c.get("dead_lettered", 0)
            total = sum(b.committed.values())
            if total > done:
                b.accounting_violations.append((total, done))

    def keepalive(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


direct.CLIENT_FACTORIES["memory"] = lambda cfg, source: MemoryClient(cfg)


@pytest.mark.parametrize("engine", ["per_element", "batched"])
def test_memory_broker_run_commits_after_results_and_matches_replay(tmp_path, engine):
    """Either engine (``engine.mode``) behind the source: commits only after results,
    the same alerts as a per-element file replay."""
    cfg = apply_overrides(
        Config(),
        {
            "synthetic.events": 800,
            "synthetic.keys": 8,  # 100 events a key: past the warm-up, some alerts
            "model.dir": str(tmp_path / "model"),
            "model.history_hours": 3.0,
            "source.stop_when_idle_s": 1.0,
            "source.idle_partition_s": 5.0,
        },
    )
    payloads = synthetic.generate(cfg.synthetic, cfg.input).payloads
    model = ensure_model(cfg)
    replay = run_stream(
        payloads, cfg, model, str(tmp_path / "replay"), print_alerts=False, show_progress=False
    )

    out = tmp_path / "out"
    audit = out / "processed.jsonl"
    BROKERS["b1"] = broker = MemoryBroker(payloads, 3, str(audit))
    cfg = apply_overrides(
        cfg,
        {"sinks.processed": f"file://{audit}", "output.dir": str(out), "engine.mode": engine},
    )
    # the broker config of the "memory" kind is the broker's name
    out.mkdir()
    file_sinks.close_all()
    pipeline = beam.Pipeline(runner=make_runner("DirectRunner"), options=streaming_options())
    read, _ = build_broker_pipeline(pipeline, cfg, model, "kafka", str(out), print_alerts=False)
    read.kind, read.broker_cfg = "memory", "b1"
    labels = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    result = pipeline.run()
    broker.result = result
    result.wait_until_finish()
    file_sinks.close_all()
    direct.close_all()

    stats = direct.source_stats(read.run_id)
    assert stats.done and stats.read == len(payloads) == stats.committed
    assert broker.committed == {p: len(log) for p, log in broker.logs.items()}
    assert broker.commits >= 2  # committed progressively, not only at the end
    assert broker.violations == []  # nothing committed before it was parsed and audited
    assert broker.accounting_violations == []  # ... nor while still buffered
    alerts = read_jsonl(str(out / "alerts.jsonl"))
    assert {(a["alert_id"], a["severity"]) for a in alerts} == {
        (a["alert_id"], a["severity"]) for a in replay.alerts
    }
    assert len(read_jsonl(str(out / "dead_letter.jsonl"))) == replay.counter("dead_lettered")
    from streamsift.pipeline.run import _counters

    counters = _counters(result)
    assert ("DetectShards" in labels) == (engine == "batched")  # the configured engine ran
    assert counters.get("alerts_emitted", 0) == len(replay.alerts) > 0  # a real workload
    for name in ("processed", "dead_lettered", "late", "escalated"):
        assert counters.get(name, 0) == replay.counter(name), name
