"""The outbox relay as a function, for platforms that run functions only: a scheduler
calls it every few seconds (Cloud Scheduler, a Kubernetes CronJob, ...).

Each call is one sweep: it publishes the pending tasks whose immediate publish never
got an acknowledgement and the DLQ records not yet sent, and answers how many. Any
number of copies may run at once (rows are claimed with SKIP LOCKED). Elsewhere the
relay runs as a long-lived process instead (`python -m shared.runner.relay`).

    functions-framework --source functions/outbox_relay/main.py --target outbox_relay
"""

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.errors import TemporaryError
from shared.http import register_json_errors
from shared.http.errors import unavailable
from shared.moderation.relay import relay_once

register_json_errors(functions_framework.errorhandler)


@functions_framework.http
def outbox_relay(request: flask.Request) -> flask.Response:
    services = get_services()
    try:
        published = relay_once(services)
    except TemporaryError as error:
        # Nothing is lost: the rows stay in the outbox for the next call.
        return unavailable(error, services.settings.retry_after_s)
    return flask.jsonify({"published": published})
