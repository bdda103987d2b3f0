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

# The customer's busiest routes first: a request is matched against the routes in this order (no path of
# one router is matched by another's, so the order changes only how many patterns a request is tried on).
ROUTERS: list[APIRouter] = [
    health.router,
    consents.router,
    transparency.router,
    usage.router,
    points.router,
    catalog.router,
    ingest.router,
    audit.router,
    oauth.router,
    policies.router,
    partner.router,
    collaboration.router,
    decisions.router,
    steward.router,
    linkage.router,
    events.router,
    event_contracts.router,
    compliance.router,
    notice.router,
    pages.router,
]
