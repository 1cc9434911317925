"""Generated requests against every operation of /openapi.json, served in-process by the
local runner's WSGI app over real PostgreSQL and Kafka: no 5xx, and every 4xx is JSON
with a `detail`."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import Client

from shared.db.tasks import TaskFailure
from shared.domain import BatchVerdicts
from shared.ops.app import OPS_PATHS
from shared.runner.app import build_runner_app
from shared.runner.targets import HTTP_FUNCTIONS
from tests.integration.database_rows import seed_ads
from tests.integration.wiring import wired_services

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
# Each operation must also succeed often enough, on rows that exist: ids drawn at large
# almost never name one, and a 5xx on a real row would then go unseen.
MINIMUM_SUCCESSES_PER_OPERATION = 20
SUCCESS = (200, 202)
RESULTS_OPERATION = "GET /moderation_result/{task_id}"


@dataclass(frozen=True)
class ExistingRows:
    """Ids the generated requests are aimed at half the time in positive mode."""

    ad_ids: list[int]
    task_ids: list[int]  # pending, completed and failed ones


@dataclass
class FuzzLog:
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    # The `status` of each result `moderation_result` answered 200 with.
    result_statuses: Counter[str] = field(default_factory=Counter)

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


def _cases(operation, mode: GenerationMode, rows: ExistingRows):
    """The operation's generated cases; in positive mode, half of them aimed at a row that
    exists (the other fields as generated)."""
    cases = operation.as_strategy(generation_mode=mode)
    if mode is not GenerationMode.POSITIVE:
        return cases
    aimed = st.tuples(cases, st.sampled_from(rows.ad_ids), st.sampled_from(rows.task_ids))
    return st.one_of(cases, aimed.map(lambda drawn: _aimed_at(*drawn)))


def _aimed_at(case, ad_id: int, task_id: int):
    if case.query and "item_id" in case.query:
        case.query["item_id"] = ad_id
    if case.path_parameters and "task_id" in case.path_parameters:
        case.path_parameters["task_id"] = task_id
    return case


def _fuzz(operation, mode: GenerationMode, rows: ExistingRows, log: FuzzLog) -> None:
    @given(case=_cases(operation, mode, rows))
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
        if operation.label == RESULTS_OPERATION and response.status_code == 200:
            log.result_statuses[json.loads(response.content)["status"]] += 1
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
        rows = _existing_rows(services)
        app = build_runner_app(lambda: services)
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        log = FuzzLog()

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, rows, log)

        # Every function the runner serves over HTTP is in the document, so is fuzzed.
        assert {operation.path.split("/{")[0] for operation in operations} == {
            function.path for function in HTTP_FUNCTIONS
        }, [operation.label for operation in operations]
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
        successes = Counter()
        for (label, _, status), count in log.statuses.items():
            successes[label] += count if status in SUCCESS else 0
        assert min(successes[o.label] for o in operations) >= MINIMUM_SUCCESSES_PER_OPERATION, dict(
            successes
        )
        # Every kind of result went through the response's schema check.
        assert set(log.result_statuses) == {"pending", "completed", "failed"}, log.result_statuses


def _existing_rows(services) -> ExistingRows:
    """20 ads, and tasks on them in each state a result can be in."""
    ad_ids = seed_ads(services, 20)
    with services.db.transaction() as tx:
        task_ids = [tx.create_task_for_existing_ad(ad_id) for ad_id in ad_ids[:6]]
        verdicts = BatchVerdicts(np.array([True, False]), np.array([0.93, 0.04]), "fuzz-model")
        assert tx.complete_tasks(task_ids[:2], verdicts) == set(task_ids[:2])
        failures = [TaskFailure(task_id, "Ad not found", 1) for task_id in task_ids[2:4]]
        assert tx.fail_tasks(failures) == set(task_ids[2:4])
    return ExistingRows(ad_ids, task_ids)


def test_a_task_id_with_a_newline_in_the_path_gets_a_json_404_with_a_detail(settings):
    with wired_services(settings) as services:
        client = Client(build_runner_app(lambda: services))

        response = client.get("/moderation_result/1%0A")

        # The router matches no path holding a newline: not found, as JSON, in words
        # meant for an API client rather than werkzeug's for a web page.
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.get_json() == {"detail": "Not found: nothing is served at this path"}


OPS_REQUESTS = 300
OPS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW")
# Path tails aimed at the static files' route: traversal, encodings, NUL, long names.
_PATH_TAIL = st.one_of(
    st.just(""),
    st.sampled_from(("/", "//", "/static", "/static/", "/static/swagger-ui.css", "/x")),
    st.sampled_from(("/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd")),
    # Any text, percent-encoded as a client sends it: the server decodes it into the path.
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40).map(
        lambda tail: "/" + urllib.parse.quote(tail, safe="/")
    ),
)


def test_generated_requests_to_the_ops_endpoints_get_no_5xx_and_only_json_4xx_details(settings):
    # /openapi.json documents the four functions; the operations endpoints the runner
    # serves next to them (health, readiness, metrics, the document, its docs page and
    # static files) get requests generated here instead.
    with wired_services(settings) as services:
        client = Client(build_runner_app(lambda: services))
        statuses: Counter[tuple[str, int]] = Counter()
        problems: list[str] = []

        def send(path: str, tail: str, method: str, query: str, body: bytes) -> None:
            response = client.open(path + tail, method=method, query_string=query, data=body)
            statuses[(path, response.status_code)] += 1
            if problem := _ops_problem(response, method, traversal="etc/passwd" in tail):
                problems.append(f"{method} {path + tail!r} ?{query!r}: {problem}")

        @given(
            path=st.sampled_from([path for path, _ in OPS_PATHS]),
            tail=_PATH_TAIL,
            method=st.sampled_from(OPS_METHODS),
            query=st.text(max_size=30),
            body=st.binary(max_size=200),
        )
        @hypothesis_settings(
            max_examples=OPS_REQUESTS,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def send_generated(path: str, tail: str, method: str, query: str, body: bytes) -> None:
            send(path, tail, method, query, body)

        # A plain GET of each path too: the generated ones may, by chance, include none.
        for path, _ in OPS_PATHS:
            send(path, "", "GET", "", b"")
        send_generated()

        assert sum(statuses.values()) == OPS_REQUESTS + len(OPS_PATHS)
        assert problems == [], "\n".join(problems[:SHOWN_PROBLEMS])
        # Each endpoint answered some requests with success, and refused others.
        for path, _ in OPS_PATHS:
            codes = {code for (where, code) in statuses if where == path}
            assert 200 in codes and any(400 <= code < 500 for code in codes), (path, codes)


def _ops_problem(response, method: str, *, traversal: bool) -> str | None:
    """What is wrong with an ops endpoint's response, or None."""
    status = response.status_code
    if status >= 500:
        return f"{status}: {response.data[:200]!r}"
    if status >= 400 and not response.is_json:
        return f"{status} with Content-Type {response.content_type!r}"
    # A HEAD response has no body, by definition: its headers are all there is to check.
    if status >= 400 and method != "HEAD":
        body = response.get_json(silent=True)
        if not isinstance(body, dict) or "detail" not in body:
            return f"{status} without a detail: {response.data[:200]!r}"
    # OPTIONS is answered with the allowed methods alone, whatever the path.
    if status < 400 and traversal and method != "OPTIONS":
        return f"{status}: a file outside the static folder was served"
    return None
