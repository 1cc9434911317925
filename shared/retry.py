"""The one retry policy for temporary errors, used by every function and the consumer.

Attempt n (1-based) that fails with a TemporaryError waits
`retry_base_delay_s * 2**(n-1)` before attempt n+1: 5 s, 10 s, 20 s with the
defaults, and the fourth failure is final. Permanent errors are never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from shared.errors import TemporaryError
from shared.settings import Settings

log = logging.getLogger(__name__)

Sleeper = Callable[[float], None]


def temporary_error_policy(settings: Settings, *, sleep: Sleeper) -> Retrying:
    """A tenacity policy retrying TemporaryError on the 5/10/20 s schedule.

    `sleep` lets the caller make the waits interruptible (shutdown) or instant (tests).
    """
    return Retrying(
        retry=retry_if_exception_type(TemporaryError),
        stop=stop_after_attempt(settings.retry_max_attempts),
        wait=wait_exponential(multiplier=settings.retry_base_delay_s, exp_base=2),
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "temporary error, retrying",
        extra={
            "attempt": state.attempt_number,
            "wait_s": state.next_action.sleep if state.next_action else None,
            "error": repr(error),
        },
    )
