"""The consumer's batch handler when the model refuses, crashes on or mis-scores an ad.

Every rule, no I/O."""

from __future__ import annotations

from shared.domain import Ad, BatchVerdicts, Verdict
from shared.errors import (
    InvalidFeatures,
)
from shared.moderation.batch import process_moderation_batch
from tests.fakes import FakeModel, FakeModelLoader, fake_services
from tests.unit.consumer_records import accepted_task, dead_letter_headers


class _ModelRejecting(FakeModel):
    """Refuses, as the real model does, a batch holding an ad it cannot score."""

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        if any(ad.name == "UNSCORABLE" for ad in ads):
            raise InvalidFeatures("ad has a field the model cannot score")
        return super().predict(ads)


def test_an_ad_the_model_rejects_fails_alone_and_the_rest_of_its_batch_completes():
    services = fake_services()
    services.model = FakeModelLoader(_ModelRejecting())
    spam = accepted_task(services, 1, name="SPAM deal")
    bad = accepted_task(services, 2, name="UNSCORABLE")
    fine = accepted_task(services, 3)

    report = process_moderation_batch(services, [spam, bad, fine])

    tasks = services.db.state.tasks
    assert (tasks[1].status, tasks[1].is_violation, tasks[1].probability) == (
        "completed",
        True,
        0.9,
    )
    assert (tasks[3].status, tasks[3].is_violation, tasks[3].probability) == (
        "completed",
        False,
        0.1,
    )
    assert tasks[1].model_version == tasks[3].model_version == "fake-model-1"
    assert tasks[2].status == "failed" and "cannot score" in tasks[2].error_message
    dlq = services.publisher.on_topic("moderation_dlq")
    assert [dead_letter_headers(letter)["x-task-id"] for letter in dlq] == ["2"]
    assert (report.completed, report.failed, report.dead_lettered) == (2, 1, 1)


class _ModelCrashing(FakeModel):
    """Raises an unexpected error (a bug, not a refusal) on a batch holding a poison ad."""

    def __init__(self, poison: str = "POISON") -> None:
        super().__init__()
        self.poison = poison

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        if any(self.poison in ad.name for ad in ads):
            raise ValueError("math domain error")
        return super().predict(ads)


def test_an_ad_the_model_crashes_on_fails_alone_at_once_and_the_rest_of_its_batch_completes():
    services = fake_services()
    services.model = FakeModelLoader(_ModelCrashing())
    records = [
        accepted_task(services, 1, name="SPAM deal"),
        accepted_task(services, 2, name="POISON"),
        accepted_task(services, 3),
    ]

    report = process_moderation_batch(services, records)

    tasks = services.db.state.tasks
    assert [tasks[i].status for i in (1, 2, 3)] == ["completed", "failed", "completed"]
    # The exception's own text is for the operator, in the letter; the task says what happened.
    assert tasks[2].error_message == "the model failed on this ad"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = dead_letter_headers(letter)
    assert (headers["x-task-id"], headers["x-error-class"]) == ("2", "permanent")
    assert headers["x-exception-type"] == "ModelFailedOnAd"
    assert headers["x-exception-message"].endswith("ValueError: math domain error")
    assert (report.completed, report.failed, report.dead_lettered, report.retries) == (2, 1, 1, 0)
    assert services.sleeper.waits == []


class _ModelGivingNaN(FakeModel):
    def predict_batch(self, ads: list[Ad]) -> BatchVerdicts:
        verdicts = super().predict_batch(ads)
        probability = verdicts.probability.copy()
        probability[[ad.name == "NAN" for ad in ads]] = float("nan")
        return BatchVerdicts(verdicts.is_violation, probability, verdicts.model_version)


def test_an_ad_the_model_scores_nan_fails_alone_and_the_rest_of_its_batch_completes():
    services = fake_services()
    services.model = FakeModelLoader(_ModelGivingNaN())
    records = [accepted_task(services, 1), accepted_task(services, 2, name="NAN")]

    report = process_moderation_batch(services, records)

    tasks = services.db.state.tasks
    assert (tasks[1].status, tasks[2].status) == ("completed", "failed")
    assert tasks[2].error_message == "the model failed on this ad"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert "probability outside [0, 1]" in dead_letter_headers(letter)["x-exception-message"]
    assert (report.completed, report.failed, report.retries) == (1, 1, 0)


class _ModelRefusingOneAndCrashingOnAnother(_ModelRejecting, _ModelCrashing):
    """Refuses an UNSCORABLE ad first (_ModelRejecting), then crashes on its poison."""


def test_a_model_crashing_on_every_ad_but_one_it_refuses_fails_that_one_and_retries_the_rest():
    # A refusal is about one ad's fields, and says nothing of whether the model works.
    services = fake_services()
    services.model = FakeModelLoader(_ModelRefusingOneAndCrashingOnAnother(poison=""))
    records = [accepted_task(services, 1, "UNSCORABLE")] + [
        accepted_task(services, item_id) for item_id in (2, 3, 4)
    ]

    report = process_moderation_batch(services, records)

    tasks = services.db.state.tasks
    assert "cannot score" in tasks[1].error_message and tasks[1].attempts == 1
    assert services.sleeper.waits == [5.0, 10.0, 20.0]
    for task_id in (2, 3, 4):
        assert tasks[task_id].status == "failed" and tasks[task_id].attempts == 4
        assert tasks[task_id].error_message == "gave up after 4 attempts: an unexpected error"
    assert (report.failed, report.dead_lettered, report.retries) == (4, 4, 3)


class _ModelFailingOnBatchesOnly(FakeModel):
    def predict(self, ads: list[Ad]) -> list[Verdict]:
        if len(ads) > 1:
            raise MemoryError("cannot allocate the batch's arrays")
        return super().predict(ads)


def test_a_model_failing_on_whole_batches_only_scores_ad_by_ad_and_says_so(caplog):
    services = fake_services()
    services.model = FakeModelLoader(_ModelFailingOnBatchesOnly())
    records = [accepted_task(services, item_id) for item_id in (1, 2, 3)]

    report = process_moderation_batch(services, records)

    # The batch call raised before it counted; then one call per ad.
    assert report.completed == 3 and services.model.model.calls == [1, 1, 1]
    [logged] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "on none of its ads alone" in logged.getMessage()
    assert logged.exc_info is not None and logged.exc_info[0] is MemoryError


def test_a_model_crashing_on_every_ad_is_retried_like_an_outage_then_fails_the_batch():
    services = fake_services()
    services.model = FakeModelLoader(_ModelCrashing(poison=""))  # every name holds ""
    records = [accepted_task(services, item_id) for item_id in (1, 2)]

    report = process_moderation_batch(services, records)

    assert services.sleeper.waits == [5.0, 10.0, 20.0]
    tasks = services.db.state.tasks
    assert all(t.status == "failed" and t.attempts == 4 for t in tasks.values())
    assert tasks[1].error_message == "gave up after 4 attempts: an unexpected error"
    letter = services.publisher.on_topic("moderation_dlq")[0]
    assert (
        dead_letter_headers(letter)["x-exception-message"]
        == "unexpected ValueError: math domain error"
    )
    assert (report.failed, report.dead_lettered, report.retries) == (2, 2, 3)
