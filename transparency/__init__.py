"""Verifying the Dataspace's transparency logs, offline and without the server: RFC 6962 / 9162 Merkle
proofs, C2SP signed-note checkpoints, C2SP witness cosignatures with a quorum policy, and signed log
exports. Pure (hashlib, pynacl); imports nothing of the server, so the SDK, auditors and witnesses use the
very code the server signs with.

Errors (``transparency.errors``): ``TransparencyError``, with ``ProofError`` and ``CheckpointError``.
"""

from transparency.cosign import Cosigner, WitnessPolicy, open_cosigned
from transparency.errors import CheckpointError, ProofError, TransparencyError
from transparency.export import VerifyReport, verify_export
from transparency.merkle import verify_consistency, verify_inclusion
from transparency.note import Checkpoint, open_checkpoint

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Cosigner",
    "ProofError",
    "TransparencyError",
    "VerifyReport",
    "WitnessPolicy",
    "open_checkpoint",
    "open_cosigned",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
]
