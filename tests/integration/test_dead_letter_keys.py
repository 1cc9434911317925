"""The dead-letter outbox on the real database: its unique keys (a redelivered record is
recorded once, and another record at a position reused since gets a letter of its own),
and the record's own headers, kept as they came."""

from __future__ import annotations

import psycopg

from shared.db.dead_letters import DeadLetter, claim_unpublished_dead_letters, insert_dead_letters


def _letter(value: bytes | None, key: bytes | None = b"7") -> DeadLetter:
    return DeadLetter(
        task_id=None,
        source_topic="moderation",
        source_partition=0,
        source_offset=41,
        key=key,
        value=value,
        headers={"x-error-class": "permanent"},
    )


def test_a_redelivered_record_is_recorded_once(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = insert_dead_letters(conn, [_letter(b"not json")])
        again = insert_dead_letters(conn, [_letter(b"not json")])

    assert len(first) == 1
    assert again == []


def test_another_record_at_a_reused_position_gets_its_own_letter(database_url):
    # The topic made again, or the runner's in-memory Kafka started over at offset 0:
    # before migration V0003 the position alone swallowed this letter.
    with psycopg.connect(database_url, autocommit=True) as conn:
        insert_dead_letters(conn, [_letter(b'{"task_id": 1}')])
        other_value = insert_dead_letters(conn, [_letter(b'{"task_id": 2}')])
        other_key = insert_dead_letters(conn, [_letter(b'{"task_id": 2}', key=b"8")])
        count = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]

    assert [len(other_value), len(other_key)] == [1, 1]
    assert count == 3


def test_a_null_value_and_an_empty_one_are_different_records(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        null = insert_dead_letters(conn, [_letter(None)])
        empty = insert_dead_letters(conn, [_letter(b"")])
        null_again = insert_dead_letters(conn, [_letter(None)])

    assert [len(null), len(empty), len(null_again)] == [1, 1, 0]


def test_a_letter_keeps_its_records_own_headers_byte_for_byte(database_url):
    # Any bytes, in names too: JSONB itself would take no NUL in a string.
    source_headers = (("traceparent", b"00-abc-01"), ("na\x00me", b"\x00\xff"), ("a", b""))
    letter = DeadLetter(
        task_id=None,
        source_topic="moderation",
        source_partition=0,
        source_offset=42,
        key=b"7",
        value=b"not json",
        headers={"x-error-class": "permanent"},
        source_headers=source_headers,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        [stored] = insert_dead_letters(conn, [letter])
        with conn.transaction():
            claim = claim_unpublished_dead_letters(conn, older_than_s=0, limit=10)

    assert [item.id for item in claim.letters] == [stored.id]
    assert claim.letters[0].letter == letter
