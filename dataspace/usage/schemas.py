"""Response shapes of the customer's usage view ("how my data was used") and its inclusion proofs."""

from __future__ import annotations

from pydantic import BaseModel, Field


class UseRead(BaseModel):
    partner: str
    purpose: str
    time: str = Field(description="When the job read the data (ISO 8601, UTC).")
    result: str | None = Field(description="The decision the job produced for you, if any.")
    job_id: int | None = Field(description="The batch job that read the data; null for a real-time decision.")
    decision_id: int | None = Field(default=None, description="The real-time decision that read the data.")
    index: int | None = Field(description="The entry's index in the usage log; null until it is in the tree.")


class FieldUsageRead(BaseModel):
    field: str
    uses: list[UseRead]


class UsageRead(BaseModel):
    fields: list[FieldUsageRead]


class UsageProofRead(BaseModel):
    log: str
    index: int
    tree_size: int
    leaf_hash: str = Field(description="Hex SHA-256 leaf hash (RFC 9162).")
    hashes: list[str] = Field(description="The inclusion proof, hex hashes from the leaf up.")
    checkpoint: str = Field(description="The signed checkpoint (C2SP tlog-checkpoint) the proof is against.")
    verifier_keys: list[str]
