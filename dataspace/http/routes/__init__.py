"""Every router, assembled in one list; ``create_app`` includes them in this order."""

from fastapi import APIRouter

from dataspace.http.routes import (
    audit,
    catalog,
    compliance,
    consents,
    events,
    health,
    ingest,
    oauth,
    pages,
    partner,
    points,
    policies,
    usage,
)

ROUTERS: list[APIRouter] = [
    health.router,
    catalog.router,
    ingest.router,
    audit.router,
    usage.router,
    oauth.router,
    policies.router,
    points.router,
    partner.router,
    consents.router,
    events.router,
    compliance.router,
    pages.router,
]
