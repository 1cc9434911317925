"""Local infrastructure without Docker: a real Apache Kafka broker and PostgreSQL server.

`KafkaBroker` (infra.kafka_broker) and `PostgresServer` (infra.postgres_server)
are used by the test fixtures; `python -m infra up|down` runs both for development.
"""
