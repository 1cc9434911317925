"""The development PostgreSQL's URL: with the password initdb was given, where there is one."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from infra.postgres_server import PostgresServer


def test_the_url_carries_the_password_percent_encoded(tmp_path):
    server = PostgresServer(tmp_path, port=15432)
    server.password_path.write_text("a/b@c%d\n")

    assert server.url == "postgresql://postgres:a%2Fb%40c%25d@127.0.0.1:15432/moderation"
    assert conninfo_to_dict(server.url)["password"] == "a/b@c%d"


def test_a_data_directory_initialised_before_passwords_keeps_its_url_without_one(tmp_path):
    # initdb then ran with trust, and wrote no password file: such state dirs still start.
    server = PostgresServer(tmp_path, port=15432)

    assert server.url == "postgresql://postgres@127.0.0.1:15432/moderation"
