"""The tamper-evident log (RFC 6962 / 9162 Merkle tree, C2SP signed checkpoints) behind the audit trail
and the data-point ledger."""

from dataspace.tlog.export import VerifyReport, export_lines, verify_export
from dataspace.tlog.log import (
    LOGS,
    ConsistencyProof,
    InclusionProof,
    NewEntry,
    StoredCheckpoint,
    append,
    consistency_proof,
    inclusion_proof,
    latest_checkpoint,
    sequence,
    verifier_keys,
)
from dataspace.tlog.merkle import ProofError, verify_consistency, verify_inclusion
from dataspace.tlog.note import Checkpoint, CheckpointError, open_checkpoint

__all__ = [
    "LOGS",
    "Checkpoint",
    "CheckpointError",
    "ConsistencyProof",
    "InclusionProof",
    "NewEntry",
    "ProofError",
    "StoredCheckpoint",
    "VerifyReport",
    "append",
    "consistency_proof",
    "export_lines",
    "inclusion_proof",
    "latest_checkpoint",
    "open_checkpoint",
    "sequence",
    "verifier_keys",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
]
