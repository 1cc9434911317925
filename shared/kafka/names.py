"""The topic names Kafka accepts, for the settings that name topics and the records that
carry one alike."""

TOPIC_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
