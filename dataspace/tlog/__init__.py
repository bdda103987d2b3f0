"""The tamper-evident log (RFC 6962 / 9162 Merkle tree, C2SP signed checkpoints) behind the audit trail
and the data-point ledger: its storage, sequencing, proofs from the database and exports. The pure
verification code (Merkle proofs, signed notes, cosignatures, offline export checks) is the top-level
``transparency`` package, which partners and auditors run without the server."""

from dataspace.tlog.export import export_lines
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

__all__ = [
    "LOGS",
    "ConsistencyProof",
    "InclusionProof",
    "NewEntry",
    "StoredCheckpoint",
    "append",
    "consistency_proof",
    "export_lines",
    "inclusion_proof",
    "latest_checkpoint",
    "sequence",
    "verifier_keys",
]
