"""Typed results: one frozen dataclass per kind of answer, with the fields the server's OpenAPI document
declares for it (generated from the ``*Read`` schemas and kept in step by ``tests/unit/clients``).

``_load(cls, body)`` builds one from decoded JSON: nested results become their dataclasses, fields the server
added since this SDK was written are ignored, a missing required field raises ``UnexpectedResponse``.
Timestamps stay ISO 8601 strings, as the server sends them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from clients.sdk._exceptions import DataspaceClientError

T = TypeVar("T")


class UnexpectedResponse(DataspaceClientError):
    """An answer without a field this SDK needs (a server older than the SDK, or not a Dataspace server)."""


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _convert(next(a for a in typing.get_args(tp) if a is not type(None)), value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _load(tp, value)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _load(cls: type[T], body: Any) -> T:
    """``cls`` from a decoded JSON object (see the module's docstring)."""
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"expected a JSON object for {cls.__name__}, got {type(body).__name__}")
    kind: Any = cls  # a dataclass (typing has no bound for "any dataclass type")
    hints = _hints(kind)
    values = {f.name: _convert(hints[f.name], body[f.name]) for f in dataclasses.fields(kind) if f.name in body}
    try:
        return cls(**values)
    except TypeError as exc:
        raise UnexpectedResponse(f"the server's {cls.__name__} lacks a field: {exc}") from None


def _load_list(cls: type[T], body: Any) -> list[T]:
    if not isinstance(body, list):
        raise UnexpectedResponse(f"expected a JSON array of {cls.__name__}, got {type(body).__name__}")
    return [_load(cls, item) for item in body]


@dataclass(frozen=True, kw_only=True)
class Contract:
    """A data contract, as its partner sees it."""

    id: int
    purpose: str
    title: str
    features: list[dict[str, Any]]
    decision_schema: dict[str, Any]
    k_min: int
    epsilon_per_release: float
    valid_from: str
    valid_until: str
    status: str
    sensitive: bool
    required_approvals: int
    created_at: str
    decision_service: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class StewardContract(Contract):
    """A data contract as a steward sees it: who proposed it, who approved it, the decision."""

    partner_id: int
    partner_key: str = ""
    proposed_by: str
    approvals: list[str]
    decided_by: str | None
    decision_reason: str


@dataclass(frozen=True, kw_only=True)
class Model:
    """An uploaded model and the result of its signature check."""

    id: int
    contract_id: int
    kind: str
    sha256: str
    size_bytes: int
    status: str
    signature: dict[str, Any]
    created_at: str


@dataclass(frozen=True, kw_only=True)
class ModelReview:
    """A model for review: the checks it passed at upload, its approvals and, for Python, its source."""

    model: Model
    partner_key: str
    uploaded_by: str
    approvals: list[str]
    required_approvals: int
    source: str | None
    checks: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Job:
    """What the partner sees of a job: ``queued`` until its outcome shows on the
    release schedule, then the final status with, for a failure, a number-free reason code; times are multiples of
    the published tick. Exact counts (eligible, suppressed, decided), the failure's details, the start time and
    the attempt count are for the operator; the partner gets DP aggregates."""

    id: int
    contract_id: int
    model_id: int
    status: str
    error: str | None
    created_at: str
    finished_at: str | None


@dataclass(frozen=True, kw_only=True)
class QueuedJob:
    """A job as the operator sees it: its true state, shards done of total, the failure's details."""

    id: int
    partner_key: str
    contract_id: int
    model_id: int
    status: str
    attempt: int
    shards_total: int
    shards_done: int
    error: str | None
    error_detail: str | None
    submitted_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True, kw_only=True)
class Release:
    """The differentially private aggregate a succeeded job released."""

    job_id: int
    mechanism: str
    epsilon: float
    result: dict[str, Any]
    noise: dict[str, float] = field(default_factory=dict)
    created_at: str


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A privacy budget (epsilon) for one purpose."""

    purpose: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float


@dataclass(frozen=True, kw_only=True)
class PartnerBudget:
    """A partner's privacy budget for one purpose, as a steward sees it."""

    partner_key: str
    purpose: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    updated_at: str


@dataclass(frozen=True, kw_only=True)
class CatalogField:
    """A field of the data catalog."""

    key: str
    dimension: str
    label: str
    description: str
    collection_purpose: str
    used_for: list[str]
    storage_location: str
    sharing_scope: str
    retention_days: int
    sensitivity: str
    points_value: int
    data_type: str
    constraints: dict[str, Any]
    transforms: dict[str, dict[str, Any]]
    shared_as: dict[str, str]
    i18n: dict[str, Any]
    status: str
    version: int


@dataclass(frozen=True, kw_only=True)
class Reward:
    """A reward of the catalog."""

    key: str
    name: str
    description: str
    cost: int
    stock: int
    active: bool
    i18n: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Redemption:
    """The stored response of a redemption; a retry with the same Idempotency-Key returns it verbatim."""

    id: int
    reward_key: str
    reward_name: str
    quantity: int
    cost: int
    status: str
    transaction_id: int
    balance_after: int
    created_at: str
    voucher_code: str | None = None


@dataclass(frozen=True, kw_only=True)
class PointsSummary:
    """A customer's points: balance, tier, recent postings, points expiring soon."""

    balance: int
    lifetime_earned: int
    tier: Tier
    tiers: list[TierLevel] = field(default_factory=list)
    recent: list[Posting]
    expiring_soon: list[ExpiringLot]


@dataclass(frozen=True, kw_only=True)
class Tier:
    """The customer's tier now."""

    name: str
    lifetime_earned: int
    next_tier: str | None
    points_to_next_tier: int | None


@dataclass(frozen=True, kw_only=True)
class TierLevel:
    """One tier of the programme."""

    name: str
    lifetime_points: int


@dataclass(frozen=True, kw_only=True)
class Posting:
    """One line of a customer's statement: signed from the customer's point of view."""

    id: int
    transaction_id: int
    kind: str
    amount: int
    reason: str
    reference: str | None
    created_at: str


@dataclass(frozen=True, kw_only=True)
class ExpiringLot:
    """Points that expire soon."""

    remaining: int
    expires_at: str


@dataclass(frozen=True, kw_only=True)
class Declaration:
    """The columns of a partner's own data a contract brings, and the identifier they are matched on."""

    contract_id: int
    kind: str
    columns: list[dict[str, Any]]
    declared_by: str
    declared_at: str


@dataclass(frozen=True, kw_only=True)
class LinkageRun:
    """A run as its partner sees it: never the exact number of matches, only the DP count once linked."""

    id: int
    contract_id: int
    kind: str
    status: str
    public_key: str
    sent: int
    columns: list[dict[str, Any]]
    noisy_matched: int | None


@dataclass(frozen=True, kw_only=True)
class ConsentChange:
    """The result of a grant or a withdrawal: the grant, its receipt, whether anything changed."""

    grant: Grant
    receipt_id: str
    changed: bool


@dataclass(frozen=True, kw_only=True)
class Grant:
    """A consent grant."""

    id: int
    field: str | None
    dimension: str | None
    purpose: str
    partner: str | None
    partner_category: str | None
    granularity: str
    valid_from: str
    valid_until: str | None
    state: str
    withdrawn_at: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True, kw_only=True)
class ConsentEvent:
    """One event of a customer's consent history."""

    id: int
    grant_id: int
    kind: str
    state: str
    at: str
    valid_from: str
    valid_until: str | None
    granularity: str
    receipt_id: str
    grant_state: str
    field: str | None = None
    dimension: str | None = None
    purpose: str
    partner: str | None = None
    partner_category: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConsentMatrix:
    """A customer's consent matrix: fields, purposes, partners, grants and one cell per field x purpose x partner."""

    at: str
    fields: list[MatrixField]
    purposes: list[MatrixPurpose]
    partners: list[dict[str, Any]]
    grants: list[Grant]
    cells: list[MatrixCell]


@dataclass(frozen=True, kw_only=True)
class MatrixField:
    """A field of the consent matrix, with its data-manual text."""

    key: str
    dimension: str
    label: str
    description: str
    collection_purpose: str
    used_for: list[str]
    storage_location: str
    sharing_scope: str
    retention_days: int
    sensitivity: str
    points_value: int
    i18n: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class MatrixPurpose:
    """A purpose of the consent matrix."""

    key: str
    label: str
    description: str
    dpv_term: str
    lawful_basis: str
    i18n: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MatrixCell:
    """Whether one field x purpose x partner is permitted now, and by which grants."""

    field: str
    purpose: str
    partner: str
    permitted: bool
    grant_ids: list[int]


@dataclass(frozen=True, kw_only=True)
class Usage:
    """How a customer's data was used, per field."""

    fields: list[FieldUsage]


@dataclass(frozen=True, kw_only=True)
class FieldUsage:
    """The uses of one field."""

    field: str
    uses: list[DataUse]


@dataclass(frozen=True, kw_only=True)
class DataUse:
    """One use of a field by a job."""

    partner: str
    purpose: str
    time: str
    result: str | None
    job_id: int | None
    decision_id: int | None = None
    index: int | None


@dataclass(frozen=True, kw_only=True)
class UsageProof:
    """An inclusion proof of one usage-log entry against a signed checkpoint."""

    log: str
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]
    checkpoint: str
    verifier_keys: list[str]


@dataclass(frozen=True, kw_only=True)
class MyLinkage:
    """Partners that may link their own records about the customer, and those that did."""

    offers: list[dict[str, Any]]
    links: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class ConsentStats:
    """Authorization-rate series per field x purpose x partner."""

    since: str
    until: str
    step_seconds: int
    series: list[StatsPoint]


@dataclass(frozen=True, kw_only=True)
class StatsPoint:
    """One point of an authorization-rate series."""

    at: str
    field: str
    purpose: str
    partner: str
    permitted: int
    subjects: int
    rate: float


# --- answers the OpenAPI document describes as free-form objects ---------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SignedCheckpoint:
    """A log's latest signed checkpoint (C2SP signed note, with the witnesses' cosignatures gathered so far),
    the operator's verifier keys and the witness policy and status."""

    log: str
    size: int
    root_hash: str
    note: str
    verifier_keys: list[str]
    witness_quorum: int | None = None
    witness_keys: list[str] = field(default_factory=list)
    witnesses: list[dict[str, Any]] = field(default_factory=list)
    witness_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class InclusionProof:
    """An RFC 9162 inclusion proof (hex hashes from the leaf up) with the entry's exact canonical bytes."""

    log: str
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]
    entry: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConsistencyProof:
    """An RFC 9162 consistency proof between two tree sizes (hex hashes)."""

    log: str
    first: int
    second: int
    hashes: list[str]


@dataclass(frozen=True, kw_only=True)
class GossipVerdict:
    """Is a checkpoint someone was shown part of the log: ``consistent``, ``split-view`` or ``ahead``."""

    log: str
    size: int
    verdict: str
    current: str | None = None


@dataclass(frozen=True, kw_only=True)
class DataRequest:
    """An access or erasure request: who asked, when, when completed, the outcome."""

    id: int
    subject_id: int
    kind: str
    requested_by: str
    requested_at: str
    completed_at: str | None = None
    outcome: str | None = None


# --- answers the SDK composes ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SubmissionCost:
    """What submitting a job with a model will spend, before spending it: ``epsilon`` (the contract's
    ``epsilon_per_release``, paid at submission whatever the outcome) from the ``purpose``'s budget, of which
    ``remaining`` is left now (None when the partner has no budget for it yet)."""

    model_id: int
    contract_id: int
    purpose: str
    epsilon: float
    remaining: float | None


@dataclass(frozen=True, kw_only=True)
class LinkageResult(LinkageRun):
    """A finished linkage run, plus ``skipped``: records whose identifier did not normalise or repeated another."""

    skipped: int = 0


__all__ = [
    "Budget",
    "CatalogField",
    "ConsentChange",
    "ConsentEvent",
    "ConsentMatrix",
    "ConsentStats",
    "ConsistencyProof",
    "Contract",
    "DataRequest",
    "DataUse",
    "Declaration",
    "ExpiringLot",
    "FieldUsage",
    "GossipVerdict",
    "Grant",
    "InclusionProof",
    "Job",
    "LinkageResult",
    "LinkageRun",
    "MatrixCell",
    "MatrixField",
    "MatrixPurpose",
    "Model",
    "ModelReview",
    "MyLinkage",
    "PartnerBudget",
    "PointsSummary",
    "Posting",
    "QueuedJob",
    "Redemption",
    "Release",
    "Reward",
    "SignedCheckpoint",
    "StatsPoint",
    "StewardContract",
    "SubmissionCost",
    "Tier",
    "TierLevel",
    "UnexpectedResponse",
    "Usage",
    "UsageProof",
]
