"""One pipeline on every local runner: DirectRunner, Prism and Flink give the same alerts.

One bounded, deterministic synthetic stream (a few keys, injected incidents, some
disorder within the allowed lateness, malformed events) is replayed in event time on each runner;
the alerts must be the same set (alert id, update flag, severity, key, event
times, explanation) with the same scores to 1e-6. Prism and Flink are found
from ``STREAMSIFT_PRISM_BIN`` / ``STREAMSIFT_FLINK_JOB_SERVER_JAR`` by
``streamsift.pipeline.options.make_runner`` (never downloaded); Flink is the
embedded cluster of the job server jar, where streamsift defaults to parallelism 1.
Both engines (``engine.mode`` per_element and batched) are checked.

No far-late events (``late_rate=0``): whether an event that arrives more than the
allowed lateness behind its key's newest event is late depends on the order in
which a runner hands over the elements of one replayed chunk (Prism orders them by
event time, the DirectRunner and Flink keep arrival order), so those events, and
the features of the events after them, differ between runners.

The last test runs the pipeline on Flink with an EXTERNAL worker pool served
from a fresh virtualenv that has only the project's built wheel (and its
declared dependencies) installed, so the workers rely on nothing the
submitting process has imported. That virtualenv is cached under
``~/.cache/streamsift/worker-venvs/<hash of the wheel's dependencies>``;
creating it the first time downloads apache-beam and friends (~2 min here).
"""

from __future__ import annotations

import dataclasses
import email.parser
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from streamsift.config import Config, ModelConfig, SyntheticConfig

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
FLINK_ARGS = ["--flink_master=[local]"]  # parallelism 1 is streamsift's default there
#: fields of an alert that must match exactly across runners
EXACT = ("key", "severity", "update", "count", "first_event_time_ms", "last_event_time_ms")
#: fields that must match to SCORE_TOL
SCORES = ("score", "stage1_score", "stage2_score", "threshold")
SCORE_TOL = 1e-6
WAIT_S = 120.0  # upper bound for a worker pool to come up; not a performance assertion


# --- the replayed stream and the DirectRunner reference -------------------------------------
@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """(config, payloads, model path, DirectRunner RunResult)."""
    from streamsift import synthetic
    from streamsift.pipeline.run import ensure_model, run_stream

    tmp = tmp_path_factory.mktemp("runners")
    cfg = dataclasses.replace(
        Config(),
        synthetic=dataclasses.replace(
            SyntheticConfig(), events=2000, keys=5, seed=7, anomaly_rate=0.04, late_rate=0.0
        ),
        model=dataclasses.replace(
            ModelConfig(), dir=str(tmp / "model"), n_estimators=25, history_hours=6.0
        ),
    )
    payloads = synthetic.generate(cfg.synthetic, cfg.input).payloads
    model_path = ensure_model(cfg)
    reference = run_stream(
        payloads,
        cfg,
        model_path,
        str(tmp / "direct"),
        runner="DirectRunner",
        print_alerts=False,
        show_progress=False,
    )
    return cfg, payloads, model_path, reference


def alert_table(alerts: list[dict]) -> dict[tuple[str, bool, int], dict]:
    """Alerts by (alert_id, update, count), without the wall-clock detection time."""
    table = {}
    for a in alerts:
        ident = (a["alert_id"], a["update"], a["count"])
        assert ident not in table, f"duplicate alert {ident}"
        table[ident] = a
    return table


def assert_same_alerts(got: list[dict], want: list[dict]) -> None:
    got_t, want_t = alert_table(got), alert_table(want)
    assert sorted(got_t) == sorted(want_t)
    for ident, w in want_t.items():
        g = got_t[ident]
        assert {f: g[f] for f in EXACT} == {f: w[f] for f in EXACT}, ident
        assert {f: g[f] for f in SCORES} == pytest.approx(
            {f: w[f] for f in SCORES}, abs=SCORE_TOL
        ), ident
        assert [e["feature"] for e in g["explanation"]] == [
            e["feature"] for e in w["explanation"]
        ], ident


COUNTED = ("events_in", "processed", "dead_lettered", "late", "escalated", "alerts_emitted")


def assert_reconciles(res, n_events: int, reference=None) -> None:
    c = res.counters
    assert c.get("events_in") == n_events
    assert c.get("processed", 0) + c.get("dead_lettered", 0) + c.get("late", 0) == n_events
    if reference is not None:
        assert {k: res.counter(k) for k in COUNTED} == {k: reference.counter(k) for k in COUNTED}


def test_reference_run_has_several_alerts(replay):
    _cfg, payloads, _model, reference = replay
    assert_reconciles(reference, len(payloads))
    new = [a for a in reference.alerts if not a["update"]]
    assert len(new) >= 5, reference.alerts
    assert len({a["key"] for a in new}) >= 3
    assert reference.counter("dead_lettered") > 0


def test_prism_gives_the_direct_runner_alerts(replay, prism_bin, tmp_path):
    from streamsift.pipeline.run import run_stream

    cfg, payloads, model_path, reference = replay
    # no --prism_location: make_runner finds the binary from STREAMSIFT_PRISM_BIN
    res = run_stream(
        payloads,
        cfg,
        model_path,
        str(tmp_path / "prism"),
        runner="PrismRunner",
        print_alerts=False,
        show_progress=False,
    )
    assert_same_alerts(res.alerts, reference.alerts)
    assert sorted(map(str, res.flagged)) == sorted(map(str, reference.flagged))
    assert_reconciles(res, len(payloads), reference)


def test_flink_gives_the_direct_runner_alerts_with_checkpointing(
    replay, flink_job_server_jar, tmp_path, caplog
):
    from streamsift.pipeline.run import run_stream

    cfg, payloads, model_path, reference = replay
    caplog.set_level(logging.INFO)
    # no --flink_job_server_jar: make_runner finds it (and the Java 17 flags) from the env;
    # the checkpointing flags reach the job server only because streamsift declares them.
    res = run_stream(
        payloads,
        cfg,
        model_path,
        str(tmp_path / "flink"),
        runner="FlinkRunner",
        beam_args=[
            *FLINK_ARGS,
            "--checkpointing_interval=300",
            "--checkpointing_mode=AT_LEAST_ONCE",
        ],
        print_alerts=False,
        show_progress=False,
    )
    assert_same_alerts(res.alerts, reference.alerts)
    assert sorted(map(str, res.flagged)) == sorted(map(str, reference.flagged))
    assert_reconciles(res, len(payloads), reference)
    job_server_log = "\n".join(r.getMessage() for r in caplog.records)
    assert "Triggering checkpoint 1 " in job_server_log
    assert "Completed checkpoint" in job_server_log


@pytest.mark.parametrize(
    ("runner", "needs", "args"),
    [("PrismRunner", "prism_bin", []), ("FlinkRunner", "flink_job_server_jar", FLINK_ARGS)],
)
def test_batched_engine_gives_the_same_alerts(replay, request, tmp_path, runner, needs, args):
    """engine.mode = "batched" (chunks, sharded state) on a portable runner gives the
    per-element DirectRunner's alerts and counters."""
    from streamsift.config import EngineConfig
    from streamsift.pipeline.run import run_stream

    request.getfixturevalue(needs)
    cfg, payloads, model_path, reference = replay
    cfg = dataclasses.replace(cfg, engine=dataclasses.replace(EngineConfig(), mode="batched"))
    res = run_stream(
        payloads,
        cfg,
        model_path,
        str(tmp_path / runner),
        runner=runner,
        beam_args=args,
        print_alerts=False,
        show_progress=False,
    )
    assert_same_alerts(res.alerts, reference.alerts)
    assert_reconciles(res, len(payloads), reference)


# --- the packaging a remote worker installs --------------------------------------------------
def build_wheel(out_dir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(REPO)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    (wheel,) = out_dir.glob("streamsift-*.whl")
    return wheel


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines (its declared runtime dependencies)."""
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(meta).decode("utf-8"))
    return sorted(message.get_all("Requires-Dist") or [])


def worker_venv(wheel: Path) -> Path:
    """A virtualenv with the wheel and its dependencies, cached by those dependencies:
    only the wheel itself is reinstalled when just the project's code changed."""
    base = Path(os.environ.get("STREAMSIFT_SERVICES_DIR") or Path.home() / ".cache/streamsift")
    key = hashlib.sha256(
        "\n".join([sys.version.split()[0], *wheel_requirements(wheel)]).encode()
    ).hexdigest()[:16]
    venv = base / "worker-venvs" / key
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", str(wheel)],
                check=True,
                stdin=subprocess.DEVNULL,
                timeout=1800,
            )
            (venv / ".complete").touch()
        else:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall"]
                + [str(wheel)],
                check=True,
                stdin=subprocess.DEVNULL,
                timeout=600,
            )
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(venv: Path) -> dict[str, str]:
    """Environment of the worker venv, as if activated: its ``python`` first on PATH (the
    pool starts SDK workers as plain ``python``), nothing pointing back at the repo."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_built_wheel_in_a_fresh_venv_serves_flink_as_external_worker_pool(
    replay, flink_job_server_jar, tmp_path
):
    from streamsift.pipeline.run import run_stream

    cfg, payloads, model_path, reference = replay
    wheel = build_wheel(tmp_path / "dist")
    venv = worker_venv(wheel)
    python = str(venv / "bin" / "python")
    workdir = tmp_path / "worker-cwd"  # not the repo: '' on sys.path must not find streamsift
    workdir.mkdir()
    env = isolated_env(venv)
    # the interpreter the pool will start workers with (plain `python` on PATH) ...
    assert shutil.which("python", path=env["PATH"]) == python
    # ... imports streamsift from the installed wheel, not from the repo
    where = subprocess.run(
        [
            "python",
            "-c",
            "import apache_beam.runners.worker.sdk_worker, streamsift as s; print(s.__file__)",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), where

    port = free_port()
    log_path = tmp_path / "worker-pool.log"
    with open(log_path, "wb") as log:
        pool = subprocess.Popen(
            [python, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert pool.poll() is None, log_path.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
        res = run_stream(
            payloads,
            cfg,
            model_path,
            str(tmp_path / "flink-external"),
            runner="FlinkRunner",
            beam_args=[
                *FLINK_ARGS,
                "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{port}",
            ],
            print_alerts=False,
            show_progress=False,
        )
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        try:
            pool.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait(timeout=30)
    # the SDK workers were started by the venv's pool, with the venv's interpreter
    pool_log = log_path.read_text()
    assert "Starting worker with command" in pool_log, pool_log[-3000:]
    assert "Traceback" not in pool_log, pool_log[-3000:]
    assert_same_alerts(res.alerts, reference.alerts)
    assert_reconciles(res, len(payloads), reference)
