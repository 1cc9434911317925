"""Readiness: is each dependency (database, Kafka, model) reachable right now?

The checks run side by side, each bounded, so a probe answers within about
CHECK_TIMEOUT_S even when a dependency hangs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from shared.bootstrap import Services
from shared.errors import ModelUnavailable, TemporaryError

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


def check_database(services: Services) -> str:
    services.db.ping()
    return "PostgreSQL answers"


def check_kafka(services: Services) -> str:
    services.publisher.ping(timeout_s=CHECK_TIMEOUT_S - 0.5)
    return "Kafka answers metadata requests"


def check_model(services: Services) -> str:
    if not services.model.ready():
        raise ModelUnavailable("model not loaded yet")
    model = services.model.get()
    return f"model {model.version} loaded (threshold {model.threshold:g})"


CHECKS: dict[str, Callable[[Services], str]] = {
    "database": check_database,
    "kafka": check_kafka,
    "model": check_model,
}


def check_readiness(
    services: Services,
    timeout_s: float = CHECK_TIMEOUT_S,
    names: Collection[str] = tuple(CHECKS),
) -> dict[str, CheckResult]:
    """Each dependency in `names`, with what it answered or why it did not."""
    executor = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
    try:
        futures = {name: executor.submit(_run, CHECKS[name], services) for name in names}
        wait(futures.values(), timeout=timeout_s)
        return {
            name: future.result()
            if future.done()
            else CheckResult(False, f"no answer within {timeout_s:g} s")
            for name, future in futures.items()
        }
    finally:
        # A hung check keeps its thread until its own timeout; the probe does not wait for it.
        executor.shutdown(wait=False, cancel_futures=True)


def _run(check: Callable[[Services], str], services: Services) -> CheckResult:
    try:
        return CheckResult(True, check(services))
    except TemporaryError as error:
        return CheckResult(False, str(error))
    except Exception as error:
        # An unexpected failure still means "not ready", and it is reported, not hidden.
        log.exception("readiness check crashed")
        return CheckResult(False, f"{type(error).__name__}: {error}")
