"""A broker that stalls past the publish timeout while dead letters go out. The publish
counts as failed and the relay sends the letters again, but the stalled broker may still
write the first copies when it wakes: no letter is lost, and every copy names its letter
(`x-dead-letter-id`), so a reader can drop the repeats."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from shared.bootstrap import Services
from shared.db.dead_letters import DeadLetter, insert_dead_letters
from shared.errors import TemporaryError
from shared.kafka.record import OutgoingRecord
from shared.moderation.relay import relay_unpublished_dead_letters, relay_until_caught_up
from tests.integration.kafka_records import read_topic
from tests.integration.wiring import wired_services
from tests.must_run import skip_or_fail

pytestmark = [pytest.mark.fault, pytest.mark.integration]

LETTERS = 5
PUBLISH_TIMEOUT_S = 1.0
WARM_UP = b"warm-up"


def _letter(offset: int) -> DeadLetter:
    return DeadLetter(
        task_id=None,
        source_topic="moderation",
        source_partition=0,
        source_offset=offset,
        key=f"letter-{offset}".encode(),
        value=b"not json",
        headers={"x-error-class": "permanent", "x-exception-type": "MalformedMessage"},
    )


def _publish_warm_up(services: Services, topic: str, tries: int = 10) -> None:
    for _ in range(tries - 1):
        try:
            services.publisher.publish([OutgoingRecord(topic, WARM_UP, WARM_UP)])
            return
        except TemporaryError:
            continue
    services.publisher.publish([OutgoingRecord(topic, WARM_UP, WARM_UP)])


@contextmanager
def stalled(pid: int) -> Iterator[None]:
    """The broker's process frozen (as in a long GC pause): connections stay open, nothing
    is answered, and whatever was sent to it is handled once it resumes."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_letters_sent_again_after_a_stalled_publish_all_arrive_each_copy_naming_its_letter(
    infra, settings
):
    if infra.kafka is None or infra.kafka.pid is None:
        skip_or_fail(
            "KAFKA_BOOTSTRAP_SERVERS names an external broker, which this test cannot stall"
        )
    settings = settings.model_copy(
        update={"outbox_grace_s": 0, "kafka_publish_timeout_s": PUBLISH_TIMEOUT_S}
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        stored = insert_dead_letters(conn, [_letter(offset) for offset in range(LETTERS)])
    letters = {str(item.id): item.letter for item in stored}

    with wired_services(settings) as services:
        # A first record goes out normally, so the producer's connection is open and it
        # knows the topic: the stalled broker then receives the letters' request itself
        # (not a metadata request first), and answers it too late.
        # (A new producer's first request waits for metadata and its producer id, which
        # may take longer than the short timeout: it is tried a few times.)
        _publish_warm_up(services, settings.kafka_dlq_topic)
        with stalled(infra.kafka.pid), pytest.raises(TemporaryError):
            relay_unpublished_dead_letters(services)
        published_again = relay_until_caught_up(services, budget_s=30)

    assert published_again == LETTERS  # every letter counted unpublished after the stall
    copies = defaultdict(list)
    on_topic = read_topic(settings, settings.kafka_dlq_topic, expected=LETTERS + 1)
    for record in on_topic:
        if record.key() == WARM_UP:
            continue
        copies[dict(record.headers())["x-dead-letter-id"].decode()].append(record)
    assert set(copies) == set(letters)  # each letter at least once, and no other record
    for letter_id, records in copies.items():
        for record in records:
            assert (record.key(), record.value()) == (
                letters[letter_id].key,
                letters[letter_id].value,
            )
    # Not asserted, as it is up to the broker's timing: usually some letters arrive twice.
    print(f"copies per letter: {sorted(len(records) for records in copies.values())}")
