"""Stopping on request: SIGINT (Ctrl-C) and SIGTERM (what schedulers send) end a run cleanly."""

from __future__ import annotations

import signal
import threading
from typing import Any

from seqlab.errors import UserError


class Interrupted(UserError):
    """SIGINT or SIGTERM stopped training after a checkpoint was written; exit status 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM only raise a flag: the step in progress finishes, a checkpoint is
    written, then training stops, so no checkpoint ever holds half-updated weights. A second
    Ctrl-C stops at once."""

    def __init__(self):
        self.received = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
