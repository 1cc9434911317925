"""Kafka: producer and consumer configuration, the topics, the message and DLQ envelopes."""
