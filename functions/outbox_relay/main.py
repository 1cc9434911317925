"""The outbox relay as a function, for platforms that run functions only: a scheduler
calls it (Cloud Scheduler or a Kubernetes CronJob, as often as once a minute).

Each call sweeps: it publishes the pending tasks whose immediate publish never got an
acknowledgement and the DLQ records not yet sent, deletes expired idempotency keys, and
answers how many rows it published. While a sweep finds more than it takes at once (a
backlog after an outage) it sweeps again, for OUTBOX_RELAY_CALL_BUDGET_S at most. Any
number of copies may run at once (rows are claimed with SKIP LOCKED). Elsewhere the
relay runs as a long-lived process instead (`python -m shared.runner.relay`), sweeping
every OUTBOX_RELAY_INTERVAL_S, so a task whose immediate publish failed goes out seconds
later rather than at the next call.

    functions-framework --source functions/outbox_relay/main.py --target outbox_relay
"""

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.http import json_endpoint, register_json_errors
from shared.moderation.relay import relay_until_caught_up
from shared.schemas import RelaySweepResponse

register_json_errors(functions_framework.errorhandler)


# The endpoint wrapper gives the relay what every API function has: POST only, API_KEYS
# (a scheduler sends the header), and a 503 when Kafka or PostgreSQL is down, after
# which the rows stay in the outbox for the next call.
@functions_framework.http
@json_endpoint("outbox_relay", methods=("POST",))
def outbox_relay(request: flask.Request) -> RelaySweepResponse:
    services = get_services()
    budget_s = services.settings.outbox_relay_call_budget_s
    return RelaySweepResponse(published=relay_until_caught_up(services, budget_s=budget_s))
