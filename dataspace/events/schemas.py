"""The event contracts: one pydantic model per (type, version); their JSON Schemas are what we publish.

An event's ``id`` is a UUID that never changes across retries, so a receiver deduplicates by it. Payloads
carry ids, labels and counts; never customer values. Subjects appear to a partner only as that partner's
pseudonym.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_DIR = Path(__file__).with_name("schemas")
SCHEMA_BASE = "https://dataspace.example/events"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentChanged(Payload):
    """A consent change, for the operator's own consumers; NEVER delivered to a partner (one delivery per
    change would give the partner the exact number of changes: population changes reach partners only as
    DP numbers). It carries no customer identifier."""

    field: str | None = Field(description="Catalog field key, or null for a whole dimension")
    dimension: str | None = None
    purpose: str
    partner: str | None = Field(description="Partner key, or null when the grant names a partner category")
    partner_category: str | None = None
    valid_until: str | None = Field(default=None, description="RFC 3339 UTC, or null until withdrawn")


# The partner-visible reasons a job can end with (``dataspace.jobs.outcomes.REASONS``; a test keeps them equal).
JobReason = Literal[
    "model_failed",
    "output_invalid",
    "timeout",
    "resource_limit",
    "cancelled",
    "not_runnable",
    "sandbox_unavailable",
    "internal",
]


class JobCompleted(Payload):
    """No counts: exact numbers of decided subjects would tell the partner how many customers consented;
    partners learn numbers only through differentially private releases. Dated and delivered at the job's
    release tick, not when it really ended."""

    job_id: int
    contract_id: int
    status: Literal["succeeded", "failed", "cancelled"]
    reason: JobReason | None = Field(default=None, description="Why a job did not succeed: a fixed, number-free code.")


class DecisionReady(Payload):
    """The job's aggregate results can be requested (each release is charged to the privacy budget)."""

    job_id: int
    results_url: str


class PointsEarned(Payload):
    transaction_id: int
    kind: Literal["authorization_bonus", "usage"]
    points: int = Field(gt=0)
    reference: str


class RewardRedeemed(Payload):
    redemption_id: int
    reward: str
    points: int = Field(gt=0)


class ContractDecided(Payload):
    contract_id: int
    status: Literal["approved", "rejected", "revoked"]


# (type, version) -> payload model. A new version is a new entry; old ones stay published.
CONTRACTS: dict[tuple[str, int], type[Payload]] = {
    ("consent.granted", 1): ConsentChanged,
    ("consent.withdrawn", 1): ConsentChanged,
    ("consent.expired", 1): ConsentChanged,
    ("job.completed", 1): JobCompleted,
    ("decision.ready", 1): DecisionReady,
    ("points.earned", 1): PointsEarned,
    ("reward.redeemed", 1): RewardRedeemed,
    ("contract.decided", 1): ContractDecided,
}

# What partners may subscribe to and receive: their jobs and contracts. No per-change consent events (see
# ``ConsentChanged``), nothing about individual customers' points.
PARTNER_EVENT_TYPES = frozenset({"job.completed", "decision.ready", "contract.decided"})

# Delivery promises, published with the schemas.
DELIVERY = {
    "semantics": "at-least-once; deduplicate by event id",
    "latency": "dispatched within 5 seconds of the change committing; job.completed and decision.ready are "
    "dated and dispatched at the job's release tick (see the README: what a partner can observe)",
    "retries": "exponential backoff from 2 s, doubling, capped at 1 h; dead-lettered after 8 attempts",
    "signature": "Ed25519 over '<timestamp>.<body>'; header Dataspace-Signature: t=<unix>,kid=<kid>,sig=<b64>",
}


def envelope_schema(event_type: str, version: int) -> dict[str, Any]:
    payload = CONTRACTS[(event_type, version)].model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/{event_type}/v{version}.json",
        "title": f"{event_type} v{version}",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "type", "version", "occurred_at", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "Stable across retries; dedupe by it."},
            "type": {"const": event_type},
            "version": {"const": version},
            "occurred_at": {"type": "string", "format": "date-time"},
            "data": payload,
        },
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    return {f"{t}/v{v}": envelope_schema(t, v) for t, v in sorted(CONTRACTS)}


def write_schema_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate the published schema files (a test checks the files match the models)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in all_schemas().items():
        path = directory / (name.replace("/", ".") + ".json")
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_schema_files():
        print(p)
