"""`POST /predict` (ad in the body) and `POST /simple_predict?item_id=N` (ad from PostgreSQL).

Deploy either with:
    functions-framework --source functions/predict/main.py --target predict
    functions-framework --source functions/predict/main.py --target simple_predict
"""

import flask
import functions_framework

from shared.bootstrap import get_services
from shared.http import json_endpoint, parse_json_body, parse_query, register_json_errors
from shared.moderation.predictions import predict_ad, predict_stored_ad
from shared.schemas import ItemIdQuery, PredictRequest, PredictResponse

# Errors Flask raises before a handler runs (an unroutable path) are JSON too.
register_json_errors(functions_framework.errorhandler)


@functions_framework.http
@json_endpoint("predict", methods=("POST",))
def predict(request: flask.Request) -> PredictResponse:
    ad = parse_json_body(request, PredictRequest).to_ad()
    return PredictResponse.from_verdict(predict_ad(get_services(), ad))


@functions_framework.http
@json_endpoint("simple_predict", methods=("POST",))
def simple_predict(request: flask.Request) -> PredictResponse:
    query = parse_query(request, ItemIdQuery)
    return PredictResponse.from_verdict(predict_stored_ad(get_services(), query.item_id))
