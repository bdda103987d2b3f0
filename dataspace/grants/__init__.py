"""Consent grants as data: the tables (``models``), their API shapes (``schemas``), their translation into the
``consent`` library's domain (``convert``), and what they permit (``evaluation``; ``eligibility``: which
subjects a job or a real-time decision may read). Every package that must ask "is this use permitted?" reads
this one; changing consents (granting, withdrawing, receipts) is ``dataspace.consents``, which sits above
the packages it notifies (webhooks, linkage)."""
