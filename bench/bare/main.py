"""simple_predict with pieces taken out: where the HTTP bench's bounds come from.

Each reads the ad exactly as simple_predict does (the same pool, the same blocking
lookup) and answers in the same JSON, but skips the wrapper every real endpoint goes
through (method, API key and body checks, the query's validation, the pydantic
response, the metrics); `lookup_only` also skips the model and answers a fixed verdict.
Served like the real functions, on simple_predict's settings, they show how close to
hello world simple_predict could come if those pieces cost nothing.

functions-framework --source bench/bare/main.py --target lookup_only
"""

import json

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.domain import Ad
from shared.moderation.predictions import predict_ad


@functions_framework.http
def lookup_only(request: flask.Request) -> flask.Response:
    ad = _stored_ad(request)
    return _verdict_response(ad.item_id, False, 0.0, "bare")


@functions_framework.http
def lookup_and_model(request: flask.Request) -> flask.Response:
    verdict = predict_ad(get_services(), _stored_ad(request))
    return _verdict_response(
        verdict.item_id, verdict.is_violation, verdict.probability, verdict.model_version
    )


def _stored_ad(request: flask.Request) -> Ad:
    item_id = int(request.args["item_id"])
    with get_services().db.autocommit() as session:
        ad = session.load_ad_with_seller(item_id)
    if ad is None:
        flask.abort(404)
    return ad


def _verdict_response(
    item_id: int, is_violation: bool, probability: float, model_version: str
) -> flask.Response:
    body = {
        "item_id": item_id,
        "is_violation": is_violation,
        "probability": probability,
        "model_version": model_version,
    }
    return flask.Response(json.dumps(body), mimetype="application/json")
