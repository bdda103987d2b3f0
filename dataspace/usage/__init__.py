"""The data-point ledger: one tamper-evident entry per use (a job reading a subject's data, naming every field
it read), and the customer's "how my data was used" view."""

from dataspace.usage.service import (
    USAGE_LOG,
    FieldUsage,
    UsageEntry,
    UsageRecord,
    record_usage,
    usage_for_subject,
    usage_proof,
)

__all__ = [
    "USAGE_LOG",
    "FieldUsage",
    "UsageEntry",
    "UsageRecord",
    "record_usage",
    "usage_for_subject",
    "usage_proof",
]
