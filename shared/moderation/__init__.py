"""The moderation service's own logic, free of HTTP and of Kafka's client: accepting and
answering tasks (`tasks`, `predictions`), a consumer batch's life (`batch`, `batch_work`,
`consumed_batch`, `scoring`, `dead_letters`), the outbox and its relay (`outbox`,
`relay`), and the operator's one-shot commands on the database (`prune`, `republish`,
`operator_command`)."""
