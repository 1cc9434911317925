"""`POST /async_predict?item_id=N`: accept a moderation task and return 202 with its id.

Deploy with:
    functions-framework --source functions/async_predict/main.py --target async_predict
"""

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.http import (
    JsonResult,
    caller_scope,
    json_endpoint,
    parse_query_and_headers,
    register_json_errors,
)
from shared.moderation.tasks import submit_moderation_task
from shared.schemas import AsyncPredictHeaders, AsyncPredictResponse, ItemIdQuery

# Errors Flask raises before a handler runs (an unroutable path) are JSON too.
register_json_errors(functions_framework.errorhandler)


@functions_framework.http
@json_endpoint("async_predict", methods=("POST",))
def async_predict(request: flask.Request) -> JsonResult:
    query, headers = parse_query_and_headers(request, ItemIdQuery, AsyncPredictHeaders)
    services = get_services()
    submitted = submit_moderation_task(
        services,
        query.item_id,
        headers.idempotency_key,
        caller=caller_scope(request, services.settings.api_key_list),
    )
    replayed = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return JsonResult(
        AsyncPredictResponse(task_id=submitted.task_id),
        status=202,
        headers={"Location": f"/moderation_result/{submitted.task_id}", **replayed},
    )
