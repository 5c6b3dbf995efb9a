"""SIGTERM handling shared by the long-running commands (training, sim recording)."""

from __future__ import annotations

import signal
import threading
from typing import Any, Self


class SigtermHandler:
    """While entered, SIGTERM calls `self.on_sigterm()` instead of killing the process; the
    previous handler comes back on exit. Installed only in the main thread (Python delivers
    signals there; called from another thread, the default stays). Subclasses say what a
    SIGTERM means for them: note a request to stop, or raise to start the cleanup."""

    def __init__(self) -> None:
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:  # None means a handler set outside Python: the default stands in
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.on_sigterm(signum)

    def on_sigterm(self, signum: int) -> None:
        raise NotImplementedError
