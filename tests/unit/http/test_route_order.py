"""The routers' order in ``ROUTERS`` is a matter of speed only: no request path one route serves is also
served by another route, so whichever order they are tried in, every request reaches the same endpoint."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.routing import Match

from dataspace.http.routes import ROUTERS


def _sample_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", template)


def _routes() -> list[APIRoute]:
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def test_every_route_is_reached_by_its_own_paths_only() -> None:
    routes = _routes()
    assert len(routes) > 100  # every router is in the list
    for route in routes:
        for method in sorted(route.methods):
            scope = {"type": "http", "method": method, "path": _sample_path(route.path), "root_path": ""}
            full = [other for other in routes if other.matches(scope)[0] is Match.FULL]
            others = [r.path for r in full if r is not route]
            assert full == [route], f"{method} {route.path} is also served by {others}"


def test_hot_routes_are_tried_first() -> None:
    """Consent changes and real-time decisions sit in the first two routers (each route tried before the right
    one costs about 20 Python calls per request)."""
    first = [r.path for router in ROUTERS[:2] for r in router.routes if isinstance(r, APIRoute)]
    assert "/v1/me/consents" in first
    assert "/v1/decisions/{contract_id}" in first
