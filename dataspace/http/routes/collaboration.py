"""The collaboration dashboard over HTTP (``dataspace.events.dashboard``): the operator's exact view, the
partner's view (its own deliveries exactly, numbers about customers only as DP releases it pays for)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query

from dataspace.events import dashboard
from dataspace.http.deps import ReadSession, WriteSession, authorize
from dataspace.http.params import Id
from dataspace.principal import Principal

router = APIRouter(prefix="/v1", tags=["collaboration"])

BUCKET = Query("hour", pattern="^(minute|hour|day)$", description="Time-series bucket.")
SINCE = Query(None, description="Start of the range (default: 1 hour, 1 day or 30 days before `until`).")
UNTIL = Query(None, description="End of the range (default: now).")


@router.get("/steward/collaboration")
def steward_collaboration(
    *,
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    bucket: str = BUCKET,
    session: ReadSession,
    principal: Principal = Depends(authorize("collaboration", "read")),
) -> dict[str, Any]:
    """Per partner and contract, exactly: deliveries (success rate, latency p50/p99 against the requirement,
    retries, dead letters), real-time decisions made, and joint outcomes, each as a time series."""
    return dashboard.steward_view(session, dashboard.window(since=since, until=until, bucket=bucket))


@router.get("/partner/collaboration")
def partner_collaboration(
    *,
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    bucket: str = BUCKET,
    session: ReadSession,
    principal: Principal = Depends(authorize("partner.collaboration", "read")),
) -> dict[str, Any]:
    """The partner's side: deliveries to its endpoint and the events it produced (exact), and the DP
    releases of customers decided and joint outcomes under its decision contracts."""
    return dashboard.partner_view(
        session, dashboard.window(since=since, until=until, bucket=bucket), principal=principal
    )


@router.post("/partner/collaboration/{contract_id}/releases", status_code=201)
def release_collaboration(
    contract_id: Id,
    session: WriteSession,
    principal: Principal = Depends(authorize("partner.collaboration", "write")),
) -> dict[str, Any]:
    """Release, with differential privacy, customers decided and joint outcomes since the previous release
    under this contract; charged to the privacy budget (409 when it cannot pay or nothing is new)."""
    return dashboard.release(session, principal=principal, contract_id=contract_id)
