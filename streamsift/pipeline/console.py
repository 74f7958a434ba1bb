"""The terminal: alert lines printed as they fire, under a live progress line.

One process-wide :class:`Console` serialises writes from the pipeline's worker
threads (DirectRunner runs in-process) and the driver's progress loop. On a
TTY the progress line is redrawn in place; otherwise progress is printed as a
plain line at most every ``plain_interval_s`` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["Console", "console"]


class Console:
    def __init__(self, stream: TextIO | None = None, plain_interval_s: float = 10.0) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._progress = ""
        self._plain_interval = plain_interval_s
        self._last_plain = 0.0
        self.enabled = True

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _tty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def line(self, text: str) -> None:
        """Print a permanent line (an alert), keeping the progress line below it."""
        if not self.enabled:
            return
        with self._lock:
            s = self.stream
            if self._tty() and self._progress:
                s.write("\r\x1b[2K" + text + "\n" + self._progress)
            else:
                s.write(text + "\n")
            s.flush()

    def progress(self, text: str, now: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            s = self.stream
            if self._tty():
                self._progress = text
                s.write("\r\x1b[2K" + text)
                s.flush()
            elif now - self._last_plain >= self._plain_interval:
                self._last_plain = now
                s.write(text + "\n")
                s.flush()

    def end_progress(self) -> None:
        with self._lock:
            if self._tty() and self._progress:
                self.stream.write("\r\x1b[2K" + self._progress + "\n")
                self.stream.flush()
            self._progress = ""


console = Console()
