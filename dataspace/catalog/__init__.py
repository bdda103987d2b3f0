"""The data catalog: the customer-facing data manual of every field, plus the purpose taxonomy."""
