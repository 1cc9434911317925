"""How a retry wait is abandoned: the process stopping, or the running batch's partition
taken away in a rebalance. Both end the wait with an exception the batch code lets
through, so that the batch is redelivered rather than retried or failed."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar


class ShutdownRequested(Exception):
    """Raised out of a retry wait when the process is stopping; the batch is redelivered."""


class BatchLetGo(ShutdownRequested):
    """Raised out of a retry wait when the batch's partition was revoked or lost: its next
    owner redelivers the batch, and a rebalance need not wait out the retry schedule."""


# Set by the poll loop on a worker thread for the length of one batch: the event its
# partition's revoke sets. None outside a batch of the poll loop (an HTTP push, say).
batch_let_go: ContextVar[threading.Event | None] = ContextVar("batch_let_go", default=None)

# How soon a retry wait notices that its batch was let go: one thread cannot wait on two
# events at once, so such a wait runs in slices.
LET_GO_CHECK_S = 0.1


def wait_unless_stopped(stopping: threading.Event, seconds: float) -> None:
    """Wait `seconds`, unless `stopping` is set (ShutdownRequested) or, within a batch of
    the poll loop, the batch is let go (BatchLetGo)."""
    let_go = batch_let_go.get()
    if let_go is None:
        if stopping.wait(seconds):
            raise ShutdownRequested()
        return
    deadline = time.monotonic() + seconds
    while True:
        if let_go.is_set():
            raise BatchLetGo()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if stopping.wait(min(remaining, LET_GO_CHECK_S)):
            raise ShutdownRequested()
