"""Readiness: is each dependency (database, Kafka, model) reachable right now?

The checks run side by side, each bounded, so a probe answers within about
CHECK_TIMEOUT_S even when a dependency hangs.

What a probe is told is deliberately short: the ops port is unauthenticated and
listens on every interface by default, and a driver's error text names hosts,
ports, users and bucket paths. The full reason goes to this process's log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from shared.bootstrap import Services
from shared.errors import TemporaryError
from shared.logging_setup import drop_repeats

CHECK_TIMEOUT_S = 3.0
# The failed checks' own logger, which drops a line repeated within a minute.
FAILURES_LOGGER = f"{__name__}.failures"


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


def check_database(services: Services) -> str:
    # Within the check's deadline: waiting DB_CONNECT_TIMEOUT_S (5 s) for a connection,
    # a server that is down answered "no answer within 3 s", and its reason went unlogged.
    services.db.ping(timeout_s=min(CHECK_TIMEOUT_S - 0.5, services.settings.db_connect_timeout_s))
    return "PostgreSQL answers, with the tables migrated and usable by this role"


def check_kafka(services: Services) -> str:
    services.publisher.ping(timeout_s=CHECK_TIMEOUT_S - 0.5)
    return "Kafka answers, and has the topics"


def check_model(services: Services) -> str:
    # Loaded, not asked whether it is: its ModelUnavailable says why (no model_card.json,
    # a bucket refusing access), and that reason is what the log needs.
    model = services.model.get()
    return f"model {model.version} loaded (threshold {model.threshold:g})"


@dataclass(frozen=True, slots=True)
class Check:
    run: Callable[[Services], str]  # what the dependency answered; raises if it did not
    failed: str  # what a probe is told when it fails; the error itself is logged


CHECKS: dict[str, Check] = {
    "database": Check(check_database, "PostgreSQL unavailable"),
    "kafka": Check(check_kafka, "Kafka unavailable"),
    "model": Check(check_model, "model not loaded"),
}


def check_readiness(
    services: Services,
    timeout_s: float = CHECK_TIMEOUT_S,
    names: Collection[str] = tuple(CHECKS),
) -> dict[str, CheckResult]:
    """Each dependency in `names`, with what it answered or a short reason it did not."""
    results: dict[str, CheckResult] = {}
    threads = [
        # Daemon threads: a check hung on a dependency (a model load from storage that
        # does not answer) must not hold the process at exit, as an executor's worker
        # threads would, since the interpreter joins those.
        threading.Thread(
            target=_run_into, args=(results, name, services), name=f"readyz-{name}", daemon=True
        )
        for name in names
    ]
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    unanswered = CheckResult(False, f"no answer within {timeout_s:g} s")
    # A check that answers after the deadline writes into `results` too late to be read.
    return {name: results.get(name, unanswered) for name in names}


def _run_into(results: dict[str, CheckResult], name: str, services: Services) -> None:
    results[name] = _run(name, services)


def _run(name: str, services: Services) -> CheckResult:
    check = CHECKS[name]
    try:
        return CheckResult(True, check.run(services))
    except TemporaryError as error:
        # A probe every few seconds meets the same outage again and again: its reason
        # once a minute, the copies left out counted on the next line let through.
        drop_repeats(FAILURES_LOGGER).warning("readiness check %s failed: %s", name, error)
    except Exception as error:
        # An unexpected failure still means "not ready", and it is logged, not hidden;
        # named in the line, so that another crash is not taken for a repeat.
        drop_repeats(FAILURES_LOGGER).exception(
            "readiness check %s crashed: %s: %s", name, type(error).__name__, error
        )
    return CheckResult(False, f"{check.failed}: see the process's log")
