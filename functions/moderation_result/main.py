"""`GET /moderation_result/{task_id}`: a task's status and, once finished, its verdict.

Deploy with:
    functions-framework --source functions/moderation_result/main.py --target moderation_result
"""

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.http import json_endpoint, parse_path_id, register_json_errors
from shared.moderation.tasks import get_moderation_result
from shared.schemas import ModerationResultResponse, TaskIdPath

# Errors Flask raises before a handler runs (an unroutable path) are JSON too.
register_json_errors(functions_framework.errorhandler)


@functions_framework.http
@json_endpoint("moderation_result", methods=("GET", "HEAD"))
def moderation_result(request: flask.Request) -> ModerationResultResponse:
    task_id = parse_path_id(request, TaskIdPath, "task_id", route="moderation_result").task_id
    return ModerationResultResponse.from_task(get_moderation_result(get_services(), task_id))
