"""What the long-running entry points share: wiring, an ops port, and a bounded stop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Collection
from typing import Protocol

from shared import metrics
from shared.bootstrap import Services, build_services, install_services
from shared.errors import ModelUnavailable
from shared.logging_setup import configure_logging
from shared.ops.app import create_ops_app
from shared.runner.http_server import CannotListen, HttpServer
from shared.runner.shutdown import (
    SHUTDOWN_BUDGET_S,
    Deadline,
    StartUpInterrupted,
    StartUpInterruption,
    StopSignal,
    finish_and_exit_status,
)
from shared.settings import InvalidSettings, get_settings

log = logging.getLogger(__name__)


class Worker(Protocol):
    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    def stop(self, timeout_s: float) -> bool: ...


def run_worker_process(
    name: str, make_worker: Callable[[Services], Worker], *, needs: Collection[str]
) -> int:
    """Connect, build, run: serve /healthz, /readyz and /metrics on PORT until SIGTERM.

    `needs` names the readiness checks that apply (database, kafka, model); the
    model, when needed, is loaded before the worker starts, so a bad MODEL_URI
    fails the process at once instead of every batch.
    """
    try:
        settings = get_settings()
    except InvalidSettings as error:
        # One line that names the setting, not a traceback around it; before logging is
        # set up, since its level is a setting too.
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    # Until the worker starts, a stop signal cuts start-up short: a model load from S3
    # may take its retries' minute and more, and has nothing to hand over.
    interruption = StartUpInterruption()
    interruption.install()
    stop = StopSignal()
    try:
        services = build_services(settings)
        install_services(services)
        if "model" in needs:
            metrics.record_model_version(services.model.get().version)
        # Inside the try: a signal up to this line still ends start-up here.
        stop.install()
    except StartUpInterrupted as interrupted:
        stop.install()  # a second signal must not cut this exit short with a traceback
        log.info(f"{name} stopped during start-up", extra={"signal": str(interrupted)})
        return 0
    except ModelUnavailable as error:
        stop.install()
        # Its message says what is wrong with MODEL_URI; a traceback would bury it.
        return _start_up_failed(name, services, str(error))
    try:
        ops = HttpServer(create_ops_app(lambda: services, needs), settings.ops_host, settings.port)
    except CannotListen as error:
        return _start_up_failed(name, services, f"{error} (OPS_HOST, PORT)")
    worker = make_worker(services)
    ops.start()
    worker.start()
    log.info(f"{name} running", extra={"ops_port": ops.port})
    signalled = stop.wait(healthy=worker.is_alive)
    if not signalled:
        log.error(f"{name} stopped on its own; exiting so that it is restarted")
    deadline = Deadline(SHUTDOWN_BUDGET_S)
    services.stopping.set()
    late = not worker.stop(timeout_s=deadline.remaining())
    if late:
        # The consumer's batch is redelivered to the partition's next owner; the relay's
        # claimed rows stay unpublished, and a later pass publishes them.
        log.warning(f"{name} did not stop in time; what it had in hand is done again later")
    ops.stop(timeout_s=deadline.remaining())
    services.close(deadline.remaining)
    log.info(f"{name} stopped", extra={"seconds": round(deadline.elapsed(), 3)})
    return finish_and_exit_status(signalled=signalled, late=late)


def _start_up_failed(name: str, services: Services, reason: str) -> int:
    """Exit status 1, the reason logged and printed on one line, the services closed."""
    log.error(f"{name} cannot start", extra={"error": reason})
    print(f"{name}: start-up failed: {reason}", file=sys.stderr)
    services.close()
    return 1
