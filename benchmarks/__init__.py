"""``streamsift bench``: one seeded synthetic stream through streamsift and its contenders.

Modules:

* :mod:`benchmarks.harness` - the command (``add_arguments`` / ``main``), the
  parent process that runs every measurement in a fresh child process, and the
  child entry point (``python -m benchmarks.harness --child NAME ...``);
* :mod:`benchmarks.common` - the benchmark settings, the shared stream and
  small measurement helpers (RSS, machine description);
* :mod:`benchmarks.contenders` - the four contenders (streamsift's full
  pipeline, Beam's ``AnomalyDetection`` with ``ZScore``, a per-message Isolation
  Forest service loop, the runner's stateful pass-through floor);
* :mod:`benchmarks.runners` - ``full`` and ``floor`` on Prism and Flink, with the
  runner processes' RSS;
* :mod:`benchmarks.latency` - ingest-to-alert latency at fixed offered loads from
  the Kafka broker (paced producer, ``streamsift run --source kafka`` child);
* :mod:`benchmarks.state_size` - state bytes and process RSS per key;
* :mod:`benchmarks.model_stage` - RunInference against raw ``decision_function``;
* :mod:`benchmarks.profiling` - where the full pipeline spends its time (pyinstrument);
* :mod:`benchmarks.report` - the console table and ``RESULTS.md``.
"""
