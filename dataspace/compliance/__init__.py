"""Compliance: records of processing (GDPR Art. 30), data-subject access and erasure, the request log."""
