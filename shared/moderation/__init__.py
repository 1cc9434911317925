"""The moderation logic that the HTTP functions and the consumer share."""
