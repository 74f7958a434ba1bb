"""Work-arounds for Beam 2.77 DirectRunner defects, applied only when streamsift
chooses ``BundleBasedDirectRunner``.

Lost user metrics. Each executor worker thread keeps one ``StateSampler`` for
its whole life, and ``StateSampler.scoped_state`` caches the scoped state of a
step by name, together with the ``MetricsContainer`` it was first created
with. Every later bundle of that step on that thread then records its metrics
into the first bundle's container, which was already committed, so the
metrics of all but the first bundle per step and thread are lost. (Seen with
TestStream: 5 bundles of 10 elements report a counter of 10.) The fix gives
each bundle a fresh sampler, so each scoped state carries its own bundle's
container.
"""

from __future__ import annotations

import threading

__all__ = ["apply_direct_runner_fixes"]

_APPLIED = False
_LOCK = threading.Lock()


def apply_direct_runner_fixes() -> None:
    global _APPLIED
    with _LOCK:
        if _APPLIED:
            return
        from apache_beam.runners.direct import executor
        from apache_beam.runners.worker import statesampler
        from apache_beam.utils import counters

        worker_cls = executor._ExecutorService._ExecutorServiceWorker

        def run(self) -> None:  # mirrors the upstream loop, one sampler per task
            while not self.shutdown_requested:
                task = self._get_task_or_none()
                if task:
                    try:
                        if not self.shutdown_requested:
                            sampler = statesampler.StateSampler("", counters.CounterFactory())
                            statesampler.set_current_tracker(sampler)
                            self._update_name(task)
                            task.call(sampler)
                            self._update_name()
                    finally:
                        self.queue.task_done()

        worker_cls.run = run
        _APPLIED = True
