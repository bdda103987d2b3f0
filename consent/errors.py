"""Consent domain errors.

ConsentError
├── InvalidGrant       the requested grant, window or transition is not acceptable (caller's fault)
└── InvalidReceipt     a receipt failed verification (one uninformative error, whatever the cause)
"""

from __future__ import annotations


class ConsentError(Exception):
    """Base class of the consent domain's errors."""


class InvalidGrant(ConsentError):
    """A grant request or a state transition that the consent rules do not allow."""


class InvalidReceipt(ConsentError):
    """A consent receipt that does not verify. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("invalid consent receipt")
