"""The consumer's retry policies, as tenacity definitions.

`temporary_error_policy` is the schedule a batch runs under: attempt n (1-based) that
fails with a TemporaryError waits `Settings.retry_delays()[n-1]`
(`retry_base_delay_s * 2**(n-1)`) before attempt n+1: 5 s, 10 s, 20 s with the
defaults, and the fourth failure is final. Permanent errors are never retried.
`database_outage_policy` is for the one write that may not be given up once that
schedule has run out: recording the failures.

The relay's sweeps and the poll loop's replay of a failed batch are periodic work, not
calls retried: they back off in their loops (shared/runner/workers.py,
shared/kafka/poll_loop.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_chain,
    wait_fixed,
    wait_none,
)

from shared.errors import DatabaseUnavailable, TemporaryError
from shared.settings import Settings

log = logging.getLogger(__name__)

Sleeper = Callable[[float], None]


LogContext = Callable[[], dict[str, object]]


def temporary_error_policy(
    settings: Settings, *, sleep: Sleeper, log_context: LogContext = dict
) -> Retrying:
    """A tenacity policy retrying TemporaryError on the schedule (5/10/20 s by default).

    `sleep` lets the caller make the waits interruptible (shutdown) or instant (tests);
    `log_context` gives the fields that say what is being retried (a batch's partition
    and offsets, say), for the line logged before each wait.
    """
    # The waits as Settings lists them: the one schedule, which the rule for giving up
    # on a task (shared/moderation/batch_work.py) reads too.
    delays = settings.retry_delays()
    return Retrying(
        retry=retry_if_exception_type(TemporaryError),
        stop=stop_after_attempt(settings.retry_max_attempts),
        wait=wait_chain(*map(wait_fixed, delays)) if delays else wait_none(),
        sleep=sleep,
        before_sleep=functools.partial(_log_retry, log_context),
        reraise=True,
    )


def database_outage_policy(
    *,
    delay_s: float,
    sleep: Sleeper,
    before_wait: Callable[[RetryCallState], None],
    before_retry: Callable[[RetryCallState], None],
) -> Retrying:
    """A tenacity policy retrying DatabaseUnavailable every `delay_s` for as long as it
    lasts; `before_wait` is called as each failure's wait begins, `before_retry` as each
    attempt after the first does."""

    def before(state: RetryCallState) -> None:
        if state.attempt_number > 1:
            before_retry(state)

    return Retrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        stop=stop_never,
        wait=wait_fixed(delay_s),
        sleep=sleep,
        before=before,
        before_sleep=before_wait,
        reraise=True,
    )


def _log_retry(log_context: LogContext, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "temporary error, retrying",
        extra={
            **log_context(),
            "attempt": state.attempt_number,
            "wait_s": state.next_action.sleep if state.next_action else None,
            "error": repr(error),
        },
    )
