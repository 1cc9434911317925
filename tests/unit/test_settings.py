"""Settings that cannot work together are refused at start-up, saying which and why."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer
from pydantic import ValidationError

from shared.invalid_settings import describe_invalid
from shared.kafka.config import producer_config
from shared.settings import (
    MAX_DURATION_S,
    MAX_IDEMPOTENCY_KEY_TTL_S,
    MAX_POLL_TIMEOUT_S,
    MAX_RETRY_ATTEMPTS,
    InvalidSettings,
    Settings,
    misspelt_settings,
    read_settings,
)
from tests.python_snippets import run_python


def test_the_defaults_are_consistent():
    settings = Settings()

    # 0.5 s for room in a full local queue, 2 s for the broker, 1 s for the reports.
    assert settings.publish_wait_s == 3.5
    assert settings.publish_wait_s < settings.db_statement_timeout_ms / 1000


def test_a_pool_whose_minimum_is_over_its_maximum_is_refused():
    with pytest.raises(ValidationError, match=r"DB_POOL_MIN_SIZE \(5\) is over DB_POOL_MAX_SIZE"):
        Settings(db_pool_min_size=5, db_pool_max_size=2)


def test_a_pool_of_a_fixed_size_is_accepted():
    settings = Settings(db_pool_min_size=10, db_pool_max_size=10)

    assert (settings.db_pool_min_size, settings.db_pool_max_size) == (10, 10)


def test_a_publish_that_may_wait_exactly_the_statement_timeout_is_refused_and_one_below_it_not():
    # A wait equal to the timeout loses the race as often as not: the UPDATE behind the
    # relay's lock must time out strictly after the publish gives up.
    with pytest.raises(ValidationError, match=r"\(5 s\) must stay below"):
        Settings(kafka_publish_timeout_s=3.5, db_statement_timeout_ms=5000)

    assert Settings(kafka_publish_timeout_s=3.499, db_statement_timeout_ms=5000).publish_wait_s < 5


def test_a_publish_that_may_outwait_the_statement_timeout_is_refused():
    # The relay holds row locks while it publishes; the consumer's UPDATE waits on them.
    with pytest.raises(ValidationError, match="must stay below DB_STATEMENT_TIMEOUT_MS"):
        Settings(kafka_publish_timeout_s=4.5, db_statement_timeout_ms=5000)


def test_the_wait_for_a_full_local_queue_counts_against_the_statement_timeout():
    # 3.6 s for the broker and 1 s for the reports fit in 5 s; the 0.5 s a publish may
    # first wait for room in its local queue does not.
    with pytest.raises(ValidationError, match=r"up to 0\.5 s for a full local queue"):
        Settings(kafka_publish_timeout_s=3.6, db_statement_timeout_ms=5000)


def test_no_statement_timeout_allows_any_publish_timeout():
    assert Settings(kafka_publish_timeout_s=30, db_statement_timeout_ms=0).publish_wait_s == 31.5


@pytest.mark.parametrize("timeout_s", [0.0001, 0.001, 0.0029])
def test_a_publish_timeout_not_over_the_producers_linger_is_refused(timeout_s):
    with pytest.raises(ValidationError, match=r"KAFKA_PUBLISH_TIMEOUT_S .* at least 0\.003"):
        Settings(kafka_publish_timeout_s=timeout_s)


def test_the_shortest_publish_timeout_accepted_builds_a_producer():
    # librdkafka checks message.timeout.ms against linger.ms when the producer is made.
    settings = Settings(kafka_publish_timeout_s=0.003)

    Producer(producer_config(settings)).flush(0)


@pytest.mark.parametrize("name", ["db_connect_timeout_s", "outbox_grace_s", "retry_base_delay_s"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_duration_of_inf_or_nan_is_refused(name, value):
    # pydantic reads both as floats; an infinite wait hangs, or fails far from its setting.
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})


DURATIONS = {
    "db_connect_timeout_s": MAX_DURATION_S,
    "db_statement_timeout_ms": MAX_DURATION_S * 1000,
    "kafka_publish_timeout_s": MAX_DURATION_S,
    # A stop is noticed between polls, within the shutdown budget.
    "consumer_poll_timeout_s": MAX_POLL_TIMEOUT_S,
    "retry_base_delay_s": MAX_DURATION_S,
    "outbox_relay_interval_s": MAX_DURATION_S,
    "outbox_grace_s": MAX_DURATION_S,
    "retry_after_s": MAX_DURATION_S,
    "idempotency_key_ttl_s": MAX_IDEMPOTENCY_KEY_TTL_S,
}


@pytest.mark.parametrize(("name", "longest"), DURATIONS.items())
def test_a_duration_past_its_longest_is_refused_by_name(name, longest):
    # No statement timeout, which a long publish timeout would otherwise have to stay under.
    Settings(**{"db_statement_timeout_ms": 0, name: longest})
    with pytest.raises(ValidationError, match=name):
        Settings(**{"db_statement_timeout_ms": 0, name: longest + 1})


def test_the_longest_publish_timeout_accepted_builds_a_producer():
    # Past librdkafka's 32-bit message.timeout.ms, every publish used to fail instead.
    settings = Settings(kafka_publish_timeout_s=MAX_DURATION_S, db_statement_timeout_ms=0)

    Producer(producer_config(settings)).flush(0)


def test_the_longest_retry_schedule_accepted_can_be_waited_out():
    settings = Settings(retry_base_delay_s=MAX_DURATION_S, retry_max_attempts=MAX_RETRY_ATTEMPTS)

    # Each wait is one a threading.Event can be asked to wait for.
    assert max(settings.retry_delays()) < threading.TIMEOUT_MAX
    with pytest.raises(ValidationError, match="retry_max_attempts"):
        Settings(retry_max_attempts=MAX_RETRY_ATTEMPTS + 1)


@pytest.mark.parametrize("keys", ["clé", "good,tab\tkey", "bell\x07"])
def test_api_keys_a_header_cannot_carry_are_refused(keys):
    # A server hands header values over as Latin-1: such a key would never match.
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys=keys)
    # Named once: describe_invalid puts the setting's name before its validator's message.
    assert describe_invalid(refused.value) == ("API_KEYS: only printable ASCII may be given")


def test_an_api_key_with_a_space_inside_is_kept_whole():
    assert Settings(api_keys=" a key , other ").api_key_list == ["a key", "other"]


def test_api_keys_of_separators_alone_are_refused():
    # Read as configured, it would leave the API open.
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys=" , ")
    assert describe_invalid(refused.value) == (
        "API_KEYS: only separators, no key; leave it empty for none"
    )


def test_no_api_keys_leave_the_api_open_on_purpose():
    assert Settings(api_keys="").api_key_list == []


def test_the_default_model_is_found_from_any_working_directory(tmp_path):
    # `make test` builds the default model first; a function started from another
    # directory used to look for it under that directory and answer 503.
    script = (
        "from shared.model import ModelLoader; from shared.settings import Settings;"
        " print(ModelLoader(Settings().model_uri).get().version)"
    )
    loaded = run_python(script, cwd=tmp_path)

    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:p%zzS3cret@db/moderation",
        # A quote in the password, which libpq's own quotes around it would not hide.
        'postgresql://app:p%zz"S3cret@db/m',
        'postgresql://app:S3"cret@[::1/m',
        'host=db password=x"S3cret z"w q',
        "postgresql://app:p%ffS3cret@db/m",  # a byte that is not UTF-8
    ],
)
def test_a_database_url_libpq_cannot_read_is_refused_without_quoting_it(url):
    with pytest.raises(InvalidSettings) as refused:
        read_settings(database_url=url)

    assert "DATABASE_URL: not a connection string libpq can read" in str(refused.value)
    assert "S3cret" not in str(refused.value)
    assert "cret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:S3cret@db:99999999/moderation",
        "postgresql://app@a:5432,b:0/moderation",
        "host=db port=five dbname=moderation",
    ],
)
def test_a_database_port_libpq_would_refuse_only_at_connect_is_refused_at_start(url):
    with pytest.raises(InvalidSettings, match="DATABASE_URL: the port is not a number from 1"):
        read_settings(database_url=url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # libpq ends the host at the /, and reads the password's start as the port.
        ("postgresql://app:s3cr/etPW@db.internal:5432/moderation", "the port is not a number"),
        # libpq ends the password at the first @: the rest, @ and all, is the host.
        ("postgresql://app:Pa55@word@db.internal:5432/moderation", "the host holds an @"),
        # A password opening with a / (or a port and a /): libpq ends the authority there,
        # so the host is the user, and the rest, password and all, the database name.
        ("postgresql://app:/s3crPW@db.internal:5432/moderation", "the database name holds an @"),
        ("postgresql://app:4821/s3crPW@db.internal/moderation", "the database name holds an @"),
        ("postgresql://app:/s3#crPW@db.internal:5432/moderation", "the database name holds an @"),
    ],
)
def test_a_password_with_an_unescaped_slash_or_at_is_refused_without_quoting_any_of_it(
    url, problem
):
    with pytest.raises(InvalidSettings) as refused:
        read_settings(database_url=url)

    message = str(refused.value)
    assert f"DATABASE_URL: {problem}" in message
    assert "percent-encoded" in message
    assert not any(piece in message for piece in ("s3cr", "etPW", "Pa55", "word@", "crPW"))


def test_database_urls_with_several_hosts_or_a_socket_keep_their_ports():
    for url in (
        "postgresql://app@a:5432,b/moderation",
        "postgresql:///moderation?host=/tmp",
        "host=@pgsock dbname=moderation",  # an abstract Unix socket
    ):
        assert read_settings(database_url=url).database_url == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:p%40ss@db:5432/moderation?options=-c%20search_path%3Dmod",
        "postgresql://app@db/mod%40eration?sslpassword=key@pass",  # @ encoded, or in the query
        "postgresql://app@db.internal?sslrootcert=/certs/a@b.crt",  # a query and no path
        "host=db dbname=moderation user=app",
    ],
)
def test_urls_and_key_value_connection_strings_are_taken(url):
    assert read_settings(database_url=url).database_url == url


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka_consumer_group": ""},  # librdkafka would abort the process
        {"kafka_moderation_topic": ""},
        {"kafka_dlq_topic": "dead letters"},
        {"kafka_moderation_topic": "x" * 250},
        {"kafka_moderation_topic": "."},
        {"kafka_dlq_topic": ".."},
    ],
)
def test_kafka_names_kafka_would_refuse_are_refused_by_name(overrides):
    (name,) = overrides

    with pytest.raises(InvalidSettings, match=name.upper()):
        read_settings(**overrides)


@pytest.mark.parametrize("dlq", ["moderation", "moderation.x", "moderation_x"])
def test_a_dead_letter_topic_that_is_the_moderation_topic_is_refused(dlq):
    # moderation.x and moderation_x are one topic to Kafka's collision check.
    with pytest.raises(InvalidSettings, match=r"KAFKA_DLQ_TOPIC .* must be another topic"):
        read_settings(kafka_moderation_topic=dlq.replace(".", "_"), kafka_dlq_topic=dlq)


@pytest.mark.parametrize(
    ("name", "largest"),
    [
        ("consumer_batch_size", 1_000_000),
        ("outbox_batch_size", 1_000_000),
        ("kafka_moderation_partitions", 2**31 - 1),
        ("kafka_replication_factor", 2**15 - 1),
    ],
)
def test_counts_past_what_kafka_or_postgresql_take_are_refused_by_name(name, largest):
    assert getattr(read_settings(**{name: largest}), name) == largest
    with pytest.raises(InvalidSettings, match=f"{name.upper()}: .*, got {largest + 1}"):
        read_settings(**{name: largest + 1})


@pytest.mark.parametrize(
    "servers",
    ["", " , ", "kafka://127.0.0.1:9092", "127.0.0.1:99999", "host:port", "a:9092 b:9092"],
)
def test_bootstrap_servers_librdkafka_would_misread_are_refused(servers):
    expected = r"KAFKA_BOOTSTRAP_SERVERS: .*expected host:port"
    with pytest.raises(InvalidSettings, match=expected) as refused:
        read_settings(kafka_bootstrap_servers=servers)

    assert str(refused.value).count("got") == 1  # the value is quoted once


@pytest.mark.parametrize(
    ("servers", "taken"),
    [
        ("127.0.0.1:9092", "127.0.0.1:9092"),
        ("a:9092, b:9093", "a:9092,b:9093"),
        ("a:9092,,b:9093,", "a:9092,b:9093"),  # librdkafka skips empty entries too
        ("PLAINTEXT://broker-1.example.com:9094", "PLAINTEXT://broker-1.example.com:9094"),
        ("[::1]:9092", "[::1]:9092"),
        ("k", "k"),
    ],
)
def test_bootstrap_servers_in_every_form_librdkafka_reads_are_taken(servers, taken):
    assert read_settings(kafka_bootstrap_servers=servers).kafka_bootstrap_servers == taken


def test_an_invalid_setting_is_quoted_unless_it_may_hold_a_secret():
    with pytest.raises(InvalidSettings) as refused:
        read_settings(db_pool_max_size=-1, api_keys="clé-S3cret")

    assert "DB_POOL_MAX_SIZE: Input should be greater than or equal to 1, got -1" in str(
        refused.value
    )
    assert "API_KEYS" in str(refused.value) and "S3cret" not in str(refused.value)


def test_a_check_across_settings_is_its_own_message_naming_them():
    with pytest.raises(InvalidSettings) as refused:
        read_settings(db_pool_min_size=11, db_pool_max_size=10)

    assert (
        str(refused.value) == "invalid setting: DB_POOL_MIN_SIZE (11) is over DB_POOL_MAX_SIZE (10)"
    )


def test_variables_named_almost_like_a_setting_are_taken_for_misspellings_of_it():
    not_ours = [
        "DATABASE_URL",  # a setting itself
        "PGPORT",  # libpq's
        "KAFKA_TOPIC",
        "KAFKA_NUM_PARTITIONS",  # a Kafka image's own
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
        "KAFKA_BOOTSTRAP_SERVICE_HOST",  # Kubernetes', for a service `kafka-bootstrap`
        "KAFKA_BOOTSTRAP_PORT_9092_TCP",
        "CONNECT_TIMEOUT",
        "HOSTNAME",
        "HOME",
    ]
    environ = dict.fromkeys(["DATABSE_URL", "LOGLEVEL", "MODEL_URL", "KAFKA_DLQ_TPOIC", *not_ours])

    assert misspelt_settings(environ) == {
        "DATABSE_URL": "DATABASE_URL",
        "LOGLEVEL": "LOG_LEVEL",
        "MODEL_URL": "MODEL_URI",
        "KAFKA_DLQ_TPOIC": "KAFKA_DLQ_TOPIC",
    }


def test_a_process_reading_its_settings_warns_of_a_misspelt_one_once():
    result = run_python(
        "from shared.settings import get_settings; get_settings(); get_settings()",
        env={"DATABSE_URL": "postgresql://elsewhere/db"},
    )

    assert result.returncode == 0, result.stderr
    warning = "DATABSE_URL is set, and no setting has that name: did you mean DATABASE_URL?"
    assert result.stderr.splitlines().count(warning) == 1, result.stderr


def test_the_warning_comes_even_when_the_misspelling_is_why_the_settings_fail():
    # DB_POOL_MAXSIZE meant to raise the maximum over the minimum; read as nothing.
    result = run_python(
        "from shared.settings import get_settings\n"
        "for _ in range(2):\n"
        "    try: get_settings()\n"
        "    except ValueError: pass",
        env={"DB_POOL_MIN_SIZE": "20", "DB_POOL_MAXSIZE": "30"},
    )

    warning = "DB_POOL_MAXSIZE is set, and no setting has that name: did you mean DB_POOL_MAX_SIZE?"
    assert result.stderr.splitlines().count(warning) == 1, result.stderr


def test_the_repr_of_the_settings_shows_neither_the_database_password_nor_the_api_keys():
    settings = Settings(
        database_url="postgresql://moderation:db-secret-1@db/moderation",
        api_keys="api-secret-1,api-secret-2",
    )

    shown = repr(settings)

    assert "secret" not in shown
    assert "kafka_bootstrap_servers" in shown  # the rest is still there
