"""/openapi.json: a valid OpenAPI 3.0 document whose schemas are the pydantic models'."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30

from shared import schemas
from shared.ops.app import create_ops_app
from shared.ops.openapi import REF_TEMPLATE, as_openapi_30
from tests.fakes import fake_services

ERROR_CODES = {"400", "401", "404", "405", "413", "414", "415", "422", "500", "503"}
MODELS = [
    schemas.PredictRequest,
    schemas.ItemIdQuery,
    schemas.TaskIdPath,
    schemas.PredictResponse,
    schemas.AsyncPredictResponse,
    schemas.ModerationResultResponse,
    schemas.ErrorResponse,
]


@pytest.fixture(scope="module")
def document() -> dict:
    services = fake_services()
    response = create_ops_app(lambda: services).test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_document_is_valid_against_the_openapi_30_schema(document):
    validator = jsonschema_rs.validator_for(OPENAPI_30)

    errors = [error.message for error in validator.iter_errors(document)]

    assert errors == []
    assert document["openapi"] == "3.0.3"


def test_document_lists_the_four_endpoints_with_their_methods(document):
    operations = {(path, method) for path, item in document["paths"].items() for method in item}

    assert operations == {
        ("/predict", "post"),
        ("/simple_predict", "post"),
        ("/async_predict", "post"),
        ("/moderation_result/{task_id}", "get"),
    }


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_each_component_schema_is_the_pydantic_models_own(document, model):
    expected = as_openapi_30(model.model_json_schema(ref_template=REF_TEMPLATE))

    assert document["components"]["schemas"][model.__name__] == expected


def test_every_field_of_the_202_is_required_since_every_answer_carries_it(document):
    schema = document["components"]["schemas"]["AsyncPredictResponse"]

    assert schema["required"] == ["task_id", "status", "message"]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/simple_predict", "post"),
        ("/async_predict", "post"),
        ("/moderation_result/{task_id}", "get"),
    ],
)
def test_a_body_cut_short_is_documented_for_every_operation_that_reads_one(document, path, method):
    # The endpoint wrapper reads any body sent, and one shorter than its
    # Content-Length is a 400 on every operation, not only on /predict.
    assert "400" in document["paths"][path][method]["responses"]


def test_every_reference_resolves_to_a_component(document):
    names = set(document["components"]["schemas"])

    for ref in _refs(document["paths"]):
        assert ref.removeprefix("#/components/schemas/") in names, ref


def test_every_status_the_service_returns_is_documented(document):
    codes = {
        code
        for item in document["paths"].values()
        for operation in item.values()
        for code in operation["responses"]
    }

    assert codes == {"200", "202"} | ERROR_CODES


def test_predict_takes_the_predict_request_body_and_documents_bad_json(document):
    operation = document["paths"]["/predict"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]

    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert {"400", "415", "422"} <= set(operation["responses"])


@pytest.mark.parametrize(
    ("path", "method", "name", "location"),
    [
        ("/simple_predict", "post", "item_id", "query"),
        ("/async_predict", "post", "item_id", "query"),
        ("/moderation_result/{task_id}", "get", "task_id", "path"),
    ],
)
def test_parameters_carry_the_models_constraints(document, path, method, name, location):
    [parameter] = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]

    assert (parameter["name"], parameter["in"], parameter["required"]) == (name, location, True)
    assert parameter["schema"]["minimum"] == 0
    assert parameter["schema"]["exclusiveMinimum"] is True
    assert parameter["schema"]["maximum"] == schemas.BIGINT_MAX


def test_async_predict_documents_its_optional_idempotency_key_header(document):
    operation = document["paths"]["/async_predict"]["post"]
    [header] = [p for p in operation["parameters"] if p["in"] == "header"]

    assert (header["name"], header["required"]) == ("Idempotency-Key", False)
    assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (1, 255)
    assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]


def test_nullable_fields_are_written_the_openapi_30_way(document):
    result = document["components"]["schemas"]["ModerationResultResponse"]["properties"]

    assert result["is_violation"] == {"title": "Is Violation", "type": "boolean", "nullable": True}
    assert '"type": "null"' not in json.dumps(document)


def test_error_responses_share_the_error_model(document):
    operation = document["paths"]["/async_predict"]["post"]

    for code in ("401", "404", "405", "422", "503"):
        schema = operation["responses"][code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in operation["responses"]["503"]["headers"]


@pytest.mark.parametrize(
    ("path", "method", "sentence"),
    [
        ("/predict", "post", "not a JSON object"),
        ("/simple_predict", "post", "cannot score"),
        ("/async_predict", "post", "used for another ad"),
    ],
)
def test_each_422_whose_detail_is_a_sentence_is_described_on_its_route(
    document, path, method, sentence
):
    description = document["paths"][path][method]["responses"]["422"]["description"]

    assert sentence in description


def test_moderation_result_says_that_head_answers_without_a_body(document):
    operation = document["paths"]["/moderation_result/{task_id}"]["get"]

    assert "HEAD" in operation["description"]
