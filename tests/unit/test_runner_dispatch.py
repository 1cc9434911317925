"""The runner's path dispatcher, over the real functions-framework apps with fakes wired in."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY
from werkzeug.test import Client

from shared.runner.app import build_runner_app
from shared.runner.dispatch import PathDispatcher, Route
from tests.fakes import VALID_AD


@pytest.fixture
def client(services) -> Client:
    return Client(build_runner_app(lambda: services))


def _app_named(name: str):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{name} {environ['PATH_INFO']}".encode()]

    return app


@pytest.mark.parametrize(
    "path", ["/", "/nope", "/predict/extra", "/predicts", "/simple_predict/1", "/docsx"]
)
def test_unknown_path_is_a_404_json_naming_the_known_paths(client, path):
    response = client.post(path)

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    detail = response.get_json()["detail"]
    assert path in detail
    assert "/async_predict" in detail


def test_a_head_of_an_unknown_path_is_answered_with_the_404s_headers_alone(client):
    # The body must not follow a HEAD's headers: a client reads it as the next response.
    response = client.head("/nope")

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert int(response.headers["Content-Length"]) > 0
    assert response.get_data() == b""


def test_a_long_unknown_path_is_quoted_back_only_in_part(client):
    path = "/" + "a" * 60_000

    response = client.post(path)

    assert response.status_code == 404
    detail = response.get_json()["detail"]
    assert detail.startswith("No endpoint at /aaa")
    assert f"... ({len(path)} characters); known paths: " in detail
    assert len(detail) < 500


def test_requests_for_unknown_paths_are_counted_under_one_route_label(client):
    def counted() -> float:
        labels = {"route": "unmatched", "status": "404"}
        return REGISTRY.get_sample_value("moderation_http_requests_total", labels) or 0.0

    before = counted()
    for path in ("/nope", "/made-up-1", "/made-up-2"):
        client.get(path)

    assert counted() - before == 3
    routes = {
        sample.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "moderation_http_requests"
        for sample in metric.samples
    }
    assert not {"/nope", "/made-up-1", "/made-up-2"} & routes


def test_predict_route_reaches_the_predict_function(client):
    response = client.post("/predict", json=VALID_AD)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["item_id"] == 10
    assert response.get_json()["model_version"] == "fake-model-1"


def test_simple_predict_route_reaches_the_simple_predict_function(client):
    response = client.post("/simple_predict?item_id=1")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["is_violation"] is True


def test_async_predict_route_accepts_a_task_and_publishes_it(client, services):
    response = client.post("/async_predict?item_id=1")

    assert response.status_code == 202, response.get_data(as_text=True)
    task_id = response.get_json()["task_id"]
    assert response.headers["Location"] == f"/moderation_result/{task_id}"
    [record] = services.publisher.published
    assert json.loads(record.value) == {"task_id": task_id, "item_id": 1}


def test_a_route_with_a_trailing_slash_reaches_its_function_as_when_deployed_alone(client):
    response = client.post("/async_predict/?item_id=1")

    assert response.status_code == 202, response.get_data(as_text=True)


def test_moderation_result_route_takes_the_task_id_from_the_subpath(client):
    task_id = client.post("/async_predict?item_id=1").get_json()["task_id"]

    response = client.get(f"/moderation_result/{task_id}")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "pending"


def test_moderation_result_without_an_id_is_the_functions_own_404(client):
    response = client.get("/moderation_result")

    assert response.status_code == 404
    assert "task_id" in response.get_json()["detail"]


def test_a_wrong_method_is_answered_by_the_function_with_405_json(client):
    response = client.get("/async_predict?item_id=1")

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "POST" in response.get_json()["detail"]


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs"])
def test_ops_paths_are_served_next_to_the_functions(client, path):
    assert client.get(path).status_code == 200


def test_dispatcher_matches_exact_paths_and_only_declared_subpaths():
    dispatcher = PathDispatcher(
        [Route("/a", _app_named("a")), Route("/b", _app_named("b"), with_subpaths=True)]
    )
    client = Client(dispatcher)

    assert client.get("/a").get_data(as_text=True) == "a /a"
    assert client.get("/b/7").get_data(as_text=True) == "b /b/7"
    assert client.get("/a/").get_data(as_text=True) == "a /a/"
    assert client.get("/a/7").status_code == 404
    assert client.get("/bb").status_code == 404
