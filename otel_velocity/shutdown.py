"""Flush buffered spans and Sentry events when the process receives SIGTERM.

uvicorn handles SIGTERM itself, shuts the app down, restores the handler it found and raises
the signal again. With the default handler the process would then die without running exit
hooks, and spans still queued in a ``BatchSpanProcessor`` would be lost. The handler installed
here flushes, restores the default action and raises the signal again, so the exit status stays
"terminated by SIGTERM".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from otel_velocity.guard import contain_faults

logger = logging.getLogger(__name__)


def flush_on_sigterm(flush: Callable[[], object]) -> bool:
    """Install the flushing SIGTERM handler; return False when it cannot be installed.

    It is installed only from the main thread and only where SIGTERM still has its default
    action, so a handler that the app or its server set up is never replaced.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        logger.debug("otel-velocity: SIGTERM already has a handler; not installing the flush")
        return False

    def handle_sigterm(signum: int, frame: FrameType | None) -> None:
        with contain_faults(logger, "sigterm_flush", os.getpid()):
            flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handle_sigterm)
    return True
