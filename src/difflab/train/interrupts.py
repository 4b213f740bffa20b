"""Ctrl-C and SIGTERM during training: stop at a step boundary, never inside one.

A training step has two halves. The first (draw a batch, t and eps, forward,
backward) changes only random-number generators, which the loop can put back;
the second (the optimiser step, the EMA, the step counter) changes the weights
and cannot be half undone. :class:`Interrupts` turns SIGINT and SIGTERM (what
``kill``, schedulers and ``torchrun`` send) into :class:`KeyboardInterrupt` at
once in the first half, and holds it until the end of a :meth:`Interrupts.deferred`
block in the second, so the checkpoint written on the way out is always that of
the last completed step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """SIGINT and SIGTERM as :class:`KeyboardInterrupt`, deferred where asked."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending: int | None = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.deferring:
            self.pending = signum  # raised at the end of the deferred block
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle both signals inside the block; the previous handlers come back after.

        Signal handlers can only be set from the main thread; elsewhere (a
        training thread of a notebook, say) the block changes nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                # None: a handler installed from C, which Python cannot restore.
                signal.signal(s, signal.SIG_DFL if handler is None else handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal arriving inside the block raises only once the block is done."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(signal.Signals(signum).name)
