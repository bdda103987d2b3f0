"""The data-point ledger: one tamper-evident entry per (job, subject, field) used, and the customer's
"how my data was used" view."""

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
