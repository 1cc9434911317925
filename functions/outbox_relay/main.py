"""The outbox relay as a function, for platforms that run functions only: a scheduler
calls it every few seconds (Cloud Scheduler, a Kubernetes CronJob, ...).

Each call is one sweep: it publishes the pending tasks whose immediate publish never
got an acknowledgement and the DLQ records not yet sent, and answers how many; then it
deletes expired idempotency keys. Any
number of copies may run at once (rows are claimed with SKIP LOCKED). Elsewhere the
relay runs as a long-lived process instead (`python -m shared.runner.relay`).

    functions-framework --source functions/outbox_relay/main.py --target outbox_relay
"""

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.http import json_endpoint, register_json_errors
from shared.moderation.relay import relay_once
from shared.schemas import RelaySweepResponse

register_json_errors(functions_framework.errorhandler)


# The endpoint wrapper gives the relay what every API function has: POST only, API_KEYS
# (a scheduler sends the header), and a 503 when Kafka or PostgreSQL is down, after
# which the rows stay in the outbox for the next call.
@functions_framework.http
@json_endpoint("outbox_relay", methods=("POST",))
def outbox_relay(request: flask.Request) -> RelaySweepResponse:
    return RelaySweepResponse(published=relay_once(get_services()))
