"""Event contracts and delivery: versioned event schemas, a transactional outbox, signed webhooks."""
