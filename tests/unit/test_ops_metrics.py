"""The service metrics: batch outcomes, lag by partition, the model version."""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared import metrics
from shared.moderation.batch import BatchReport, process_moderation_batch
from tests.fakes import FakeModelLoader, fake_services
from tests.python_snippets import run_python
from tests.unit.consumer_records import accepted_task
from tests.unit.http_client import client

LAG = "moderation_consumer_lag_records"
REQUESTS = "moderation_http_requests_total"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_report_counts_each_outcome_and_dead_letters_but_not_its_retries_again():
    before = {
        outcome: _value("moderation_tasks_total", outcome=outcome)
        for outcome in ("completed", "failed", "duplicate", "rejected")
    }
    retries = _value("moderation_batch_retries_total")
    dlq = _value("moderation_dlq_records_total")
    batches = _value("moderation_batch_duration_seconds_count")

    metrics.observe_batch_report(
        BatchReport(
            records=9, completed=5, failed=2, duplicates=1, rejected=1, dead_lettered=3, retries=2
        ),
        seconds=0.05,
    )

    assert _value("moderation_tasks_total", outcome="completed") - before["completed"] == 5
    assert _value("moderation_tasks_total", outcome="failed") - before["failed"] == 2
    assert _value("moderation_tasks_total", outcome="duplicate") - before["duplicate"] == 1
    assert _value("moderation_tasks_total", outcome="rejected") - before["rejected"] == 1
    assert _value("moderation_batch_retries_total") == retries  # counted as each began
    assert _value("moderation_dlq_records_total") - dlq == 3
    assert _value("moderation_batch_duration_seconds_count") - batches == 1


def test_each_api_request_is_counted_under_its_route_and_the_status_it_answered(services):
    # Alerts on refusals and errors read the status label: counted as successes, a run
    # of 404s or 422s would not show.
    statuses = ("200", "404", "422")
    before = {s: _value(REQUESTS, route="simple_predict", status=s) for s in statuses}
    simple_predict = client("simple_predict", "predict")

    for item_id in ("1", "999", "abc"):  # stored, unknown, not an id
        simple_predict.post(f"/simple_predict?item_id={item_id}")

    after = {s: _value(REQUESTS, route="simple_predict", status=s) for s in statuses}
    assert {s: after[s] - before[s] for s in statuses} == {"200": 1, "404": 1, "422": 1}


def test_consumer_lag_is_per_partition_and_forgotten_when_the_partition_goes():
    metrics.set_consumer_lag("moderation-lagtest", 2, 40)
    metrics.set_consumer_lag("moderation-lagtest", 0, 1)

    assert _value(LAG, topic="moderation-lagtest", partition="2") == 40

    metrics.forget_partition("moderation-lagtest", 2)
    metrics.forget_partition("moderation-lagtest", 5)  # never reported: nothing to drop

    assert REGISTRY.get_sample_value(LAG, {"topic": "moderation-lagtest", "partition": "2"}) is None
    assert _value(LAG, topic="moderation-lagtest", partition="0") == 1


def test_batch_sizes_are_a_histogram():
    count = _value("moderation_batch_size_records_count")

    metrics.observe_batch_size(500)

    assert _value("moderation_batch_size_records_count") - count == 1


def test_model_version_is_one_series_replaced_on_a_new_version():
    metrics.record_model_version("v-old")
    metrics.record_model_version("v-new")

    assert _value("moderation_model_info", version="v-new") == 1
    assert REGISTRY.get_sample_value("moderation_model_info", {"version": "v-old"}) is None


def _exported_by_a_new_process(setup: str) -> str:
    """What /metrics would show in a new process once `setup` (Python code) has run."""
    script = f"{setup}; from prometheus_client import generate_latest as g; print(g().decode())"
    exported = run_python(script)
    assert exported.returncode == 0, exported.stderr
    return exported.stdout


def test_every_outcome_and_sweep_series_exists_at_zero_before_anything_happens():
    # A fresh process: a series created by its first increment would be a step from
    # nothing to 1, which rate() and increase() miss.
    exported = _exported_by_a_new_process("import shared.metrics")

    for outcome in ("completed", "failed", "duplicate", "rejected"):
        assert f'moderation_tasks_total{{outcome="{outcome}"}} 0.0' in exported
    for kind in ("task", "dead_letter"):
        assert f'moderation_outbox_published_total{{kind="{kind}"}} 0.0' in exported
        for result in ("ok", "failed"):
            line = f'moderation_outbox_sweeps_total{{kind="{kind}",result="{result}"}} 0.0'
            assert line in exported


def test_counters_and_histograms_export_no_created_series():
    # A start-time gauge per metric and label set, which no documented query reads.
    exported = _exported_by_a_new_process("import shared.metrics")

    assert "moderation_tasks_total" in exported
    assert "_created" not in exported


def test_each_function_built_has_its_server_error_series_at_zero_before_any_request():
    # Built as the production server builds it, in a process of its own.
    exported = _exported_by_a_new_process(
        "from functions_framework import create_app;"
        " create_app('simple_predict', 'functions/predict/main.py');"
        " create_app('moderation_consumer', 'functions/moderation_consumer/main.py')"
    )

    for route in ("simple_predict", "moderation_consumer"):
        for status in (500, 503):
            line = f'moderation_http_requests_total{{route="{route}",status="{status}"}} 0.0'
            assert line in exported
        assert f'moderation_http_request_duration_seconds_count{{route="{route}"}} 0.0' in exported


def test_a_retry_is_counted_when_it_begins_not_when_its_batch_ends():
    # During an outage a batch ends only when the outage does: a counter that rose then
    # would tell the operator nothing while it lasts.
    services = fake_services()
    services.model = FakeModelLoader(fail_times=3)
    seen_during_waits: list[float] = []
    before = _value("moderation_batch_retries_total")
    services.sleeper = lambda _seconds: seen_during_waits.append(
        _value("moderation_batch_retries_total") - before
    )

    report = process_moderation_batch(services, [accepted_task(services, 1)])

    assert report.retries == 3 and report.completed == 1
    assert seen_during_waits == [0, 1, 2]  # each wait comes before the retry it leads to
    assert _value("moderation_batch_retries_total") - before == 3  # before any report


def test_retries_go_on_being_counted_while_a_batch_out_of_retries_waits_for_the_database():
    # After the schedule, the batch waits for the database to record its failures: an
    # alert on the retries must not clear while the outage goes on.
    services = fake_services()
    record = accepted_task(services, 1)
    # Every scheduled attempt and its count (8), then three tries to fail the task.
    services.db.unavailable_for = 11
    before = _value("moderation_batch_retries_total")

    report = process_moderation_batch(services, [record])

    assert services.db.state.tasks[1].status == "failed"
    assert services.sleeper.waits == [5.0, 10.0, 20.0, 20.0, 20.0, 20.0]
    assert report.retries == 6
    assert _value("moderation_batch_retries_total") - before == 6


def test_http_latency_buckets_reach_past_the_database_connect_timeout():
    # A request that waited out DB_CONNECT_TIMEOUT_S must land in a bucket, not past them.
    connect_timeout_s = fake_services().settings.db_connect_timeout_s

    assert max(metrics.HTTP_LATENCY_BUCKETS_S) >= 2 * connect_timeout_s


def test_batch_duration_buckets_reach_past_the_whole_retry_schedule_and_a_wait_after_it():
    delays = fake_services().settings.retry_delays()

    assert max(metrics.BATCH_DURATION_BUCKETS_S) >= sum(delays) + 2 * max(delays)
