"""Errors of the offline verifiers. Both say nothing about why a check failed, on purpose: a forger learns
nothing from the message.

TransparencyError
├── ProofError          a Merkle inclusion or consistency proof does not verify
└── CheckpointError     a signed checkpoint, its signature, a verifier key or a cosignature does not verify
"""

from __future__ import annotations


class TransparencyError(Exception):
    """Base of every error this package raises."""


class ProofError(TransparencyError):
    """A proof does not verify (one uninformative error for every reason)."""


class CheckpointError(TransparencyError):
    """The checkpoint or its signature is not valid (deliberately uninformative)."""

    def __init__(self) -> None:
        super().__init__("checkpoint signature verification failed")
