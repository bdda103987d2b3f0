"""Every router, assembled in one list; ``create_app`` includes them in this order."""

from fastapi import APIRouter

from dataspace.http.routes import (
    audit,
    catalog,
    collaboration,
    compliance,
    consents,
    decisions,
    event_contracts,
    events,
    health,
    ingest,
    linkage,
    notice,
    oauth,
    pages,
    partner,
    points,
    policies,
    steward,
    transparency,
    usage,
)

# The busiest routes first (a customer's consent changes, the operator's real-time decisions): a request is
# matched against the routes in this order, at a cost of about 20 Python calls per route tried (FastAPI 0.165),
# so a decision behind 74 routes spent as many calls on routing as on deciding. No path of one router is
# matched by another's, so the order changes only how many patterns a request is tried on.
ROUTERS: list[APIRouter] = [
    consents.router,
    decisions.router,
    transparency.router,
    usage.router,
    points.router,
    health.router,
    catalog.router,
    ingest.router,
    audit.router,
    oauth.router,
    policies.router,
    partner.router,
    collaboration.router,
    steward.router,
    linkage.router,
    events.router,
    event_contracts.router,
    compliance.router,
    notice.router,
    pages.router,
]
