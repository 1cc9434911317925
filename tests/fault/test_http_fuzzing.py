"""Generated requests against every operation of /openapi.json, served in-process by the
local runner's WSGI app over real PostgreSQL and Kafka: no 5xx, and every 4xx is JSON
with a `detail`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import Client

from shared.runner.app import build_runner_app
from tests.integration.helpers import seed_ads, wired_services

pytestmark = [
    pytest.mark.fault,
    pytest.mark.integration,
    # Raised from inside schemathesis' own strategies, not from anything here.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

EXAMPLES_PER_OPERATION_AND_MODE = 100
MINIMUM_REQUESTS = 500
# Each operation on its own too: a total alone would pass with one endpoint barely fuzzed.
MINIMUM_REQUESTS_PER_OPERATION = 100
# What the responses must agree with in the document: statuses, media types, bodies, headers.
CONFORMANCE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SHOWN_PROBLEMS = 5


@dataclass
class FuzzLog:
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def problem(self, case, what: str) -> None:
        self.problems.append(
            f"{case.method} {case.formatted_path}: {what}\n  {case.as_curl_command()[:500]}"
        )


def _error_body_problem(response) -> str | None:
    """Why a 4xx response is not `{"detail": ...}` JSON, or None if it is."""
    content_type = ",".join(response.headers.get("content-type", []))  # lower-case keys
    if not content_type.startswith("application/json"):
        return f"{response.status_code} with Content-Type {content_type!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{response.status_code} whose body is not JSON: {response.content[:200]!r}"
    if not isinstance(body, dict) or "detail" not in body:
        return f"{response.status_code} without a detail: {body!r:.200}"
    return None


def _fuzz(operation, mode: GenerationMode, log: FuzzLog) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: problems are collected, not raised
        suppress_health_check=list(HealthCheck),
    )
    def send(case) -> None:
        response = case.call()
        log.statuses[(operation.label, mode.value, response.status_code)] += 1
        if response.status_code >= 500:
            log.problem(case, f"{response.status_code}: {response.content[:300]!r}")
        elif response.status_code >= 400 and (problem := _error_body_problem(response)):
            log.problem(case, problem)
        try:
            case.validate_response(response, checks=CONFORMANCE_CHECKS)
        except BaseException as failure:  # schemathesis raises a FailureGroup
            log.problem(case, f"{type(failure).__name__}: {failure}"[:600])

    send()


def test_500_generated_requests_across_all_endpoints_get_no_5xx_and_only_json_4xx_details(
    settings,
):
    with wired_services(settings) as services:
        seed_ads(services, 20)  # a few ids that exist, so 200s and 202s are generated too
        app = build_runner_app(lambda: services)
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        log = FuzzLog()

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, log)

        assert len(operations) == 4, [operation.label for operation in operations]
        assert log.requests >= MINIMUM_REQUESTS, dict(log.statuses)
        per_operation = Counter()
        for (label, _, _), count in log.statuses.items():
            per_operation[label] += count
        assert min(per_operation[o.label] for o in operations) >= MINIMUM_REQUESTS_PER_OPERATION, (
            dict(per_operation)
        )
        assert log.problems == [], (
            f"{len(log.problems)} problem(s) in {log.requests} requests; the first ones:\n"
            + "\n".join(log.problems[:SHOWN_PROBLEMS])
        )
        statuses = {status for (_, _, status) in log.statuses}
        assert {200, 202, 404, 422} <= statuses, dict(log.statuses)


def test_a_task_id_with_a_newline_in_the_path_gets_a_json_404_with_a_detail(settings):
    with wired_services(settings) as services:
        client = Client(build_runner_app(lambda: services))

        response = client.get("/moderation_result/1%0A")

        # The router matches no path segment holding a newline: not found, as JSON.
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert "detail" in response.get_json()
