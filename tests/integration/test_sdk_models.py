"""The SDK's result dataclasses (clients.sdk.models) declare exactly the fields of the server's OpenAPI schemas
they stand for, required where the schema requires them: a field added to or dropped from a ``*Read`` schema
fails here until the SDK follows."""

from __future__ import annotations

import dataclasses

from clients.sdk import models
from dataspace.app import create_app
from dataspace.context import Context

SCHEMAS = {
    "Contract": "ContractRead",
    "StewardContract": "ContractStewardRead",
    "Model": "ModelRead",
    "ModelReview": "ModelReview",
    "Job": "JobRead",
    "QueuedJob": "QueuedJobRead",
    "Release": "ReleaseRead",
    "Budget": "BudgetRead",
    "PartnerBudget": "BudgetStewardRead",
    "CatalogField": "FieldRead",
    "Reward": "RewardRead",
    "Redemption": "RedemptionRead",
    "PointsSummary": "PointsSummary",
    "Tier": "TierRead",
    "TierLevel": "TierLevel",
    "Posting": "PostingRead",
    "ExpiringLot": "ExpiringLot",
    "Declaration": "DeclarationRead",
    "LinkageRun": "LinkageRead",
    "ConsentChange": "ChangeRead",
    "Grant": "GrantRead",
    "ConsentEvent": "EventRead",
    "ConsentMatrix": "MatrixRead",
    "MatrixField": "MatrixField",
    "MatrixPurpose": "MatrixPurpose",
    "MatrixCell": "MatrixCell",
    "Usage": "UsageRead",
    "FieldUsage": "FieldUsageRead",
    "DataUse": "UseRead",
    "UsageProof": "UsageProofRead",
    "MyLinkage": "MyLinkageRead",
    "ConsentStats": "StatsRead",
    "StatsPoint": "StatsPoint",
}


def test_result_dataclasses_match_their_schemas(ctx: Context) -> None:
    schemas = create_app(ctx).openapi()["components"]["schemas"]
    for cls, schema in SCHEMAS.items():
        fields = {f.name: f for f in dataclasses.fields(getattr(models, cls))}
        declared = schemas[schema]
        assert set(fields) == set(declared["properties"]), cls
        no_default = {
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        assert no_default == set(declared.get("required", [])), cls
